"""The one way ionmix writes a figure: matplotlib without a display, saved atomically.

Every plot function in `ionmix.report` returns its `matplotlib.figure.Figure` (so a test
or a notebook can look at its axes, labels and data); the stage that wants the file calls
`save_figure`.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from ionmix.files import atomic_write_bytes  # noqa: E402

__all__ = ["plt", "save_figure"]


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Write `fig` as a PNG to `path` (atomically: a reader never sees half a file) and
    close it; returns the path."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())
