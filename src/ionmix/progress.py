"""The one progress-callback signature of ionmix's long stages.

Every stage that reports how far it has come calls ``progress(done, total, what)``:
`done` of `total` units of work (MD steps, frames, pw.x runs, picoseconds) of the piece
named `what` (a run folder's name, "teacher labels", ...). The CLI draws it as a progress
bar (`ionmix.cli._common.progress_bar`); a script may pass any callable of this shape.
Lines of text meant for a log are not progress: stages take those as ``say(line)``.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress"]

#: ``progress(done, total, what)``; see the module docstring.
Progress = Callable[[float, float, str], None]
