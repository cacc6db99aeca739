"""Transport-grade trajectories of the classical teacher, run natively in OpenMM.

`classical_transport_run` (beside `ionmix.teachers.classical.openmm_md`, the engine it
drives) writes a run folder that `ionmix props transport` and
`ionmix props structure` read exactly like an ``ionmix md`` run: ``md.json`` (settings with
``temperature_K``), ``trajectory.extxyz`` (one frame every ``frame_interval_ps``, positions
*unwrapped*, ``step`` and ``time_ps`` in the frame info, the molecule arrays and the
``charge_scale``) and ``provenance.json`` (the ion set, user ions included).

Protocol (why each stage):

1. energy minimisation: a Packmol box has close contacts;
2. NPT equilibration (Langevin middle integrator, 1 ps⁻¹, Monte Carlo barostat every 25
   steps): brings the box to the force field's density;
   at least ``equilibration_ps`` and until the density has plateaued
   (`ionmix.teachers.classical.openmm_md.settle_npt`, at most 3×);
3. the box is set to the mean volume of the settled part (positions scaled molecule by
   molecule, so no bond is stretched);
4. NVT production with a Nosé–Hoover chain (OpenMM's `NoseHooverIntegrator`): deterministic
   and momentum-conserving, so collective (conductivity) and self transport are not damped
   by a stochastic thermostat; no barostat, because the Monte Carlo barostat moves molecule
   centres by box scaling and would put jumps into unwrapped coordinates.

The ~100× speed over ASE with the same force field (`ionmix.teachers.classical`) is what
makes ns-long runs feasible on a CPU.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix.chemistry.ionset import IonSet
from ionmix.chemistry.topology import (
    MOL_ID_ARRAY,
    attach_molecules,
    carry_metadata,
    molecules_of,
)
from ionmix.files import atomic_write_json
from ionmix.progress import Progress

__all__ = ["TransportRunSettings", "classical_transport_run"]


@dataclass(frozen=True)
class TransportRunSettings:
    """Settings of a teacher transport run; units in the names."""

    temperature_K: float = 300.0
    pressure_bar: float = 1.0
    timestep_fs: float = 1.0
    equilibration_ps: float = 100.0
    production_ps: float = 2000.0
    frame_interval_ps: float = 1.0
    #: Nosé–Hoover collision frequency of the production run, ps⁻¹.
    thermostat_per_ps: float = 1.0
    charge_scale: float = 0.8
    cutoff_A: float | None = None
    seed: int = 0
    #: Hydrogen mass repartitioning: each H gets this mass, taken from the heavy atom it is
    #: bonded to (molecule masses unchanged, so centre-of-mass transport is barely touched);
    #: lets a 2 fs step run without constraints. None: physical masses.
    hydrogen_mass_amu: float | None = None


def _temperature_K(state, n_atoms: int) -> float:
    """Instantaneous temperature of an OpenMM state (3N − 3 degrees of freedom: the
    centre-of-mass motion is removed)."""
    import openmm.unit as u

    kinetic_J_per_mol = state.getKineticEnergy().value_in_unit(u.joule / u.mole)
    return float(2.0 * kinetic_J_per_mol / ((3 * n_atoms - 3) * 8.314462618))


def _frame(atoms: Atoms, positions_A: np.ndarray, cell_A: float, step: int,
           time_ps: float) -> Atoms:
    frame = carry_metadata(atoms, Atoms(atoms.get_chemical_symbols(), positions=positions_A,
                                        cell=[cell_A] * 3, pbc=True))
    frame.set_masses(atoms.get_masses())
    frame.info.update(step=step, time_ps=time_ps)
    return frame


def classical_transport_run(atoms: Atoms, out_dir: str | os.PathLike,
                            settings: TransportRunSettings = TransportRunSettings(),
                            progress: Progress | None = None,
                            ions: IonSet | None = None) -> Path:
    """Equilibrate (NPT) and run NVT production of the classical teacher in OpenMM.

    Args:
        atoms: a box with molecule information (e.g. from `ionmix.build.build_box`).
        out_dir: run folder (created); see the module docstring for what it holds.
        progress: called as ``progress(production_ps_done, production_ps, "production
            ps")`` (`ionmix.progress.Progress`).
        ions: the box's ion set (user ions: e.g. ``Provenance.ion_set`` of a stored frame,
            or ``IonSet.from_config``); default: the library ions of its molecules.

    Returns: the path of ``trajectory.extxyz``.
    """
    import ase.io
    import openmm
    import openmm.unit as u

    from ionmix.chemistry.topology import rescale_molecules
    from ionmix.teachers.classical import make_system, repartition_hydrogen_mass
    from ionmix.teachers.classical.openmm_md import (
        box_A,
        npt_context,
        nvt_context,
        positions_A,
        settle_npt,
    )
    from ionmix.units import NM_IN_ANGSTROM

    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = molecules_of(atoms)
    ions = ions if ions is not None else IonSet.library([name for name, _ in runs])
    # both forms of the molecules (a stored frame carries only the "molecules" text)
    atoms = attach_molecules(atoms.copy(), runs, {name: ions[name].n_atoms for name, _ in runs})
    csys = make_system(runs, atoms.cell.array, charge_scale=s.charge_scale,
                       cutoff_A=s.cutoff_A, ions=ions)
    t_K = s.temperature_K * u.kelvin
    steps_per_ps = int(round(1000.0 / s.timestep_fs))
    if s.hydrogen_mass_amu is not None:
        repartition_hydrogen_mass(csys.system, csys.elements, s.hydrogen_mass_amu)
    masses = np.asarray(csys.masses_amu)
    mol_id = np.asarray(atoms.arrays[MOL_ID_ARRAY])

    # 1–2: minimise and equilibrate at constant pressure until the density has settled
    ctx = npt_context(csys, s.temperature_K, s.pressure_bar, timestep_fs=s.timestep_fs,
                      thermostat_time_ps=1.0, barostat_interval_steps=25, seed=s.seed + 1)
    ctx.setPositions(atoms.positions / NM_IN_ANGSTROM)
    openmm.LocalEnergyMinimizer.minimize(ctx, maxIterations=500)
    ctx.setVelocitiesToTemperature(t_K, s.seed + 1)
    settled = settle_npt(ctx, float(masses.sum()), s.equilibration_ps,
                         3.0 * s.equilibration_ps, s.timestep_fs, "transport run equilibration")

    # 3: fix the box at the mean volume of the settled part (molecules kept rigid)
    state = ctx.getState(getPositions=True, getVelocities=True)
    edge_A = settled["volume_A3"] ** (1.0 / 3.0)
    factor = edge_A / float(box_A(state)[0][0])
    pos_A = rescale_molecules(positions_A(state), mol_id, masses, factor)
    velocities = state.getVelocities()
    del ctx
    cell_nm = edge_A / NM_IN_ANGSTROM

    # 4: NVT production, unwrapped positions straight from OpenMM (it never wraps them)
    ctx = nvt_context(csys, s.temperature_K, timestep_fs=s.timestep_fs,
                      thermostat_time_ps=1.0 / s.thermostat_per_ps, thermostat="nose-hoover")
    integrator = ctx.getIntegrator()
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in np.eye(3) * cell_nm])
    ctx.setPositions(pos_A / NM_IN_ANGSTROM)
    ctx.setVelocities(velocities)
    meta = {"engine": "openmm", "calculator": "classical teacher (OpenMM)",
            "settings": {**asdict(s), "ensemble": "nvt",
                         "trajectory_interval_steps": int(round(s.frame_interval_ps
                                                                * steps_per_ps))},
            "n_atoms": len(atoms), "box_A": edge_A, "molecules": atoms.info.get("molecules"),
            "platform": ctx.getPlatform().getName(), "status": "running"}
    atomic_write_json(out / "md.json", meta)
    # the format `ionmix.dataset.provenance` reads (a layer above the teachers, so written
    # here as Provenance.write would)
    atomic_write_json(out / "provenance.json",
                      {"teachers": {}, "ion_sets": {ions.key: ions.record}})
    template = atoms.copy()
    template.info["charge_scale"] = s.charge_scale
    steps_per_frame = meta["settings"]["trajectory_interval_steps"]
    n_frames = int(round(s.production_ps / s.frame_interval_ps))
    traj_path = out / "trajectory.extxyz"
    t0 = time.perf_counter()
    temperatures_K = []
    with open(traj_path, "w", encoding="utf-8") as fh:
        for k in range(n_frames + 1):
            if k:
                integrator.step(steps_per_frame)
            state = ctx.getState(getPositions=True, getEnergy=True)
            if k:
                temperatures_K.append(_temperature_K(state, len(atoms)))
            pos = state.getPositions(asNumpy=True)
            time_ps = float(k * s.frame_interval_ps)
            ase.io.write(fh, _frame(template, np.asarray(pos.value_in_unit(u.angstrom)),
                                    edge_A, k * steps_per_frame, time_ps), format="extxyz")
            fh.flush()
            if progress is not None:
                progress(time_ps, s.production_ps, "production ps")
    wall = time.perf_counter() - t0
    meta.update(status="done", wall_s=wall,
                mean_temperature_K=float(np.mean(temperatures_K)) if temperatures_K else None,
                ns_per_day=s.production_ps * 1e-3 / (wall / 86400.0) if wall > 0 else None)
    atomic_write_json(out / "md.json", meta)
    return traj_path
