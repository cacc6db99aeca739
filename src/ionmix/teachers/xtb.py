"""The GFN-xTB teacher: tblite's GFN2-xTB (or GFN1-xTB) through its ASE calculator.

Energy (eV), forces (eV/Å) and, for periodic cells, stress (eV/Å³). tblite's defaults are
used unless the spec sets a parameter. Frames must be neutral unless ``charge`` says
otherwise: the teacher checks each frame's total charge from its ions (the study's ion
set) before any work, since a box whose charge tblite would silently assume to be zero
gives labels of another system.

Isolated-atom energies are tblite's for one atom alone (non-periodic), with tblite's own
spin handling (``multiplicity`` left to tblite: the lowest spin state; GFN-xTB is not
spin-polarised by default). They are cheap (milliseconds) and cached per (teacher key,
element) in ``$IONMIX_CACHE/isolated-atoms/<key>.json``.

Labels depend on the geometry alone: each SCF starts from tblite's default guess, never
from the previous step's wavefunction (which shifts forces by ~1e-4 eV/Å).

tblite is an optional dependency (``pip install 'ionmix[xtb]'``).
"""

from __future__ import annotations

import json
from typing import Literal

from ase import Atoms
from pydantic import BaseModel, ConfigDict, Field

from ionmix.chemistry.ionset import cache_dir
from ionmix.files import atomic_write_json
from ionmix.teachers.base import Teacher, TeacherError, register


class XtbParams(BaseModel):
    """tblite settings (the names and defaults of `tblite.ase.TBLite`).

    Attributes:
        method: "GFN2-xTB" (default) or "GFN1-xTB".
        charge: total charge every frame must have (e).
        accuracy: tblite's numerical accuracy (smaller is tighter).
        electronic_temperature_K: Fermi smearing temperature (K).
        max_iterations: SCF iterations before the label counts as failed.
    """

    model_config = ConfigDict(extra="forbid")

    method: Literal["GFN2-xTB", "GFN1-xTB"] = "GFN2-xTB"
    charge: int = 0
    accuracy: float = Field(1.0, gt=0.0)
    electronic_temperature_K: float = Field(300.0, gt=0.0)
    max_iterations: int = Field(250, ge=1)


def _tblite_calculator(params: XtbParams, **kw):
    """tblite's ASE calculator with `params`, whose every SCF starts afresh (see below)."""
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise TeacherError("the xtb teacher needs tblite: pip install 'ionmix[xtb]' (or "
                           "pip install tblite)") from None

    class FreshTBLite(TBLite):
        """TBLite that forgets the previous wavefunction before each calculation, so a label
        depends on the geometry alone, not on the trajectory before it: with the previous
        wavefunction as the SCF guess, forces differ by ~1e-4 eV/Å at tblite's default
        accuracy. (``_res`` is tblite's private result cache; tblite is pinned < 0.9.)"""

        def calculate(self, *args, **kwargs):
            self._res = None
            super().calculate(*args, **kwargs)

    return FreshTBLite(method=params.method, accuracy=params.accuracy,
                       electronic_temperature=params.electronic_temperature_K,
                       max_iterations=params.max_iterations, verbosity=0, **kw)


@register
class XtbTeacher(Teacher):
    """GFN-xTB labels from tblite (see the module docstring)."""

    kind = "xtb"
    Params = XtbParams
    provides_stress = True

    def check_frame(self, atoms: Atoms) -> None:
        """Refuse a frame whose total charge (from its ions) is not ``params.charge``."""
        self.check_total_charge(atoms, self.params.charge, "charge")

    def calculator(self, atoms=None):
        """A tblite calculator for frames like `atoms` (checked for their total charge)."""
        if atoms is not None:
            self.check_frame(atoms)
        return _tblite_calculator(self.params, charge=self.params.charge)

    def isolated_atom_energy_eV(self, element: str) -> float:
        """tblite's energy of one `element` atom alone (eV), cached per teacher key."""
        path = cache_dir() / "isolated-atoms" / f"{self.key}.json"
        cached = json.loads(path.read_text()) if path.exists() else {}
        if element not in cached:
            atom = Atoms(element, positions=[[0.0, 0.0, 0.0]])
            atom.calc = _tblite_calculator(self.params)
            cached = {**(json.loads(path.read_text()) if path.exists() else {}),
                      element: float(atom.get_potential_energy())}
            atomic_write_json(path, cached)
        return float(cached[element])
