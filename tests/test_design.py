"""Composition design: C = N − M, undetermined directions, identifiability, recommendation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ionmix import design
from ionmix.design import DesignError, Mixture

SEED_SPECIES = {"Li": 1, "EMIM": 1, "PF6": -1}
SEED_UNITS = {"LiPF6": {"Li": 1, "PF6": 1}, "EMIMPF6": {"EMIM": 1, "PF6": 1}}


def li(x: float) -> dict[str, float]:
    """Seed-system composition at Li-salt mole fraction x."""
    return {"LiPF6": x, "EMIMPF6": round(1 - x, 12)}


@pytest.fixture
def seed() -> Mixture:
    return Mixture.from_dicts(SEED_SPECIES, SEED_UNITS)


def test_seed_system_counts(seed):
    assert seed.n_species == 3
    assert seed.min_compositions == 2
    assert seed.n_constraints == 1
    np.testing.assert_allclose(seed.counts(li(0.4)), [0.4, 0.6, 1.0])


def test_seed_undetermined_direction_is_charge_vector(seed):
    (v,) = seed.undetermined_directions()
    charge = np.array([1.0, 1.0, -1.0])
    np.testing.assert_allclose(v, charge / np.linalg.norm(charge), atol=1e-12)
    # Shifting μ along it changes no reachable energy: S·v = 0 for every unit.
    np.testing.assert_allclose(seed.stoichiometry @ v, 0, atol=1e-12)


def test_seed_determined_combinations(seed):
    combos = seed.determined_combinations()
    assert "mu[Li] - mu[EMIM]" in combos
    assert any(c.startswith("mu[Li] + mu[PF6]") for c in combos)
    assert not any(c == "mu[Li]" for c in combos)


def test_seed_single_composition_insufficient(seed):
    grid = design.composition_grid(seed.units, 0.1)
    a = design.analyse_training(seed, [li(0.5)], grid)
    assert a.rank == 1 and not a.sufficient
    assert math.isinf(a.condition_number)
    ok = {round(c["LiPF6"], 6): flag for c, flag in a.identifiable}
    # Only the training composition itself is identifiable.
    assert ok[0.5] and not any(flag for x, flag in ok.items() if x != 0.5)


def test_seed_adjacent_pair_sufficient(seed):
    grid = design.composition_grid(seed.units, 0.1)
    a = design.analyse_training(seed, [li(0.0), li(0.1)], grid)
    assert a.rank == 2 and a.sufficient
    assert all(flag for _, flag in a.identifiable)


def test_seed_recommendation_is_paper_best_choice(seed):
    rec = design.recommend(seed, design.composition_grid(seed.units, 0.1))
    assert sorted(round(c["LiPF6"], 9) for c in rec) == [0.4, 0.6]


def test_recommendation_prefers_conditioning_among_entropy_ties(seed):
    # {0.4, 0.5}, {0.5, 0.6} and {0.4, 0.6} share the largest smallest entropy; the
    # chosen one must be the best conditioned of them.
    conds = {
        pair: design.condition_number(seed, [li(pair[0]), li(pair[1])])
        for pair in [(0.4, 0.5), (0.5, 0.6), (0.4, 0.6)]
    }
    assert min(conds, key=conds.get) == (0.4, 0.6)


def test_recommendation_respects_max_condition(seed):
    with pytest.raises(DesignError, match="condition number"):
        design.recommend(seed, design.composition_grid(seed.units, 0.1), max_condition=1.0)


def test_neutral_binary_alloy_has_nothing_undetermined():
    alloy = Mixture.from_dicts({"Cu": 0, "Au": 0}, {"copper": {"Cu": 1}, "gold": {"Au": 1}})
    assert alloy.min_compositions == 2 and alloy.n_constraints == 0
    assert alloy.undetermined_directions().shape == (0, 2)
    assert alloy.determined_combinations() == ["mu[Cu]", "mu[Au]"]


def test_molten_salt_with_multivalent_ion():
    m = Mixture.from_dicts(
        {"Li": 1, "Na": 1, "Zr": 4, "F": -1},
        {"LiF": {"Li": 1, "F": 1}, "NaF": {"Na": 1, "F": 1}, "ZrF4": {"Zr": 1, "F": 4}},
    )
    assert m.min_compositions == 3 and m.n_constraints == 1
    (v,) = m.undetermined_directions()
    q = np.array([1.0, 1.0, 4.0, -1.0])
    np.testing.assert_allclose(v, q / np.linalg.norm(q), atol=1e-12)
    assert "4*mu[Li] - mu[Zr]" in m.determined_combinations()
    # The two compositions Chahal et al. trained on have NaF = ZrF4, so they fix energies
    # only along that line: rank 2 < 3.
    chahal = [{"LiF": 0.42, "NaF": 0.29, "ZrF4": 0.29}, {"LiF": 0.26, "NaF": 0.37, "ZrF4": 0.37}]
    tests = [{"LiF": 0.8, "NaF": 0.1, "ZrF4": 0.1}, {"LiF": 0.28, "NaF": 0.32, "ZrF4": 0.40}]
    a = design.analyse_training(m, chahal, tests)
    assert a.rank == 2 and not a.sufficient
    assert [flag for _, flag in a.identifiable] == [True, False]
    rec = design.recommend(m, design.composition_grid(m.units, 0.1))
    assert len(rec) == 3
    assert design.analyse_training(m, rec, tests).sufficient


def test_reciprocal_mixture_needs_three_not_four():
    # Two cations, two anions, all four salts. Stoichiometry rows (A,B,X,Y):
    # AX=(1,0,1,0), AY=(1,0,0,1), BX=(0,1,1,0), BY=(0,1,0,1); AX+BY = AY+BX, so the rank
    # is 3 and electroneutrality (1,1,−1,−1) stays undetermined, whatever the salts.
    m = Mixture.from_dicts(
        {"A": 1, "B": 1, "X": -1, "Y": -1},
        {
            "AX": {"A": 1, "X": 1},
            "AY": {"A": 1, "Y": 1},
            "BX": {"B": 1, "X": 1},
            "BY": {"B": 1, "Y": 1},
        },
    )
    assert m.min_compositions == 3 and m.n_constraints == 1
    (v,) = m.undetermined_directions()
    np.testing.assert_allclose(v, [0.5, 0.5, -0.5, -0.5], atol=1e-12)
    combos = m.determined_combinations()
    assert "mu[A] - mu[B]" in combos and "mu[X] - mu[Y]" in combos
    assert "mu[A]" not in combos


def test_two_salts_without_common_ion_leave_two_directions():
    m = Mixture.from_dicts(
        {"A": 1, "B": 1, "X": -1, "Y": -1}, {"AX": {"A": 1, "X": 1}, "BY": {"B": 1, "Y": 1}}
    )
    assert m.min_compositions == 2
    assert m.undetermined_directions().shape == (2, 4)
    assert "mu[A] - mu[B]" not in m.determined_combinations()


def test_composition_grid():
    grid = design.composition_grid(("a", "b", "c"), 0.1)
    assert len(grid) == 66
    assert all(abs(sum(c.values()) - 1) < 1e-12 for c in grid)
    with pytest.raises(DesignError, match="does not divide"):
        design.composition_grid(("a", "b"), 0.3)


# ------------------------------ identifiable-subspace fit ------------------------------


def _frames(xs, mu, n_pairs=20, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    counts = np.array([[n_pairs * x, n_pairs * (1 - x), n_pairs] for x in xs], dtype=float)
    return counts, counts @ mu + rng.normal(0, noise, len(xs)) if noise else counts @ mu


def test_fit_recovers_determined_combinations_only():
    mu_true = np.array([-2.0, -60.0, -45.0])
    counts, energies = _frames([0.4] * 5 + [0.6] * 5, mu_true, noise=0.01, seed=3)
    fit = design.fit_species_energies(counts, energies, ("Li", "EMIM", "PF6"))
    assert fit.rank == 2
    value, err = fit.combination({"Li": 1, "EMIM": -1})
    assert abs(value - (mu_true[0] - mu_true[1])) < 5 * err
    assert err > 0
    with pytest.raises(DesignError, match="not determined"):
        fit.combination({"Li": 1})
    # The undetermined component is the reference's (zeros by default), not lstsq's.
    (v,) = fit.undetermined_directions
    assert abs(v @ fit.mu_eV) < 1e-9


def test_fit_differs_from_minimum_norm_lstsq_when_reference_given():
    mu_true = np.array([-2.0, -60.0, -45.0])
    counts, energies = _frames([0.4, 0.6], mu_true)
    ref = {"Li": -1.0, "EMIM": -50.0, "PF6": -40.0}
    fit = design.fit_species_energies(counts, energies, ("Li", "EMIM", "PF6"), ref)
    lstsq = np.linalg.lstsq(counts, energies, rcond=None)[0]
    np.testing.assert_allclose(counts @ fit.mu_eV, energies, atol=1e-9)
    np.testing.assert_allclose(counts @ lstsq, energies, atol=1e-9)
    (v,) = fit.undetermined_directions
    r = np.array(list(ref.values()))
    assert abs(v @ fit.mu_eV - v @ r) < 1e-9  # fixed by the stated convention
    assert abs(v @ lstsq) < 1e-9  # lstsq silently picks zero instead
    assert not np.allclose(fit.mu_eV, lstsq)


def test_fit_full_rank_recovers_all():
    mu_true = np.array([-3.0, -5.0])
    counts = np.array([[1, 3], [2, 2], [3, 1], [4, 0]], dtype=float)
    fit = design.fit_species_energies(counts, counts @ mu_true, ("Cu", "Au"))
    np.testing.assert_allclose(fit.mu_eV, mu_true, atol=1e-10)
    assert fit.undetermined_directions.shape == (0, 2)
    assert [t for t, *_ in fit.determined_values()] == ["mu[Cu]", "mu[Au]"]


@pytest.mark.parametrize(
    "counts, energies, match",
    [
        (np.ones((2, 2)), np.ones(2), r"shape \(n_frames, 3\)"),
        (np.ones((2, 3)), np.ones(3), "energies must have shape"),
        (np.ones((2, 3)), np.array([1.0, np.nan]), "frame 1"),
    ],
)
def test_fit_bad_input(counts, energies, match):
    with pytest.raises(DesignError, match=match):
        design.fit_species_energies(counts, energies, ("Li", "EMIM", "PF6"))


# --------------------------------------- bad specs ---------------------------------------


@pytest.mark.parametrize(
    "data, match",
    [
        ({}, "empty"),
        ({"species": {"Li": 1}}, r"no \[units\]"),
        ({"units": {"NaX": {"Na": 1, "X": 1}}}, "'Na' is neither in \\[species\\] nor in the ion"),
        ({"species": {"Li": 1, "PF6": -1}, "units": {"LiPF6": {"Li": 1, "PF6": 2}}},
         "unit 'LiPF6' is not neutral"),
        ({"species": {"Li": 1, "PF6": -1}, "units": {"LiPF6": {"Li": 1, "Q": 1}}},
         "species 'Q' is neither in"),
        ({**{"species": SEED_SPECIES, "units": SEED_UNITS},
          "training": {"compositions": [{"LiPF6": "1/0", "EMIMPF6": 0.5}]}},
         r"fraction of 'LiPF6' must be a number or a fraction such as \"2/3\", got '1/0'"),
        ({"species": {"Li": 0.5}, "units": {"x": {"Li": 1}}}, "integer"),
        ({"species": {"Li": 1, "PF6": -1}, "units": {"LiPF6": {"Li": 1, "PF6": 1}},
          "extra": {}}, "unknown section"),
        ({**{"species": SEED_SPECIES, "units": SEED_UNITS},
          "training": {"compositions": [{"LiPF6": 0.5, "EMIMPF6": 0.6}]}}, "sum to 1.1"),
        ({**{"species": SEED_SPECIES, "units": SEED_UNITS},
          "training": {"compositions": [{"LiPF6": -0.5, "EMIMPF6": 1.5}]}},
         "'LiPF6' is negative"),
        ({**{"species": SEED_SPECIES, "units": SEED_UNITS},
          "training": {"compositions": [{"NaPF6": 1.0}]}}, "unknown unit 'NaPF6'"),
        ({**{"species": SEED_SPECIES, "units": SEED_UNITS},
          "training": {"compositions": [li(0.5), li(0.5)]}}, "same composition twice"),
        ({**{"species": SEED_SPECIES, "units": SEED_UNITS}, "candidates": {"step": 0.3}},
         "does not divide"),
    ],
)
def test_bad_spec(data, match):
    with pytest.raises(DesignError, match=match):
        design.parse_spec(data, "spec.toml")


def test_fractions_within_tolerance_accepted(seed):
    """Fractions that sum to 1 only within float noise are accepted and kept as given."""
    given = {"LiPF6": 1 / 3 + 1e-12, "EMIMPF6": 2 / 3}
    assert sum(given.values()) != 1.0
    x = seed.fractions(given)
    assert dict(zip(seed.units, x, strict=True)) == given
    with pytest.raises(DesignError, match="sum"):  # and a real shortfall is refused
        seed.fractions({"LiPF6": 0.3, "EMIMPF6": 0.69})


def test_duplicate_toml_key_names_file(tmp_path):
    p = tmp_path / "dup.toml"
    p.write_text("[species]\nLi = 1\nLi = 2\n[units]\nx = {Li = 1}\n")
    with pytest.raises(DesignError, match="dup.toml: invalid TOML"):
        design.load_spec(p)


def test_plan_json_keys(seed):
    spec = design.parse_spec(
        {"species": SEED_SPECIES, "units": SEED_UNITS,
         "training": {"compositions": [li(0.5)]}}
    )
    out = design.plan(spec)
    for key in ["species", "n_species", "n_constraints", "min_compositions",
                "undetermined_directions", "determined_combinations", "training",
                "recommended"]:
        assert key in out
    assert out["training"]["rank"] == 1 and out["training"]["sufficient"] is False
    assert len(out["training"]["identifiable"]) == 11


def test_counts_exact_or_error_with_nearest(seed):
    assert seed.unit_counts(li(0.4), 20) == {"LiPF6": 8, "EMIMPF6": 12}
    assert seed.species_counts(li(0.4), 20) == {"Li": 8, "EMIM": 12, "PF6": 20}
    with pytest.raises(DesignError, match=r"nearest valid fractions: 0\.3 \(6 LiPF6\) or "
                                          r"0\.35 \(7 LiPF6\)"):
        seed.unit_counts({"LiPF6": 0.33, "EMIMPF6": 0.67}, 20)
    with pytest.raises(DesignError, match="positive integer"):
        seed.unit_counts(li(0.5), 0)


def test_counts_multivalent():
    m = Mixture.from_dicts(
        {"Li": 1, "Zr": 4, "F": -1}, {"LiF": {"Li": 1, "F": 1}, "ZrF4": {"Zr": 1, "F": 4}}
    )
    assert m.species_counts({"LiF": 0.5, "ZrF4": 0.5}, 10) == {"Li": 5, "Zr": 5, "F": 25}


def test_units_with_library_ions_take_their_charges():
    spec = design.parse_spec({"units": {"EMIMBF4": {"EMIM": 1, "BF4": 1},
                                        "BMIMBF4": {"BMIM": 1, "BF4": 1}}})
    assert spec.mixture.charges == (1, -1, 1)
    assert spec.mixture.min_compositions == 2


def test_mixture_api_rejects_unknown_species():
    with pytest.raises(DesignError, match="unknown species 'BF4'"):
        Mixture.from_dicts({"Li": 1, "PF6": -1}, {"LiPF6": {"Li": 1, "BF4": 1}})


# --------------------------------------------------------------------------------------
# Fractions: exact strings, rounded decimals, and messages that suggest other values
# --------------------------------------------------------------------------------------

BMIM_LI = Mixture.from_dicts({"BMIM": 1, "Li": 1, "BF4": -1},
                             {"BMIMBF4": {"BMIM": 1, "BF4": 1}, "LiBF4": {"Li": 1, "BF4": 1}})


@pytest.mark.parametrize("thirds", [
    {"BMIMBF4": 0.666667, "LiBF4": 0.333333},  # rounded to 6 decimals (the issue's case)
    {"BMIMBF4": 0.6667, "LiBF4": 0.3333},
    {"BMIMBF4": 0.667, "LiBF4": 0.333},
    {"BMIMBF4": "2/3", "LiBF4": "1/3"},  # exact
    {"BMIMBF4": "2/3", "LiBF4": 0.333333},
    {"BMIMBF4": 2 / 3, "LiBF4": 1 - 2 / 3},  # computed floats
])
def test_thirds_with_three_ion_pairs(thirds):
    assert BMIM_LI.unit_counts(thirds, 3) == {"BMIMBF4": 2, "LiBF4": 1}
    assert BMIM_LI.unit_counts(thirds, 30) == {"BMIMBF4": 20, "LiBF4": 10}
    np.testing.assert_allclose(BMIM_LI.fractions(thirds), [2 / 3, 1 / 3], atol=1e-3)


@pytest.mark.parametrize("comp, n, refused, suggested", [
    # Two decimals are taken as exact: 0.67 is not 2/3.
    ({"BMIMBF4": 0.67, "LiBF4": 0.33}, 3, "0.67", ['"2/3" (2 BMIMBF4)', "1 (3 BMIMBF4)"]),
    # A rounded third is no whole count with 20 ion pairs.
    ({"BMIMBF4": 0.666667, "LiBF4": 0.333333}, 20, "0.666667",
     ["0.65 (13 BMIMBF4)", "0.7 (14 BMIMBF4)"]),
    ({"BMIMBF4": "2/3", "LiBF4": "1/3"}, 4, '"2/3"', ["0.5 (2 BMIMBF4)", "0.75 (3 BMIMBF4)"]),
    # 0.5 with 11 pairs is 5.5: not within any rounding, though 5/11 rounds to 0.5.
    ({"BMIMBF4": 0.5, "LiBF4": 0.5}, 11, "0.5", ['"5/11" (5 BMIMBF4)', '"6/11" (6 BMIMBF4)']),
    # Not a rounding of 2/3 at the decimals typed (2/3 rounds to 0.66667).
    ({"BMIMBF4": 0.66668, "LiBF4": 0.33332}, 3, "0.66668",
     ['"2/3" (2 BMIMBF4)', "1 (3 BMIMBF4)"]),
])
def test_invalid_fraction_suggests_other_values(comp, n, refused, suggested):
    with pytest.raises(DesignError) as info:
        BMIM_LI.unit_counts(comp, n)
    message = str(info.value)
    assert message.startswith(f"BMIMBF4 = {refused} with {n} units")
    head, _, tail = message.partition("nearest valid fractions: ")
    assert tail == " or ".join(suggested)
    assert refused not in tail  # never suggests the value it refused


def test_rounding_tolerance_follows_the_decimals_typed():
    assert design.rounding_tolerance(0.666667) == pytest.approx(5e-7)
    assert design.rounding_tolerance(0.667) == pytest.approx(5e-4)
    assert design.rounding_tolerance(1.5e-05) == pytest.approx(5e-7)
    for exact in (0.5, 0.25, 0.05, 1.0, 1, "2/3"):
        assert design.rounding_tolerance(exact) == 0.0


def test_rounded_fractions_sum_to_one_within_their_precision():
    three = Mixture.from_dicts({"A": 0, "B": 0, "C": 0},
                               {"A": {"A": 1}, "B": {"B": 1}, "C": {"C": 1}})
    assert three.unit_counts({"A": 0.333, "B": 0.333, "C": 0.333}, 3) == {"A": 1, "B": 1, "C": 1}
    with pytest.raises(DesignError, match="sum to"):
        three.fractions({"A": 0.33, "B": 0.33, "C": 0.33})  # two decimals: exact, sum 0.99
    with pytest.raises(DesignError, match="sum to"):
        three.fractions({"A": "1/3", "B": "1/3", "C": "1/2"})


def test_spec_accepts_fraction_strings_and_rounded_decimals():
    spec = design.parse_spec({
        "units": {"BMIMBF4": {"BMIM": 1, "BF4": 1}, "LiBF4": {"Li": 1, "BF4": 1}},
        "training": {"compositions": [{"BMIMBF4": "2/3", "LiBF4": "1/3"},
                                      {"BMIMBF4": 0.333333, "LiBF4": 0.666667}]},
        "candidates": {"step": "1/3"},
    })
    assert spec.training[0] == {"BMIMBF4": 2 / 3, "LiBF4": 1 / 3}
    assert len(spec.candidates) == 4
    assert design.plan(spec)["training"]["sufficient"] is True
    with pytest.raises(DesignError, match="same composition twice"):
        design.parse_spec({
            "units": {"BMIMBF4": {"BMIM": 1, "BF4": 1}, "LiBF4": {"Li": 1, "BF4": 1}},
            "training": {"compositions": [{"BMIMBF4": "2/3", "LiBF4": "1/3"},
                                          {"BMIMBF4": 0.666667, "LiBF4": 0.333333}]},
        })


def test_neutral_species_is_its_own_unit():
    """A molecular solvent: [species] EC = 0 and [units] EC = {EC = 1} (issue 13)."""
    spec = design.parse_spec({
        "species": {"Li": 1, "PF6": -1, "EC": 0},
        "units": {"LiPF6": {"Li": 1, "PF6": 1}, "EC": {"EC": 1}},
    })
    out = design.plan(spec)
    assert (out["n_species"], out["n_constraints"], out["min_compositions"]) == (3, 1, 2)
    assert out["units"] == {"LiPF6": {"Li": 1, "PF6": 1}, "EC": {"EC": 1}}
    # Electroneutrality is the one constraint; the EC energy is fixed by the data.
    assert "mu[EC]" in out["determined_combinations"]
    assert spec.mixture.species_counts({"LiPF6": 0.25, "EC": 0.75}, 8) == {
        "Li": 2, "PF6": 2, "EC": 6}


def test_unit_named_like_a_species_of_another_content():
    """Species and units are separate name spaces, even when the unit is a salt."""
    m = Mixture.from_dicts({"Li": 1, "PF6": -1}, {"Li": {"Li": 1, "PF6": 1}})
    assert m.units == ("Li",) and m.min_compositions == 1
