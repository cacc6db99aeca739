"""Composition design: how many, and which, compositions a mixture model must be trained on.

The model of the total energy behind this module is the paper's (Goodwin et al. 2024, eq. 1):
to leading order E = Σ_j μ_j N_j, a per-species energy μ_j times the species count N_j. A
machine-learned potential decomposes the energy into atomic terms and so learns exactly
this linear part from the compositions it sees. Which μ combinations the training data fix
is pure linear algebra on the species-count vectors:

* every frame's count vector is a non-negative combination of the mixable **units**
  (neutral salts), so all reachable count vectors lie in the row space of the units'
  stoichiometry matrix S (n_units × n_species); its rank is C = N − M, where M is the
  number of independent linear constraints (electroneutrality, shared ions, ...);
* a training set fixes μ only along the span of its count vectors; it reaches everything
  the mixture can do when that span has dimension C (C compositions at least);
* the orthogonal complement of the row space of S is never fixed by any data: adding
  c·v (v in that complement) to μ changes no reachable energy. For Li/EMIM/PF6 it is the
  charge direction (1, 1, −1)/√3.

Shapes: `S` is (n_units, n_species); composition vectors over units are (n_units,) and
sum to 1; species-count vectors (per formula unit of the mixture) are (n_species,).
Energies are in eV; per-species energies μ in eV per species.
"""

from __future__ import annotations

import itertools
import math
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ionmix.errors import InputError

#: Relative singular-value threshold below which a direction counts as not spanned.
RANK_RTOL = 1e-9
#: Tolerance on mole fractions summing to 1 (float noise; rounded decimals add theirs).
FRACTION_SUM_TOL = 1e-9
#: Fewest decimals a number must be typed with to count as rounded (0.5, 0.25, 0.05 are
#: exact: one- and two-decimal fractions are how exact compositions are usually written).
MIN_ROUNDED_DECIMALS = 3
#: Float noise allowed on a unit count x·n (whole numbers of units).
COUNT_NOISE = 1e-6
#: Most a rounded fraction may miss a whole count by, in units (keeps the count unambiguous).
MAX_COUNT_ROUNDING = 0.25
#: Default cap on the condition number of a recommended training set.
DEFAULT_MAX_CONDITION = 100.0


class DesignError(InputError):
    """A user error in a mixture spec or composition; the message names the culprit."""


