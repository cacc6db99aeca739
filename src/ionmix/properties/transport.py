"""Transport from MD: self-diffusion, ionic conductivity, Onsager coefficients and
transference numbers, from the molecular centres of mass of an unwrapped trajectory.

The analysis has the shape of every ionmix study: `prepare_transport` (read and check the
trajectory frame by frame: molecules, atom order, times, charges, temperature; positions
wrapped into the box are unwrapped, `ionmix.properties.unwrap`) → `compute_transport`
(the correlation functions and their fits) → a `TransportResult` (JSON +
`ionmix.report.transport.plot_msd`).

Definitions (Fong, Self, McCloskey & Persson, Macromolecules 2021, 54, 2575; barycentric
reference frame: every position is taken relative to the centre of mass of the whole
system, so a drift of the box as a whole contributes nothing):

* ``X_i(t) = Σ_{α ∈ i} r_α(t)``: summed centre-of-mass positions of the molecules of species
  i (Å);
* self-diffusion ``D_i = lim (1 / 6 N_i τ) Σ_{α ∈ i} ⟨|Δr_α(τ)|²⟩``;
* Onsager coefficients ``L_ij = lim (1 / 6 k_B T V τ) ⟨ΔX_i(τ) · ΔX_j(τ)⟩``, split into the
  self part ``δ_ij N_i D_i / (k_B T V)`` and the distinct part (the rest); reported in
  mol² J⁻¹ m⁻¹ s⁻¹ (molar fluxes driven by molar chemical-potential gradients);
* conductivity (Einstein–Helfand) ``σ = e² Σ_ij z_i z_j L_ij`` and Nernst–Einstein
  ``σ_NE = e² Σ_i z_i² N_i D_i / (k_B T V)`` with the charges z_i of the ion set times the
  charge scale recorded with the frames (formal charges on request);
* transference number ``t_i = z_i Σ_j z_j L_ij / Σ_jk z_j z_k L_jk`` (sums to 1; it can be
  negative when a species moves, on average, against its own field-driven flux).

Diffusive window (the documented rule): the correlation functions are fitted by ordinary
least squares in the lag window ``[τ_lo, τ_hi]``. ``τ_hi`` is half the length of one of the
`n_segments` equal segments of the run. ``τ_lo`` is, for each species, the first lag from
which the log-log slope of its self MSD, measured over a factor 2 in lag
(``β(τ) = log2(MSD(2τ)/MSD(τ))``), stays within ``1 ± slope_tolerance`` up to ``τ_hi``; the
collective quantities use the latest ``τ_lo`` of all species. A species that never gets
there is flagged ``diffusive: false`` and the result carries a warning: its number is the
slope over the second half of the window, not a diffusion coefficient.

Uncertainty (multiple-origin block statistics): the value uses every time origin of the
whole run; the error is the standard error over the `n_segments` disjoint segments, each
analysed alone with the same window (segments longer than twice the window are nearly
independent for diffusive motion, so the error is honest, and conservative for the
whole-run value). It has only ``n_segments − 1`` degrees of freedom (a 95 % interval is
3.18 standard errors with 4 segments, Student's t); for D, the standard error of the
per-molecule values (N − 1 degrees of freedom) is a floor. Ratios (t_i, σ/σ_NE) carry
errors from the segment-to-segment scatter of the ratio's linearisation.

Why not kinisi: its estimators work on atom positions (or their centres via its own
trajectory parsers); the Onsager cross terms and transference numbers need the same
displacements for all species at once, which it does not provide, so one estimator serves
all quantities here. tidynamics provides the FFT multiple-origin MSD for the figure.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ionmix.chemistry.topology import (
    ION_NAME_ARRAY,
    MOL_ID_ARRAY,
    TopologyError,
    attach_molecules,
    decode_runs,
    has_molecules,
    molecules_of,
)
from ionmix.errors import InputError
from ionmix.progress import Progress
from ionmix.properties.foreign import Topology
from ionmix.properties.unwrap import UnwrapError, continuous_centres_A
from ionmix.units import A3_IN_M3, AVOGADRO_PER_MOL, BOLTZMANN_J_PER_K, ELEMENTARY_CHARGE_C

__all__ = [
    "TransportError",
    "TransportInput",
    "TransportResult",
    "compute_transport",
    "diffusive_window",
    "prepare_transport",
    "transport_analysis",
]

#: 1 Å²/ps in cm²/s and in m²/s.
A2_PER_PS_IN_CM2_PER_S = 1.0e-4
A2_PER_PS_IN_M2_PER_S = 1.0e-8


class TransportError(InputError):
    """A trajectory that cannot give transport coefficients (the message says why)."""


# --------------------------------------------------------------------------------------
# prepare: read and check, frame by frame


@dataclass(frozen=True)
class TransportInput:
    """A checked trajectory reduced to what transport needs.

    Attributes:
        time_ps: shape (n_frames,), evenly spaced, increasing.
        com_A: molecular centres of mass in the barycentric frame, shape
            (n_frames, n_molecules, 3), Å, unwrapped.
        species: species (ion) names, in order of first appearance.
        mol_species: shape (n_molecules,), index into `species`.
        charges_e: charge per species as used (scaled or formal), e.
        charge_scale: factor applied to the formal charges (1.0 with formal charges).
        volume_A3: mean cell volume, Å³.
        temperature_K: temperature, K.
        source: where the frames came from.
        n_atoms: atoms per frame.
        cell_lengths_A: mean cell lengths, Å.
    """

    time_ps: np.ndarray
    com_A: np.ndarray
    species: tuple[str, ...]
    mol_species: np.ndarray
    charges_e: np.ndarray
    charge_scale: float
    volume_A3: float
    temperature_K: float
    source: str
    n_atoms: int
    cell_lengths_A: tuple[float, float, float]

    @property
    def counts(self) -> np.ndarray:
        """Molecules per species, shape (n_species,)."""
        return np.bincount(self.mol_species, minlength=len(self.species))


def trajectory_path(path: str | os.PathLike) -> Path:
    """The trajectory of a run folder (``trajectory.extxyz``) or the file itself."""
    path = Path(path)
    if path.is_dir():
        path = path / "trajectory.extxyz"
    if not path.is_file():
        raise TransportError(f"{path}: no such trajectory (give an `ionmix md` run folder or "
                             "a trajectory file)")
    return path


def run_temperature_K(path: Path) -> float | None:
    """``settings.temperature_K`` of the run's ``md.json`` beside the trajectory, if any."""
    md = path.parent / "md.json"
    if not md.is_file():
        return None
    try:
        return float(json.loads(md.read_text())["settings"]["temperature_K"])
    except (KeyError, TypeError, ValueError):
        return None


