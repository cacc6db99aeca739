"""Shared pieces of the CLI: the app (which maps ionmix's errors to exit statuses in one
place), consoles, the progress bar, and options and helpers used by several commands."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from ionmix.errors import IonmixError


class IonmixGroup(TyperGroup):
    """The root command: reports every `IonmixError` as one line and exits with its status
    (2 for bad input, 1 for a failed run, 3 for an MD blow-up). Anything else is a bug and
    keeps its traceback. Here, inside the command rather than around the app, so that the
    console script and click's test runner answer alike."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IonmixError as exc:
            label = {2: "error", 3: "blew up"}.get(exc.exit_code, "failed")
            # escape: messages name config tables like "[sampling]", which rich would eat
            err_console.print(f"[bold red]{label}:[/] {escape(str(exc))}", highlight=False,
                              soft_wrap=True)
            ctx.exit(exc.exit_code)


app = typer.Typer(
    cls=IonmixGroup,
    help="Machine-learned potentials for ionic liquids and their mixtures that transfer "
    "across compositions (Goodwin et al., JPCL 2024, as a tool).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts name TOML tables such as [teacher]: keep them literal
)
console = Console()
err_console = Console(stderr=True)


def say_to(target: Console):
    """A `say(line)` that prints a stage's progress line as it is: no rich markup (a recipe
    is named ``[x=0.5]``), no highlighting, not wrapped (a log keeps one line per line)."""
    return lambda line: target.print(line, markup=False, highlight=False, soft_wrap=True)


@app.callback()
def _root() -> None:
    """ionmix: plan compositions, build and sample IL boxes, label, train, test transfer."""


#: Seconds between plain progress lines when the output is not a terminal (a log file, CI).
PLAIN_PROGRESS_INTERVAL_S = 30.0


@contextmanager
def progress_bar(description: str, total: int | None = None, completed: int = 0,
                 stderr: bool = False):
    """A progress display; yields ``update(advance=0, description=None, completed=None,
    total=None)`` and the console for printing above it (``update.console``).

    On a terminal: rich's bar (description, bar, done/total, time left). Otherwise (output
    redirected to a log, CI): plain lines — description, done/total, elapsed, estimate left —
    at most every `PLAIN_PROGRESS_INTERVAL_S` seconds and when the description changes or
    the work ends, so a log shows that a long stage is alive.
    """
    target = err_console if stderr else console
    if not target.is_terminal:
        with _plain_progress(description, total, completed, target) as update:
            yield update
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=target) as bar:
        task = bar.add_task(description, total=total, completed=completed)

        def update(advance: int = 0, **fields) -> None:
            bar.update(task, advance=advance, **{k: v for k, v in fields.items()
                                                  if v is not None})

        update.console = bar.console
        yield update


@contextmanager
def _plain_progress(description: str, total: int | None, completed: int, target: Console):
    """`progress_bar` for a non-terminal: one plain line per interval (see there)."""
    import time

    state = {"description": description, "total": total, "done": completed,
             "start_done": completed}
    t0 = time.monotonic()
    last = {"t": -math.inf, "line": None}

    def line() -> str:
        elapsed = time.monotonic() - t0
        done, total_ = state["done"], state["total"]
        text = f"{state['description']}: {done}" + (f"/{total_}" if total_ else "")
        text += f", {_duration(elapsed)} elapsed"
        rate_done = done - state["start_done"]
        if total_ and rate_done > 0 and done < total_:
            text += f", ~{_duration(elapsed / rate_done * (total_ - done))} left"
        return text

    def emit(force: bool = False) -> None:
        now = time.monotonic()
        text = line()
        if force or now - last["t"] >= PLAIN_PROGRESS_INTERVAL_S:
            if text != last["line"]:
                target.print(text, highlight=False, markup=False, soft_wrap=True)
            last.update(t=now, line=text)

    def update(advance: int = 0, description: str | None = None,
               completed: int | None = None, total: int | None = None) -> None:
        new_stage = description is not None and description != state["description"]
        if description is not None:
            state["description"] = description
        if total is not None:
            state["total"] = total
        state["done"] = completed if completed is not None else state["done"] + advance
        finished = bool(state["total"]) and state["done"] >= state["total"]
        emit(force=new_stage or finished)

    update.console = target
    emit(force=True)
    yield update
    emit(force=True)


