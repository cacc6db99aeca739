"""The one place a model becomes an ASE calculator: network + baseline, with its id.

Every consumer (``md``, ``props``, ``validate``, ``evaluate``, the transfer study, the
learning loop's committee, ``export-lammps``) gets its student here, so the network is never
used without the baseline it was trained on (`ionmix.models.baseline`):

* a package (``model.nequip.zip``) or checkpoint (``*.ckpt``): its ``baseline.json`` is read
  from the same folder (missing or altered: `BaselineError`); with a baseline beside the
  network the result is the `Summed` calculator of the network and the baseline's parts
  (`ionmix.models.summed`: ASE's `SumCalculator`, each part evaluated once per geometry);
* a training folder (holding ``model.nequip.zip``): the same;
* a committee folder (``ionmix learn``'s ``gen-NNN/models``, every ``model-*/``) or a list
  of packages: a `CommitteeCalculator` of the networks plus their one shared baseline
  (members must share it: same key), evaluated once per step, not once per member;
* ``"classical"``: the classical teacher of the structure's data.

``compiled=True`` evaluates each package's AOTInductor-compiled form (`ionmix.models.network`;
compiled on first use and kept beside the package), for long MD runs. It is the same
function to ~3e-7 eV, but another implementation, so the model id says ``compiled`` and a
restart must use the same form.

A Coulomb baseline needs the structure (its molecules and ion set, checked against the
charges the model was trained with) at load time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ionmix.errors import InputError
from ionmix.models.baseline import Baseline, BaselineError, baseline_calculator, read_record
from ionmix.models.committee import CommitteeCalculator
from ionmix.models.network import MANIFEST_NAME, PACKAGE_SUFFIX
from ionmix.models.summed import Summed

__all__ = ["LoadedModel", "ModelError", "load_committee", "load_model", "model_paths"]


class ModelError(InputError):
    """A model path that is not a model ionmix can load."""


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to evaluate.

    Attributes:
        calc: the ASE calculator (energy eV, forces eV/Å, stress eV/Å³ Voigt).
        model_id: what a run records and a restart checks (file names and sha256 prefixes,
            or the teacher key).
        type_names: chemical species the network knows (None for the classical teacher).
        baseline: the baseline under the network (None for the classical teacher).
        committee: the `CommitteeCalculator` when the model is a committee (it is `calc`),
            else None.
        teacher: the `Teacher` when the model is ``"classical"`` (a study can then run it
            natively in OpenMM), else None.
        teachers: the teachers whose labels trained it, key → spec record (None where the
            record was not kept; `training_teachers`); empty when unknown. What ``validate``
            compares a run of the model with by default.
    """

    calc: object
    model_id: str
    type_names: tuple[str, ...] | None
    baseline: Baseline | None
    committee: CommitteeCalculator | None = None
    teacher: object | None = None
    teachers: dict = field(default_factory=dict)

    def check_species(self, atoms: Atoms, where: str = "the structure") -> None:
        """ModelError when `atoms` (named `where`) has species the network lacks: checked
        here, not left to nequip's KeyError in the middle of a run."""
        _check_species(atoms, self.type_names, self.model_id, where)


def model_paths(model: str | os.PathLike) -> list[Path]:
    """The network file(s) behind a model path: one package/checkpoint, the package of a
    training folder, or the members of a committee folder. ModelError if none."""
    path = Path(model)
    if path.is_file():
        return [path]
    if path.is_dir():
        if (path / "model.nequip.zip").is_file():
            return [path / "model.nequip.zip"]
        members = sorted(path.glob("model-*/*" + PACKAGE_SUFFIX))
        if len(members) >= 2:
            return members
        raise ModelError(f"model folder {path}: neither a model.nequip.zip nor a committee "
                         f"(≥ 2 model-*/*.nequip.zip; found {len(members)})")
    raise ModelError(f"model {path}: no such file (give a .nequip.zip/.ckpt, a model or "
                     "committee folder, or 'classical')")


