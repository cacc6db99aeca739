"""The `ionmix` command: one subcommand per pipeline stage. Thin: parsing and printing only.

One module per command group; `_common.app` maps every `ionmix.errors.IonmixError` to its
exit status (2 bad input, 1 failed run, 3 MD blow-up) and prints one line naming the
culprit. Anything else is a bug and keeps its traceback.
"""

from ionmix.cli import label, learn, md, plan, props, pseudo, sample, train  # noqa: F401
from ionmix.cli._common import app


def main() -> None:  # pragma: no cover - console-script entry point
    app()


__all__ = ["app", "main"]