def read_trajectory(path: str | os.PathLike, molecules: str | None = None,
                    topology: Topology | None = None) -> list[Atoms]:
    """All frames of a trajectory with molecule information: from the frames, or
    `molecules` as ``"Li:1,EMIM:9,PF6:10"`` for a file without it, or from the `topology`
    of a LAMMPS/GROMACS trajectory (`ionmix.properties.foreign`). TransportError without
    any."""
    from ionmix.files import read_frames

    if topology is not None:
        if molecules is not None:
            raise TransportError("give the molecules by --molecules or by --topology, "
                                 "not both")
        from ionmix.properties.foreign import read_foreign_trajectory

        return read_foreign_trajectory(path, topology)
    frames = read_frames(path, ":", what="trajectory")
    if molecules is None and MOL_ID_ARRAY not in frames[0].arrays and has_molecules(frames[0]):
        molecules = frames[0].info["molecules"]  # e.g. frames of a dataset store
    if molecules is not None:
        from ionmix.dataset.provenance import load_provenance

        runs = decode_runs(molecules)
        ions = load_provenance(path).ion_set(Atoms(info={"molecules": molecules}))
        per_ion = {name: ions[name].n_atoms for name, _ in runs if name in ions}
        missing = [name for name, _ in runs if name not in per_ion]
        if missing:
            raise TransportError(f"--molecules names {', '.join(missing)}, which the ion set "
                                 "does not hold")
        for frame in frames:
            attach_molecules(frame, runs, per_ion)
        _check_molecule_elements(frames[0], runs, ions, molecules)
    elif not has_molecules(frames[0]):
        raise TransportError(
            f"{path}: the frames carry no molecule information (mol_id/ion_name arrays or "
            "info 'molecules') and no ion set was given: give --molecules "
            "'ION:COUNT,...' in atom order (e.g. Li:1,EMIM:9,PF6:10), or analyse an "
            "`ionmix md` trajectory")
    return frames


