"""Teachers: what labels frames for training, behind one interface (see `base`).

Kinds: ``classical`` (OPLS-AA in OpenMM, `ionmix.teachers.classical`), ``xtb`` (GFN-xTB
from tblite, `ionmix.teachers.xtb`), ``espresso`` (Quantum ESPRESSO's pw.x through ASE,
`ionmix.teachers.espresso`; pseudopotential tools in `ionmix.teachers.pseudo`).
"""

from ionmix.teachers.base import (
    TEACHER_KINDS,
    Teacher,
    TeacherError,
    TeacherSpec,
    make_teacher,
    teacher_spec,
)
from ionmix.teachers.classical.teacher import ClassicalTeacher
from ionmix.teachers.espresso import EspressoTeacher
from ionmix.teachers.xtb import XtbTeacher

__all__ = [
    "TEACHER_KINDS",
    "ClassicalTeacher",
    "EspressoTeacher",
    "Teacher",
    "TeacherError",
    "TeacherSpec",
    "XtbTeacher",
    "make_teacher",
    "teacher_spec",
]
