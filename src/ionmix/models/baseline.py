"""The physics under a student network (Δ-learning): fixed-charge Coulomb, a ZBL wall and
the force field's bonded terms.

A student is ``network + baseline``. The baseline is what a 4.5-Å local network cannot see
(electrostatics beyond its cutoff) or should not have to learn from data (no two atoms on
top of each other). The choices, by name:

* ``none``: the network alone (ionmix's behaviour before issue 22).
* ``coulomb``: the frames' point charges (the ion set's partial charges × the charge scale
  recorded with the frames) summed by particle-mesh Ewald, by torch-pme
  (`ionmix.models.coulomb_pme.CoulombPME`: float64, forces and stress by autograd), with
  the charges and exceptions of the force field's own OpenMM system (`ClassicalCalculator`
  with ``electrostatics_only`` computes the same sum and is the reference it is tested
  against). Exclusions are the force field's: within a molecule, pairs 1-2
  and 1-3 bonds apart are excluded, 1-4 pairs count × 0.5 (OPLS fudgeQQ), all other pairs in
  full. Why these: for the classical teacher the baseline is then exactly its electrostatic
  term, so the network learns only the short-ranged rest (LJ, bonded terms); for a quantum
  teacher it is the same physical prior; and LAMMPS expresses it exactly (``coul/long`` with
  ``special_bonds coul 0.0 0.0 0.5``), so an exported student means the same thing there.
* ``zbl``: nequip's ZBL pair potential (``nequip.nn.pair_potential.ZBL``) compiled into the
  network (so it travels inside the package, and into LAMMPS with it).
* ``coulomb+zbl``: both.
* ``wall``: a ZBL wall between atoms of *different* molecules only, switched off by 1.6 Å
  (`ionmix.models.wall`): repulsion where no frame of the liquid goes (overlaps), nothing
  on bonds or on the liquid's own contacts, so the network has nothing to cancel.
* ``coulomb+wall``: both (Coulomb attraction with a wall against collapse).
* ``bonded``: the ions' bonded terms as the classical teacher's force field has them
  (OPLS-AA harmonic bonds and angles, Ryckaert–Bellemans torsions; no 1-4 or other
  intramolecular nonbonded pair): `ClassicalCalculator` with ``bonded_only`` (OpenMM,
  float64; the stress is the exact virial of whole molecules). Why: the stiff terms inside
  molecules dominate a force loss, and a network that fits them leaves the forces between
  molecules (what packs the liquid) 3–4× worse relatively, and its virial split wrongly
  between the inside of the molecules and between them: every student without it pushed
  whole molecules apart by +170 to +690 bar on the teacher's liquid; with it, −80 ± 34 bar
  (docs/benchmarks.md, "What moves whole molecules"). For the classical teacher the part is
  exact; for a quantum teacher it is a prior, like the charges, and the network learns the
  difference.
* ``coulomb+bonded`` and ``coulomb+wall+bonded``: with the others.
* ``coulomb+wall+bonded+tail``: with the force field's Lennard-Jones beyond the network's
  cutoff as a homogeneous-liquid tail, E = K / V (`ionmix.models.tail`): a cohesive part
  that depends on the whole box's density, which a local network sees only through its
  neighbours (on the 188-atom Li/EMIM/PF6 box it rises by 1.55 meV per Å³; the students
  without it were left leaning toward larger boxes by 0.3–0.5 meV/Å³). The tail starts at
  the network's cutoff, recorded with it.
* ``bonded-fit`` and ``coulomb+wall+bonded-fit``: the same bonded terms with each harmonic
  bond's and angle's (k, x0) refitted to the teacher's forces on the training frames
  (`ionmix.models.bonded_fit`; torsions stay the force field's), for a teacher whose bond
  lengths are not the force field's (xTB, DFT). The fitted parameters are part of the
  record and of its key; a fine-tuned model keeps its parent's.

Training subtracts the Coulomb, wall, bonded and tail parts from the labels (`residual_frames`;
the ZBL part is in the model, so nequip subtracts it itself). The baseline belongs to the
model: `write_record` puts ``baseline.json`` beside ``model.nequip.zip`` with a key (a hash
of its content) and the package's sha256, and `read_record` refuses a folder whose record
is missing, altered or written for another package.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from ionmix.errors import InputError
from ionmix.files import atomic_write_json
from ionmix.models.wall import WALL_CUTOFF_A, WALL_SWITCH_ON_A
from ionmix.progress import Progress

__all__ = [
    "BASELINES",
    "BaselineName",
    "RECORD_NAME",
    "Baseline",
    "BaselineError",
    "BaselineCache",
    "baseline_for_frames",
    "baseline_calculator",
    "bonded_calculator",
    "bonded_terms_sha256",
    "coulomb_calculator",
    "openmm_coulomb_calculator",
    "read_record",
    "residual_frames",
    "write_record",
    "zbl_pair_potential",
]

#: the baselines by name (a config's type: pydantic checks a name against it)
BaselineName = Literal["none", "coulomb", "zbl", "coulomb+zbl", "wall", "coulomb+wall",
                       "bonded", "coulomb+bonded", "coulomb+wall+bonded",
                       "coulomb+wall+bonded+tail", "bonded-fit", "coulomb+wall+bonded-fit"]
BASELINES: tuple[str, ...] = get_args(BaselineName)
#: the baseline record beside a model's package
RECORD_NAME = "baseline.json"
RECORD_FORMAT = 1
#: what `Baseline.exclusions` says (and LAMMPS' special_bonds coul 0.0 0.0 0.5 does)
EXCLUSIONS = ("intramolecular pairs 1-2 and 1-3 bonds apart excluded, 1-4 pairs x 0.5 "
              "(OPLS fudgeQQ), all other pairs in full")
#: RMS force error target of the Coulomb baseline's PME sum, eV/Å (torch-pme's P3M error
#: bounds). Why torch-pme and not OpenMM, which computes the same sum: OpenMM gives no
#: virial, so its stress is a central finite difference over 6 strains (12 more PME sums
#: per call), and that turns the energy jump of a pair crossing the real-space cutoff into
#: stress noise. Measured on the 188-atom Li/EMIM/PF6 box (2 loaded cores): OpenMM at
#: tolerance 5e-5 16 ms per forces+stress call with a stress error of 7e-6 eV/Å³ (one
#: crossing on an 86-atom box: 6.8e-5 eV/Å³, 110 bar), at 1e-5 28 ms and 1.3e-6; torch-pme
#: at this target 11 ms, 5e-8 eV/Å³, energy 2e-6 eV and forces 9e-6 eV/Å RMS against a
#: converged Ewald sum (tests/test_coulomb_pme.py).
FORCE_ACCURACY_EV_PER_A = 1e-5
#: OpenMM's PME tolerance for the reference calculator (`openmm_coulomb_calculator`)
EWALD_ERROR_TOLERANCE = 1e-5
#: what computes the Coulomb sum (recorded: another engine is another baseline)
ENGINE = "torch-pme P3M, float64, forces and stress by autograd"
#: what the bonded part is, and what computes it (recorded)
BONDED_TERMS = ("the ions' force-field bonded terms: harmonic bonds and angles, "
                "Ryckaert-Bellemans torsions (no intramolecular nonbonded pairs)")
BONDED_ENGINE = "OpenMM Reference platform (float64), stress from the virial"
#: what a bonded-fit baseline's parameters are (recorded)
FITTED_TERMS = ("harmonic bonds' and angles' (k [eV/A^2 or eV/rad^2], x0 [A or rad]) per "
                "term type, least squares on the teacher's forces less Coulomb, wall and "
                "torsions; torsions are the force field's")
#: what the tail part is (recorded)
TAIL_FORM = ("the force field's Lennard-Jones beyond cutoff_A in a homogeneous liquid "
             "(g(r) = 1): E = K / V, K from OpenMM's long-range correction at cutoff_A")
#: partial charges (e) of a structure's ion and of the baseline's must agree to this
_CHARGE_MATCH_E = 1e-9


def is_fitted(name: str) -> bool:
    """Whether baseline `name` has parts fitted to the teacher's labels (``bonded-fit``):
    training must fit them before it can subtract the baseline."""
    return name.endswith("bonded-fit")


class BaselineError(InputError):
    """A baseline that cannot be built, recorded or applied as asked."""


@dataclass(frozen=True)
class Baseline:
    """A student's baseline (see the module docstring).

    Attributes:
        name: one of `BASELINES`.
        charge_scale: factor on the ion set's partial charges (``coulomb`` only).
        ion_charges_e: unscaled partial charges per ion name, in the order of its atoms
            (``coulomb`` only): what the charges of a structure must match.
        force_accuracy_eV_per_A: RMS force error target of the PME sum (``coulomb``
            only), eV/Å.
        ion_bonded_sha256: per ion name, a hash of its bonded terms' parameters
            (`bonded_terms_sha256`; ``bonded`` only): what a structure's ions must match.
        bonded_parameters: ``bonded-fit`` only: the fitted (k, x0) of every harmonic term
            type (`ionmix.teachers.classical.harmonic` keys and units).
        tail_cutoff_A: ``tail`` only: where the dispersion tail starts (the network's
            cutoff), Å.
        ion_lj_sha256: ``tail`` only: per ion name, a hash of its Lennard-Jones parameters
            (`ionmix.models.tail.lennard_jones_sha256`).
    """

    name: str
    charge_scale: float | None = None
    ion_charges_e: Mapping[str, tuple[float, ...]] | None = None
    force_accuracy_eV_per_A: float = FORCE_ACCURACY_EV_PER_A
    ion_bonded_sha256: Mapping[str, str] | None = None
    bonded_parameters: Mapping[str, tuple[float, float]] | None = None
    tail_cutoff_A: float | None = None
    ion_lj_sha256: Mapping[str, str] | None = None

    def __post_init__(self):
        if self.name not in BASELINES:
            raise BaselineError(f"unknown baseline {self.name!r}; one of {', '.join(BASELINES)}")
        if self.coulomb and (self.charge_scale is None or not self.ion_charges_e):
            raise BaselineError(f"baseline {self.name!r} needs a charge scale and ion charges")
        if self.bonded and not self.ion_bonded_sha256:
            raise BaselineError(f"baseline {self.name!r} needs its ions' bonded terms")
        if self.bonded_fit != bool(self.bonded_parameters):
            raise BaselineError(f"baseline {self.name!r}: fitted bonded parameters go with "
                                "a bonded-fit baseline, and only with it")
        if self.tail and not (self.tail_cutoff_A and self.tail_cutoff_A > 0
                              and self.ion_lj_sha256):
            raise BaselineError(f"baseline {self.name!r} needs the network's cutoff and its "
                                "ions' Lennard-Jones terms")

    @property
    def coulomb(self) -> bool:
        return "coulomb" in self.name

    @property
    def zbl(self) -> bool:
        return "zbl" in self.name

    @property
    def wall(self) -> bool:
        return "wall" in self.name

    @property
    def bonded(self) -> bool:
        return "bonded" in self.name

    @property
    def tail(self) -> bool:
        return "tail" in self.name

    @property
    def bonded_fit(self) -> bool:
        """Whether the bonds and angles are refitted to the teacher (`bonded_parameters`)."""
        return is_fitted(self.name)

    @property
    def outside(self) -> bool:
        """Whether a term is computed beside the network (Coulomb, wall, bonded, tail):
        subtracted from the labels and added back at evaluation, with the molecules of the
        structure."""
        return self.coulomb or self.wall or self.bonded or self.tail

    def to_json(self) -> dict:
        out: dict = {"name": self.name}
        if self.coulomb:
            out.update(charge_scale=self.charge_scale,
                       ion_charges_e={k: list(v) for k, v in sorted(self.ion_charges_e.items())},
                       exclusions=EXCLUSIONS, engine=ENGINE,
                       force_accuracy_eV_per_A=self.force_accuracy_eV_per_A)
        if self.wall:
            out.update(wall={"form": "ZBL, intermolecular pairs only",
                             "switch_on_A": WALL_SWITCH_ON_A, "cutoff_A": WALL_CUTOFF_A})
        if self.bonded:
            out.update(bonded={"terms": BONDED_TERMS, "engine": BONDED_ENGINE,
                               "ion_sha256": dict(sorted(self.ion_bonded_sha256.items()))})
        if self.bonded_fit:
            out["bonded"].update(fitted=FITTED_TERMS, parameters={
                key: [float(k), float(x0)]
                for key, (k, x0) in sorted(self.bonded_parameters.items())})
        if self.tail:
            out.update(tail={"form": TAIL_FORM, "cutoff_A": self.tail_cutoff_A,
                             "ion_lj_sha256": dict(sorted(self.ion_lj_sha256.items()))})
        return out

    @classmethod
    def from_json(cls, data: Mapping, where: str) -> Baseline:
        try:
            charges = data.get("ion_charges_e")
            bonded = data.get("bonded")
            tail = data.get("tail")
            return cls(name=data["name"], charge_scale=data.get("charge_scale"),
                       ion_charges_e=None if charges is None else
                       {k: tuple(float(q) for q in v) for k, v in charges.items()},
                       force_accuracy_eV_per_A=float(data.get("force_accuracy_eV_per_A",
                                                              FORCE_ACCURACY_EV_PER_A)),
                       ion_bonded_sha256=None if bonded is None else
                       {str(k): str(v) for k, v in bonded["ion_sha256"].items()},
                       bonded_parameters=None if bonded is None or "parameters" not in bonded
                       else {str(k): (float(v[0]), float(v[1]))
                             for k, v in bonded["parameters"].items()},
                       tail_cutoff_A=None if tail is None else float(tail["cutoff_A"]),
                       ion_lj_sha256=None if tail is None else
                       {str(k): str(v) for k, v in tail["ion_lj_sha256"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BaselineError(f"{where}: not a baseline record ({exc!r})") from None

    @property
    def key(self) -> str:
        """``<name>-<12 hex>``: a hash of everything that sets the baseline's labels."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def check_structure(self, atoms: Atoms, ions: Mapping, where: str) -> None:
        """BaselineError unless `atoms` (its molecules, ion set and charge scale) carries the
        charges this baseline was trained with."""
        if not self.outside:
            return
        from ionmix.chemistry.topology import has_molecules, molecules_of

        if not has_molecules(atoms):
            raise BaselineError(f"{where}: the {self.name} baseline needs molecule information "
                                "(mol_id/ion_name arrays), which this structure lacks")
        if self.bonded:
            _check_ions(atoms, ions, self.ion_bonded_sha256, bonded_terms_sha256,
                        f"{where}: the bonded terms of ion {{}} differ from those of the "
                        "model's bonded baseline")
        if self.tail:
            from ionmix.models.tail import lennard_jones_sha256

            _check_ions(atoms, ions, self.ion_lj_sha256, lennard_jones_sha256,
                        f"{where}: the Lennard-Jones terms of ion {{}} differ from those of "
                        "the model's tail baseline")
        if not self.coulomb:
            return
        scale = atoms.info.get("charge_scale")
        if scale is not None and abs(float(scale) - self.charge_scale) > 1e-12:
            raise BaselineError(f"{where}: charge_scale {float(scale):g} differs from the "
                                f"model's Coulomb baseline ({self.charge_scale:g})")
        for name, _ in molecules_of(atoms):
            if name not in self.ion_charges_e:
                raise BaselineError(f"{where}: ion {name} is not in the model's Coulomb "
                                    f"baseline (it knows {', '.join(sorted(self.ion_charges_e))})")
            have = np.asarray(ions[name].partial_charges)
            want = np.asarray(self.ion_charges_e[name])
            if have.shape != want.shape or np.abs(have - want).max() > _CHARGE_MATCH_E:
                raise BaselineError(f"{where}: the partial charges of ion {name} differ from "
                                    "those of the model's Coulomb baseline")


