"""Teachers: what labels frames for training, behind one interface (see `base`).

Kinds: ``classical`` (OPLS-AA in OpenMM, `ionmix.teachers.classical`), ``xtb`` (GFN-xTB
from tblite, `ionmix.teachers.xtb`).
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
from ionmix.teachers.xtb import XtbTeacher

__all__ = [
    "TEACHER_KINDS",
    "ClassicalTeacher",
    "Teacher",
    "TeacherError",
    "TeacherSpec",
    "XtbTeacher",
    "make_teacher",
    "teacher_spec",
]