def _duration(seconds: float) -> str:
    """'1h02m', '3m05s' or '42s'."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def positive(value: float | None) -> float | None:
    """Option callback: a number > 0 (a time step, a temperature, a width); click names the
    option in its message ("Invalid value for '--timestep-fs': ...")."""
    if value is not None and not value > 0:  # `not >` also refuses NaN
        raise typer.BadParameter(f"must be > 0 (got {value:g})")
    return value


def out_folder(path: Path | None) -> Path | None:
    """Option callback for an output folder: refused before any work when it is an existing
    file or cannot be written (the nearest existing folder above it is read-only)."""
    import os

    if path is None:
        return path
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a folder")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise typer.BadParameter(f"{path}: cannot write into {existing}")
    return path


def fmt_comp(comp: dict[str, float]) -> str:
    return ", ".join(f"{u} {x:g}" for u, x in comp.items() if x)


def floats(text: str, what: str) -> list[float]:
    """Comma-separated numbers of an option; ConfigError naming the option otherwise."""
    from ionmix.config import ConfigError

    try:
        return [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise ConfigError(f"{what}: expected comma-separated numbers, got {text!r}") from None


def md_settings(source: str, **kw):
    """MDSettings from command-line values; a bad value raises ConfigError naming the key."""
    from ionmix.config import parse_model
    from ionmix.md import MDSettings

    return parse_model(MDSettings, kw, source)


def load_with_provenance(structure: Path, out: Path | None, index: int = -1,
                         composition: str | None = None, sampled_at_K: float | None = None):
    """The structure and its provenance (teacher spec, ion set); the records the frame uses
    are written to ``out/provenance.json`` so the outputs travel with them."""
    from ionmix.dataset.provenance import load_provenance
    from ionmix.dataset.structures import load_structure

    atoms = load_structure(structure, index=index, composition=composition,
                           sampled_at_K=sampled_at_K)
    provenance = load_provenance(structure)
    if out is not None:
        write_provenance(out, atoms, provenance)
    return atoms, provenance


def write_provenance(out: Path, atoms, provenance) -> None:
    """Write the records `atoms` uses (its ion set, and its teacher if it names one) from
    `provenance` to ``out/provenance.json`` (folder created)."""
    from ionmix.dataset.provenance import Provenance

    own = Provenance().add(ion_set=provenance.ion_set(atoms))
    if "teacher" in atoms.info or "charge_scale" in atoms.info:
        own.add(teacher=provenance.teacher_spec(atoms))
    out.mkdir(parents=True, exist_ok=True)
    own.write(out)


def run_property_study(label: str, structure: Path, model: str, composition: str | None, study,
              out: Path | None = None, index: int = -1, float64: bool = False,
              sampled_at_K: float | None = None, compiled: bool = False):
    """Load the structure and model, then run ``study(atoms, loaded, progress)`` under a
    progress bar (per MD run, per step; on stderr, so --json output stays clean); `loaded`
    is the `ionmix.models.LoadedModel` (calculator, id, and the teacher for 'classical')."""
    from ionmix.models import load_model

    atoms, provenance = load_with_provenance(structure, out, index, composition, sampled_at_K)
    loaded = load_model(model, atoms, provenance=provenance, float64=float64,
                        compiled=compiled)
    with progress_bar(label, stderr=True) as update:
        return study(atoms, loaded, lambda k, n, name: update(
            description=f"{label}: {name}", completed=k, total=n))


StructureArg = Annotated[Path, typer.Argument(
    help="Starting structure: any ASE-readable file, or a dataset store (.db).")]
ModelOpt = Annotated[str, typer.Option(
    help="Trained model (.nequip.zip/.ckpt), a committee folder (ionmix learn's "
        "gen-NNN/models: the members' mean), or 'classical' for the OPLS teacher.")]
CompositionOpt = Annotated[str | None, typer.Option(
    help="With a .db: composition key, e.g. LiPF6=0.4,EMIMPF6=0.6.")]
CompiledOpt = Annotated[bool, typer.Option(
    help="Evaluate the network's compiled form (nequip-compile, AOTInductor): ~2.6x faster "
         "network calls on CPU; compiled once (2-4 min) and kept beside the package.")]
SampledAtOpt = Annotated[float | None, typer.Option(
    "--sampled-at-K", help="With a .db of several temperatures: the last frame sampled at "
    "this temperature (K).")]