def _check_molecule_elements(frame: Atoms, runs, ions, molecules: str) -> None:
    """TransportError naming the first molecule whose atoms are not its ion's elements in
    the ion's order: right counts in the wrong order (``PF6:10,Li:1,...`` for a file that
    lists Li first) would otherwise surface later as molecules "split across the box"."""
    symbols = frame.get_chemical_symbols()
    start, k = 0, 0
    for name, count in runs:
        expected = list(ions[name].elements)
        for _ in range(count):
            got = symbols[start:start + len(expected)]
            if got != expected:
                raise TransportError(
                    f"--molecules {molecules!r} does not match the atoms: molecule {k} "
                    f"({name}, atoms {start}–{start + len(expected) - 1}) holds "
                    f"{' '.join(got[:8])}{' …' if len(got) > 8 else ''}, but {name} is "
                    f"{' '.join(expected[:8])}{' …' if len(expected) > 8 else ''}; list the "
                    "ions in the order their atoms appear in the file")
            start += len(expected)
            k += 1


def frame_times_ps(frames: Sequence[Atoms], time_step_ps: float | None = None) -> np.ndarray:
    """Times of the frames (ps): their ``time_ps`` info, else ``k × time_step_ps`` (the
    frames' ``step`` numbers, when they have them, must then be evenly spaced).

    Raises TransportError for missing, non-increasing or unevenly spaced times (the
    multiple-origin averages need one spacing).
    """
    if time_step_ps is not None:
        if not time_step_ps > 0:
            raise TransportError(f"--time-step-ps must be positive, got {time_step_ps}")
        steps = np.diff([f.info["step"] for f in frames if "step" in f.info])
        if len(steps) == len(frames) - 1 and steps.size and (np.ptp(steps) or steps.min() <= 0):
            raise TransportError(f"the saved steps are not evenly spaced ({steps.min()} to "
                                 f"{steps.max()} steps apart); --time-step-ps needs one "
                                 "spacing")
        return np.arange(len(frames)) * float(time_step_ps)
    if any("time_ps" not in f.info for f in frames):
        raise TransportError("the frames carry no times (a LAMMPS dump holds steps only, an "
                             "extxyz file may hold none); give the time between saved "
                             "frames with --time-step-ps")
    t = np.array([float(f.info["time_ps"]) for f in frames])
    dt = np.diff(t)
    if len(t) > 1 and (np.any(dt <= 0) or np.ptp(dt) > 1e-6 * max(abs(dt.mean()), 1e-12)):
        raise TransportError(
            f"frame times are not evenly spaced and increasing (steps between {dt.min():g} "
            f"and {dt.max():g} ps); was the trajectory concatenated or restarted with "
            "another interval?")
    return t


def _molecule_index(frame: Atoms) -> tuple[np.ndarray, list[str]]:
    """Per-atom molecule index (n_atoms,) and the ion name of each molecule."""
    if MOL_ID_ARRAY in frame.arrays and ION_NAME_ARRAY in frame.arrays:
        molecules_of(frame)  # validates the arrays
        mol = np.asarray(frame.arrays[MOL_ID_ARRAY], dtype=int)
        names = np.asarray(frame.arrays[ION_NAME_ARRAY])
        starts = np.r_[0, np.flatnonzero(np.diff(mol)) + 1]
        return mol, [str(names[s]) for s in starts]
    raise TopologyError("the frame has no mol_id/ion_name arrays")  # pragma: no cover


def _check_same_atoms(frame: Atoms, ref: Atoms, k: int, mol: np.ndarray) -> None:
    """TransportError if frame `k` has other atoms, order or molecules than frame 0."""
    if len(frame) != len(ref) or np.any(frame.numbers != ref.numbers):
        raise TransportError(
            f"frame {k} has another number or order of atoms than frame 0; transport needs "
            "every frame to list the same atoms in the same order (do not sort or re-wrap "
            "by molecule between frames)")
    if MOL_ID_ARRAY in frame.arrays and np.any(frame.arrays[MOL_ID_ARRAY] != mol):
        raise TransportError(f"frame {k} assigns atoms to other molecules than frame 0")


