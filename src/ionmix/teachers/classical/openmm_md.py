"""The classical teacher's own MD in OpenMM: the one place OpenMM integrators, barostats
and contexts are set up (sampling's equilibration and production, and the teacher's NPT
density).

* `npt_context` / `nvt_context`: a Context for a `ClassicalSystem` in one ensemble.
* `run_steps`: integrate, turning OpenMM's failures into an error that names the run.
* `settle_npt`: NPT in chunks until the density has plateaued (or a maximum time).
* `classical_npt_density`: the teacher's NPT density of a stored frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import openmm
import openmm.unit as u
from ase import Atoms

from ionmix import stats as P
from ionmix.errors import RunError
from ionmix.teachers.classical.system import ClassicalSystem, make_context
from ionmix.units import NM_IN_ANGSTROM, density_g_per_cm3, kj_per_mol_to_ev


class OpenMMRunError(RunError):
    """OpenMM stopped during a run (NaN coordinates, a box smaller than twice the cutoff)."""


def _with_force(csys: ClassicalSystem, force: openmm.Force | None) -> ClassicalSystem:
    """A copy of `csys` whose System also holds `force` (the original stays untouched, so
    one ClassicalSystem can serve several contexts)."""
    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(csys.system))
    if force is not None:
        system.addForce(force)
    return replace(csys, system=system)


def _langevin(temperature_K: float, thermostat_time_ps: float, timestep_fs: float,
              seed: int) -> openmm.LangevinMiddleIntegrator:
    integrator = openmm.LangevinMiddleIntegrator(
        temperature_K * u.kelvin, 1.0 / (thermostat_time_ps * u.picosecond),
        timestep_fs * u.femtosecond)
    integrator.setRandomNumberSeed(seed)
    return integrator


def npt_context(csys: ClassicalSystem, temperature_K: float, pressure_bar: float,
                timestep_fs: float = 1.0, thermostat_time_ps: float = 1.0,
                barostat_interval_steps: int = 25, seed: int = 0,
                platform: str | openmm.Platform | None = None) -> openmm.Context:
    """NPT: Langevin middle integrator (friction 1/`thermostat_time_ps`) + isotropic Monte
    Carlo barostat every `barostat_interval_steps` steps. `seed` seeds both (0 would let
    OpenMM pick one at random; a given seed makes the run reproducible)."""
    barostat = openmm.MonteCarloBarostat(pressure_bar * u.bar, temperature_K * u.kelvin,
                                         barostat_interval_steps)
    barostat.setRandomNumberSeed(seed)
    integrator = _langevin(temperature_K, thermostat_time_ps, timestep_fs, seed)
    return make_context(_with_force(csys, barostat), integrator, platform)


def nvt_context(csys: ClassicalSystem, temperature_K: float, timestep_fs: float = 1.0,
                thermostat_time_ps: float = 0.1, seed: int = 0,
                platform: str | openmm.Platform | None = None,
                thermostat: str = "nose-hoover") -> openmm.Context:
    """NVT: Nosé–Hoover (deterministic, the paper's; `seed` unused) or ``"langevin"``
    (friction 1/`thermostat_time_ps`)."""
    if thermostat == "nose-hoover":
        integrator = openmm.NoseHooverIntegrator(
            temperature_K * u.kelvin, 1.0 / (thermostat_time_ps * u.picosecond),
            timestep_fs * u.femtosecond)
    elif thermostat == "langevin":
        integrator = _langevin(temperature_K, thermostat_time_ps, timestep_fs, seed)
    else:
        raise ValueError(f"thermostat must be 'nose-hoover' or 'langevin', got {thermostat!r}")
    return make_context(_with_force(csys, None), integrator, platform)


def run_steps(ctx: openmm.Context, n_steps: int, what: str, hint: str = "",
              error: type[RunError] = OpenMMRunError) -> None:
    """Integrate `n_steps`; an OpenMM failure becomes `error` naming `what` (e.g. "run
    x_T300K_r0"), followed by `hint` (what the user can change)."""
    try:
        ctx.getIntegrator().step(n_steps)
    except openmm.OpenMMException as exc:
        raise error(f"{what}: OpenMM stopped: {exc}" + (f". {hint}" if hint else "")) from None


def box_A(state: openmm.State) -> np.ndarray:
    """Periodic box vectors of `state`, shape (3, 3), Å."""
    return np.array(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.angstrom))


def positions_A(state: openmm.State) -> np.ndarray:
    """Positions of `state`, shape (n_atoms, 3), Å."""
    return np.array(state.getPositions(asNumpy=True).value_in_unit(u.angstrom))


# --------------------------------------------------------------------------------------
# NPT until the box has settled


def settle_npt(ctx: openmm.Context, mass_amu: float, min_ps: float, max_ps: float,
               timestep_fs: float, what: str, hint: str = "",
               error: type[RunError] = OpenMMRunError, sample_interval_ps: float = 0.1,
               on_sample: Callable[[dict], None] | None = None) -> dict:
    """Run NPT (`ctx` from `npt_context`) for at least `min_ps` and until the density has
    plateaued (`stats.plateau_check` on the density every `sample_interval_ps`), but at
    most `max_ps`. A freshly packed ionic liquid expands or shrinks over 10–100 ps; frames
    or a volume taken before that belong to no equilibrium box.

    The check is made at `min_ps`, then every max(1 ps, `min_ps`/4), and at `max_ps`.

    Args:
        mass_amu: total mass of the system (for the density).
        on_sample: called with each sample row (``time_ps``, ``potential_eV``,
            ``volume_A3``, ``density_g_cm3``), e.g. to log it.

    Returns: ``settled`` (bool), ``time_ps`` (run), ``settled_from_ps`` (start of the
    settled part), ``drift_sigma`` (`stats.plateau_check`),
    ``density_g_cm3`` and ``volume_A3`` (means over the
    settled part), ``volumes_A3`` (whole series).
    """
    chunk_steps = max(1, int(round(sample_interval_ps * 1000.0 / timestep_fs)))
    dt_ps = chunk_steps * timestep_fs / 1000.0
    n_min = int(round(min_ps / dt_ps))
    n_max = max(n_min, int(round(max_ps / dt_ps)))
    n_check_every = max(1, int(round(max(1.0, min_ps / 4.0) / dt_ps)))
    volumes: list[float] = []
    check = None
    while len(volumes) < n_max:
        run_steps(ctx, chunk_steps, what, hint, error)
        st = ctx.getState(getEnergy=True)
        volumes.append(float(abs(np.linalg.det(box_A(st)))))
        if on_sample is not None:
            on_sample({"time_ps": len(volumes) * dt_ps, "potential_eV": float(kj_per_mol_to_ev(
                st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))),
                "volume_A3": volumes[-1],
                "density_g_cm3": density_g_per_cm3(mass_amu, volumes[-1])})
        n = len(volumes)
        if n == n_max or (n >= n_min and (n - n_min) % n_check_every == 0):
            check = P.plateau_check(volumes)
            if check["settled"]:
                break
    if check is None:  # max_ps = 0: nothing run
        return {"settled": True, "time_ps": 0.0, "settled_from_ps": 0.0, "drift_sigma": None,
                "density_g_cm3": None, "volume_A3": None, "volumes_A3": []}
    t0 = check["equilibration_index"]
    mean_volume = float(np.mean(volumes[t0:]))
    return {"settled": check["settled"], "time_ps": len(volumes) * dt_ps,
            "settled_from_ps": t0 * dt_ps, "drift_sigma": check["drift_sigma"],
            "density_g_cm3": density_g_per_cm3(mass_amu, mean_volume),
            "volume_A3": mean_volume, "volumes_A3": volumes}