def baseline_for_frames(name: str, frames: Sequence[Atoms], ion_sets: Sequence[Mapping],
                        where: str, *, fit_count: int | None = None,
                        bonded_parameters: Mapping[str, Sequence[float]] | None = None,
                        cache: BaselineCache | None = None,
                        tail_cutoff_A: float | None = None) -> Baseline:
    """The baseline `name` for training on `frames` (their ion sets, one per frame, and
    charge scale): BaselineError naming `where` and the frame when they disagree.

    A ``bonded-fit`` baseline fits its bonds and angles to the labels of the first
    `fit_count` frames (default: all; put the training frames first), each frame's
    force-field baseline cached in `cache`, unless `bonded_parameters` gives them (a
    fine-tuned model keeps its parent's). A ``tail`` baseline starts at `tail_cutoff_A`
    (the network's cutoff, Å)."""
    if name not in BASELINES:
        raise BaselineError(f"{where}: unknown baseline {name!r}; one of {', '.join(BASELINES)}")
    if "tail" in name:
        return _tail_baseline(name, frames, ion_sets, where, tail_cutoff_A)
    if not is_fitted(name):
        return _field_baseline(name, frames, ion_sets, where)
    field = _field_baseline(name.removesuffix("-fit"), frames, ion_sets, where)
    if bonded_parameters is None:
        n = len(frames) if fit_count is None else fit_count
        if n < 1:
            raise BaselineError(f"{where}: a {name} baseline is fitted to labelled frames; "
                                "there are none to fit")
        bonded_parameters = _fit_bonded(field, frames[:n], ion_sets[:n], cache)
    return replace(field, name=name, bonded_parameters={
        key: (float(k), float(x0)) for key, (k, x0) in bonded_parameters.items()})


