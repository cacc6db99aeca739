"""Labelling: frames → teacher labels in the store, as Dask tasks with one writer.

`run.label` is the stage (`ionmix label`); `tasks` holds the per-frame tasks
(single point, AIMD, relaxation, volume scan, isolated atoms).
"""

from ionmix.labelling.run import (
    TASK_NAMES,
    LabelError,
    LabelSummary,
    label,
    label_frames,
    select_frames,
)
from ionmix.labelling.tasks import LabelFailure, TaskOptions

__all__ = ["TASK_NAMES", "LabelError", "LabelFailure", "LabelSummary", "TaskOptions", "label",
           "label_frames",
           "select_frames"]
