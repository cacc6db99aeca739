"""Labelling: frames → teacher labels in the store, as Dask tasks with one writer.

`run.label` is the stage (`ionmix label`); `tasks` holds the per-frame tasks
(single point, AIMD, relaxation, volume scan, isolated atoms).
"""

from ionmix.labelling.run import (
    TASK_NAMES,
    FailureLog,
    LabelError,
    LabelSummary,
    check_input,
    check_selection,
    check_task,
    label,
    label_frames,
    select_frames,
)
from ionmix.labelling.tasks import LabelFailure, TaskOptions, check_task_options

__all__ = ["TASK_NAMES", "FailureLog", "LabelError", "LabelFailure", "LabelSummary",
           "TaskOptions", "check_input", "check_selection", "check_task",
           "check_task_options", "label", "label_frames", "select_frames"]