# --------------------------------------------------------------------------------------
# The mixture: species with charges, and neutral units built from them
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mixture:
    """Species (with integer charges) and the neutral units a user can mix.

    Attributes:
        species: species names, in the order used by every vector in this module.
        charges: integer charge of each species, shape (n_species,).
        units: unit names, in the order of the rows of `stoichiometry`.
        stoichiometry: S, shape (n_units, n_species); S[u, j] = count of species j in unit u.
    """

    species: tuple[str, ...]
    charges: tuple[int, ...]
    units: tuple[str, ...]
    stoichiometry: np.ndarray = field(repr=False)

    @classmethod
    def from_dicts(
        cls, species: dict[str, int], units: dict[str, dict[str, int]]
    ) -> Mixture:
        """Build and validate a mixture.

        Args:
            species: name → integer charge (may be 0).
            units: unit name → {species name: count}; each unit must be neutral.

        Raises:
            DesignError: empty spec, non-integer charge/count, unknown species in a
                unit, or a non-neutral unit (the message names it).

        Species and units are separate name spaces: a neutral species may be its own unit
        (a molecular solvent `EC = {EC = 1}`, an alloy's element).
        """
        if not species:
            raise DesignError("the spec defines no [species]")
        if not units:
            raise DesignError("the spec defines no [units]")
        for name, charge in species.items():
            if isinstance(charge, bool) or not isinstance(charge, int):
                raise DesignError(f"species {name!r}: charge must be an integer, got {charge!r}")
        names = tuple(species)
        index = {s: i for i, s in enumerate(names)}
        rows = []
        for unit, content in units.items():
            if not isinstance(content, dict) or not content:
                raise DesignError(
                    f"unit {unit!r}: give its species counts, e.g. {{Li = 1, PF6 = 1}}"
                )
            row = np.zeros(len(names))
            for sp, count in content.items():
                if sp not in index:
                    raise DesignError(
                        f"unit {unit!r} uses unknown species {sp!r}; "
                        f"known species: {', '.join(names)}"
                    )
                if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise DesignError(
                        f"unit {unit!r}: count of {sp!r} must be a non-negative integer, "
                        f"got {count!r}"
                    )
                row[index[sp]] = count
            if not row.any():
                raise DesignError(f"unit {unit!r} contains no species")
            charge = int(sum(species[s] * c for s, c in content.items()))
            if charge != 0:
                raise DesignError(
                    f"unit {unit!r} is not neutral: net charge {charge:+d} "
                    f"({' + '.join(f'{c}×{s}({species[s]:+d})' for s, c in content.items())})"
                )
            rows.append(row)
        return cls(names, tuple(species.values()), tuple(units), np.array(rows))

    @property
    def n_species(self) -> int:
        """N, the number of species."""
        return len(self.species)

    @property
    def min_compositions(self) -> int:
        """C = N − M: the rank of the stoichiometry matrix."""
        return matrix_rank(self.stoichiometry)

    @property
    def n_constraints(self) -> int:
        """M: independent linear constraints every reachable count vector obeys."""
        return self.n_species - self.min_compositions

    def counts(self, composition: dict[str, float | str]) -> np.ndarray:
        """Species counts per formula unit of the mixture, shape (n_species,).

        `composition` maps unit name → mole fraction (validated by `check_composition`).
        """
        x = self.fractions(composition)
        return x @ self.stoichiometry

    def fractions(self, composition: dict[str, float | str]) -> np.ndarray:
        """Validated mole-fraction vector over units, shape (n_units,).

        Fractions given as strings ("2/3") become floats; see `check_composition`.
        """
        check_composition(composition, self.units)
        return np.array([fraction_value(composition.get(u, 0.0), u) for u in self.units])

    def unit_counts(self, composition: dict[str, float | str], n_units: int) -> dict[str, int]:
        """Whole numbers of each unit for `n_units` formula units at `composition`.

        For 1:1 salts `n_units` is the number of ion pairs. Each fraction x must give a
        whole count k = x·n_units: exactly (within float noise, 1e-6) for exact fractions
        ("2/3", 0.5, 0.25), or within the precision typed for a rounded decimal (see
        `rounding_tolerance`; and by at most MAX_COUNT_ROUNDING units, so that k is never
        ambiguous): 0.666667, 0.6667 and 0.667 give 2 of 3 units, 0.67 does not. The counts
        must add up to `n_units`. Beyond that ionmix never rounds a composition.

        Raises:
            DesignError: naming the offending unit and the nearest fractions that are
                exact with `n_units` units (never the value refused).
        """
        if isinstance(n_units, bool) or not isinstance(n_units, int) or n_units <= 0:
            raise DesignError(f"the number of units/ion pairs must be a positive integer, "
                              f"got {n_units!r}")
        check_composition(composition, self.units)
        out = {unit: _whole_count(unit, composition.get(unit, 0.0), n_units)
               for unit in self.units}
        if sum(out.values()) != n_units:
            raise DesignError(
                f"composition {composition!r} with {n_units} units gives "
                f"{', '.join(f'{k} {u}' for u, k in out.items())}: {sum(out.values())} units, "
                f"not {n_units}; give the fractions exactly, e.g. as \"p/q\""
            )
        return out

    def species_counts(self, composition: dict[str, float], n_units: int) -> dict[str, int]:
        """Whole numbers of each species (ions) for `n_units` formula units (see unit_counts)."""
        units = self.unit_counts(composition, n_units)
        n = np.array([units[u] for u in self.units]) @ self.stoichiometry
        return {s: int(round(c)) for s, c in zip(self.species, n, strict=True)}

    def fraction_label(self, composition: dict[str, float]) -> str:
        """Short label: the first unit's fraction for two units ("0.4"), else "0.2/0.3/0.5"."""
        if len(self.units) == 2:
            return f"{composition[self.units[0]]:g}"
        return "/".join(f"{composition[u]:g}" for u in self.units)

    def undetermined_directions(self) -> np.ndarray:
        """Orthonormal basis of per-species energy directions no data can fix.

        Returns shape (N − C, n_species): the orthogonal complement of the row space of S.
        Each row's sign is chosen so that its first non-zero entry is positive.
        """
        return _signed(null_space(self.stoichiometry))

    def determined_combinations(self) -> list[str]:
        """Readable per-species energy combinations that training on C compositions fixes.

        Lists every single species whose energy is fixed, every pair combination
        a·μ_i + b·μ_j orthogonal to all undetermined directions (e.g. μ[Li] − μ[EMIM]),
        and the energy of each unit (always fixed).
        """
        return describe_determined(self.species, self.undetermined_directions(),
                                   self.stoichiometry, self.units)


def fraction_value(value: Any, unit: str) -> float:
    """A mole fraction as a float: a number, or a string "p/q" (also "0.25", "1").

    Raises DesignError for anything else (bools, non-finite numbers, other strings).
    """
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise DesignError(f"fraction of {unit!r} must be a number or a fraction such "
                              f"as \"2/3\", got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DesignError(f"fraction of {unit!r} must be a number or a fraction such as "
                          f"\"2/3\", got {value!r}")
    return float(value)


