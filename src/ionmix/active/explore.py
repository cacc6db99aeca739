"""Exploration: walkers that go where the committee's own simulations go.

Two kinds of walker (IPSuite's and published IL workflows' habits):

* ``npt``: NPT MD with the committee (ionmix.md, MTK barostat) at a state point. It stops
  early, keeping its data, when the committee's max force deviation passes the upper trust
  level, when the density leaves a window around the teacher's, or on a blow-up. Its saved
  frames are the candidates; its density (when it ran to the end) is a convergence signal.
* ``volume-scan``: training frames with molecule centres rescaled rigidly over a range of
  linear scales (densities the NPT walkers may reach), no MD.
* ``anneal``: NPT with the temperature oscillating between ``temperature_K`` and
  ``temperature_high_K`` (``n_cycles`` cold/hot pairs of segments, each continuing from
  the last): the hot segments reach the expanded, distorted structures, the cold ones
  bring them back towards the state point (the temperature cycling of published IL
  workflows). Same early stops as ``npt``; no density (it is not at one state point).

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

from ionmix.io import atomic_write_json

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

    @model_validator(mode="after")
    def _anneal_goes_up(self):
        if self.kind == "anneal" and self.temperature_high_K <= self.temperature_K:
            raise ValueError(f"anneal: temperature_high_K ({self.temperature_high_K:g}) must "
                             f"be above temperature_K ({self.temperature_K:g})")
        return self

    def name(self, index: int) -> str:
        if self.kind == "npt":
            return f"w{index}-npt-{self.temperature_K:g}K-{self.pressure_bar:g}bar"
        if self.kind == "anneal":
            return (f"w{index}-anneal-{self.temperature_K:g}-{self.temperature_high_K:g}K-"
                    f"{self.pressure_bar:g}bar")
        return f"w{index}-volume-scan"


def run_walker(spec: dict, start: list[Atoms], model_paths: list[str], out_dir: str,
               trust_window_eV_per_A: tuple[float, float],
               density_window_g_cm3: tuple[float, float]) -> dict:
    """Run one walker (a Dask task); returns and writes its ``walker.json`` record:
    ``status`` (done / stopped / blew_up), ``reason``, ``n_candidates`` and, for a finished
    NPT walker, its mean density with the statistical error. MD walkers stop above the
    upper trust level and keep, besides their trajectory, every step at or above the lower
    one (`CommitteeCalculator.recorded`)."""
    out = Path(out_dir)
    record_path = out / "walker.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    walker = WalkerSpec(**spec)
    if walker.kind == "volume-scan":
        record = _volume_scan(walker, start, out)
    else:
        record = _npt(walker, start[-1], model_paths, out, tuple(trust_window_eV_per_A),
                      density_window_g_cm3)
    atomic_write_json(record_path, record)
    return record


def _volume_scan(walker: WalkerSpec, start: list[Atoms], out: Path) -> dict:
    from ionmix.chemistry.topology import MOL_ID_ARRAY
    from ionmix.sampling import rescale_molecules

    frames = []
    for atoms in start[: walker.n_frames]:
        for scale in walker.scales:
            scaled = atoms.copy()
            scaled.calc = None
            scaled.positions = rescale_molecules(atoms.positions, atoms.arrays[MOL_ID_ARRAY],
                                                 atoms.get_masses(), scale)
            scaled.set_cell(atoms.cell.array * scale)
            frames.append(scaled)
    out.mkdir(parents=True, exist_ok=True)
    ase.io.write(out / CANDIDATES_FILE, frames)
    return {"kind": "volume-scan", "status": "done", "reason": "", "n_candidates": len(frames)}


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
         trust_window: tuple[float, float], density_window: tuple[float, float]) -> dict:
    """An npt or anneal walker: its MD segments in turn (each from where the last ended,
    momenta kept), until done or stopped; the candidates are every segment's frames."""
    from ionmix.active.committee import ExplorationStop, load_committee
    from ionmix.md import MDBlowUp, read_thermo, run_md

    calc = load_committee(model_paths, stop_above_eV_per_A=trust_window[1],
                          density_window_g_cm3=tuple(density_window),
                          record_above_eV_per_A=trust_window[0])
    status, reason, atoms, folders = "done", "", start, []
    for k, (temperature_K, n_steps) in enumerate(_segments(walker)):
        folder = out if walker.kind == "npt" else out / f"segment-{k}"
        folders.append(folder)
        settings = _md_settings(walker, temperature_K, n_steps,
                                initial_velocities="maxwell" if k == 0 else "keep")
        try:
            run_md(atoms, calc, settings, folder)
        except ExplorationStop as exc:
            status, reason = "stopped", f"{folder.name}: {exc}" if k else str(exc)
            break
        except MDBlowUp as exc:
            status, reason = "blew_up", f"{folder.name}: {exc}" if k else str(exc)
            break
        atoms = _final_state(folder, atoms)
    record = {"kind": walker.kind, "status": status, "reason": reason,
              "temperature_K": walker.temperature_K, "pressure_bar": walker.pressure_bar}
    frames = [f for folder in folders for f in _trajectory(folder)] + list(calc.recorded)
    if frames:
        ase.io.write(out / CANDIDATES_FILE, frames)
    record["n_candidates"] = len(frames)
    record["n_recorded_between_snapshots"] = len(calc.recorded)
    thermo_path = out / "thermo.csv"
    if walker.kind == "npt" and status == "done" and thermo_path.exists():
        record.update(_density(read_thermo(thermo_path)["density_g_cm3"]))
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


def _density(series) -> dict:
    """Mean density (g/cm³) with its statistical error, from an NPT walker's thermo."""
    from ionmix.properties.stats import series_summary

    try:
        summary = series_summary(np.asarray(series, float))
    except Exception as exc:  # noqa: BLE001 - too short a run gives no density, not a crash
        return {"density_note": str(exc)}
    return {"density_g_cm3": summary["mean"], "density_err_g_cm3": summary["err"]}


def read_candidates(walker_dir: Path) -> list[Atoms]:
    """The candidate frames a walker left (none if it saved none)."""
    path = Path(walker_dir) / CANDIDATES_FILE
    return ase.io.read(path, ":") if path.exists() else []