def _fit_bonded(field: Baseline, frames: Sequence[Atoms], ion_sets: Sequence[Mapping],
                cache: BaselineCache | None) -> dict[str, tuple[float, float]]:
    """`ionmix.models.bonded_fit.fit_parameters` on labelled `frames`, their residual
    under the force field's baseline `field`."""
    from ionmix.chemistry.topology import molecules_of
    from ionmix.models.bonded_fit import fit_parameters
    from ionmix.teachers.classical.system import make_system

    residual = residual_frames(frames, field, ion_sets, cache)
    systems = [make_system(molecules_of(a), a.cell.array, ions=ions, bonded_only=True)
               for a, ions in zip(frames, ion_sets, strict=True)]
    return fit_parameters(frames, [r.get_forces() for r in residual], systems)


def _field_baseline(name: str, frames: Sequence[Atoms], ion_sets: Sequence[Mapping],
                    where: str) -> Baseline:
    """`baseline_for_frames` of a baseline without fitted parts."""
    from ionmix.chemistry.topology import has_molecules, molecules_of

    bonded = _frames_bonded_terms(name, frames, ion_sets, where) if "bonded" in name else None
    if "coulomb" not in name:
        for k, atoms in enumerate(frames):
            if "wall" in name and not has_molecules(atoms):
                raise BaselineError(f"{where} frame {k}: a wall baseline needs molecule "
                                    "information (mol_id/ion_name arrays), which it lacks")
        return Baseline(name, ion_bonded_sha256=bonded)

    scales, charges = set(), {}
    for k, (atoms, ions) in enumerate(zip(frames, ion_sets, strict=True)):
        if not has_molecules(atoms):
            raise BaselineError(f"{where} frame {k}: a Coulomb baseline needs molecule "
                                "information (mol_id/ion_name arrays), which the frame lacks")
        if "charge_scale" not in atoms.info:
            raise BaselineError(f"{where} frame {k}: no charge_scale recorded; the Coulomb "
                                "baseline uses the frames' charge scale")
        scales.add(float(atoms.info["charge_scale"]))
        for ion, _ in molecules_of(atoms):
            q = tuple(float(c) for c in ions[ion].partial_charges)
            if charges.setdefault(ion, q) != q:
                raise BaselineError(f"{where} frame {k}: ion {ion} has other charges than "
                                    "in earlier frames (two ion sets)")
    if len(scales) != 1:
        raise BaselineError(f"{where}: the frames have charge scales {sorted(scales)}; a "
                            "Coulomb baseline needs one")
    return Baseline(name, charge_scale=scales.pop(), ion_charges_e=charges,
                    ion_bonded_sha256=bonded)


