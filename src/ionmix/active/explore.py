"""Exploration: walkers that go where the committee's own simulations go.

Two kinds of walker (IPSuite's and published IL workflows' habits):

* ``npt``: NPT MD with the committee (ionmix.md, MTK barostat) at a state point. It stops
  early, keeping its data, when the committee's max force deviation passes the upper trust
  level, when the density leaves a window around the teacher's, or on a blow-up. Its saved
  frames are the candidates; its density (when it ran to the end) is a convergence signal.
* ``volume-scan``: training frames with molecule centres rescaled rigidly over a range of
  linear scales (densities the NPT walkers may reach), no MD.

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
from pydantic import BaseModel, ConfigDict, Field

from ionmix.io import atomic_write_json

CANDIDATES_FILE = "candidates.extxyz"


class WalkerSpec(BaseModel):
    """One ``[[learn.explore]]`` entry.

    Attributes:
        kind: "npt" or "volume-scan".
        temperature_K, pressure_bar: the state point (npt).
        n_steps, timestep_fs, trajectory_interval_steps: the NPT run (frames saved every
            `trajectory_interval_steps` are the candidates).
        scales: volume-scan linear scale factors (volume × scale³).
        n_frames: volume-scan: training frames rescaled.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["npt", "volume-scan"] = "npt"
    temperature_K: float = Field(300.0, gt=0.0, le=3000.0)
    pressure_bar: float = Field(1.0, ge=-1.0e4, le=1.0e5)
    n_steps: int = Field(2000, ge=10)
    timestep_fs: float = Field(0.5, gt=0.0, le=2.0)
    trajectory_interval_steps: int = Field(20, ge=1)
    scales: tuple[float, ...] = (0.94, 0.97, 1.03, 1.06, 1.1)
    n_frames: int = Field(4, ge=1)

    def name(self, index: int) -> str:
        if self.kind == "npt":
            return f"w{index}-npt-{self.temperature_K:g}K-{self.pressure_bar:g}bar"
        return f"w{index}-volume-scan"


def run_walker(spec: dict, start: list[Atoms], model_paths: list[str], out_dir: str,
               trust_hi_eV_per_A: float, density_window_g_cm3: tuple[float, float]) -> dict:
    """Run one walker (a Dask task); returns and writes its ``walker.json`` record:
    ``status`` (done / stopped / blew_up), ``reason``, ``n_candidates`` and, for a finished
    NPT walker, its mean density with the statistical error."""
    out = Path(out_dir)
    record_path = out / "walker.json"
    if record_path.exists():
        return json.loads(record_path.read_text())
    walker = WalkerSpec(**spec)
    if walker.kind == "volume-scan":
        record = _volume_scan(walker, start, out)
    else:
        record = _npt(walker, start[-1], model_paths, out, trust_hi_eV_per_A,
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


def _npt(walker: WalkerSpec, start: Atoms, model_paths: list[str], out: Path,
         trust_hi: float, density_window: tuple[float, float]) -> dict:
    from ionmix.active.committee import ExplorationStop, load_committee
    from ionmix.md import MDBlowUp, MDSettings, read_thermo, run_md

    calc = load_committee(model_paths, stop_above_eV_per_A=trust_hi,
                          density_window_g_cm3=tuple(density_window))
    settings = MDSettings(ensemble="npt", temperature_K=walker.temperature_K,
                          pressure_bar=walker.pressure_bar, n_steps=walker.n_steps,
                          timestep_fs=walker.timestep_fs,
                          log_interval_steps=math.gcd(10, walker.trajectory_interval_steps),
                          trajectory_interval_steps=walker.trajectory_interval_steps)
    status, reason = "done", ""
    try:
        run_md(start, calc, settings, out)
    except ExplorationStop as exc:
        status, reason = "stopped", str(exc)
    except MDBlowUp as exc:
        status, reason = "blew_up", str(exc)
    record = {"kind": "npt", "status": status, "reason": reason,
              "temperature_K": walker.temperature_K, "pressure_bar": walker.pressure_bar}
    traj = out / "trajectory.extxyz"
    frames = ase.io.read(traj, ":") if traj.exists() and traj.stat().st_size else []
    if frames:
        ase.io.write(out / CANDIDATES_FILE, frames)
    record["n_candidates"] = len(frames)
    thermo_path = out / "thermo.csv"
    if status == "done" and thermo_path.exists():
        record.update(_density(read_thermo(thermo_path)["density_g_cm3"]))
    return record


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
