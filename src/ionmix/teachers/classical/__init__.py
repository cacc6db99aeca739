"""Classical force-field engine: OpenMM systems from the ion library and an ASE calculator."""

from ionmix.teachers.classical.calculator import ClassicalCalculator
from ionmix.teachers.classical.system import (
    ClassicalSystem,
    ClassicalSystemError,
    best_platform,
    make_context,
    make_system,
    make_system_for_atoms,
    repartition_hydrogen_mass,
)

__all__ = [
    "ClassicalCalculator",
    "ClassicalSystem",
    "ClassicalSystemError",
    "best_platform",
    "make_context",
    "make_system",
    "make_system_for_atoms",
    "repartition_hydrogen_mass",
]