def _charges(path: Path, frame: Atoms, species: Sequence[str],
             formal_charges: bool) -> tuple[np.ndarray, float]:
    """Charge per species (e) and the charge scale applied: the ion set's integer charges
    times the frames' ``charge_scale`` (1.0 with `formal_charges` or when none is
    recorded)."""
    from ionmix.dataset.provenance import load_provenance

    ions = load_provenance(path).ion_set(frame)
    missing = [s for s in species if s not in ions]
    if missing:
        raise TransportError(f"the ion set of {path} has no ion {', '.join(missing)}; keep "
                             "provenance.json beside the trajectory")
    scale = 1.0 if formal_charges else float(frame.info.get("charge_scale", 1.0))
    return np.array([ions[s].charge * scale for s in species], dtype=float), scale


def prepare_transport(path: str | os.PathLike, *, temperature_K: float | None = None,
                      time_step_ps: float | None = None, molecules: str | None = None,
                      formal_charges: bool = False,
                      topology: Topology | None = None) -> TransportInput:
    """Read a trajectory (run folder or file) and check it for transport (see the module
    docstring). Positions wrapped into the box are unwrapped (`ionmix.properties.unwrap`:
    molecules made whole, centres followed by the nearest-image rule). TransportError
    names what is wrong: no molecule information, changing atom order, a molecule that
    cannot be made whole or followed between frames, uneven times, no temperature."""
    path = trajectory_path(path)
    frames = read_trajectory(path, molecules, topology)
    if len(frames) < 8:
        raise TransportError(f"{path}: {len(frames)} frames; transport needs a run of many "
                             "saved frames (hundreds for a diffusive regime)")
    if temperature_K is None:
        temperature_K = run_temperature_K(path)
    if temperature_K is None or not temperature_K > 0:
        raise TransportError(f"no temperature: {path.parent / 'md.json'} gives none; pass "
                             "--temperature-K")
    time_ps = frame_times_ps(frames, time_step_ps)
    ref = frames[0]
    mol, mol_names = _molecule_index(ref)
    species = tuple(dict.fromkeys(mol_names))
    mol_species = np.array([species.index(n) for n in mol_names])
    masses = ref.get_masses()
    mol_mass = np.bincount(mol, weights=masses)
    for k, frame in enumerate(frames):
        _check_same_atoms(frame, ref, k, mol)
    try:
        com = continuous_centres_A(frames, mol, mol_names, masses)
    except UnwrapError as exc:
        raise TransportError(f"{path}: {exc}") from None
    # barycentric frame: the system's centre of mass at rest
    com -= np.average(com, axis=1, weights=mol_mass)[:, None, :]
    volumes = [frame.get_volume() for frame in frames]
    lengths = [frame.cell.lengths() for frame in frames]
    charges, scale = _charges(path, ref, species, formal_charges)
    return TransportInput(time_ps=time_ps, com_A=com, species=species,
                          mol_species=mol_species, charges_e=charges, charge_scale=scale,
                          volume_A3=float(np.mean(volumes)), temperature_K=float(temperature_K),
                          source=str(path), n_atoms=len(ref),
                          cell_lengths_A=tuple(float(x) for x in np.mean(lengths, axis=0)))


# --------------------------------------------------------------------------------------
# correlation functions


def msd_curve_A2(com_A: np.ndarray) -> np.ndarray:
    """Multiple-origin MSD averaged over molecules, shape (n_frames,), Å² (lag 0 … n − 1),
    by tidynamics' FFT algorithm.

    Args:
        com_A: shape (n_frames, n_molecules, 3).
    """
    import tidynamics

    return np.mean([tidynamics.msd(com_A[:, m, :]) for m in range(com_A.shape[1])], axis=0)


def collective_curve_A2(a_A: np.ndarray, b_A: np.ndarray) -> np.ndarray:
    """Multiple-origin ⟨ΔA(τ)·ΔB(τ)⟩ of two summed displacements, shape (n_frames,), Å²
    (from MSDs of A + B, A and B, which tidynamics computes by FFT).

    Args:
        a_A, b_A: shape (n_frames, 3).
    """
    import tidynamics

    if a_A is b_A:
        return tidynamics.msd(a_A)
    return 0.5 * (tidynamics.msd(a_A + b_A) - tidynamics.msd(a_A) - tidynamics.msd(b_A))