def _check_ions(atoms: Atoms, ions: Mapping, recorded: Mapping[str, str], ion_sha256: Callable,
                message: str) -> None:
    """BaselineError(`message` with the ion's name) unless every ion of `atoms` hashes
    (`ion_sha256`) to what the baseline `recorded` for it."""
    from ionmix.chemistry.topology import molecules_of

    for name, _ in molecules_of(atoms):
        if recorded.get(name) != ion_sha256(ions[name]):
            raise BaselineError(f"{message.format(name)} (it knows {', '.join(sorted(recorded))})")


def _tail_baseline(name: str, frames: Sequence[Atoms], ion_sets: Sequence[Mapping],
                   where: str, tail_cutoff_A: float | None) -> Baseline:
    """`baseline_for_frames` of a baseline with a dispersion tail from `tail_cutoff_A`."""
    from ionmix.models.tail import lennard_jones_sha256

    if tail_cutoff_A is None:
        raise BaselineError(f"{where}: a {name} baseline starts at the network's cutoff, "
                            "which was not given")
    field = _field_baseline(name.removesuffix("+tail"), frames, ion_sets, where)
    hashes = _frames_ion_hashes(name, frames, ion_sets, where, lennard_jones_sha256,
                                "Lennard-Jones terms")
    return replace(field, name=name, tail_cutoff_A=float(tail_cutoff_A), ion_lj_sha256=hashes)