# --------------------------------------------------------------------------------------
# the teacher's NPT density


def classical_npt_density(atoms: Atoms, temperature_K: float = 300.0,
                          pressure_bar: float = 1.0, time_ps: float = 200.0,
                          sample_interval_ps: float = 0.1, seed: int = 0,
                          equilibration_fraction: float = P.EQUILIBRATION_FRACTION,
                          teacher=None, thermostat_time_ps: float = 1.0) -> dict:
    """The classical teacher's own NPT density, run natively in OpenMM (~100× faster than
    the same force field through ASE): Langevin middle integrator (1 fs, friction
    1/`thermostat_time_ps`) and a Monte Carlo barostat (every 25 steps), same force field,
    charge scale and cutoff as the labels: those of `teacher` (a `ClassicalTeacher`), else
    read from ``atoms.info`` (as stored by ``ionmix sample``) with library ions.

    Returns: ``density_g_cm3`` and ``density_err_g_cm3`` (mean and standard error of the
    production part, `stats.series_summary`: automatic equilibration detection, at least
    `equilibration_fraction` discarded), ``drift_sigma``, ``equilibration_time_ps``,
    ``statistical_inefficiency``, ``time_ps`` and the whole ``series`` (g/cm³, every
    `sample_interval_ps`).
    """
    from ionmix.chemistry.topology import molecules_of
    from ionmix.teachers.classical.system import make_system

    if teacher is None:
        kw = {"charge_scale": float(atoms.info.get("charge_scale", 0.8)),
              "cutoff_A": atoms.info.get("cutoff_A")}
    else:
        kw = teacher.system_kwargs()
    csys = make_system(molecules_of(atoms), atoms.cell.array, **kw)
    ctx = npt_context(csys, temperature_K, pressure_bar, timestep_fs=1.0,
                      thermostat_time_ps=thermostat_time_ps, barostat_interval_steps=25,
                      seed=seed + 1)
    ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in atoms.cell.array / NM_IN_ANGSTROM])
    ctx.setPositions(atoms.positions / NM_IN_ANGSTROM)
    ctx.setVelocitiesToTemperature(temperature_K * u.kelvin, seed + 1)
    mass = float(np.sum(csys.masses_amu))
    steps = max(1, int(round(sample_interval_ps * 1000.0)))
    series = []
    for _ in range(int(round(time_ps / sample_interval_ps))):
        run_steps(ctx, steps, f"NPT density at {temperature_K:g} K")
        volume = float(abs(np.linalg.det(box_A(ctx.getState()))))
        series.append(density_g_per_cm3(mass, volume))
    summary = P.series_summary(series, equilibration_fraction)
    return {"density_g_cm3": summary["mean"], "density_err_g_cm3": summary["err"],
            "drift_sigma": summary["drift_sigma"],
            "equilibration_time_ps": summary["equilibration_index"] * sample_interval_ps,
            "statistical_inefficiency": summary["statistical_inefficiency"],
            "time_ps": time_ps, "series": series}
