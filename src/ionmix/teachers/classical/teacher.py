"""The classical teacher: the OPLS-AA force field of the ion library (scaled charges),
evaluated by OpenMM — the first implementation of the teacher interface."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ionmix.chemistry.topology import molecules_of
from ionmix.teachers.base import Teacher, register
from ionmix.teachers.classical.calculator import ClassicalCalculator
from ionmix.teachers.classical.system import (
    DEFAULT_CHARGE_SCALE,
    DEFAULT_EWALD_ERROR_TOLERANCE,
    DEFAULT_LJ_SWITCH_WIDTH_A,
)


class ClassicalParams(BaseModel):
    """Parameters that define the classical labels (all change the energy function).

    Attributes:
        charge_scale: factor on every partial charge (the paper: 0.8 for Li/EMIM/PF6).
        cutoff_A: real-space/LJ cutoff (Å); None: chosen from the first box (min(12 Å,
            0.49 × its shortest width)). Studies record the resolved study-wide value.
        ewald_error_tolerance: PME relative error tolerance.
        lj_switch_width_A: LJ switching width below the cutoff (Å); None: plain truncation.
        ion_set: key of the ion set (`ionmix.chemistry.ionset.IonSet.key`) whose topologies
            the force field uses; None: library ions. A user ion changes the force field,
            so it changes the teacher's key.
    """

    model_config = ConfigDict(extra="forbid")

    charge_scale: float = Field(DEFAULT_CHARGE_SCALE, gt=0.0, le=1.0)
    cutoff_A: float | None = Field(None, gt=0.0)
    ewald_error_tolerance: float = Field(DEFAULT_EWALD_ERROR_TOLERANCE, gt=0.0, lt=1.0)
    lj_switch_width_A: float | None = Field(DEFAULT_LJ_SWITCH_WIDTH_A, ge=0.0)
    ion_set: str | None = None


@register
class ClassicalTeacher(Teacher):
    """OPLS-AA/OpenMM labels: energy (eV), forces (eV/Å) and stress (eV/Å³).

    Engine options (they do not change the labels, so they are not in the spec): ``platform``
    (OpenMM platform name or None for the best available) and ``platform_properties``.
    """

    kind = "classical"
    Params = ClassicalParams
    provides_stress = True

    def __init__(self, spec, ions=None, platform: str | None = None,
                 platform_properties: dict[str, Any] | None = None):
        super().__init__(spec, ions)
        self.platform = platform
        self.platform_properties = platform_properties

    def system_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `make_system` (and the calculator) that define the labels."""
        p = self.params
        return {"charge_scale": p.charge_scale, "cutoff_A": p.cutoff_A,
                "ewald_error_tolerance": p.ewald_error_tolerance,
                "lj_switch_width_A": p.lj_switch_width_A, "ions": self.ions}

    def calculator(self, atoms=None) -> ClassicalCalculator:
        """A calculator for frames with the molecules of `atoms` (None: read per frame)."""
        return ClassicalCalculator(None if atoms is None else molecules_of(atoms),
                                   platform=self.platform,
                                   platform_properties=self.platform_properties,
                                   **self.system_kwargs())

    def isolated_atom_energy_eV(self, element: str) -> float:
        """0 eV for every element: a lone atom has no bonded terms and no partner for the
        pairwise Coulomb and Lennard-Jones terms, so the force field's energy of it is zero
        by construction (not an assumption about the true atomic energy)."""
        return 0.0