def _frames_bonded_terms(name: str, frames: Sequence[Atoms], ion_sets: Sequence[Mapping],
                         where: str) -> dict[str, str]:
    """Ion name → `bonded_terms_sha256` over `frames` (`_frames_ion_hashes`)."""
    return _frames_ion_hashes(name, frames, ion_sets, where, bonded_terms_sha256,
                              "bonded terms")


def _frames_ion_hashes(name: str, frames: Sequence[Atoms], ion_sets: Sequence[Mapping],
                       where: str, ion_sha256: Callable, what: str) -> dict[str, str]:
    """Ion name → `ion_sha256(ion)` over `frames`; BaselineError for a frame without
    molecules or an ion whose `what` differ between frames."""
    from ionmix.chemistry.topology import has_molecules, molecules_of

    hashes: dict[str, str] = {}
    for k, (atoms, ions) in enumerate(zip(frames, ion_sets, strict=True)):
        if not has_molecules(atoms):
            raise BaselineError(f"{where} frame {k}: a {name} baseline needs molecule "
                                "information (mol_id/ion_name arrays), which the frame lacks")
        for ion, _ in molecules_of(atoms):
            sha = ion_sha256(ions[ion])
            if hashes.setdefault(ion, sha) != sha:
                raise BaselineError(f"{where} frame {k}: ion {ion} has other {what} than in "
                                    "earlier frames (two ion sets)")
    return hashes