def load_model(model: str | os.PathLike, atoms: Atoms | None = None, *, provenance=None,
               float64: bool = False, device: str = "cpu", compiled: bool = False,
               **guard) -> LoadedModel:
    """Load `model` (see the module docstring) as one calculator with its baseline.

    Args:
        model: a package, checkpoint, training or committee folder, or ``"classical"``.
        atoms: the structure it will be used on (needed for a Coulomb baseline and for the
            classical teacher: molecules, ion set, charge scale).
        provenance: `ionmix.dataset.provenance.Provenance` of the structure's source
            (default: none; library ions).
        float64: evaluate the network in float64 (see `ionmix.train.load_calculator`);
            the baseline beside it is always float64.
        compiled: evaluate the networks' compiled forms (packages only; not with float64).
        guard: `CommitteeCalculator` exploration guards (committees only).
    """
    if str(model) == "classical":
        if compiled:
            raise ModelError("model 'classical': only a trained network can be compiled")
        return _classical(atoms, provenance)
    paths = model_paths(model)
    if len(paths) > 1:
        return load_committee(paths, atoms, provenance=provenance, float64=float64,
                              device=device, compiled=compiled, **guard)
    if guard:
        raise ModelError(f"model {model}: exploration guards need a committee (≥ 2 models)")
    network, net_id, baseline, type_names = _network(paths[0], float64, device, compiled)
    _check_species(atoms, type_names, paths[0])
    beside = _beside(baseline, atoms, provenance, paths[0])
    calc = network if beside is None else Summed([network, beside])
    model_id = net_id + ("" if baseline.name == "none" else f" + {baseline.key}")
    return LoadedModel(calc, model_id, type_names, baseline,
                       teachers=training_teachers(paths[0]))


def load_committee(paths: Sequence, atoms: Atoms | None = None, *, provenance=None,
                   float64: bool = False, device: str = "cpu", compiled: bool = False,
                   **guard) -> LoadedModel:
    """A committee of packaged networks (≥ 2) with their shared baseline as one calculator
    (`CommitteeCalculator`; `guard`: its exploration guards)."""
    loaded = [_network(Path(p), float64, device, compiled) for p in paths]
    baselines = {b.key for _, _, b, _ in loaded}
    if len(baselines) != 1:
        raise BaselineError(f"committee members have different baselines ({sorted(baselines)}); "
                            "a committee shares one")
    _, _, baseline, type_names = loaded[0]
    _check_species(atoms, type_names, Path(paths[0]))
    beside = _beside(baseline, atoms, provenance, Path(paths[0]))
    calc = CommitteeCalculator([net for net, _, _, _ in loaded], baseline=beside, **guard)
    model_id = "committee " + ", ".join(i for _, i, _, _ in loaded)
    if baseline.name != "none":
        model_id += f" + {baseline.key}"
    if calc.drive_member is not None:  # the dynamics is that member's, not the mean's
        model_id += f", driven by member {calc.drive_member}"
    teachers = {k: v for p in paths for k, v in training_teachers(Path(p)).items()}
    return LoadedModel(calc, model_id, type_names, baseline, committee=calc, teachers=teachers)


def _network(path: Path, float64: bool, device: str, compiled: bool = False):
    """(network calculator, id, baseline, type names) of one package or checkpoint."""
    from ionmix.files import file_sha256
    from ionmix.models.network import load_calculator

    _check_model_file(path)
    sha = file_sha256(path)
    baseline = read_record(path, sha if path.name.endswith(PACKAGE_SUFFIX) else None)
    try:
        calc = load_calculator(path, device=device, float64=float64, compiled=compiled)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - nequip/torch raise many kinds on a bad file
        raise ModelError(f"model {path}: cannot be loaded as a nequip model "
                         f"({type(exc).__name__}: {exc})") from None
    # what a run records and a restart checks: the same file name may hold a retrained model
    net_id = f"{path.name} sha256:{sha[:16]}" + (" compiled" if compiled else "")
    return calc, net_id, baseline, _type_names(calc)