def rounding_tolerance(value: Any) -> float:
    """How far a typed fraction may lie from the exact fraction it stands for.

    A decimal typed with d ≥ MIN_ROUNDED_DECIMALS decimals stands for any fraction that
    rounds to it at d decimals: the tolerance is half a unit in its last place, ½·10^(−d)
    (0.666667 → 5e-7; 0.667 → 5e-4). Shorter decimals (0.5, 0.25), integers and strings
    ("2/3") are exact: tolerance 0. The decimals are read from the shortest repr of the
    float, which is what was typed in TOML (trailing zeros aside).
    """
    if not isinstance(value, float) or not math.isfinite(value):
        return 0.0
    decimals = -int(Decimal(repr(float(value))).as_tuple().exponent)  # float(): numpy scalars
    return 0.5 * 10.0**-decimals if decimals >= MIN_ROUNDED_DECIMALS else 0.0


def check_composition(composition: dict[str, float | str], units: tuple[str, ...]) -> None:
    """Raise DesignError unless `composition` is a valid mole-fraction dict over `units`.

    A fraction is a non-negative number or a string such as "2/3". The fractions must sum
    to 1 within 1e-9 plus each rounded decimal's tolerance (`rounding_tolerance`), so
    {A = 0.666667, B = 0.333333} and {A = 0.333, B = 0.333, C = 0.333} are valid.
    """
    if not isinstance(composition, dict) or not composition:
        raise DesignError(f"composition {composition!r} is empty; give unit = mole fraction")
    total, tol = 0.0, FRACTION_SUM_TOL
    for unit, raw in composition.items():
        if unit not in units:
            raise DesignError(
                f"composition {composition!r} names unknown unit {unit!r}; "
                f"known units: {', '.join(units)}"
            )
        try:
            value = fraction_value(raw, unit)
        except DesignError as exc:
            raise DesignError(f"composition {composition!r}: {exc}") from None
        if value < 0:
            raise DesignError(
                f"composition {composition!r}: fraction of {unit!r} is negative ({raw})"
            )
        total += value
        tol += rounding_tolerance(raw)
    if abs(total - 1.0) > tol:
        raise DesignError(
            f"composition {composition!r}: mole fractions sum to {total!r}, not 1"
        )


def _whole_count(unit: str, raw: float | str, n_units: int) -> int:
    """k = x·n_units as a whole number, within float noise or x's typed precision."""
    exact = fraction_value(raw, unit) * n_units
    k = round(exact)
    allowed = max(COUNT_NOISE, min(n_units * rounding_tolerance(raw), MAX_COUNT_ROUNDING))
    if abs(exact - k) <= allowed:
        return int(k)
    lo, hi = math.floor(exact), math.ceil(exact)
    raise DesignError(
        f"{unit} = {_typed(raw)} with {n_units} units gives {exact:.10g} {unit}, not a whole "
        f"number; nearest valid fractions: {format_fraction(lo, n_units)} ({lo} {unit}) or "
        f"{format_fraction(hi, n_units)} ({hi} {unit})"
    )


def _typed(raw: float | str) -> str:
    """A fraction as the user wrote it in TOML: 0.666667, or "2/3" for a string."""
    return f'"{raw}"' if isinstance(raw, str) else repr(float(raw))


def format_fraction(k: int, n: int) -> str:
    """k/n as a user would type it: an exact decimal (0.35) if short, else "p/q" ("2/3").

    Always exact, so a suggestion can never be a rounded value that was just refused.
    """
    f = Fraction(k, n)
    for decimals in range(7):
        if (f * 10**decimals).denominator == 1:
            return f"{float(f):.{decimals}f}" if decimals else str(f.numerator)
    return f'"{f.numerator}/{f.denominator}"'


# --------------------------------------------------------------------------------------
# Linear algebra helpers
# --------------------------------------------------------------------------------------


def matrix_rank(matrix: np.ndarray, rtol: float = RANK_RTOL) -> int:
    """Numerical rank: singular values above `rtol` × the largest one."""
    matrix = np.atleast_2d(np.asarray(matrix, dtype=float))
    if matrix.size == 0:
        return 0
    s = np.linalg.svd(matrix, compute_uv=False)
    return int(np.sum(s > rtol * max(s[0], 1e-300))) if s[0] > 0 else 0


