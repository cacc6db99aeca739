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

Side effect (nequip's design): loading initialises nequip's global state once per process,
which sets torch's default dtype to float64 and seeds torch/numpy/random with 123.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ionmix.errors import InputError

PACKAGE_SUFFIX = ".nequip.zip"
#: The training run's record of its data beside the package (`ionmix.train.run` writes
#: it; the factory reads the teachers of the labels from it).
MANIFEST_NAME = "data_manifest.json"


class NetworkDtypeError(InputError):
    """A float64 evaluation asked of a package trained in float32."""


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


def load_calculator(path: str | Path, device: str = "cpu", float64: bool = False):
    """An ASE calculator (`nequip.integrations.ase.NequIPCalculator`) for a trained model.

    Args:
        path: a packaged model (``*.nequip.zip``, from ``nequip-package build``) or a
            training checkpoint (``*.ckpt``).
        device: torch device for evaluation, e.g. ``"cpu"`` or ``"cuda"``.
        float64: evaluate in float64 (see module docstring); ``False`` keeps the model's
            own dtype.

    Returns:
        NequIPCalculator with ``energy`` (eV), ``forces`` (eV/Å), ``stress`` (eV/Å³, Voigt,
        ASE sign convention) and per-atom ``energies``. Type names are used as chemical
        symbols (identity map).

    Raises:
        FileNotFoundError: `path` does not exist.
        NetworkDtypeError: ``float64=True`` for a package trained in float32.
    """
    from nequip.integrations.ase import NequIPCalculator

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file at {path}")
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
