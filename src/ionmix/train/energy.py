"""Per-type energy references (nequip's ``per_type_energy_shifts``), chosen explicitly.

A NequIP/Allegro model predicts E = Σ_i (scale · ε_i + shift[type_i]); the shift is fixed
(not trained) and its choice matters when compositions vary (Goodwin et al. 2024): the
network only learns the part of E that the shifts leave over. Three modes:

``isolated-atoms``
    Energies of the isolated atoms (eV) in the teacher's reference, given by the caller.
    For a classical force field these are all 0.
``fit``
    Per-species linear fit E_frame ≈ Σ_s N_s μ_s over the training frames. When the
    counts matrix is rank deficient (e.g. every frame has the same stoichiometry, or the
    ions only ever appear in neutral combinations) some combinations of μ are not
    determined by the data; they are set from the isolated-atom energies if given, else
    to zero, and a warning names them.
``mean``
    nequip's default: the mean per-atom energy of the training frames, the same value for
    every type. Allowed, but warned about: it is a common cause of poor training and of
    energies that do not transfer across compositions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from ase import Atoms

from ionmix.design import DesignError, fit_species_energies, format_combination

from .errors import TrainConfigError, TrainDataError

ENERGY_REFERENCE_MODES = ("isolated-atoms", "fit", "mean")


def counts_and_energies(
    frames: Sequence[Atoms], type_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Species counts (n_frames, n_types) and total energies (n_frames,) in eV.

    Energies come from ``atoms.get_potential_energy()`` (i.e. the stored label).
    """
    index = {t: j for j, t in enumerate(type_names)}
    counts = np.zeros((len(frames), len(type_names)))
    energies = np.zeros(len(frames))
    for k, atoms in enumerate(frames):
        for symbol in atoms.get_chemical_symbols():
            if symbol not in index:
                raise TrainDataError(
                    f"frame {k}: species {symbol!r} is not among type_names {list(type_names)}"
                )
            counts[k, index[symbol]] += 1
        energies[k] = float(atoms.get_potential_energy())
    return counts, energies


def _mu_from_fit_result(result: Any, type_names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Accept what a fit callable returns: an object with ``mu_eV`` (and optionally
    ``undetermined_directions``, like `ionmix.design.SpeciesEnergyFit`), a mapping type →
    eV, or an array aligned with `type_names`."""
    n = len(type_names)
    empty = np.zeros((0, n))
    if hasattr(result, "mu_eV"):
        mu = np.asarray(result.mu_eV, dtype=float)
        und = np.asarray(getattr(result, "undetermined_directions", empty), dtype=float)
        return mu, und.reshape(-1, n) if und.size else empty
    if isinstance(result, Mapping):
        return np.array([float(result[t]) for t in type_names]), empty
    return np.asarray(result, dtype=float).reshape(n), empty


def per_type_energy_shifts(
    mode: str,
    type_names: Sequence[str],
    *,
    frames: Sequence[Atoms] | None = None,
    isolated_atom_energies_eV: Mapping[str, float] | None = None,
    fit: Callable[..., Any] | Mapping[str, float] | None = None,
) -> dict[str, float]:
    """The ``per_type_energy_shifts`` dict (type name → eV per atom) for a reference mode.

    Args:
        mode: ``"isolated-atoms"``, ``"fit"`` or ``"mean"`` (see module docstring).
        type_names: model type names (chemical symbols).
        frames: labelled training frames (needed by ``fit`` and ``mean``).
        isolated_atom_energies_eV: element → eV; required by ``isolated-atoms``; in
            ``fit`` mode it fixes the undetermined directions (default zeros).
        fit: for ``fit`` mode, either a precomputed mapping type → eV (used as is), or a
            callable ``fit(counts, energies_eV, species, reference_eV=...)`` such as
            `ionmix.design.fit_species_energies` (the default). Whatever the fitter, the
            undetermined combinations are found by `ionmix.design.fit_species_energies`.

    Returns:
        {type_name: shift_eV} for every type name, floats.

    Raises:
        TrainConfigError: unknown mode, or missing inputs for the mode.
    Warns:
        UserWarning: ``fit`` with undetermined combinations (named); ``mean`` always.
    """
    type_names = [str(t) for t in type_names]
    if mode not in ENERGY_REFERENCE_MODES:
        raise TrainConfigError(
            f"unknown energy reference mode {mode!r}; choose one of {ENERGY_REFERENCE_MODES}"
        )
    if isolated_atom_energies_eV is not None:
        missing = set(type_names) - set(isolated_atom_energies_eV)
        if missing:
            raise TrainConfigError(f"isolated-atom energies missing for {sorted(missing)}")

    if mode == "isolated-atoms":
        if isolated_atom_energies_eV is None:
            raise TrainConfigError(
                "mode 'isolated-atoms' needs isolated_atom_energies_eV (element → eV; "
                "all 0 for a classical force field)"
            )
        return {t: float(isolated_atom_energies_eV[t]) for t in type_names}

    if isinstance(fit, Mapping) and mode == "fit":
        missing = set(type_names) - set(fit)
        if missing:
            raise TrainConfigError(f"precomputed fitted energies missing for {sorted(missing)}")
        return {t: float(fit[t]) for t in type_names}

    if not frames:
        raise TrainConfigError(f"energy reference mode {mode!r} needs the training frames")
    counts, energies = counts_and_energies(frames, type_names)

    if mode == "mean":
        mean_eV = float(np.mean(energies / counts.sum(axis=1)))
        warnings.warn(
            f"per-type energy shifts from the mean per-atom energy ({mean_eV:.6g} eV, the same "
            "for every type; nequip's default): energies may not transfer across "
            "compositions; prefer 'isolated-atoms' or 'fit'",
            UserWarning,
            stacklevel=2,
        )
        return {t: mean_eV for t in type_names}

    reference = (
        None
        if isolated_atom_energies_eV is None
        else np.array([float(isolated_atom_energies_eV[t]) for t in type_names])
    )
    try:
        own = fit_species_energies(counts, energies, tuple(type_names), reference_eV=reference)
    except DesignError as exc:  # e.g. a non-finite energy label: a data error here
        raise TrainDataError(f"per-type energy fit: {exc}") from exc
    mu, undetermined = own.mu_eV, own.undetermined_directions
    if fit is not None:
        mu, reported = _mu_from_fit_result(
            fit(counts, energies, tuple(type_names), reference_eV=reference), type_names
        )
        if reported.shape[0] == undetermined.shape[0]:
            undetermined = reported  # same subspace; the fitter's basis may read better
    if undetermined.shape[0]:
        fixed = "isolated-atom energies" if reference is not None else "zero (minimum norm)"
        directions = "; ".join(format_combination(tuple(type_names), v) for v in undetermined)
        warnings.warn(
            f"the training compositions do not determine {undetermined.shape[0]} "
            f"combination(s) of per-type energies: {directions}; their component is set to "
            f"{fixed}",
            UserWarning,
            stacklevel=2,
        )
    if not np.all(np.isfinite(mu)):
        raise TrainDataError(f"per-type energy fit gave non-finite values {mu}")
    return {t: float(m) for t, m in zip(type_names, mu, strict=True)}