def row_space(matrix: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Orthonormal basis of the row space, shape (rank, n_cols)."""
    matrix = np.atleast_2d(np.asarray(matrix, dtype=float))
    _, s, vt = np.linalg.svd(matrix)
    rank = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    return vt[:rank]


def null_space(matrix: np.ndarray, rtol: float = RANK_RTOL) -> np.ndarray:
    """Orthonormal basis of the null space (orthogonal complement of the row space).

    Shape (n_cols − rank, n_cols).
    """
    matrix = np.atleast_2d(np.asarray(matrix, dtype=float))
    _, s, vt = np.linalg.svd(matrix)
    rank = int(np.sum(s > rtol * s[0])) if s.size and s[0] > 0 else 0
    return vt[rank:]


def _signed(basis: np.ndarray) -> np.ndarray:
    """Make each row's first clearly non-zero entry positive (stable, readable output)."""
    out = np.array(basis, dtype=float)
    for row in out:
        nz = np.flatnonzero(np.abs(row) > 1e-12)
        if nz.size and row[nz[0]] < 0:
            row *= -1
    out[np.abs(out) < 1e-15] = 0.0
    return out


def in_span(vector: np.ndarray, basis_rows: np.ndarray, tol: float = 1e-8) -> bool:
    """True if `vector` lies in the span of `basis_rows` (relative residual ≤ tol)."""
    vector = np.asarray(vector, dtype=float)
    norm = np.linalg.norm(vector)
    if norm == 0:
        return True
    q = row_space(basis_rows) if np.size(basis_rows) else np.zeros((0, vector.size))
    residual = vector - q.T @ (q @ vector)
    return bool(np.linalg.norm(residual) <= tol * norm)


def _small_integers(coefficients: np.ndarray, max_denominator: int = 12) -> np.ndarray | None:
    """Scale a coefficient vector to small coprime integers, or None if not rational."""
    scale = np.max(np.abs(coefficients))
    fr = [Fraction(float(c / scale)).limit_denominator(max_denominator) for c in coefficients]
    if any(abs(float(f) - c / scale) > 1e-8 for f, c in zip(fr, coefficients, strict=True)):
        return None
    lcm = math.lcm(*(f.denominator for f in fr))
    ints = np.array([int(f * lcm) for f in fr])
    g = math.gcd(*(int(abs(i)) for i in ints if i != 0))
    return ints // g


def format_combination(species: tuple[str, ...], coefficients: np.ndarray) -> str:
    """Write a combination of per-species energies, e.g. 'mu[Li] - mu[EMIM]'."""
    ints = _small_integers(np.asarray(coefficients, dtype=float))
    coeffs = ints if ints is not None else np.round(coefficients, 4)
    if coeffs[np.flatnonzero(coeffs)[0]] < 0:
        coeffs = -coeffs
    terms = []
    for name, c in zip(species, coeffs, strict=True):
        if c == 0:
            continue
        mag = abs(c)
        body = f"mu[{name}]" if mag == 1 else f"{mag:g}*mu[{name}]"
        terms.append(("- " if c < 0 else "+ ") + body)
    text = " ".join(terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def describe_determined(
    species: tuple[str, ...],
    undetermined: np.ndarray,
    stoichiometry: np.ndarray | None = None,
    units: tuple[str, ...] | None = None,
) -> list[str]:
    """Readable determined combinations of per-species energies (see Mixture method)."""
    n = len(species)
    u = np.atleast_2d(undetermined) if np.size(undetermined) else np.zeros((0, n))
    out: list[str] = []
    seen: set[tuple] = set()

    def add(vec: np.ndarray, label: str | None = None) -> None:
        key = tuple(np.round(vec / np.max(np.abs(vec)), 8))
        neg = tuple(-k for k in key)
        if key in seen or neg in seen:
            return
        seen.add(key)
        text = format_combination(species, vec)
        out.append(f"{text}  (= E[{label}])" if label else text)

    for i in range(n):
        if u.shape[0] == 0 or np.allclose(u[:, i], 0, atol=1e-10):
            e = np.zeros(n)
            e[i] = 1.0
            add(e)
    for i, j in itertools.combinations(range(n), 2):
        if u.shape[0] == 0:
            break  # every single species is determined already
        block = u[:, [i, j]]
        if matrix_rank(block) >= 2 or np.allclose(block, 0, atol=1e-10):
            continue
        # a*u_i + b*u_j = 0 has a non-trivial solution: take the null vector of the block.
        ab = null_space(block)[0]
        if np.any(np.abs(ab) < 1e-10):
            continue  # that is a single-species combination, listed above if determined
        vec = np.zeros(n)
        vec[[i, j]] = ab
        add(vec)
    if stoichiometry is not None and units is not None:
        for row, name in zip(stoichiometry, units, strict=True):
            add(np.asarray(row, dtype=float), name)
    return out


# --------------------------------------------------------------------------------------
# Training-set analysis and recommendation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingAnalysis:
    """What a proposed training set fixes.

    Attributes:
        rank: dimension of the span of the training count vectors.
        sufficient: rank equals C (every reachable composition is identifiable).
        identifiable: per candidate test composition, whether its energy is identifiable
            (its count vector lies in the span of the training count vectors).
        condition_number: of the training count vectors in the mixture's row space
            (inf when rank < C); large values mean energy errors grow on extrapolation.
    """

    rank: int
    sufficient: bool
    identifiable: list[tuple[dict[str, float], bool]]
    condition_number: float


def condition_number(mixture: Mixture, compositions: list[dict[str, float]]) -> float:
    """Condition number of a set of compositions, measured in the reachable count space.

    Each composition's count vector (per formula unit) is normalised to unit length and
    expressed in an orthonormal basis of the row space of S (dimension C). The ratio of the
    largest to the C-th singular value of that (n_compositions × C) matrix is returned;
    inf when the set spans fewer than C dimensions.
    """
    if not compositions:
        return math.inf
    basis = row_space(mixture.stoichiometry)
    vecs = np.array([mixture.counts(c) for c in compositions])
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    s = np.linalg.svd(vecs @ basis.T, compute_uv=False)
    c = mixture.min_compositions
    if s.size < c or s[c - 1] <= RANK_RTOL * s[0]:
        return math.inf
    return float(s[0] / s[c - 1])


def analyse_training(
    mixture: Mixture,
    training: list[dict[str, float]],
    candidates: list[dict[str, float]],
    tol: float = 1e-8,
) -> TrainingAnalysis:
    """Rank, sufficiency and per-candidate identifiability of a training set."""
    if not training:
        raise DesignError("the training set is empty; list at least one composition")
    vecs = np.array([mixture.counts(c) for c in training])
    rank = matrix_rank(vecs)
    identifiable = [(c, in_span(mixture.counts(c), vecs, tol)) for c in candidates]
    return TrainingAnalysis(
        rank=rank,
        sufficient=rank >= mixture.min_compositions,
        identifiable=identifiable,
        condition_number=condition_number(mixture, training),
    )


def composition_grid(units: tuple[str, ...], step: float = 0.1) -> list[dict[str, float]]:
    """All compositions of `units` on a regular mole-fraction grid (simplex lattice).

    `step` must divide 1 (e.g. 0.1, 0.05, 0.25). Fractions are rounded to 12 decimals so
    that 0.1 + 0.2 prints as 0.3.
    """
    if not (0 < step <= 1):
        raise DesignError(f"[candidates] step must be in (0, 1], got {step}")
    n = round(1 / step)
    if abs(n * step - 1) > 1e-9:
        raise DesignError(f"[candidates] step {step} does not divide 1 into whole steps")
    grid = []
    for parts in itertools.product(range(n + 1), repeat=len(units) - 1):
        if sum(parts) > n:
            continue
        last = n - sum(parts)
        fr = [p / n for p in parts] + [last / n]
        grid.append({u: round(f, 12) for u, f in zip(units, fr, strict=True)})
    return grid


def mixing_entropy(composition: dict[str, float]) -> float:
    """Ideal mixing entropy of the units, −Σ x ln x (dimensionless, per k_B per unit)."""
    return float(-sum(x * math.log(x) for x in composition.values() if x > 0))


def recommend(
    mixture: Mixture,
    candidates: list[dict[str, float]],
    max_condition: float = DEFAULT_MAX_CONDITION,
    max_sets: int = 200_000,
) -> list[dict[str, float]]:
    """Recommend C training compositions from `candidates`.

    Criterion (lexicographic), the paper's "high-entropy, at least C compositions" rule
    made precise:

    1. the set has exactly C compositions and spans the reachable count space (rank C),
       with condition number (see `condition_number`) at most `max_condition`;
    2. it maximises the *smallest* mixing entropy of its members, so that every member
       samples unlike-ion interactions (no pure end members unless unavoidable);
    3. among the sets that tie on 2 (to 1e-9), it minimises the condition number, so that
       errors in the learned per-species energies are least amplified elsewhere.

    For Li[PF6]/[EMIM][PF6] on a 0.1 grid this gives {0.4, 0.6}: the sets with the largest
    smallest entropy are {0.4, 0.5}, {0.5, 0.6} and {0.4, 0.6}; the last is best conditioned.
    """
    c = mixture.min_compositions
    if not candidates:
        raise DesignError("no candidate compositions to choose from")
    ranked = sorted(candidates, key=mixing_entropy, reverse=True)
    entropies = sorted({round(mixing_entropy(x), 9) for x in ranked}, reverse=True)
    # Walk down entropy levels: admit every candidate at or above the level, and look for
    # an admissible set; the first level that has one maximises the minimum entropy.
    for level in entropies:
        pool = [x for x in ranked if round(mixing_entropy(x), 9) >= level]
        if len(pool) < c:
            continue
        best: tuple[float, tuple[int, ...]] | None = None
        combos = itertools.combinations(range(len(pool)), c)
        for k, idx in enumerate(combos):
            if k >= max_sets:
                break
            members = [pool[i] for i in idx]
            if min(round(mixing_entropy(x), 9) for x in members) < level:
                continue
            cond = condition_number(mixture, members)
            if cond <= max_condition and (best is None or cond < best[0] - 1e-12):
                best = (cond, idx)
        if best is not None:
            return [pool[i] for i in best[1]]
    raise DesignError(
        f"no set of {c} candidate compositions spans the mixture with condition number "
        f"≤ {max_condition}; add candidates or raise max_condition"
    )


# --------------------------------------------------------------------------------------
# Per-species energy fit restricted to the identifiable subspace
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeciesEnergyFit:
    """Least-squares per-species energies, honest about what the data cannot fix.

    Attributes:
        species: names, ordering every vector below.
        mu_eV: per-species energies (eV), shape (n_species,). Components along
            `undetermined_directions` are NOT fitted: they are taken from `reference_eV`
            (zeros unless given); only projections on `determined_basis` come from data.
        determined_basis: orthonormal rows spanning the identifiable subspace, (rank, n).
        undetermined_directions: orthonormal rows of its complement, (n − rank, n).
        covariance_eV2: covariance of mu_eV (eV²), (n, n); zero along undetermined rows.
        residual_rms_eV: RMS of E − counts·μ over frames (eV).
        n_frames: frames used.
    """

    species: tuple[str, ...]
    mu_eV: np.ndarray
    determined_basis: np.ndarray
    undetermined_directions: np.ndarray
    covariance_eV2: np.ndarray
    residual_rms_eV: float
    n_frames: int

    @property
    def rank(self) -> int:
        return int(self.determined_basis.shape[0])

    def is_determined(self, coefficients: np.ndarray, tol: float = 1e-8) -> bool:
        """True if the combination Σ w_j μ_j is fixed by the data."""
        return in_span(np.asarray(coefficients, dtype=float), self.determined_basis, tol)

    def combination(self, coefficients: dict[str, float] | np.ndarray) -> tuple[float, float]:
        """Value (eV) and standard error (eV) of Σ w_j μ_j.

        Raises DesignError if the combination is not determined by the data.
        """
        w = self._vector(coefficients)
        if not self.is_determined(w):
            raise DesignError(
                f"{format_combination(self.species, w)} is not determined by these frames: "
                "it has a component along "
                + "; ".join(
                    format_combination(self.species, v) for v in self.undetermined_directions
                )
            )
        return float(w @ self.mu_eV), float(math.sqrt(max(w @ self.covariance_eV2 @ w, 0.0)))

    def _vector(self, coefficients: dict[str, float] | np.ndarray) -> np.ndarray:
        if isinstance(coefficients, dict):
            unknown = set(coefficients) - set(self.species)
            if unknown:
                raise DesignError(f"unknown species {sorted(unknown)}; known: {self.species}")
            return np.array([float(coefficients.get(s, 0.0)) for s in self.species])
        return np.asarray(coefficients, dtype=float)

    def determined_values(self) -> list[tuple[str, float, float]]:
        """(combination text, value eV, standard error eV) for readable determined combos."""
        rows = []
        for text in describe_determined(self.species, self.undetermined_directions):
            w = _parse_combination(text, self.species)
            value, err = self.combination(w)
            rows.append((text, value, err))
        return rows


def _parse_combination(text: str, species: tuple[str, ...]) -> np.ndarray:
    """Inverse of `format_combination` (for the strings this module writes)."""
    w = np.zeros(len(species))
    sign = 1.0
    for token in text.split():
        if token in "+-":
            sign = -1.0 if token == "-" else 1.0
            continue
        neg = token.startswith("-")
        token = token.lstrip("-")
        coef, _, name = token.rpartition("*") if "*" in token else ("1", "", token)
        name = name[3:-1]  # mu[NAME]
        w[species.index(name)] += sign * (-1.0 if neg else 1.0) * float(coef)
        sign = 1.0
    return w


def fit_species_energies(
    counts: np.ndarray,
    energies_eV: np.ndarray,
    species: list[str] | tuple[str, ...],
    reference_eV: dict[str, float] | np.ndarray | None = None,
) -> SpeciesEnergyFit:
    """Fit E ≈ counts · μ by least squares on the identifiable subspace only.

    Unlike `np.linalg.lstsq`, which silently returns the minimum-norm μ when `counts` is
    rank deficient, this fits only the projections of μ onto the row space of `counts`
    and takes the rest from `reference_eV` (e.g. isolated-atom energies summed per
    species; zeros by default), reporting those undetermined directions explicitly.

    Args:
        counts: species counts per frame, shape (n_frames, n_species).
        energies_eV: total energies, shape (n_frames,), eV.
        species: names for the columns of `counts`.
        reference_eV: values that fix the undetermined directions (eV per species).

    Returns:
        SpeciesEnergyFit; its `covariance_eV2` uses the residual variance (or zero when
        the fit is exact/has no degrees of freedom left).
    """
    species = tuple(species)
    counts = np.asarray(counts, dtype=float)
    energies_eV = np.asarray(energies_eV, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != len(species):
        raise DesignError(
            f"counts must have shape (n_frames, {len(species)}) for species {species}, "
            f"got {counts.shape}"
        )
    if energies_eV.shape != (counts.shape[0],):
        raise DesignError(
            f"energies must have shape ({counts.shape[0]},), got {energies_eV.shape}"
        )
    if counts.shape[0] == 0:
        raise DesignError("no frames to fit")
    bad = np.flatnonzero(~np.isfinite(energies_eV))
    if bad.size:
        raise DesignError(f"energy of frame {int(bad[0])} is not finite ({energies_eV[bad[0]]})")
    if isinstance(reference_eV, dict):
        missing = set(species) - set(reference_eV)
        if missing:
            raise DesignError(f"reference energies missing for species {sorted(missing)}")
        ref = np.array([float(reference_eV[s]) for s in species])
    elif reference_eV is None:
        ref = np.zeros(len(species))
    else:
        ref = np.asarray(reference_eV, dtype=float)

    basis = row_space(counts)  # (r, n)
    undetermined = _signed(null_space(counts)) if basis.shape[0] < len(species) else np.zeros(
        (0, len(species))
    )
    # Fit only θ = basis·(μ − ref): counts·μ = counts·ref + (counts·basisᵀ)·θ exactly,
    # because counts has no component outside its own row space.
    design = counts @ basis.T  # (n_frames, r), full column rank by construction
    target = energies_eV - counts @ ref
    theta, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ theta
    dof = counts.shape[0] - basis.shape[0]
    sigma2 = float(residual @ residual / dof) if dof > 0 else 0.0
    cov_theta = sigma2 * np.linalg.inv(design.T @ design)
    mu = ref + basis.T @ theta  # undetermined components stay exactly those of ref
    covariance = basis.T @ cov_theta @ basis
    return SpeciesEnergyFit(
        species=species,
        mu_eV=mu,
        determined_basis=basis,
        undetermined_directions=undetermined,
        covariance_eV2=covariance,
        residual_rms_eV=float(np.sqrt(np.mean(residual**2))),
        n_frames=int(counts.shape[0]),
    )


# --------------------------------------------------------------------------------------
# The spec file and the plan report
# --------------------------------------------------------------------------------------

_SPEC_SECTIONS = {"species", "units", "training", "candidates"}


@dataclass(frozen=True)
class PlanSpec:
    """A parsed plan spec: the mixture plus optional training set and candidate grid."""

    mixture: Mixture
    training: list[dict[str, float]] | None
    candidates: list[dict[str, float]]
    source: str = "<spec>"


def _units_from_spec(raw: Any) -> dict[str, dict[str, int]]:
    if raw is None:
        return {}  # Mixture.from_dicts reports the missing section
    if not isinstance(raw, dict):
        raise DesignError("[units] must be a table of unit = {species = count}")
    return raw


def _library_charges(units: dict, species: dict, source: str) -> dict[str, int]:
    """Charges of unit species not listed in [species], taken from the ion library."""
    out: dict[str, int] = {}
    for content in units.values():
        for name in content if isinstance(content, dict) else ():
            if name in species or name in out:
                continue
            from ionmix.chemistry import IonLibraryError, load_ion

            try:
                out[name] = load_ion(name).charge
            except IonLibraryError as exc:
                raise DesignError(
                    f"{source}: species {name!r} is neither in [species] nor in the ion "
                    f"library ({exc})") from None
    return out


def parse_spec(data: dict[str, Any], source: str = "<spec>") -> PlanSpec:
    """Validate a spec already read from TOML (see `load_spec`)."""
    if not data:
        raise DesignError(f"{source}: the spec is empty; it needs [units] (and [species] "
                          "for species that are not in the ion library)")
    unknown = set(data) - _SPEC_SECTIONS
    if unknown:
        raise DesignError(
            f"{source}: unknown section(s) {sorted(unknown)}; allowed: {sorted(_SPEC_SECTIONS)}"
        )
    species = data.get("species", {})
    if not isinstance(species, dict):
        raise DesignError(f"{source}: [species] must be a table of name = charge")
    units = _units_from_spec(data.get("units"))
    species = {**species, **_library_charges(units, species, source)}
    try:
        mixture = Mixture.from_dicts(species, units)
    except DesignError as exc:
        raise DesignError(f"{source}: {exc}") from None

    def compositions(raw: Any, key: str) -> list[dict[str, float]]:
        if not isinstance(raw, list) or not raw:
            raise DesignError(f"{source}: {key} must be a non-empty list of compositions")
        out = []
        for comp in raw:
            try:
                mixture.fractions(comp)
            except DesignError as exc:
                raise DesignError(f"{source}: {key}: {exc}") from None
            out.append({u: fraction_value(v, u) for u, v in comp.items()})
        # Same composition = same 6 significant digits (the store's composition key), so
        # "2/3" and 0.666667 are one composition.
        keys = [tuple(f"{x:.6g}" for x in mixture.fractions(c)) for c in out]
        if len(set(keys)) != len(keys):
            raise DesignError(f"{source}: {key} lists the same composition twice")
        return out

    training = None
    if "training" in data:
        t = data["training"]
        extra = set(t) - {"compositions"} if isinstance(t, dict) else {"?"}
        if extra:
            raise DesignError(f"{source}: [training] has unknown key(s) {sorted(extra)}")
        training = compositions(t.get("compositions"), "[training] compositions")
    cand = data.get("candidates", {})
    if not isinstance(cand, dict):
        raise DesignError(f"{source}: [candidates] must be a table")
    extra = set(cand) - {"step", "compositions"}
    if extra:
        raise DesignError(f"{source}: [candidates] has unknown key(s) {sorted(extra)}")
    if "compositions" in cand and "step" in cand:
        raise DesignError(f"{source}: [candidates] takes either step or compositions, not both")
    if "compositions" in cand:
        candidates = compositions(cand["compositions"], "[candidates] compositions")
    else:
        step = cand.get("step", 0.1)
        if isinstance(step, str):  # "1/3": a grid of thirds
            try:
                step = fraction_value(step, "step")
            except DesignError as exc:
                raise DesignError(f"{source}: [candidates] {exc}") from None
        if isinstance(step, bool) or not isinstance(step, int | float):
            raise DesignError(f"{source}: [candidates] step must be a number, got {step!r}")
        try:
            candidates = composition_grid(mixture.units, float(step))
        except DesignError as exc:
            raise DesignError(f"{source}: {exc}") from None
    return PlanSpec(mixture, training, candidates, source)


def load_spec(path: str | Path) -> PlanSpec:
    """Read and validate a plan spec TOML file (errors name the file and the entry).

    Duplicate keys are rejected by the TOML parser itself; its message is passed on with
    the file name.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise DesignError(f"cannot read spec {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DesignError(f"{path}: invalid TOML: {exc}") from None
    return parse_spec(data, str(path))


def plan(spec: PlanSpec, max_condition: float = DEFAULT_MAX_CONDITION) -> dict[str, Any]:
    """The full plan as a JSON-ready dict (the `ionmix plan --json` output)."""
    mix = spec.mixture
    training = None
    if spec.training is not None:
        analysis = analyse_training(mix, spec.training, spec.candidates)
        training = {
            "compositions": spec.training,
            "rank": analysis.rank,
            "sufficient": analysis.sufficient,
            "condition_number": analysis.condition_number
            if math.isfinite(analysis.condition_number) else None,
            "identifiable": [
                {"composition": c, "identifiable": ok} for c, ok in analysis.identifiable
            ],
        }
    recommended = recommend(mix, spec.candidates, max_condition)
    return {
        "species": list(mix.species),
        "charges": list(mix.charges),
        "units": {u: {s: int(n) for s, n in zip(mix.species, row, strict=True) if n}
                  for u, row in zip(mix.units, mix.stoichiometry, strict=True)},
        "n_species": mix.n_species,
        "n_constraints": mix.n_constraints,
        "min_compositions": mix.min_compositions,
        "undetermined_directions": [
            [float(round(v, 12)) for v in row] for row in mix.undetermined_directions()
        ],
        "determined_combinations": mix.determined_combinations(),
        "training": training,
        "recommended": recommended,
        "recommended_condition_number": condition_number(mix, recommended),
        "n_candidates": len(spec.candidates),
    }