def bonded_terms_sha256(ion) -> str:
    """A hash (16 hex) of one ion's bonded terms as OpenMM builds them (each bonded force
    of a one-molecule system, serialised): what sets the bonded baseline's labels."""
    import openmm

    from ionmix.teachers.classical.system import make_system

    key = (ion.name, str(ion.itp_path))
    if key not in _BONDED_SHA256:
        system = make_system({ion.name: 1}, 30.0, ions={ion.name: ion}, bonded_only=True).system
        text = "".join(openmm.XmlSerializer.serialize(f) for f in system.getForces())
        _BONDED_SHA256[key] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return _BONDED_SHA256[key]


#: `bonded_terms_sha256` per (ion name, .itp path), computed once per process
_BONDED_SHA256: dict[tuple[str, str], str] = {}


def coulomb_calculator(baseline: Baseline, ions: Mapping):
    """The Coulomb part of `baseline` as an ASE calculator (energy, forces, stress; torch-pme,
    float64), or None when it has none. `ions`: the structure's ion set (Ion objects: the
    topology)."""
    if not baseline.coulomb:
        return None
    from ionmix.models.coulomb_pme import CoulombPME

    return CoulombPME(charge_scale=baseline.charge_scale, ions=ions,
                      force_accuracy_eV_per_A=baseline.force_accuracy_eV_per_A)