@dataclass(frozen=True)
class Window:
    """A fit window in lag time and how it was found.

    Attributes:
        lo_ps, hi_ps: window, ps.
        diffusive: the log-log slope rule was met.
        loglog_slope: log-log slope of the MSD over the window (1 for diffusion).
    """

    lo_ps: float
    hi_ps: float
    diffusive: bool
    loglog_slope: float


def diffusive_window(lag_ps: np.ndarray, msd_A2: np.ndarray, hi_ps: float,
                     slope_tolerance: float = 0.2) -> Window:
    """The diffusive window of one self MSD by the module's rule.

    Args:
        lag_ps: shape (n,), evenly spaced from 0. msd_A2: shape (n,).
        hi_ps: end of the window (ps).
        slope_tolerance: accepted |β − 1|.
    """
    dt = lag_ps[1] - lag_ps[0]
    k_hi = int(round(hi_ps / dt))
    ks = np.arange(1, k_hi // 2 + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = np.log2(msd_A2[2 * ks] / msd_A2[ks])
    ok = np.abs(beta - 1.0) <= slope_tolerance
    # first k from which the slope stays near 1 up to the end of the window
    bad = np.flatnonzero(~ok)
    k_lo = ks[bad[-1] + 1] if bad.size and bad[-1] + 1 < ks.size else (
        ks[0] if not bad.size else None)
    diffusive = k_lo is not None
    if k_lo is None:
        k_lo = max(1, k_hi // 2)  # fallback: the second half of the window, flagged
    k_lo = min(k_lo, k_hi - 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = float(np.log(msd_A2[k_hi] / msd_A2[k_lo]) / np.log(k_hi / k_lo))
    return Window(float(k_lo * dt), float(k_hi * dt), bool(diffusive), slope)


def _ols_weights(lags: np.ndarray) -> np.ndarray:
    """Weights w with Σ w f(τ) = OLS slope of f against τ (shape of `lags`)."""
    centred = lags - lags.mean()
    return centred / np.sum(centred**2)


def _window_slopes_A2_per_ps(com_A: np.ndarray, mol_species: np.ndarray, n_species: int,
                             dt_ps: float, k_lo: int, k_hi: int,
                             max_lags: int = 40) -> dict[str, np.ndarray]:
    """OLS slopes (Å²/ps) over lags k_lo…k_hi of the multiple-origin correlation functions:
    ``self`` (n_species,) of Σ_{α∈i} |Δr_α|², ``per_molecule`` (n_molecules,) of |Δr_α|²
    and ``collective`` (n_species, n_species) of ΔX_i·ΔX_j, averaged over every origin with
    t0 + τ_hi inside the run."""
    lags = np.unique(np.linspace(k_lo, k_hi, min(max_lags, k_hi - k_lo + 1)).round()
                     ).astype(int)
    n_origins = com_A.shape[0] - k_hi
    onehot = np.eye(n_species)[mol_species]  # (n_molecules, n_species)
    w = _ols_weights(lags * dt_ps)
    per_molecule = np.zeros(com_A.shape[1])
    coll_slope = np.zeros((n_species, n_species))
    for k, weight in zip(lags, w, strict=True):
        disp = com_A[k:k + n_origins] - com_A[:n_origins]  # (n_origins, n_mol, 3)
        per_molecule += weight * np.sum(disp**2, axis=2).mean(axis=0)
        x = np.einsum("tmd,ms->tsd", disp, onehot)  # summed displacement per species
        coll_slope += weight * np.einsum("tid,tjd->ij", x, x) / n_origins
    return {"self": per_molecule @ onehot, "collective": coll_slope,
            "per_molecule": per_molecule}


# --------------------------------------------------------------------------------------
# conclude


@dataclass
class TransportResult:
    """Transport coefficients with standard errors (see the module docstring).

    Attributes (units in the names; species-indexed dicts):
        diffusion_cm2_per_s: species → {"value", "error", "diffusive", "loglog_slope",
            "fit_window_ps"}.
        conductivity_S_per_m, nernst_einstein_conductivity_S_per_m, conductivity_ratio:
            {"value", "error"} (ratio = σ/σ_NE, the inverse Haven ratio).
        onsager_mol2_per_J_m_s: {"total"|"self"|"distinct": species → species →
            {"value", "error"}}.
        transference_number: species → {"value", "error"}.
        warnings: what makes a number less than it seems (never silent).
    """

    diffusion_cm2_per_s: dict
    conductivity_S_per_m: dict
    nernst_einstein_conductivity_S_per_m: dict
    conductivity_ratio: dict
    onsager_mol2_per_J_m_s: dict
    transference_number: dict
    fit_window_ps: list[float]
    reference_frame: str
    charges_e: dict
    charge_scale: float
    temperature_K: float
    volume_A3: float
    cell_lengths_A: list[float]
    run_length_ps: float
    n_frames: int
    n_molecules: dict
    n_segments: int
    error_degrees_of_freedom: int
    yeh_hummer: dict
    warnings: list[str] = field(default_factory=list)
    source: str = ""
    curves: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        """The JSON object of ``ionmix props transport --json`` (curves left out)."""
        out = asdict(self)
        out.pop("curves")
        out["onsager"] = out["onsager_mol2_per_J_m_s"]
        out["onsager_units"] = "mol^2 J^-1 m^-1 s^-1"
        return out


def _value_error(values: np.ndarray, segments: np.ndarray) -> dict:
    """{"value", "error"}: whole-run value and the standard error over the segments.

    Args:
        values: any shape S. segments: shape (n_segments, *S).
    """
    err = segments.std(axis=0, ddof=1) / np.sqrt(segments.shape[0])
    if np.ndim(values) == 0:
        return {"value": float(values), "error": float(err)}
    return {"value": values.tolist(), "error": err.tolist()}


def _derived(slopes: dict[str, np.ndarray], inp: TransportInput) -> dict[str, np.ndarray]:
    """Every coefficient from the window slopes (Å²/ps), in the units of the result."""
    counts = inp.counts
    kt_v = 6.0 * BOLTZMANN_J_PER_K * inp.temperature_K * inp.volume_A3 * A3_IN_M3
    to_L = A2_PER_PS_IN_M2_PER_S / kt_v  # → 1/(J m s)
    total = slopes["collective"] * to_L
    self_ = np.diag(slopes["self"]) * to_L
    z, e2 = inp.charges_e, ELEMENTARY_CHARGE_C**2
    sigma = e2 * z @ total @ z
    sigma_ne = e2 * np.sum(z**2 * np.diag(self_))
    with np.errstate(divide="ignore", invalid="ignore"):
        diffusion = slopes["self"] / (6.0 * counts) * A2_PER_PS_IN_CM2_PER_S
        transference = z * (total @ z) / (z @ total @ z)
    distinct = total - self_
    # a species of one molecule has no distinct self-correlation: exactly 0, not round-off
    distinct[np.diag(counts == 1)] = 0.0
    d_molecule = slopes["per_molecule"] / 6.0 * A2_PER_PS_IN_CM2_PER_S
    return {"D": diffusion, "D_molecule": d_molecule, "total": total / AVOGADRO_PER_MOL**2,
            "self": self_ / AVOGADRO_PER_MOL**2,
            "distinct": distinct / AVOGADRO_PER_MOL**2, "sigma": sigma,
            "sigma_ne": sigma_ne, "ratio": sigma / sigma_ne, "t": transference}


def _ratio_error(num_whole: float, den_whole: float, num_seg: np.ndarray,
                 den_seg: np.ndarray) -> float:
    """Standard error of num/den by linearisation over segments: se(num − r den)/|den|."""
    r = num_whole / den_whole
    u = num_seg - r * den_seg
    return float(u.std(ddof=1) / np.sqrt(len(u)) / abs(den_whole))


def _matrix_by_species(value: np.ndarray, error: np.ndarray, species) -> dict:
    return {a: {b: {"value": float(value[i, j]), "error": float(error[i, j])}
                for j, b in enumerate(species)} for i, a in enumerate(species)}


def yeh_hummer_correction_cm2_per_s(temperature_K: float, box_length_A: float,
                                    viscosity_Pa_s: float) -> float:
    """Yeh–Hummer finite-size correction k_B T ξ / (6 π η L) (ξ = 2.837297, cubic box),
    to be added to D measured in a periodic box of edge L; cm²/s."""
    xi = 2.837297
    d_m2_per_s = (BOLTZMANN_J_PER_K * temperature_K * xi
                  / (6.0 * math.pi * viscosity_Pa_s * box_length_A * 1e-10))
    return d_m2_per_s * 1e4


def compute_transport(inp: TransportInput, *, n_segments: int = 4,
                      slope_tolerance: float = 0.2, viscosity_Pa_s: float | None = None,
                      ) -> TransportResult:
    """Transport coefficients of a prepared trajectory (see the module docstring for the
    definitions, the window rule and the errors).

    Args:
        n_segments: disjoint segments for the error (≥ 2); the window ends at half a segment.
        slope_tolerance: accepted |log-log slope − 1| of the diffusive window.
        viscosity_Pa_s: shear viscosity for the Yeh–Hummer correction of D (None: not
            applied, and the result says so).
    """
    if n_segments < 2:
        raise TransportError(f"--segments must be ≥ 2 (the error needs them), got {n_segments}")
    n_frames = inp.com_A.shape[0]
    seg_len = n_frames // n_segments
    k_hi = seg_len // 2
    if k_hi < 4:
        raise TransportError(
            f"{n_frames} frames in {n_segments} segments leave {seg_len} frames each; the fit "
            "window needs ≥ 4 lags: run longer, save frames more often or use fewer segments")
    dt = float(inp.time_ps[1] - inp.time_ps[0])
    lag_ps = np.arange(n_frames) * dt
    warnings: list[str] = []
    windows, curves = {}, {"lag_ps": lag_ps[: n_frames // 2 + 1].tolist(), "msd_A2": {}}
    for s, name in enumerate(inp.species):
        msd = msd_curve_A2(inp.com_A[:, inp.mol_species == s, :])
        curves["msd_A2"][name] = msd[: n_frames // 2 + 1].tolist()
        windows[name] = diffusive_window(lag_ps, msd, k_hi * dt, slope_tolerance)
        if not windows[name].diffusive:
            warnings.append(
                f"{name}: no diffusive regime up to {k_hi * dt:g} ps (log-log slope "
                f"{windows[name].loglog_slope:.2f} over the last half of the window, need "
                f"1 ± {slope_tolerance:g}); its D, and every collective number, is not a "
                f"transport coefficient yet: run ≥ {2 * n_segments}× longer than the time "
                "to diffusive motion")
    k_lo = max(int(round(w.lo_ps / dt)) for w in windows.values())
    curves["window_ps"] = [k_lo * dt, k_hi * dt]
    args = (inp.mol_species, len(inp.species), dt, k_lo, k_hi)
    whole = _derived(_window_slopes_A2_per_ps(inp.com_A, *args), inp)
    segs = [_derived(_window_slopes_A2_per_ps(inp.com_A[i * seg_len:(i + 1) * seg_len], *args),
                     inp) for i in range(n_segments)]
    stack = {key: np.array([s[key] for s in segs]) for key in whole}
    species = inp.species
    diffusion = {}
    for s, name in enumerate(species):
        entry = _value_error(whole["D"][s], stack["D"][:, s])
        d_mol = whole["D_molecule"][inp.mol_species == s]
        if d_mol.size >= 2:
            # four segments give an error with 3 degrees of freedom, sometimes far too
            # small; the scatter over molecules (N − 1 of them) is a floor
            entry["error"] = max(entry["error"], float(d_mol.std(ddof=1) / np.sqrt(d_mol.size)))
        diffusion[name] = {**entry,
                           "diffusive": windows[name].diffusive,
                           "loglog_slope": windows[name].loglog_slope,
                           "fit_window_ps": [k_lo * dt, k_hi * dt]}
    yeh_hummer = _apply_yeh_hummer(diffusion, inp, viscosity_Pa_s, warnings)
    z = inp.charges_e
    transference = {}
    if not abs(whole["sigma"]) > 1e-9 * abs(whole["sigma_ne"]):
        warnings.append("the collective charge displacement is zero (ions move as neutral "
                        "units, or no charges): transference numbers are undefined")
        species_t = ()
        transference = {name: {"value": None, "error": None} for name in species}
    else:
        species_t = species
    for s, name in enumerate(species_t):
        num_seg = np.array([z[s] * (seg["total"][s] @ z) for seg in segs])
        den_seg = np.array([z @ seg["total"] @ z for seg in segs])
        transference[name] = {"value": float(whole["t"][s]), "error": _ratio_error(
            z[s] * (whole["total"][s] @ z), z @ whole["total"] @ z, num_seg, den_seg)}
    onsager = {key: _matrix_by_species(whole[key],
                                       stack[key].std(axis=0, ddof=1) / np.sqrt(n_segments),
                                       species) for key in ("total", "self", "distinct")}
    ratio = ({"value": float(whole["ratio"]), "error": _ratio_error(
        whole["sigma"], whole["sigma_ne"], stack["sigma"], stack["sigma_ne"])}
        if whole["sigma_ne"] != 0 else {"value": None, "error": None})
    if z @ z == 0:
        warnings.append("every species has zero charge: no conductivity")
    return TransportResult(
        diffusion_cm2_per_s=diffusion,
        conductivity_S_per_m=_value_error(whole["sigma"], stack["sigma"]),
        nernst_einstein_conductivity_S_per_m=_value_error(whole["sigma_ne"], stack["sigma_ne"]),
        conductivity_ratio=ratio, onsager_mol2_per_J_m_s=onsager,
        transference_number=transference, fit_window_ps=[k_lo * dt, k_hi * dt],
        reference_frame="barycentric (centre of mass of the whole system at rest)",
        charges_e=dict(zip(species, z.tolist(), strict=True)),
        charge_scale=inp.charge_scale, temperature_K=inp.temperature_K,
        volume_A3=inp.volume_A3, cell_lengths_A=list(inp.cell_lengths_A),
        run_length_ps=float(inp.time_ps[-1] - inp.time_ps[0]), n_frames=n_frames,
        n_molecules=dict(zip(species, inp.counts.tolist(), strict=True)),
        n_segments=n_segments, error_degrees_of_freedom=n_segments - 1,
        yeh_hummer=yeh_hummer, warnings=warnings, source=inp.source,
        curves=curves)


def _apply_yeh_hummer(diffusion: dict, inp: TransportInput, viscosity_Pa_s: float | None,
                      warnings: list[str]) -> dict:
    """Add the Yeh–Hummer correction to every D (in place) when a viscosity is given; the
    returned record says whether it was applied."""
    if viscosity_Pa_s is None:
        return {"applied": False, "note": "no viscosity given: D is that of the periodic box "
                "(finite-size effects not corrected; pass --viscosity-Pa-s)"}
    if not viscosity_Pa_s > 0:
        raise TransportError(f"--viscosity-Pa-s must be positive, got {viscosity_Pa_s}")
    lengths = np.asarray(inp.cell_lengths_A)
    if np.ptp(lengths) > 1e-3 * lengths.mean():
        warnings.append("Yeh–Hummer assumes a cubic box; the mean edge length is used")
    corr = yeh_hummer_correction_cm2_per_s(inp.temperature_K, float(lengths.mean()),
                                           viscosity_Pa_s)
    for entry in diffusion.values():
        entry["value"] += corr
    return {"applied": True, "viscosity_Pa_s": viscosity_Pa_s, "correction_cm2_per_s": corr,
            "box_length_A": float(lengths.mean())}


def transport_analysis(path: str | os.PathLike, *, temperature_K: float | None = None,
                       time_step_ps: float | None = None, molecules: str | None = None,
                       formal_charges: bool = False, n_segments: int = 4,
                       slope_tolerance: float = 0.2, viscosity_Pa_s: float | None = None,
                       out_dir: str | os.PathLike | None = None,
                       progress: Progress | None = None,
                       topology: Topology | None = None) -> TransportResult:
    """`prepare_transport` then `compute_transport`; with `out_dir`, also writes
    ``transport.json`` and ``msd.png`` (MSD per species with the fit window)."""
    if progress is not None:
        progress(0, 2, "reading frames")
    inp = prepare_transport(path, temperature_K=temperature_K, time_step_ps=time_step_ps,
                            molecules=molecules, formal_charges=formal_charges,
                            topology=topology)
    if progress is not None:
        progress(1, 2, "correlation functions")
    result = compute_transport(inp, n_segments=n_segments, slope_tolerance=slope_tolerance,
                               viscosity_Pa_s=viscosity_Pa_s)
    if out_dir is not None:
        from ionmix.files import atomic_write_json
        from ionmix.report.figure import save_figure
        from ionmix.report.transport import plot_msd

        out = Path(out_dir)
        atomic_write_json(out / "transport.json", {**result.to_json(),
                                                   "curves": result.curves})
        save_figure(plot_msd(result), out / "msd.png")
    return result
