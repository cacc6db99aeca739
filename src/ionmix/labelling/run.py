"""The labelling stage: frames → Dask tasks → one writer → the store.

`label` checks the request (task, numbers, the input file: before anything is read, written
or started), selects frames (a store selection or any extxyz), checks the teacher can label
them (before any work), skips what is already done, submits one Dask task per frame (or per
element for ``isolated-atoms``), and stores each frame's labels in one transaction as its
task finishes.

What a rerun compares:

* **Stored labels (resume).** A frame whose labels by this teacher for this task are in the
  store is never relabelled (a killed run relabels nothing that is stored). The options a
  task uses (`tasks.TASK_OPTION_FIELDS`: aimd's steps, time step, temperature, window and
  stride; relax's steps and force threshold; volume-scan's scales) are part of what was
  asked, so they are recorded in the store (its metadata, ``label_options``: per teacher
  key and task) when labelling starts. A store keeps **one set of options per (teacher,
  task)**: a rerun with other options into a store that holds such labels is refused with
  a `LabelError` naming the options that differ — label into another store, or rerun with
  the recorded options. Refused rather than labelled again under the new options because
  AIMD from a frame is seeded by the frame, so ``--steps 20`` after ``--steps 10`` would
  store the first ten steps twice, and one kind of label in one store made two ways is a
  dataset nobody can describe. Labels stored before options were recorded are taken to
  match the first run that records them.
* **Failures.** A frame the engine fails on (`tasks.engine_errors`: no SCF convergence, a
  crash, non-finite labels) is recorded, never stored as a label, and not retried unless
  asked (``retry_failed``). The record (``failures.json`` in the work folder, see
  `FailureLog`; the traceback or engine output in ``failures/``) is per *job* — teacher
  key, task, the task's options and the target store — so a failure skips only the same
  job: a frame that failed in an AIMD is still single-pointed, and labelled into a new
  store. An exception that is not the engine's (a bug) is raised, never recorded.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ase import Atoms

from ionmix.cluster import ClusterConfig, dask_client
from ionmix.dataset import DatasetStore, frames_from, run_frames
from ionmix.dataset.provenance import Provenance
from ionmix.files import atomic_write_json, atomic_write_text
from ionmix.labelling import tasks as T
from ionmix.labelling.tasks import LabelError
from ionmix.progress import Progress

#: Task names of `ionmix label --task` (``isolated-atoms`` labels elements, not frames).
TASK_NAMES = (*T.FRAME_TASKS, "isolated-atoms")

__all__ = ["TASK_NAMES", "FailureLog", "LabelError", "LabelSummary", "check_input",
           "check_selection", "check_task", "label", "label_frames", "label_split_frames",
           "select_frames"]


@dataclass
class LabelSummary:
    """What a labelling run did. Counts are of frames (or elements); ``n_labels`` of rows.

    Attributes:
        failures: frames that failed in this run → reason (one line).
        failed_before: frames skipped because they failed in an earlier run of the same
            job → reason (``retry_failed`` tries them again); counted in ``skipped``.
        workdir: the work folder (engine runs, ``failures.json``, ``failures/``).
    """

    labelled: int = 0
    failed: int = 0
    skipped: int = 0
    n_labels: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    failed_before: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    teacher: str = ""
    store: str = ""
    workdir: str = ""


def _name(field_name: str, names: Mapping[str, str] | None) -> str:
    """How a message names an argument: as the CLI spells it where `names` says."""
    return (names or {}).get(field_name, field_name)


def check_task(task: str, names: Mapping[str, str] | None = None) -> None:
    """LabelError unless `task` is one of `TASK_NAMES` (named as `names` spells ``task``)."""
    if task not in TASK_NAMES:
        raise LabelError(f"{_name('task', names)} {task!r} is not a task; choose one of "
                         f"{', '.join(TASK_NAMES)}")


def check_selection(n_frames: int | None, replica: int | None,
                    names: Mapping[str, str] | None = None) -> None:
    """LabelError for a frame count below 1 (None, not 0, means every frame) or a
    negative replica, named as `names` spells ``n_frames`` / ``replica``."""
    if n_frames is not None and not (T._is_count(n_frames) and n_frames >= 1):
        raise LabelError(f"{_name('n_frames', names)} must be ≥ 1 (got {n_frames!r}); leave "
                         "it out to label every frame")
    if replica is not None and not (T._is_count(replica) and replica >= 0):
        raise LabelError(f"{_name('replica', names)} must be ≥ 0 (got {replica!r}): replicas "
                         "are numbered from 0")


def check_input(path: str | Path) -> None:
    """LabelError naming `path` if it does not exist: a missing store is never created
    (it would read as "0 frames to label")."""
    if not Path(path).exists():
        raise LabelError(f"{path}: no such file (the frames to label: a dataset store .db "
                         "or an ASE-readable file)")


def select_frames(path: str | Path, composition: str | None = None,
                  n_frames: int | None = None, replica: int | None = None,
                  source_task: str = "md") -> tuple[list[Atoms], Provenance]:
    """Frames to label and their provenance.

    Args:
        path: a dataset store (``.db``: its frames of `source_task`, optionally of one
            composition and replica) or any ASE-readable file (every frame). It must exist:
            a missing store is never created (it would read as "0 frames").
        n_frames: per composition, this many equally spaced frames (the paper: 50; ≥ 1;
            None: every frame).

    Every frame gets a ``label_id`` (the store's, or ``<file name>#<index>``).

    Raises:
        LabelError: a missing `path`, a bad `n_frames` or `replica`.
        DatasetError: a store without frames of the selection
            (`ionmix.dataset.frames_from`, the one reader of frames from a store or file).
    """
    check_selection(n_frames, replica)
    check_input(path)
    return frames_from(path, composition=composition, replica=replica, task=source_task,
                       n_frames=n_frames)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)


def _store_id(url: str) -> str:
    """The store as failure records name it: an absolute path (a URL as given)."""
    return url if "://" in url else str(Path(url).resolve())


class FailureLog:
    """The failure records of a work folder (``failures.json``) as one job sees them.

    A job is (teacher key, task, the task's options, target store); a record is one frame
    that failed in one job::

        {"format": 2, "failures": [{"source": "frames.extxyz#0", "teacher": "xtb-…",
          "task": "aimd", "options": {"n_steps": 10, …}, "store": "/abs/out.db",
          "reason": "CalculationFailed: SCF not converged in 2 cycles",
          "detail": "failures/frames.extxyz_0-aimd-1a2b3c4d.txt"}]}

    Only records of this job skip a frame. A file of the first format (``{frame id:
    reason}``, which skipped a frame in every job) is read as records of no job: kept for
    the record, they skip nothing, so such a frame is tried once more.
    """

    def __init__(self, workdir: Path, job: dict[str, Any]):
        self.workdir, self.job = workdir, job
        self.path = workdir / "failures.json"
        records = self._read()
        self.mine = {r["source"]: r for r in records if self._is_mine(r)}
        self.others = [r for r in records if not self._is_mine(r)]

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text())
        except json.JSONDecodeError as exc:
            raise LabelError(f"{self.path}: not readable JSON ({exc}); move it aside to "
                             "forget the failures it records") from None
        if not isinstance(data, dict):
            raise LabelError(f"{self.path}: not a failure record (expected a JSON object); "
                             "move it aside to forget the failures it records")
        if data.get("format") == 2 and isinstance(data.get("failures"), list):
            return data["failures"]
        # first format: frame id → reason, no job
        return [{"source": sid, "reason": reason} for sid, reason in data.items()]

    def _is_mine(self, record: dict[str, Any]) -> bool:
        return all(record.get(k) == v for k, v in self.job.items())

    def reason(self, source: str) -> str | None:
        """Why `source` failed in this job before; None if it did not."""
        record = self.mine.get(source)
        return None if record is None else record["reason"]

    def add(self, source: str, reason: str, detail: str) -> None:
        """Record a failure of `source` (`detail`: traceback or engine output) and save."""
        tag = hashlib.sha256(json.dumps(self.job, sort_keys=True).encode()).hexdigest()[:8]
        detail_path = Path("failures") / f"{_safe(source)}-{self.job['task']}-{tag}.txt"
        atomic_write_text(self.workdir / detail_path, detail)
        self.mine[source] = {"source": source, **self.job, "reason": reason,
                             "detail": str(detail_path)}
        self.save()

    def remove(self, source: str) -> None:
        """Forget a failure of `source` in this job (it has been labelled since)."""
        if self.mine.pop(source, None) is not None:
            self.save()

    def save(self) -> None:
        atomic_write_json(self.path, {"format": 2,
                                      "failures": self.others + list(self.mine.values())})


#: Store metadata key of the options its labels were made with: "<teacher key> <task>" →
#: `tasks.options_record`.
OPTIONS_KEY = "label_options"


def _option_text(name: str, value: Any) -> str:
    """An option as the user would give it: ``--steps 10``, ``scales=0.98,1.0``."""
    if value is None:
        return f"no {name}"
    if isinstance(value, list):
        value = ",".join(f"{v:g}" for v in value)
    return f"{name} {value}" if name.startswith("--") else f"{name}={value}"


def _recorded_options(store: DatasetStore) -> dict[str, dict]:
    return dict(store.metadata_entry(OPTIONS_KEY) or {})


def _check_options(store: DatasetStore, teacher_key: str, task: str, stored_task: str,
                   record: dict[str, Any], names: Mapping[str, str] | None) -> None:
    """Refuse options other than those the store's labels of (teacher, task) were made
    with (see the module docstring)."""
    before = _recorded_options(store).get(f"{teacher_key} {task}")
    if not record or before is None:
        return
    differ = [f for f in record if f in before and before[f] != record[f]]
    if not differ or store.count(teacher=teacher_key, task=stored_task) == 0:
        return
    old = ", ".join(_option_text(_name(f, names), before[f]) for f in differ)
    new = ", ".join(_option_text(_name(f, names), record[f]) for f in differ)
    raise LabelError(
        f"{store.url} already holds {task} labels of teacher {teacher_key} made with {old}; "
        f"this run asks for {new}. A store keeps one set of {task} options per teacher, so "
        f"its labels are made alike: label into another store "
        f"({_name('out_store', names)}), or rerun with {old}")


def _record_options(store: DatasetStore, teacher_key: str, task: str,
                    record: dict[str, Any]) -> None:
    """Record the options this run labels `task` with (nothing for tasks without any)."""
    recorded = _recorded_options(store)
    key = f"{teacher_key} {task}"
    if record and recorded.get(key) != record:
        store.set_metadata_entry(OPTIONS_KEY, {**recorded, key: record})


def _done_marker(task: str, options: T.TaskOptions) -> int:
    """The step whose label marks a frame's task as stored (all labels go in together)."""
    return options.every if task == "aimd" else 0


def _jobs(frames, provenance, teacher, task, options, store, failures, retry_failed,
          summary, names):
    """(label id, frame, ion record) of frames still to do; frames skipped are counted in
    `summary` (and those that failed before named in ``summary.failed_before``)."""
    todo = []
    for atoms in frames:
        sid = atoms.info["label_id"]
        if store.has_label(T.label_id(sid, task, _done_marker(task, options)), teacher.key):
            summary.skipped += 1
            continue
        if failures.reason(sid) is not None and not retry_failed:
            summary.skipped += 1
            summary.failed_before[sid] = failures.reason(sid)
            continue
        if task == "aimd" and options.temperature_K is None \
                and "temperature_K" not in atoms.info:
            raise LabelError(f"{sid}: the frame has no temperature_K for its AIMD; give "
                             f"{_name('temperature_K', names)}")
        ions = provenance.ion_set(atoms)
        teacher.ions = ions
        teacher.check_frame(atoms)  # bad charge, missing pseudopotential: before any work
        store.register(ion_set=ions)
        todo.append((sid, atoms, ions.record))
    return todo


def _element_jobs(frames, store, teacher_key, failures, retry_failed, summary):
    """(element, None, None) of elements whose isolated-atom energy is still to do."""
    todo = []
    for element in sorted({s for a in frames for s in a.get_chemical_symbols()}):
        if store.has_label(f"isolated-atom|{element}", teacher_key):
            summary.skipped += 1
        elif failures.reason(element) is not None and not retry_failed:
            summary.skipped += 1
            summary.failed_before[element] = failures.reason(element)
        else:
            todo.append((element, None, None))
    return todo


def label(input_path: str | Path, teacher_spec, task: str, out_store: str | Path, *,
          composition: str | None = None, n_frames: int | None = None,
          replica: int | None = None, **kwargs) -> LabelSummary:
    """Label frames of `input_path` (see `select_frames`) with a teacher into `out_store`;
    the keyword arguments are those of `label_frames`. The task and the selection are
    checked before the input is read."""
    names = kwargs.get("option_names")
    check_task(task, names)
    check_selection(n_frames, replica, names)
    frames, provenance = select_frames(input_path, composition,
                                       None if task == "isolated-atoms" else n_frames, replica)
    return label_frames(frames, provenance, teacher_spec, task, out_store, **kwargs)


def label_frames(frames: list[Atoms], provenance: Provenance, teacher_spec, task: str,
                 out_store: str | Path, *, options: T.TaskOptions | None = None,
                 cluster: ClusterConfig | None = None, scheduler: str | None = None,
                 workdir: str | Path | None = None, retry_failed: bool = False,
                 store_task: str | None = None,
                 progress: Progress | None = None,
                 option_names: Mapping[str, str] | None = None) -> LabelSummary:
    """Label `frames` (each with a ``label_id``) with a teacher and store the labels.

    Args:
        provenance: resolves each frame's ion set (`select_frames` gives it).
        teacher_spec: a `TeacherSpec` (or anything `teacher_spec` accepts).
        task: one of `TASK_NAMES` (``isolated-atoms``: the elements of `frames`).
        options: the task's options (checked when made); for a store that already holds
            this task's labels by this teacher, they must be those it was labelled with
            (see the module docstring).
        workdir: per-frame engine folders and the failure records (default: beside the
            store, ``label-<teacher key>/``).
        retry_failed: label frames that failed before in this same job.
        store_task: the ``task`` stored with the labels when it is not `task` itself (the
            active-learning loop stores its single points as ``active-learning``).
        progress: ``progress(done, total, what)`` after each finished frame
            (`ionmix.progress.Progress`).
        option_names: how messages name the arguments and options (the CLI passes its
            options: ``n_steps`` → ``--steps``, ``out_store`` → ``--out``).

    Raises:
        LabelError: a bad task, options other than those the store's labels were made
            with, a frame the teacher cannot label (before any work), or a teacher's
            InputError while labelling (the run stops; labels stored so far are kept).
        Anything a task raises that is not the engine failing (a bug), with its traceback.
    """
    from ionmix.teachers import make_teacher
    from ionmix.teachers import teacher_spec as to_spec

    check_task(task, option_names)
    options = options or T.TaskOptions()
    spec = to_spec(teacher_spec)
    teacher = make_teacher(spec)
    store = DatasetStore(out_store)
    record = T.options_record(task, options)
    _check_options(store, spec.key, task, store_task or task, record, option_names)
    work = Path(workdir or Path(str(out_store)).parent / f"label-{spec.key}")
    failures = FailureLog(work, {"teacher": spec.key, "task": task, "options": record,
                                 "store": _store_id(store.url)})
    start = time.perf_counter()
    summary = LabelSummary(teacher=spec.key, store=str(out_store), workdir=str(work))
    if task == "isolated-atoms":
        todo = _element_jobs(frames, store, spec.key, failures, retry_failed, summary)
    else:
        todo = _jobs(frames, provenance, teacher, task, options, store, failures,
                     retry_failed, summary, option_names)
    if todo:
        store.register(teacher=spec)
        _record_options(store, spec.key, task, record)
        _run_jobs(todo, spec, task, options, store, work, failures, summary, cluster,
                  scheduler, progress, store_task)
    summary.wall_s = time.perf_counter() - start
    return summary


def _submit(client, spec, task, options, work, job):
    sid, atoms, ions = job
    if task == "isolated-atoms":
        return client.submit(T.isolated_atom, spec.record(), sid,
                             str(work / _safe(f"isolated-{sid}")), key=f"label-{_safe(sid)}",
                             pure=False)
    return client.submit(T.FRAME_TASK_FUNCTIONS[task], spec.record(), ions, atoms, options,
                         str(work / _safe(sid)), key=f"label-{task}-{_safe(sid)}", pure=False)


def _run_jobs(todo, spec, task, options, store, work, failures, summary, cluster, scheduler,
              progress, store_task=None):
    """Submit every job to Dask and store results as they come (the single writer). A
    task's LabelFailure is recorded, its LabelError raised (see `tasks`)."""
    from dask.distributed import as_completed

    with dask_client(cluster, scheduler) as client:
        futures = {_submit(client, spec, task, options, work, job): job[0] for job in todo}
        for k, future in enumerate(as_completed(futures), start=1):
            sid = futures[future]
            result = future.result()  # a bug in a task raises here, with its traceback
            if isinstance(result, LabelError):
                raise result
            if isinstance(result, T.LabelFailure):
                failures.add(sid, result.reason, result.detail)
                summary.failures[sid] = result.reason
                summary.failed += 1
            else:
                metas = [{**lab.meta, "teacher": spec.key,
                          **({"task": store_task} if store_task else {})} for lab in result]
                summary.n_labels += len(store.add_frames([lab.atoms for lab in result], metas,
                                                         skip_existing=True))
                failures.remove(sid)
                summary.labelled += 1
            if progress is not None:
                progress(k, len(todo), sid)


def label_split_frames(store: DatasetStore, md_teacher: str, spec,
                       counts: Mapping[tuple[str, int], int], *, isolated_atoms: bool,
                       cluster: ClusterConfig | None = None, scheduler: str | None = None,
                       say: Callable[[str], None] = print) -> None:
    """Label with `spec` exactly the sampled frames a study's splits will use: for each
    (composition key, replica) in `counts` (`ionmix.dataset.split_counts`), the MD frames
    of `md_teacher` that `ionmix.dataset.run_frames` picks (train/val from replica 0, test
    from replica 1), and the teacher's isolated atoms when `isolated_atoms`. Resumable; a
    frame the teacher fails on is reported and left out (and the split leaves it out)."""
    frames = []
    for (key, replica), n in counts.items():
        frames += [f.atoms for f in run_frames(store, key, replica, n, md_teacher)]
    say(f"labelling {len(frames)} frames with {spec.describe()}")
    for task in ("single-point", "isolated-atoms") if isolated_atoms else ("single-point",):
        summary = label_frames(frames, store.provenance(), spec, task, store.url,
                               cluster=cluster, scheduler=scheduler)
        for sid, reason in summary.failures.items():
            say(f"[label] {sid} failed: {reason}")
        for sid, reason in summary.failed_before.items():
            say(f"[label] {sid} failed before, skipped: {reason}")
