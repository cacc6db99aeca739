"""Load a trained NequIP/Allegro network as an ASE calculator (without its baseline: use
`ionmix.models.load_model` for a student).

Precision: a nequip model computes in its ``model_dtype`` (set at training time,
``model_dtype: float32`` or ``float64`` in the config); positions and the final
energy sums are float64 in either case, but a float32 model's forces carry ~1e-6
relative rounding noise, too much for finite-difference checks. ``float64=True``:

* checkpoint (``.ckpt``): the model is rebuilt with ``model_dtype=float64`` and the
  (float32 or float64) trained weights are loaded into it, so the same function is
  evaluated in float64 arithmetic. This does not change what was learned.
* package (``.nequip.zip``): the packaged code and weights are fixed; float64 is only
  available if the model was trained with ``model_dtype: float64`` (e.g. the override
  ``{"model_dtype": "float64"}``), otherwise a NetworkDtypeError says so.

Compiled networks (``compiled=True``): nequip's AOTInductor export of a package
(``nequip-compile --mode aotinductor --target ase``), made once and kept beside the package as
``model.nequip.pt2`` with a record (``model.nequip.pt2.json``: the package's sha256, torch's
and nequip's versions, the device and the CPU's instruction set). It is remade when any of
those differ, as the compiled file is only valid for them. It evaluates the same function:
on the 188-atom Li/EMIM/PF6 box, a ``cpu-tiny-allegro-npt`` member agreed with its package
to 3e-7 eV, 3e-7 eV/Å and 5e-10 eV/Å³, at 2.6x less time per call (one thread;
docs/benchmarks.md, "A compiled network"). Compiling takes 2-4 minutes, so it pays for
long MD runs, not for a few hundred steps.

Side effect (nequip's design): loading initialises nequip's global state once per process,
which sets torch's default dtype to float64 and seeds torch/numpy/random with 123.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

from ionmix.errors import InputError

PACKAGE_SUFFIX = ".nequip.zip"
#: nequip's suffix for an AOTInductor-compiled model (nequip-compile insists on it).
COMPILED_SUFFIX = ".nequip.pt2"
#: The training run's record of its data beside the package (`ionmix.train.run` writes
#: it; the factory reads the teachers of the labels from it).
MANIFEST_NAME = "data_manifest.json"


class NetworkDtypeError(InputError):
    """A float64 evaluation asked of a package trained in float32."""


class CompileError(InputError):
    """A network that cannot be compiled (not a package, float64 asked, nequip-compile
    failed)."""


def _model_dtype(model) -> str:
    return str(model.metadata.get("model_dtype", "float32"))


def _load_checkpoint_float64(path: Path):
    """GraphModel from a nequip checkpoint, rebuilt with model_dtype float64 (eval mode)."""
    import hydra
    import torch
    from nequip.model.modify_utils import only_apply_persistent_modifiers
    from nequip.model.utils import override_model_compile_mode
    from nequip.train.lightning import _SOLE_MODEL_KEY
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    hparams = checkpoint["hyper_parameters"]
    model_config = copy.deepcopy(hparams["model"])
    model_config["model_dtype"] = "float64"
    module_class = hydra.utils.get_class(hparams["info_dict"]["training_module"]["_target_"])
    del checkpoint
    with override_model_compile_mode("eager"), only_apply_persistent_modifiers(
        persistent_only=True
    ):
        module = module_class.load_from_checkpoint(
            str(path), map_location="cpu", weights_only=False, model=model_config
        )
    model = module.evaluation_model[_SOLE_MODEL_KEY]
    model.eval()
    return model


def compiled_record(package: Path, device: str) -> dict:
    """What a compiled file is valid for: the package's bytes, the torch and nequip that
    compiled it, the device and (CPU) the instruction set its kernels were built for."""
    import nequip
    import torch

    from ionmix.files import file_sha256

    return {"package": package.name, "package_sha256": file_sha256(package),
            "torch": torch.__version__, "nequip": nequip.__version__, "device": device,
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def compiled_network(package: str | Path, device: str = "cpu") -> Path:
    """The AOTInductor-compiled form of a package (``model.nequip.pt2`` beside it), compiled
    now unless a valid one is there (see the module docstring).

    The compiled file and its record are written atomically, the record last; nequip-compile's
    output goes to ``model.nequip.pt2.log`` beside them.

    Raises:
        CompileError: `package` is not a ``*.nequip.zip`` file, its folder is not
            writable, or nequip-compile failed (the log's last lines are in the message).
    """
    from ionmix.files import atomic_write_json

    package = Path(package)
    if not (package.is_file() and package.name.endswith(PACKAGE_SUFFIX)):
        raise CompileError(f"{package}: only a packaged model (*{PACKAGE_SUFFIX}) can be "
                           "compiled here")
    target = package.with_name(package.name.removesuffix(PACKAGE_SUFFIX) + COMPILED_SUFFIX)
    record_path = target.with_name(target.name + ".json")
    record = compiled_record(package, device)
    if target.is_file() and record_path.is_file() and \
            json.loads(record_path.read_text()) == record:
        return target
    # nequip-compile wants the suffix on its output: a temporary name that keeps it
    scratch = target.with_name(f".compiling-{os.getpid()}{COMPILED_SUFFIX}")
    log = target.with_name(target.name + ".log")
    command = [sys.executable, "-m", "nequip.scripts.compile", str(package), str(scratch),
               "--mode", "aotinductor", "--device", device, "--target", "ase"]
    try:
        with log.open("w") as stream:
            done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT,
                                  check=False)
    except OSError as exc:  # e.g. a read-only model folder
        raise CompileError(f"{package}: cannot write its compiled form beside it "
                           f"({exc.strerror}: {log}); copy the model folder somewhere "
                           "writable") from None
    if done.returncode != 0 or not scratch.is_file():
        scratch.unlink(missing_ok=True)
        tail = "".join(log.read_text().splitlines(keepends=True)[-5:])
        raise CompileError(f"{package}: nequip-compile failed (exit {done.returncode}); "
                           f"{log}:\n{tail}")
    os.replace(scratch, target)
    atomic_write_json(record_path, record)
    return target


def load_calculator(path: str | Path, device: str = "cpu", float64: bool = False,
                    compiled: bool = False):
    """An ASE calculator (`nequip.integrations.ase.NequIPCalculator`) for a trained model.

    Args:
        path: a packaged model (``*.nequip.zip``, from ``nequip-package build``) or a
            training checkpoint (``*.ckpt``).
        device: torch device for evaluation, e.g. ``"cpu"`` or ``"cuda"``.
        float64: evaluate in float64 (see module docstring); ``False`` keeps the model's
            own dtype.
        compiled: evaluate the package's compiled form (`compiled_network`; in the
            model's own dtype), compiling it first if needed.

    Returns:
        NequIPCalculator with ``energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt,
        ASE sign convention) and per-atom ``energies``. Type names are used as chemical
        symbols (identity map).

    Raises:
        FileNotFoundError: `path` does not exist.
        NetworkDtypeError: ``float64=True`` for a package trained in float32.
        CompileError: ``compiled=True`` with ``float64=True`` or for a checkpoint, or the
            compilation failed.
    """
    from nequip.integrations.ase import NequIPCalculator

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
    if compiled:
        if float64:
            raise CompileError(f"{path}: a compiled model evaluates in its own dtype; "
                               "float64 and compiled cannot be combined")
        return NequIPCalculator.from_compiled_model(
            str(compiled_network(path, device)), device=device,
            chemical_species_to_atom_type_map=True)
    is_package = path.name.endswith(PACKAGE_SUFFIX)
    if not float64 or is_package:
        calc = NequIPCalculator._from_saved_model(
            str(path), device=device, chemical_species_to_atom_type_map=True
        )
        if float64 and _model_dtype(calc.model) != "float64":
            raise NetworkDtypeError(
                f"packaged model {path} was trained with model_dtype "
                f"{_model_dtype(calc.model)}; float64 evaluation needs either its checkpoint "
                "(.ckpt, rebuilt in float64 at load time) or training with the override "
                "{'model_dtype': 'float64'}"
            )
        return calc

    from nequip.integrations.utils import basic_transforms
    from nequip.nn import graph_model

    model = _load_checkpoint_float64(path)
    type_names = model.metadata[graph_model.TYPE_NAMES_KEY].split(" ")
    r_max = float(model.metadata[graph_model.R_MAX_KEY])
    transforms = basic_transforms(model.metadata, r_max, type_names, {t: t for t in type_names})
    return NequIPCalculator(model=model, device=device, transforms=transforms)
