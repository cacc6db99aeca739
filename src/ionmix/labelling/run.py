"""The labelling stage: frames → Dask tasks → one writer → the store.

`label` selects frames (a store selection or any extxyz), checks the teacher can label them
(before any work), skips what is already stored (resumable at frame granularity: a killed
run relabels nothing that is stored), submits one Dask task per frame (or per element for
``isolated-atoms``), and stores each frame's labels in one transaction as its task
finishes. A failed frame (no SCF convergence, a crash) is recorded — reason in
``failures.json`` and the traceback or engine output in ``failures/`` under the work
folder — never stored as a label, and not retried unless asked.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ionmix.cluster import ClusterConfig, dask_client
from ionmix.dataset import DatasetStore, equally_spaced
from ionmix.dataset.provenance import Provenance, load_provenance
from ionmix.errors import InputError
from ionmix.io import atomic_write_json, atomic_write_text, read_frames
from ionmix.labelling import tasks as T

#: Task names of `ionmix label --task` (``isolated-atoms`` labels elements, not frames).
TASK_NAMES = (*T.FRAME_TASKS, "isolated-atoms")


class LabelError(InputError):
    """A labelling request that cannot start (bad task, selection or teacher)."""


@dataclass
class LabelSummary:
    """What a labelling run did. Counts are of frames (or elements); ``n_labels`` of rows."""

    labelled: int = 0
    failed: int = 0
    skipped: int = 0
    n_labels: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0
    teacher: str = ""
    store: str = ""


def select_frames(path: str | Path, composition: str | None = None,
                  n_frames: int | None = None, replica: int | None = None,
                  source_task: str = "md") -> tuple[list[Atoms], Provenance]:
    """Frames to label and their provenance.

    Args:
        path: a dataset store (``.db``: its frames of `source_task`, optionally of one
            composition and replica) or any ASE-readable file (every frame).
        n_frames: per composition, this many equally spaced frames (the paper: 50).

    Every frame gets a ``label_id`` (the store's, or ``<file name>#<index>``).
    """
    path = Path(path)
    if path.suffix == ".db":
        store = DatasetStore(path)
        keys = [composition] if composition else store.compositions()
        frames = []
        for key in keys:
            picked = store.select(key, replica=replica, task=source_task)
            if not picked:
                raise LabelError(f"{path}: no {source_task} frames of composition {key}")
            if n_frames:
                picked = equally_spaced(picked, n_frames, f"{path} {key}")
            frames += [f.atoms for f in picked]
        return frames, store.provenance()
    frames = read_frames(path, ":", what="input")
    for i, atoms in enumerate(frames):
        atoms.info.setdefault("label_id", f"{path.name}#{i}")
    if n_frames:
        frames = equally_spaced(frames, n_frames, str(path))
    return frames, load_provenance(path)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text)


def _done_marker(task: str, options: T.TaskOptions) -> int:
    """The step whose label marks a frame's task as stored (all labels go in together)."""
    return options.every if task == "aimd" else 0


def _jobs(frames, provenance, teacher, task, options, store, failures, retry_failed):
    """(label id, frame, ion record) of frames still to do; and how many were skipped."""
    todo, skipped = [], 0
    for atoms in frames:
        sid = atoms.info["label_id"]
        if store.has_label(T.label_id(sid, task, _done_marker(task, options)), teacher.key) \
                or (sid in failures and not retry_failed):
            skipped += 1
            continue
        ions = provenance.ion_set(atoms)
        teacher.ions = ions
        teacher.check_frame(atoms)  # bad charge, missing pseudopotential: before any work
        store.register(ion_set=ions)
        todo.append((sid, atoms, ions.record))
    return todo, skipped


def label(input_path: str | Path, teacher_spec, task: str, out_store: str | Path, *,
          composition: str | None = None, n_frames: int | None = None,
          replica: int | None = None, **kwargs) -> LabelSummary:
    """Label frames of `input_path` (see `select_frames`) with a teacher into `out_store`;
    the keyword arguments are those of `label_frames`."""
    frames, provenance = select_frames(input_path, composition,
                                       None if task == "isolated-atoms" else n_frames, replica)
    return label_frames(frames, provenance, teacher_spec, task, out_store, **kwargs)


def label_frames(frames: list[Atoms], provenance: Provenance, teacher_spec, task: str,
                 out_store: str | Path, *, options: T.TaskOptions | None = None,
                 cluster: ClusterConfig | None = None, scheduler: str | None = None,
                 workdir: str | Path | None = None, retry_failed: bool = False,
                 store_task: str | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> LabelSummary:
    """Label `frames` (each with a ``label_id``) with a teacher and store the labels.

    Args:
        provenance: resolves each frame's ion set (`select_frames` gives it).
        teacher_spec: a `TeacherSpec` (or anything `teacher_spec` accepts).
        task: one of `TASK_NAMES` (``isolated-atoms``: the elements of `frames`).
        workdir: per-frame engine folders and the failure records (default: beside the
            store, ``label-<teacher key>/``).
        store_task: the ``task`` stored with the labels when it is not `task` itself (the
            active-learning loop stores its single points as ``active-learning``).
        progress: ``progress(done, total, what)`` after each finished frame.
    """
    from ionmix.teachers import make_teacher
    from ionmix.teachers import teacher_spec as to_spec

    if task not in TASK_NAMES:
        raise LabelError(f"--task {task!r}: choose one of {', '.join(TASK_NAMES)}")
    options = options or T.TaskOptions()
    spec = to_spec(teacher_spec)
    teacher = make_teacher(spec)
    store = DatasetStore(out_store)
    store.register(teacher=spec)
    work = Path(workdir or Path(str(out_store)).parent / f"label-{spec.key}")
    failures_path = work / "failures.json"
    failures = json.loads(failures_path.read_text()) if failures_path.exists() else {}
    start = time.perf_counter()
    if task == "isolated-atoms":
        elements = sorted({s for a in frames for s in a.get_chemical_symbols()})
        todo = [(el, None, None) for el in elements
                if not store.has_label(f"isolated-atom|{el}", spec.key)]
        skipped = len(elements) - len(todo)
    else:
        todo, skipped = _jobs(frames, provenance, teacher, task, options, store, failures,
                              retry_failed)
    summary = LabelSummary(skipped=skipped, teacher=spec.key, store=str(out_store))
    if todo:
        _run_jobs(todo, spec, task, options, store, work, failures, summary, cluster,
                  scheduler, progress, store_task)
    if failures or failures_path.exists():
        atomic_write_json(failures_path, failures)
    summary.failures = dict(failures)
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
    """Submit every job to Dask and store results as they come (the single writer)."""
    from dask.distributed import as_completed

    with dask_client(cluster, scheduler) as client:
        futures = {_submit(client, spec, task, options, work, job): job[0] for job in todo}
        for k, future in enumerate(as_completed(futures), start=1):
            sid = futures[future]
            try:
                labels = future.result()
            except T.LabelFailure as exc:
                failures[sid] = exc.reason
                atomic_write_text(work / "failures" / f"{_safe(sid)}.txt", exc.detail)
                atomic_write_json(work / "failures.json", failures)
                summary.failed += 1
            else:
                metas = [{**lab.meta, "teacher": spec.key,
                          **({"task": store_task} if store_task else {})} for lab in labels]
                summary.n_labels += len(store.add_frames([lab.atoms for lab in labels], metas,
                                                         skip_existing=True))
                failures.pop(sid, None)
                summary.labelled += 1
            if progress is not None:
                progress(k, len(todo), sid)


def label_split_frames(store: DatasetStore, md_teacher: str, spec, compositions: list[str],
                       counts_by_replica: dict[int, int], *, isolated_atoms: bool,
                       cluster: ClusterConfig | None = None, scheduler: str | None = None,
                       say: Callable[[str], None] = print) -> None:
    """Label with `spec` exactly the sampled frames a study's splits will use: per
    composition, `counts_by_replica[r]` equally spaced MD frames of `md_teacher` from
    replica r (train/val from 0, test from 1), and the teacher's isolated atoms when
    `isolated_atoms`. Resumable; a frame the teacher fails on is reported and left out."""
    frames = []
    for key in compositions:
        for replica, n in counts_by_replica.items():
            pool = store.select(key, replica=replica, teacher=md_teacher, task="md")
            frames += [f.atoms for f in equally_spaced(pool, n, f"{key} replica {replica}")]
    say(f"labelling {len(frames)} frames with {spec.describe()}")
    for task in ("single-point", "isolated-atoms") if isolated_atoms else ("single-point",):
        summary = label_frames(frames, store.provenance(), spec, task, store.url,
                               cluster=cluster, scheduler=scheduler)
        for sid, reason in summary.failures.items():
            say(f"[label] {sid} failed: {reason}")
