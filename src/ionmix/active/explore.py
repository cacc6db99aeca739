"""Exploration: walkers that go where the committee's own simulations go.

Two kinds of walker (IPSuite's and published IL workflows' habits):

* ``npt``: NPT MD with the committee (ionmix.md, MTK barostat) at a state point. It stops
  early, keeping its data, when the committee's max force deviation passes the upper trust
  level, when the density leaves a window around the teacher's, or on a blow-up. Its saved
  frames are the candidates; its block-averaged density (when it ran to the end and is
  long enough for ≥ 2 blocks, `block_density`) is a convergence signal.
* ``volume-scan``: training frames with molecule centres rescaled rigidly over a range of
  linear scales (densities the NPT walkers may reach), no MD.
* ``anneal``: NPT with the temperature oscillating between ``temperature_K`` and
  ``temperature_high_K`` (``n_cycles`` cold/hot pairs of segments, each continuing from
  the last): the hot segments reach the expanded, distorted structures, the cold ones
  bring them back towards the state point (the temperature cycling of published IL
  workflows). Same early stops as ``npt``; no density (it is not at one state point).

An npt or anneal entry with ``n_starts = N`` runs N copies (`WalkerSpec.copy_names`),
each from its own starting frame (`start_indices`: the last frame of the sampling, then
frames spread back to the middle of the run) with its own velocity seed (copy k: seed k),
each in its own folder.

Walkers are module-level functions of plain data, so they run as Dask tasks; each writes
``walker.json`` with its status when done, and a rerun skips finished walkers.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import ase.io
import numpy as np
from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ionmix.files import atomic_write_json

CANDIDATES_FILE = "candidates.extxyz"


class WalkerSpec(BaseModel):
    """One ``[[learn.explore]]`` entry.

    Attributes:
        kind: "npt", "volume-scan" or "anneal".
        temperature_K, pressure_bar: the state point (npt; anneal's cold temperature).
        temperature_high_K, n_cycles: anneal: hot temperature and cold/hot pairs.
        n_steps, timestep_fs, trajectory_interval_steps: the NPT run (anneal: all its
            segments together; frames saved every `trajectory_interval_steps` are the
            candidates).
        scales: volume-scan linear scale factors (volume × scale³).
        n_frames: volume-scan: training frames rescaled.
        n_starts: npt/anneal: copies, each from its own starting frame with its own
            velocity seed (1: one walker, as before).
        density_block_ps: npt: block length (ps) of the block-averaged density; at least
            the barostat's ringing period (~1 ps for MTK at 1000 steps on ~200 atoms).
        density_equilibration_fraction: npt: the least share of the run discarded as
            equilibration before the blocks (the automatic detection may discard more,
            at most half).
        drive: npt/anneal: what the dynamics follows: "mean" (the committee's mean, every
            member at every step) or "member" (copy k follows member k mod K: each
            member's own NPT run, where it would break).
        deviation_every_steps: with drive "member", the whole committee (deviation, trust
            guard, recording between snapshots) every n-th step only (dpgen's
            model_devi_freq); the steps between cost one network instead of K.
        minimise_start: npt/anneal: relax the starting frame under the walker's own model
            (`ionmix.md`'s minimisation: FIRE, cell fixed) before its velocities are drawn.
            None (auto): when the loop's teacher is not the classical force field that
            sampled the frames (`resolved`). A sampled frame is thermal for the force
            field, but strained for another teacher and a student of it (xTB's P–F bond is
            0.04 Å longer): that excess energy turns into heat within tens of fs and stops
            the walker before it explores (docs/active-learning.md). With the classical
            teacher the frame is left as it is: minimising would quench a thermal frame.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["npt", "volume-scan", "anneal"] = "npt"
    temperature_K: float = Field(300.0, gt=0.0, le=3000.0)
    temperature_high_K: float = Field(500.0, gt=0.0, le=3000.0)
    n_cycles: int = Field(2, ge=1)
    pressure_bar: float = Field(1.0, ge=-1.0e4, le=1.0e5)
    n_steps: int = Field(2000, ge=10)
    timestep_fs: float = Field(0.5, gt=0.0, le=2.0)
    trajectory_interval_steps: int = Field(20, ge=1)
    scales: tuple[float, ...] = (0.94, 0.97, 1.03, 1.06, 1.1)
    n_frames: int = Field(4, ge=1)
    n_starts: int = Field(1, ge=1)
    density_block_ps: float = Field(1.0, gt=0.0)
    density_equilibration_fraction: float = Field(0.2, ge=0.0, le=0.5)
    drive: Literal["mean", "member"] = "mean"
    deviation_every_steps: int = Field(1, ge=1)
    minimise_start: bool | None = None

    @model_validator(mode="after")
    def _anneal_goes_up(self):
        if self.drive == "mean" and self.deviation_every_steps != 1:
            raise ValueError("deviation_every_steps > 1 needs drive = \"member\" (the mean "
                             "needs every member at every step)")
        if self.kind == "anneal" and self.temperature_high_K <= self.temperature_K:
            raise ValueError(f"anneal: temperature_high_K ({self.temperature_high_K:g}) must "
                             f"be above temperature_K ({self.temperature_K:g})")
        if self.kind == "volume-scan" and self.n_starts != 1:
            raise ValueError("n_starts is for npt and anneal walkers (a volume-scan rescales "
                             "n_frames frames)")
        return self

    def resolved(self, classical_teacher: bool) -> WalkerSpec:
        """This spec with ``minimise_start``'s auto value decided: on for a teacher other
        than the classical force field whose runs gave the starting frames."""
        if self.minimise_start is not None:
            return self
        return self.model_copy(update={"minimise_start": not classical_teacher})

    def name(self, index: int) -> str:
        if self.kind == "npt":
            return f"w{index}-npt-{self.temperature_K:g}K-{self.pressure_bar:g}bar"
        if self.kind == "anneal":
            return (f"w{index}-anneal-{self.temperature_K:g}-{self.temperature_high_K:g}K-"
                    f"{self.pressure_bar:g}bar")
        return f"w{index}-volume-scan"

    def copy_names(self, index: int) -> list[str]:
        """Folder names of the entry's walkers: its `name` alone when ``n_starts`` is 1
        (as before the option), else ``<name>-s<k>`` for copy k."""
        if self.n_starts == 1:
            return [self.name(index)]
        return [f"{self.name(index)}-s{k}" for k in range(self.n_starts)]


def start_indices(n_frames: int, n_starts: int) -> list[int]:
    """Indices of `n_starts` starting frames among `n_frames` time-ordered frames of a
    sampling run: the last frame first (what one walker has always started from), then
    evenly spread back to the middle of the run, so every start lies in its settled half
    and the starts are as far apart in time as that allows. Fewer frames than starts
    repeat frames (the copies still differ by their velocity seed)."""
    if n_frames < 1:
        raise ValueError("no frames to start walkers from")
    first = n_frames - 1
    last = n_frames // 2 if n_starts > 1 else first
    return [int(round(i)) for i in np.linspace(first, last, n_starts)]


def run_walker(spec: dict, start: list[Atoms], model_paths: list[str], out_dir: str,
               trust_window_eV_per_A: tuple[float, float],
               density_window_g_cm3: tuple[float, float], provenance=None,
               velocity_seed: int = 0, compiled: bool = False) -> dict:
    """Run one walker (a Dask task); returns and writes its ``walker.json`` record:
    ``status`` (done / stopped / blew_up), ``reason``, ``n_candidates``, the
    ``velocity_seed`` and, for a finished NPT walker, its block-averaged density
    (`block_density`). MD walkers start from ``start[-1]`` with Maxwell–Boltzmann
    velocities drawn with `velocity_seed`, stop above the upper trust level and keep,
    besides their trajectory, every step at or above the lower one
    (`CommitteeCalculator.recorded`). `compiled`: the members' compiled forms."""
    out = Path(out_dir)
    record_path = out / "walker.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    walker = WalkerSpec(**spec)
    if walker.kind == "volume-scan":
        record = _volume_scan(walker, start, out)
    else:
        record = _npt(walker, start[-1], model_paths, out, tuple(trust_window_eV_per_A),
                      density_window_g_cm3, provenance, velocity_seed, compiled)
    atomic_write_json(record_path, record)
    return record


def _volume_scan(walker: WalkerSpec, start: list[Atoms], out: Path) -> dict:
    from ionmix.chemistry.topology import scaled_frame

    frames = [scaled_frame(atoms, scale) for atoms in start[: walker.n_frames]
              for scale in walker.scales]
    out.mkdir(parents=True, exist_ok=True)
    ase.io.write(out / CANDIDATES_FILE, frames)
    return {"kind": "volume-scan", "status": "done", "reason": "", "n_candidates": len(frames)}


def segment_settings(walker: WalkerSpec, k: int, temperature_K: float, n_steps: int,
                     velocity_seed: int):
    """`MDSettings` of segment `k` of an npt/anneal walker: the first draws velocities
    (`velocity_seed`) and is minimised first when ``minimise_start`` says so; later ones
    keep the momenta, and md's own rule (a sampled frame is not minimised) applies as
    before the option."""
    return _md_settings(walker, temperature_K, n_steps, seed=velocity_seed,
                        initial_velocities="maxwell" if k == 0 else "keep",
                        minimise=True if k == 0 and walker.minimise_start else None)


def _md_settings(walker: WalkerSpec, temperature_K: float, n_steps: int, **kw):
    from ionmix.md import MDSettings

    if walker.kind == "anneal":
        # the thermostat acts over a quarter of a segment (at most ionmix md's 1000 steps)
        # so that each segment reaches its temperature; the barostat keeps its default
        kw.update(thermostat_time_steps=float(min(1000, max(n_steps // 4, 10))))
    return MDSettings(ensemble="npt", temperature_K=temperature_K,
                      pressure_bar=walker.pressure_bar, n_steps=n_steps,
                      timestep_fs=walker.timestep_fs,
                      log_interval_steps=math.gcd(10, walker.trajectory_interval_steps),
                      trajectory_interval_steps=walker.trajectory_interval_steps, **kw)


def _segments(walker: WalkerSpec) -> list[tuple[float, int]]:
    """(temperature_K, steps) of each MD segment: one for npt, 2·n_cycles for anneal."""
    if walker.kind == "npt":
        return [(walker.temperature_K, walker.n_steps)]
    temps = [walker.temperature_K, walker.temperature_high_K] * walker.n_cycles
    return [(t, max(walker.n_steps // len(temps), 1)) for t in temps]


def _npt(walker: WalkerSpec, start: Atoms, model_paths: list[str], out: Path,
         trust_window: tuple[float, float], density_window: tuple[float, float],
         provenance=None, velocity_seed: int = 0, compiled: bool = False) -> dict:
    """An npt or anneal walker: its MD segments in turn (each from where the last ended,
    momenta kept; the first with velocities drawn with `velocity_seed`), until done or
    stopped; the candidates are every segment's frames."""
    from ionmix.md import MDBlowUp, read_record, read_thermo, run_md
    from ionmix.models import ExplorationStop, load_committee

    drive_member = velocity_seed % len(model_paths) if walker.drive == "member" else None
    committee = load_committee(model_paths, start, provenance=provenance,
                               stop_above_eV_per_A=trust_window[1],
                               density_window_g_cm3=tuple(density_window),
                               record_above_eV_per_A=trust_window[0],
                               drive_member=drive_member,
                               deviation_every=walker.deviation_every_steps,
                               compiled=compiled)
    calc = committee.calc
    if provenance is not None:  # so that md, validate and props work on the walker's run
        out.mkdir(parents=True, exist_ok=True)
        provenance.write(out)
    status, reason, atoms, folders = "done", "", start, []
    for k, (temperature_K, n_steps) in enumerate(_segments(walker)):
        folder = out if walker.kind == "npt" else out / f"segment-{k}"
        folders.append(folder)
        settings = segment_settings(walker, k, temperature_K, n_steps, velocity_seed)
        try:
            run_md(atoms, calc, settings, folder, model_id=committee.model_id,
                   model_teachers=committee.teachers)
        except ExplorationStop as exc:
            status, reason = "stopped", f"{folder.name}: {exc}" if k else str(exc)
            break
        except MDBlowUp as exc:
            status, reason = "blew_up", f"{folder.name}: {exc}" if k else str(exc)
            break
        atoms = _final_state(folder, atoms)
    record = {"kind": walker.kind, "status": status, "reason": reason,
              "temperature_K": walker.temperature_K, "pressure_bar": walker.pressure_bar,
              "velocity_seed": velocity_seed, "start_frame": start.info.get("label_id", ""),
              "drive_member": drive_member,
              # what minimising the start did (None: not asked, or stopped during it)
              "start_minimisation": read_record(folders[0] / "md.json").get("minimisation")}
    frames = [f for folder in folders for f in _trajectory(folder)] + list(calc.recorded)
    if frames:
        ase.io.write(out / CANDIDATES_FILE, frames)
    record["n_candidates"] = len(frames)
    record["n_recorded_between_snapshots"] = len(calc.recorded)
    thermo_path = out / "thermo.csv"
    if walker.kind == "npt" and status == "done" and thermo_path.exists():
        thermo = read_thermo(thermo_path)
        record.update(block_density(thermo["density_g_cm3"], thermo["time_ps"],
                                    walker.density_block_ps,
                                    walker.density_equilibration_fraction))
    return record


def _final_state(folder: Path, atoms: Atoms) -> Atoms:
    """`atoms` at the end of the run in `folder` (cell, positions, momenta)."""
    state = json.loads((folder / "checkpoint.json").read_text())["atoms"]
    final = atoms.copy()
    final.calc = None
    final.set_cell(state["cell"], scale_atoms=False)
    final.set_positions(state["positions"])
    final.set_momenta(state["momenta"])
    return final


def _trajectory(folder: Path) -> list[Atoms]:
    traj = folder / "trajectory.extxyz"
    return ase.io.read(traj, ":") if traj.exists() and traj.stat().st_size else []


def block_density(density_g_cm3, time_ps, block_ps: float = 1.0,
                  equilibration_fraction: float = 0.2) -> dict:
    """An NPT walker's density from block means, for the loop's convergence test.

    The MTK barostat rings (±8 % at a ~1-ps period on 188 atoms): a mean over a part of a
    period, or an error from a few correlated samples, says little. So: discard the
    equilibration (`ionmix.stats.detect_equilibration`, at least
    `equilibration_fraction` of the run, at most half), cut the rest into whole blocks of
    `block_ps` ending at the last sample, and average the block means. The error is the
    blocks' standard error, their spread / sqrt(n_blocks), times sqrt(g) of the block
    means (`statistical_inefficiency`: 1 for uncorrelated blocks, more if a slow drift
    spans them). The statistical-inefficiency error of the raw samples
    (`mean_and_error`) is kept beside it as a cross-check only: on a ring it comes out
    several times too large (g of an oscillation counts its half-period as correlated),
    and a too-large error would let two different densities "agree".

    Args:
        density_g_cm3: shape (n,), the walker's logged densities (g/cm³).
        time_ps: shape (n,), their times (ps), equally spaced.
        block_ps: block length (ps); at least the barostat's ringing period.
        equilibration_fraction: least share of the samples discarded.

    Returns: ``density_n_blocks``, ``density_block_ps``, ``density_equilibration_ps``
    (discarded) and, with ≥ 2 blocks, ``density_g_cm3`` and ``density_err_g_cm3`` (the
    error compared), ``density_block_means_g_cm3``,
    ``density_blocks_statistical_inefficiency``, ``density_g_err_g_cm3`` (the
    cross-check); with fewer, ``density_note`` saying why there is no
    density (such a walker is no evidence of a converged density).
    """
    from ionmix.stats import detect_equilibration, mean_and_error
    from ionmix.stats import statistical_inefficiency as inefficiency

    rho = np.asarray(density_g_cm3, dtype=float)
    t = np.asarray(time_ps, dtype=float)
    interval_ps = float(np.median(np.diff(t))) if t.size > 1 else block_ps
    per_block = max(1, int(round(block_ps / interval_ps)))
    t0 = detect_equilibration(rho, equilibration_fraction) if rho.size else 0
    n_blocks = (rho.size - t0) // per_block
    record = {"density_n_blocks": int(n_blocks), "density_block_ps": per_block * interval_ps,
              "density_equilibration_ps": t0 * interval_ps}
    if n_blocks < 2:
        record["density_note"] = (
            f"too short for a block density: {(rho.size - t0) * interval_ps:.2f} ps after "
            f"{t0 * interval_ps:.2f} ps of equilibration gives {n_blocks} block(s) of "
            f"{block_ps:g} ps (need ≥ 2); no convergence evidence")
        return record
    used = rho[rho.size - n_blocks * per_block:]
    means = used.reshape(n_blocks, per_block).mean(axis=1)
    g_blocks = inefficiency(means)
    err = float(means.std(ddof=1) / np.sqrt(n_blocks) * np.sqrt(g_blocks))
    record.update(density_g_cm3=float(means.mean()), density_err_g_cm3=err,
                  density_blocks_statistical_inefficiency=g_blocks,
                  density_g_err_g_cm3=mean_and_error(used)[1],
                  density_block_means_g_cm3=means.tolist())
    return record


def read_candidates(walker_dir: Path) -> list[Atoms]:
    """The candidate frames a walker left (none if it saved none)."""
    path = Path(walker_dir) / CANDIDATES_FILE
    return ase.io.read(path, ":") if path.exists() else []