def bonded_calculator(baseline: Baseline, ions: Mapping):
    """The bonded part of `baseline` as an ASE calculator (energy, forces, stress), or None
    when it has none. `ions`: the structure's ion set."""
    if not baseline.bonded:
        return None
    from ionmix.teachers.classical.calculator import ClassicalCalculator

    return ClassicalCalculator(ions=ions, bonded_only=True, platform="Reference",
                               bonded_parameters=baseline.bonded_parameters)


def baseline_calculator(baseline: Baseline, ions: Mapping):
    """Everything `baseline` computes beside the network (Coulomb, wall, bonded, tail) as one
    ASE calculator (energy, forces, stress), or None when it has nothing there."""
    from ionmix.models.summed import Summed
    from ionmix.models.wall import IntermolecularWall

    terms = [coulomb_calculator(baseline, ions)] if baseline.coulomb else []
    terms += [IntermolecularWall(ions)] if baseline.wall else []
    terms += [bonded_calculator(baseline, ions)] if baseline.bonded else []
    if baseline.tail:
        from ionmix.models.tail import DispersionTail

        terms.append(DispersionTail(ions, baseline.tail_cutoff_A))
    if len(terms) > 1:
        return Summed(terms)
    return terms[0] if terms else None


def openmm_coulomb_calculator(baseline: Baseline, ions: Mapping,
                              ewald_error_tolerance: float = EWALD_ERROR_TOLERANCE,
                              float64: bool = True):
    """The same sum by OpenMM (`ClassicalCalculator` with ``electrostatics_only``; stress by
    finite differences), the reference `coulomb_calculator` is checked against. `float64`:
    OpenMM's Reference platform (double precision throughout)."""
    from ionmix.teachers.classical.calculator import ClassicalCalculator

    return ClassicalCalculator(charge_scale=baseline.charge_scale, ions=ions,
                               ewald_error_tolerance=ewald_error_tolerance,
                               electrostatics_only=True,
                               platform="Reference" if float64 else None)


def zbl_pair_potential(type_names: Sequence[str]) -> dict:
    """The nequip config entry of the ZBL wall for these chemical species (metal units);
    BaselineError naming an element ZBL does not know."""
    from ase.data import atomic_numbers

    unknown = [t for t in type_names if atomic_numbers.get(t, 0) < 1]
    if unknown:
        raise BaselineError(f"ZBL needs chemical elements; {', '.join(unknown)} is not one")
    return {"_target_": "nequip.nn.pair_potential.ZBL", "units": "metal",
            "chemical_species": "${model_type_names}"}


# --------------------------------------------------------------------------------------
# residual labels, computed once per frame