def _type_names(calc) -> tuple[str, ...] | None:
    """The species a network knows: its metadata, or (a compiled model has none) its
    species-to-type transform's."""
    metadata = getattr(getattr(calc, "model", None), "metadata", {}) or {}
    if "type_names" in metadata:
        return tuple(str(metadata["type_names"]).split())
    for transform in getattr(calc, "transforms", ()):
        if getattr(transform, "model_type_names", None):
            return tuple(transform.model_type_names)
    return None


#: What a network file may be: nequip's package or a training checkpoint (both zip archives).
MODEL_SUFFIXES = (PACKAGE_SUFFIX, ".ckpt")


def _check_model_file(path: Path) -> None:
    """ModelError naming `path` when it cannot be a network file: missing, another kind of
    file (a config, a structure), or not a zip archive (packages and checkpoints are: a
    truncated download has lost the archive's directory at its end). Opening the archive
    reads only that directory; a file altered in place fails the sha256 of its
    ``baseline.json`` record instead."""
    import zipfile

    if not path.is_file():
        raise ModelError(f"model {path}: no such file")
    if not path.name.endswith(MODEL_SUFFIXES):
        raise ModelError(f"model {path}: not a model file (expected one of "
                         f"{', '.join(MODEL_SUFFIXES)}, a model or committee folder, or "
                         "'classical')")
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"model {path}: damaged or truncated archive ({exc})") from None


def _check_species(atoms: Atoms | None, type_names, model, where: str = "the structure"
                   ) -> None:
    """ModelError when `atoms` has species the network was not trained on."""
    if atoms is None or type_names is None:
        return
    missing = sorted(set(atoms.get_chemical_symbols()) - set(type_names))
    if missing:
        raise ModelError(f"model {model}: it was trained on {' '.join(type_names)} only; "
                         f"{where} also has {' '.join(missing)}")


def _beside(baseline: Baseline, atoms: Atoms | None, provenance, where: Path):
    """The calculator of what `baseline` computes beside the network (Coulomb, wall) for
    `atoms`, checked against it (None when there is nothing)."""
    if not baseline.outside:
        return None
    if atoms is None:
        raise BaselineError(f"{where}: the model has a {baseline.name} baseline; loading it "
                            "needs the structure it will be used on (molecules, ion set)")
    from ionmix.dataset.provenance import Provenance

    ions = (provenance or Provenance()).ion_set(atoms)
    baseline.check_structure(atoms, ions, str(where))
    return baseline_calculator(baseline, ions)  # float64 always


def _classical(atoms: Atoms | None, provenance) -> LoadedModel:
    """The classical teacher of the structure's data (spec and ion set recorded with it)."""
    from ionmix.dataset.provenance import Provenance

    if atoms is None:
        raise ModelError("the classical teacher needs the structure (its molecules)")
    teacher = (provenance or Provenance()).teacher(atoms, "classical")
    return LoadedModel(teacher.calculator(atoms), teacher.key, None, None, teacher=teacher,
                       teachers={teacher.key: teacher.spec.record()})


def training_teachers(path: Path) -> dict[str, dict | None]:
    """The teachers whose labels trained the network file `path`: key → spec record (None
    where the record was not kept). Read from the ``data_manifest.json`` beside it; for a
    model trained before the manifest recorded them, from the teacher keys of the training
    file the manifest names, if it is still there. Empty when neither says (a package
    copied on its own, or frames without teacher keys)."""
    import json

    manifest_path = path.parent / MANIFEST_NAME
    if not manifest_path.is_file():
        return {}
    manifest = json.loads(manifest_path.read_text())
    if "teachers" in manifest:
        return dict(manifest["teachers"])
    train = Path(manifest.get("files", {}).get("train", {}).get("path", ""))
    if not train.is_file():
        return {}
    from ionmix.dataset.provenance import load_provenance
    from ionmix.files import read_frames

    known = load_provenance(train).teachers
    keys = {a.info["teacher"] for a in read_frames(train, ":", what="training frames")
            if "teacher" in a.info}
    return {key: known.get(key) for key in sorted(keys)}
