"""Properties from trajectories: block averages (more to come: thermal expansion, Tait fit).

Block averaging (Flyvbjerg & Petersen, J. Chem. Phys. 1989, 91, 461): a correlated series
is cut into `n_blocks` contiguous blocks; the standard error of the mean is the standard
deviation of the block means over sqrt(n_blocks − 1). Blocks longer than the correlation
time make the block means independent, so the estimate is honest where the naive
std/sqrt(n) is not.
"""

from __future__ import annotations

import numpy as np


def block_average(series, n_blocks: int = 5) -> tuple[float, float]:
    """Mean and block standard error of a 1-D series (any units; same units returned).

    Args:
        series: shape (n_samples,), n_samples ≥ n_blocks ≥ 2. Trailing samples that do
            not fill a block are dropped from the error estimate only.
        n_blocks: number of contiguous blocks.
    """
    x = np.asarray(series, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"series must be 1-D, got shape {x.shape}")
    if n_blocks < 2 or x.size < n_blocks:
        raise ValueError(f"need at least n_blocks ≥ 2 samples; got {x.size} for {n_blocks}")
    size = x.size // n_blocks
    means = x[: size * n_blocks].reshape(n_blocks, size).mean(axis=1)
    return float(x.mean()), float(means.std(ddof=1) / np.sqrt(n_blocks))