class BaselineCache:
    """Baseline labels per (baseline key, frame geometry): SQLite, one writer, resumable.

    Rows hold energy (eV), forces (eV/Å, (n, 3)) and stress (eV/Å³, Voigt (6,)).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS labels (key TEXT, frame TEXT, energy REAL,"
                       " forces BLOB, stress BLOB, PRIMARY KEY (key, frame))")

    def _connect(self):
        return sqlite3.connect(self.path, timeout=60)

    def get(self, key: str, frame: str):
        with self._connect() as db:
            row = db.execute("SELECT energy, forces, stress FROM labels WHERE key=? AND "
                             "frame=?", (key, frame)).fetchone()
        if row is None:
            return None
        return row[0], np.frombuffer(row[1]).reshape(-1, 3), np.frombuffer(row[2])

    def put(self, key: str, frame: str, energy: float, forces, stress) -> None:
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO labels VALUES (?, ?, ?, ?, ?)",
                       (key, frame, float(energy), np.asarray(forces, float).tobytes(),
                        np.asarray(stress, float).tobytes()))


def residual_frames(frames: Sequence[Atoms], baseline: Baseline, ion_sets: Sequence[Mapping],
                    cache: BaselineCache | None = None,
                    progress: Progress | None = None) -> list[Atoms]:
    """Copies of labelled `frames` with the baseline's outside parts' (Coulomb, wall,
    bonded) energy, forces and stress subtracted (the frames themselves when it has none).

    Each frame's baseline is computed once per cache (keyed by `Baseline.key` and the
    frame's geometry hash) and read back on a rerun. `progress(done, total, "baseline
    labels")` is called after each frame.
    """
    if not baseline.outside:
        return list(frames)
    from ionmix.dataset.store import frame_hash

    out, calcs = [], {}
    for k, (atoms, ions) in enumerate(zip(frames, ion_sets, strict=True)):
        labels = cache.get(baseline.key, frame_hash(atoms)) if cache is not None else None
        if labels is None:
            if ions.key not in calcs:
                calcs[ions.key] = baseline_calculator(baseline, ions)
            calc = calcs[ions.key]
            work = atoms.copy()
            work.calc = calc
            labels = (work.get_potential_energy(), work.get_forces(), work.get_stress())
            if cache is not None:
                cache.put(baseline.key, frame_hash(atoms), *labels)
        out.append(_subtract(atoms, *labels))
        if progress is not None:
            progress(k + 1, len(frames), "baseline labels")
    return out


def _subtract(atoms: Atoms, energy_eV: float, forces, stress) -> Atoms:
    """A copy of labelled `atoms` whose labels are the teacher's minus the baseline's."""
    results = atoms.calc.results if atoms.calc is not None else {}
    residual = {"energy": results["energy"] - energy_eV,
                "forces": np.asarray(results["forces"]) - forces}
    residual["free_energy"] = residual["energy"]
    if "stress" in results:
        residual["stress"] = np.asarray(results["stress"]).reshape(-1)[:6] - stress
    copy = atoms.copy()
    copy.calc = SinglePointCalculator(copy, **residual)
    copy.info["baseline"] = "subtracted"
    return copy


# --------------------------------------------------------------------------------------
# the record beside the model


def write_record(folder: str | Path, baseline: Baseline, package_sha256: str | None) -> Path:
    """Write ``baseline.json`` into a model folder: the baseline, its key and the sha256 of
    the package it belongs to."""
    record = {"format": RECORD_FORMAT, "key": baseline.key, "baseline": baseline.to_json(),
              "package_sha256": package_sha256}
    return atomic_write_json(Path(folder) / RECORD_NAME, record)


def read_record(package: str | Path, package_sha256: str | None = None) -> Baseline:
    """The baseline of the model package `package` from the ``baseline.json`` beside it.

    Raises BaselineError naming the file: no record (``nothing can load the network without
    its baseline by mistake``), a record that is not one, a key that does not match its
    content (altered), or a record written for another package (`package_sha256`).
    """
    path = Path(package).parent / RECORD_NAME
    if not path.is_file():
        raise BaselineError(
            f"{path}: missing. Every ionmix model folder records the physics under its "
            f"network next to the package ({Path(package).name}); without it the network "
            "cannot be used safely. Retrain with ionmix, or, for a model trained without a "
            'baseline, write {"format": 1, "baseline": {"name": "none"}, ...} with '
            "ionmix.models.baseline.write_record")
    try:
        record = json.loads(path.read_text())
        baseline = Baseline.from_json(record["baseline"], str(path))
        key = record["key"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BaselineError(f"{path}: not a baseline record ({exc!r})") from None
    if key != baseline.key:
        raise BaselineError(f"{path}: key {key!r} does not match its content "
                            f"({baseline.key}): the record was altered")
    recorded = record.get("package_sha256")
    if package_sha256 is not None and recorded is not None and recorded != package_sha256:
        raise BaselineError(f"{path}: written for another package than {package} "
                            "(sha256 differs)")
    return baseline
