"""The bonded prior refitted to the teacher: harmonic bonds and angles whose (k, r0) and
(k, θ0) come from the teacher's forces instead of the force field.

Why: under a quantum teacher the force field's springs sit at the force field's bond
lengths, not the teacher's. For PF6⁻ under GFN2-xTB (P–F 1.646 Å against the force field's
1.606) the `bonded` baseline leaves the network more force to undo than it removes, and
the fitted prior halves what is left overall (docs/benchmarks.md, "A bonded prior fitted to
the teacher"; `benchmarks/bench_bonded_fit.py`).

How: one (k, x0) per *term type*, a force-field parameter set of one ion (e.g. every
``EMIM C-H r0=1.0800`` bond), so the fitted prior has the force field's shape and as many
parameters. ``E = ½ k (x − x0)²`` gives ``F = (−k x + k x0) ∂x/∂r``, linear in
``(k, k·x0)``, so the fit is a linear least-squares problem over every atom's force in
every frame (scipy's bounded `lsq_linear`: each k stays ≥ `MIN_SPRING_FRACTION` × the force
field's, so a poorly sampled term cannot become a soft or inverted spring). Its target is
the teacher's forces less everything else the baseline computes (Coulomb, wall, the force
field's torsions). Torsions keep the force field's parameters.

Units: bonds k in eV/Å², r0 in Å; angles k in eV/rad², θ0 in rad.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ionmix.teachers.classical.harmonic import BondedFitError, harmonic_terms

__all__ = ["MIN_SPRING_FRACTION", "fit_parameters", "term_forces_design"]

#: lower bound of a fitted spring constant, as a fraction of the force field's
MIN_SPRING_FRACTION = 0.1


def term_forces_design(atoms, bonds, angles, columns: Mapping[str, int]) -> np.ndarray:
    """Matrix A, shape (3 n_atoms, 2 len(columns)), with forces (eV/Å, flattened) =
    A @ p where p holds ``[k, k·x0]`` of each key at ``2 columns[key]``."""
    A = np.zeros((len(atoms), 3, 2 * len(columns)))

    def add(atom: int, gradient: np.ndarray, x: float, key: str) -> None:
        c = 2 * columns[key]
        A[atom, :, c] -= x * gradient
        A[atom, :, c + 1] += gradient

    for _, _, (i, j), key, _, _ in bonds:
        d = atoms.get_distance(i, j, mic=True, vector=True)
        r = float(np.linalg.norm(d))
        add(j, d / r, r, key)
        add(i, -d / r, r, key)
    for _, _, (i, j, k), key, _, _ in angles:
        u = atoms.get_distance(j, i, mic=True, vector=True)
        v = atoms.get_distance(j, k, mic=True, vector=True)
        lu, lv = np.linalg.norm(u), np.linalg.norm(v)
        cos = float(np.clip(u @ v / (lu * lv), -1.0, 1.0))
        theta, sin = float(np.arccos(cos)), max(float(np.sqrt(1.0 - cos**2)), 1e-8)
        gi = (cos * u / lu - v / lv) / (lu * sin)  # ∂θ/∂r_i
        gk = (cos * v / lv - u / lu) / (lv * sin)  # ∂θ/∂r_k
        add(i, gi, theta, key)
        add(k, gk, theta, key)
        add(j, -gi - gk, theta, key)
    return A.reshape(3 * len(atoms), -1)


def fit_parameters(frames: Sequence, residual_forces: Sequence[np.ndarray],
                   systems: Sequence) -> dict[str, tuple[float, float]]:
    """Fit every harmonic term type's (k, x0) to the teacher.

    Args:
        frames: the labelled frames (Atoms).
        residual_forces: per frame, the teacher's forces less the force-field baseline
            (Coulomb, wall and the force field's bonded terms), eV/Å, (n_atoms, 3).
        systems: per frame, its bonded-only `ClassicalSystem` (`make_system`).

    Returns:
        key → (k, x0) for every term type of the frames (`harmonic_terms` units).

    Raises:
        BondedFitError: no frames, or a frame count that differs between the arguments.
    """
    if not frames or not len(frames) == len(residual_forces) == len(systems):
        raise BondedFitError(f"a bonded fit needs frames, their residual forces and systems "
                             f"in equal numbers (got {len(frames)}, {len(residual_forces)}, "
                             f"{len(systems)})")
    from scipy.optimize import lsq_linear

    terms = [harmonic_terms(s) for s in systems]
    field: dict[str, tuple[float, float]] = {}  # key → (k, x0) of the force field
    for bonds, angles in terms:
        for *_, key, x0, k in bonds + angles:
            field.setdefault(key, (k, x0))
    columns = {key: n for n, key in enumerate(field)}
    p_field = np.ravel([(k, k * x0) for k, x0 in field.values()])
    rows, targets = [], []
    for atoms, residual, (bonds, angles) in zip(frames, residual_forces, terms, strict=True):
        A = term_forces_design(atoms, bonds, angles, columns)
        rows.append(A)
        # the residual plus the force field's own springs: the teacher less all else
        targets.append(np.asarray(residual, float).ravel() + A @ p_field)
    k_field = p_field[0::2]
    lower = np.full(p_field.size, -np.inf)
    lower[0::2] = MIN_SPRING_FRACTION * k_field
    upper = np.full(p_field.size, np.inf)
    fit = lsq_linear(np.vstack(rows), np.concatenate(targets), bounds=(lower, upper))
    return {key: (float(fit.x[2 * c]), float(fit.x[2 * c + 1] / fit.x[2 * c]))
            for key, c in columns.items()}
