"""Training presets as plain data, and the nequip-framework Hydra config each one produces.

A preset fixes the architecture and optimisation hyperparameters; `build_config` turns it,
plus the data files, type names, energy shifts and seed, into a complete config that
``nequip-train -cp RUN_DIR -cn config`` runs unchanged. Settings that appear in more than
one place of a nequip config (cutoff, type names, seed, dtype, batch size, learning rate,
loss weights, the monitored metric) are written once at the top and referenced with
``${...}`` interpolation.

Overrides are a dict of dotted paths into that config, exactly as Hydra's command line
spells them, e.g. ``{"training_module.model.num_layers": 2, "max_epochs": 5}``. An
override of a value that is an interpolation (``training_module.optimizer.lr`` is
``${learning_rate}``) is applied to the key it points to, so each value stays in one
place. A key that is not in the config is an error; prefix it with ``+`` (Hydra's syntax)
to add a new key under an existing section, e.g. ``{"+trainer.max_time": "00:01:00:00"}``.
List items are addressed by index (``trainer.callbacks.1.patience``).

Paper presets follow Goodwin et al., J. Phys. Chem. Lett. 2024, 15, 7539 (methods): where
the paper gives no value (feature widths of Allegro, radial MLPs, schedulers, epochs) the
choice is ours and is marked as such in the preset's description.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import TrainConfigError

#: Metric that checkpointing, early stopping and the LR scheduler all watch.
MONITORED_METRIC = "val0_epoch/weighted_sum"

BACKENDS = ("nequip", "allegro")
MODEL_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Preset:
    """One training recipe.

    Attributes:
        name: preset name, e.g. ``"paper-allegro-722"``.
        backend: ``"nequip"`` (message passing, `nequip.model.NequIPGNNModel`) or
            ``"allegro"`` (strictly local, `allegro.model.AllegroModel`).
        description: what the preset is for and where its numbers come from.
        cutoff_radius_A: r_max (Å).
        batch_size: frames per optimisation step (also used for validation/test batches).
        learning_rate: Adam learning rate.
        loss_coeffs: weights of the MSE loss terms: ``total_energy`` (on per-atom energy,
            eV²/atom²), ``forces`` ((eV/Å)²) and, if present, ``stress`` ((eV/Å³)²).
            A ``stress`` entry makes stress labels mandatory in every file.
        architecture: model-builder keyword arguments besides the common ones (seed,
            dtype, type names, r_max, normalisation statistics, energy shifts).
        val_fraction: fraction of the training file held out for validation when no
            separate validation file is given.
        max_epochs: default epoch limit (override ``max_epochs``).
        early_stopping_patience: epochs without improvement of the monitored validation
            metric before training stops (override ``early_stopping_patience``).
        lr_scheduler_patience: epochs without improvement before the learning rate is
            multiplied by ``lr_scheduler_factor`` (ReduceLROnPlateau).
        lr_scheduler_factor: multiplicative LR decay on plateau.
        ema_decay: decay of the exponential moving average of weights used for
            validation, test and the exported model.
        model_dtype: ``float32`` or ``float64`` (override ``model_dtype``).
    """

    name: str
    backend: str
    description: str
    cutoff_radius_A: float
    batch_size: int
    learning_rate: float
    loss_coeffs: dict[str, float]
    architecture: dict[str, Any]
    val_fraction: float = 0.2
    max_epochs: int = 1000
    early_stopping_patience: int = 50
    lr_scheduler_patience: int = 25
    lr_scheduler_factor: float = 0.5
    ema_decay: float = 0.999
    model_dtype: str = "float32"
    tags: tuple[str, ...] = field(default=())

    @property
    def uses_stress(self) -> bool:
        """True if the loss has a stress term (stress labels then required)."""
        return float(self.loss_coeffs.get("stress", 0.0)) > 0.0


_NEQUIP_COMMON = {
    "parity": True,
    "num_bessels": 8,
    "bessel_trainable": False,
    "polynomial_cutoff_p": 6,
}

_ALLEGRO_EMBED = {
    "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
    "num_bessels": 8,
    "bessel_trainable": False,
    "polynomial_cutoff_p": 6,
}


def _allegro_arch(
    l_max: int,
    num_layers: int,
    num_scalar_features: int,
    num_tensor_features: int,
    mlp_width: int,
    mlp_depth: int,
    readout_width: int,
    tp_path_channel_coupling: bool = True,
) -> dict[str, Any]:
    return {
        "radial_chemical_embed": dict(_ALLEGRO_EMBED),
        "scalar_embed_mlp_hidden_layers_depth": 1,
        "scalar_embed_mlp_hidden_layers_width": mlp_width,
        "l_max": l_max,
        "parity": True,
        "num_layers": num_layers,
        "num_scalar_features": num_scalar_features,
        "num_tensor_features": num_tensor_features,
        "allegro_mlp_hidden_layers_depth": mlp_depth,
        "allegro_mlp_hidden_layers_width": mlp_width,
        "tp_path_channel_coupling": tp_path_channel_coupling,
        "readout_mlp_hidden_layers_depth": 1,
        "readout_mlp_hidden_layers_width": readout_width,
    }


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            name="paper-nequip-transfer",
            backend="nequip",
            description=(
                "NequIP of the paper's transferability study on classical Li[PF6]/[EMIM][PF6] "
                "data: r_max 5 Å, l_max 1, 5 layers, features 16x0o+16x0e+8x1o+8x1e, "
                "lr 0.05, batch 5, 600 train / 50 val frames per composition (val_fraction "
                "50/650). Not in the paper (our choice): radial MLP 2x64 (nequip's former "
                "defaults), ReduceLROnPlateau(0.5, 25 epochs), early stopping after 50 "
                "epochs, EMA 0.999, at most 1000 epochs. 87.6k weights for 6 species."
            ),
            cutoff_radius_A=5.0,
            batch_size=5,
            learning_rate=0.05,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0},
            architecture={
                **_NEQUIP_COMMON,
                "l_max": 1,
                "num_layers": 5,
                # NequIPGNNModel: one multiplicity per l, both parities: [16, 8] with
                # parity=True is 16x0e + 16x0o + 8x1e + 8x1o (the paper's irreps).
                "num_features": [16, 8],
                "radial_mlp_depth": 2,
                "radial_mlp_width": 64,
            },
            val_fraction=50 / 650,
            tags=("paper",),
        ),
        Preset(
            name="paper-allegro-transfer",
            backend="allegro",
            description=(
                "Allegro of the paper's transferability study: r_max 6 Å, l_max 2, 2 layers, "
                "lr 5e-4, batch 1, 80/20 train/val split. Not in the paper (our choice): "
                "64 scalar / 32 tensor features, Allegro MLP 2x128, readout 32, "
                "ReduceLROnPlateau(0.5, 25), early stopping 50, EMA 0.999, <= 1000 epochs. "
                "134k weights for 6 species."
            ),
            cutoff_radius_A=6.0,
            batch_size=1,
            learning_rate=5e-4,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0},
            architecture=_allegro_arch(2, 2, 64, 32, 128, 2, 32),
            val_fraction=0.2,
            tags=("paper",),
        ),
        Preset(
            name="paper-allegro-722",
            backend="allegro",
            description=(
                "The paper's production Allegro '722' / '11100' for [F-OMIM][C4F9CO2]: "
                "r_max 7 Å, l_max 2, 2 layers, lr 1e-3, batch 4, loss weights energy 1, "
                "forces 1, stress 100, 80/20 train/val split. Needs stress labels and boxes "
                "wider than 14 Å. Not in the paper (our choice): widths as "
                "paper-allegro-transfer, ReduceLROnPlateau(0.5, 25), early stopping 50."
            ),
            cutoff_radius_A=7.0,
            batch_size=4,
            learning_rate=1e-3,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0, "stress": 100.0},
            architecture=_allegro_arch(2, 2, 64, 32, 128, 2, 32),
            val_fraction=0.2,
            tags=("paper",),
        ),
        Preset(
            name="cpu-tiny-nequip",
            backend="nequip",
            description=(
                "Small NequIP for laptops and tests: r_max 4.5 Å, l_max 1, 3 layers, "
                "features 16x0e+16x0o+8x1e+8x1o, radial MLP 1x32 (20.7k weights for 6 "
                "species), lr 0.01, batch 2, 10 epochs. Not meant to be accurate."
            ),
            cutoff_radius_A=4.5,
            batch_size=2,
            learning_rate=0.01,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0},
            architecture={
                **_NEQUIP_COMMON,
                "l_max": 1,
                "num_layers": 3,
                "num_features": [16, 8],
                "radial_mlp_depth": 1,
                "radial_mlp_width": 32,
            },
            max_epochs=10,
            early_stopping_patience=20,
            lr_scheduler_patience=10,
            tags=("cpu", "tiny"),
        ),
        Preset(
            name="cpu-tiny-allegro",
            backend="allegro",
            description=(
                "Small Allegro for laptops and tests: r_max 4.5 Å, l_max 1, 2 layers, "
                "16 scalar / 8 tensor features, MLPs 1x32, readout 16 (6.4k weights for 6 "
                "species), lr 5e-3, batch 2, 10 epochs. Not meant to be accurate."
            ),
            cutoff_radius_A=4.5,
            batch_size=2,
            learning_rate=5e-3,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0},
            architecture=_allegro_arch(1, 2, 16, 8, 32, 1, 16),
            max_epochs=10,
            early_stopping_patience=20,
            lr_scheduler_patience=10,
            tags=("cpu", "tiny"),
        ),
        Preset(
            name="cpu-tiny-allegro-npt",
            backend="allegro",
            description=(
                "cpu-tiny-allegro with a stress term for NPT MD: loss weights energy 1, "
                "forces 1, stress 1e4 (a stress error of 1e-3 eV/Å³ = 1.6 kbar then costs as "
                "much as a force error of 0.1 eV/Å; at the paper's weight of 100 stress is "
                "~1% of the loss and the density is left to chance), 60 epochs. Needs "
                "stress labels."
            ),
            cutoff_radius_A=4.5,
            batch_size=2,
            learning_rate=5e-3,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0, "stress": 1.0e4},
            architecture=_allegro_arch(1, 2, 16, 8, 32, 1, 16),
            max_epochs=60,
            early_stopping_patience=20,
            lr_scheduler_patience=10,
            tags=("cpu", "tiny"),
        ),
        Preset(
            name="cpu-small-allegro-npt",
            backend="allegro",
            description=(
                "cpu-tiny-allegro-npt with 4x the weights, for when the tiny model is at "
                "capacity: r_max 4.5 Å, l_max 1, 2 layers, 32 scalar / 16 tensor features, "
                "MLPs 1x64, readout 32 (25.2k weights for 6 species); loss weights, lr, "
                "batch and epochs as cpu-tiny-allegro-npt. Chosen by "
                "benchmarks/bench_presets.py (2026-12-06, Li[PF6]/[EMIM][PF6] x = 0.4, 188 "
                "atoms, 40 train frames, 10 epochs, seeds 0 / 1): test force MAE 224 / 246 "
                "vs 293 / 365 meV/Å and stress MAE 0.78 / 0.91 vs 0.96 / 1.36 meV/Å³ of the "
                "tiny preset (energy 13.9 / 17.2 vs 10.3 / 25.9 meV/atom), for 1.8x its MD "
                "work per step (1-thread CPU time of forces + stress) and 2-4x its training "
                "CPU time. A longer cutoff (5 Å, or 5.5 Å for Li pairs only) cost 2.3-2.9x "
                "in MD and was no more accurate; r_max 5.5 Å or l_max 2 cost 3.7-6.5x. "
                "Needs stress labels."
            ),
            cutoff_radius_A=4.5,
            batch_size=2,
            learning_rate=5e-3,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0, "stress": 1.0e4},
            architecture=_allegro_arch(1, 2, 32, 16, 64, 1, 32),
            max_epochs=60,
            early_stopping_patience=20,
            lr_scheduler_patience=10,
            tags=("cpu", "small"),
        ),
        Preset(
            name="cpu-tiny-allegro-722",
            backend="allegro",
            description=(
                "The 722 recipe's shape at laptop size: l_max 2, 2 layers, loss weights "
                "energy 1, forces 1, stress 100, lr 1e-3, batch 4, but r_max 5 Å (so ~100-atom "
                "boxes fit), 16 scalar / 4 tensor features, no path-channel coupling in the "
                "tensor products (6x cheaper at l_max 2), MLPs 1x32 (5.9k weights for 6 species), "
                "10 epochs. Needs stress labels."
            ),
            cutoff_radius_A=5.0,
            batch_size=4,
            learning_rate=1e-3,
            loss_coeffs={"total_energy": 1.0, "forces": 1.0, "stress": 100.0},
            architecture=_allegro_arch(2, 2, 16, 4, 32, 1, 16, tp_path_channel_coupling=False),
            max_epochs=10,
            early_stopping_patience=20,
            lr_scheduler_patience=10,
            tags=("cpu", "tiny"),
        ),
    ]
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; TrainConfigError naming it (and the known ones) if unknown."""
    try:
        return PRESETS[name]
    except KeyError:
        raise TrainConfigError(
            f"unknown training preset {name!r}; known presets: {', '.join(PRESETS)}"
        ) from None


def _metrics_section(with_stress: bool) -> dict[str, Any]:
    """nequip metrics wrapper reporting MAE/RMSE; the weighted sum follows the loss weights."""
    coeffs: dict[str, Any] = {
        "per_atom_energy_mae": "${loss_coeffs.total_energy}",
        "forces_mae": "${loss_coeffs.forces}",
        "total_energy_mae": None,
        "per_atom_energy_rmse": None,
        "forces_rmse": None,
        "total_energy_rmse": None,
    }
    if with_stress:
        coeffs["stress_mae"] = "${loss_coeffs.stress}"
        coeffs["stress_rmse"] = None
        return {"_target_": "nequip.train.EnergyForceStressMetrics", "coeffs": coeffs}
    return {"_target_": "nequip.train.EnergyForceMetrics", "coeffs": coeffs}


def _test_metrics_section(with_stress: bool) -> dict[str, Any]:
    """Test metrics: plain MAE/RMSE of energy, forces (and stress when every test frame has it)."""
    coeffs: dict[str, Any] = {
        "per_atom_energy_mae": 1.0,
        "forces_mae": 1.0,
        "total_energy_mae": None,
        "per_atom_energy_rmse": None,
        "forces_rmse": None,
        "total_energy_rmse": None,
    }
    if with_stress:
        coeffs.update({"stress_mae": 1.0, "stress_rmse": None})
        return {"_target_": "nequip.train.EnergyForceStressMetrics", "coeffs": coeffs}
    return {"_target_": "nequip.train.EnergyForceMetrics", "coeffs": coeffs}


def build_config(
    preset: str | Preset,
    *,
    train_file: str | Path,
    val_file: str | Path | None,
    test_file: str | Path,
    type_names: Sequence[str],
    per_type_energy_shifts_eV: Mapping[str, float],
    seed: int,
    run_dir: str | Path,
    train_val_counts: tuple[int, int] | None = None,
    test_has_stress: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A complete nequip-framework config (nested dict with ``${...}`` strings).

    Args:
        preset: preset name or object.
        train_file, val_file, test_file: ASE-readable files (made absolute). With
            ``val_file=None`` the training file is split randomly (by ``seed``) into
            ``train_val_counts`` frames.
        type_names: model type names = chemical symbols, e.g. ["C", "F", "H", "Li", "N", "P"].
        per_type_energy_shifts_eV: per-atom energy shift (eV) for every type name.
        seed: seeds the model initialisation, the data split and shuffling.
        run_dir: Hydra output directory (absolute), where checkpoints and logs go.
        train_val_counts: (n_train, n_val) frames when splitting the training file.
        test_has_stress: report stress test metrics (every test frame has stress).
        overrides: dotted-path overrides, see the module docstring.

    Raises:
        TrainConfigError: unknown preset or override key, invalid dtype/backend, or
            energy shifts not keyed exactly by ``type_names``.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    type_names = [str(t) for t in type_names]
    _check_build_inputs(p, type_names, per_type_energy_shifts_eV)
    data = _data_section(train_file, val_file, test_file, train_val_counts)
    model = _model_section(p, type_names, per_type_energy_shifts_eV)
    config: dict[str, Any] = {
        "run": ["train", "test"],
        "seed": int(seed),
        "cutoff_radius": float(p.cutoff_radius_A),
        "model_type_names": type_names,
        "model_dtype": p.model_dtype,
        "batch_size": int(p.batch_size),
        "learning_rate": float(p.learning_rate),
        "loss_coeffs": {k: float(v) for k, v in p.loss_coeffs.items()},
        "max_epochs": int(p.max_epochs),
        "early_stopping_patience": int(p.early_stopping_patience),
        "lr_scheduler_patience": int(p.lr_scheduler_patience),
        "lr_scheduler_factor": float(p.lr_scheduler_factor),
        "monitored_metric": MONITORED_METRIC,
        "hydra": {"run": {"dir": str(Path(run_dir).resolve())}},
        "data": data,
        "trainer": _trainer_section(),
        "training_module": _training_module_section(p, model, test_has_stress),
    }
    config = apply_overrides(config, overrides or {})
    check_config(config)
    return config


def _check_build_inputs(p: Preset, type_names: list[str],
                        per_type_energy_shifts_eV: Mapping[str, float]) -> None:
    """TrainConfigError for an unknown backend, bad type names or mismatched shifts."""
    if p.backend not in BACKENDS:
        raise TrainConfigError(f"preset {p.name!r}: unknown backend {p.backend!r}")
    if len(set(type_names)) != len(type_names) or not type_names:
        raise TrainConfigError(f"type_names must be non-empty and unique, got {type_names}")
    shift_keys = set(per_type_energy_shifts_eV)
    if shift_keys != set(type_names):
        raise TrainConfigError(
            "per-type energy shifts must be given for exactly the type names "
            f"{type_names}; missing {sorted(set(type_names) - shift_keys)}, "
            f"extra {sorted(shift_keys - set(type_names))}"
        )


def _data_section(
    train_file: str | Path, val_file: str | Path | None, test_file: str | Path,
    train_val_counts: tuple[int, int] | None,
) -> dict[str, Any]:
    """The ``data`` section: ASE files (absolute), or a split of the training file."""
    data: dict[str, Any] = {
        "_target_": "nequip.data.datamodule.ASEDataModule",
        "seed": "${seed}",
        "train_file_path": str(Path(train_file).resolve()),
    }
    if val_file is None:
        if train_val_counts is None:
            raise TrainConfigError("val_file=None needs train_val_counts=(n_train, n_val)")
        n_train, n_val = (int(n) for n in train_val_counts)
        del data["train_file_path"]
        data["split_dataset"] = {
            "file_path": str(Path(train_file).resolve()),
            "train": n_train,
            "val": n_val,
        }
    else:
        data["val_file_path"] = str(Path(val_file).resolve())
    data["test_file_path"] = str(Path(test_file).resolve())
    data.update(
        {
            "transforms": [
                {
                    "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                    "model_type_names": "${model_type_names}",
                    "chemical_species_to_atom_type_map": (
                        "${list_to_identity_dict:${model_type_names}}"
                    ),
                },
                {
                    "_target_": "nequip.data.transforms.NeighborListTransform",
                    "r_max": "${cutoff_radius}",
                },
            ],
            "train_dataloader": {
                "_target_": "torch.utils.data.DataLoader",
                "batch_size": "${batch_size}",
                "shuffle": True,
            },
            "val_dataloader": {
                "_target_": "torch.utils.data.DataLoader",
                "batch_size": "${batch_size}",
            },
            "test_dataloader": "${data.val_dataloader}",
            "stats_manager": {
                "_target_": "nequip.data.CommonDataStatisticsManager",
                "type_names": "${model_type_names}",
            },
        }
    )
    return data


def _trainer_section() -> dict[str, Any]:
    """The Lightning ``trainer`` section: CSV log, best/last checkpoints, early stopping."""
    return {
        "_target_": "lightning.Trainer",
        "accelerator": "auto",
        "devices": 1,
        "max_epochs": "${max_epochs}",
        "check_val_every_n_epoch": 1,
        "log_every_n_steps": 50,
        "enable_progress_bar": False,
        "logger": {
            "_target_": "lightning.pytorch.loggers.CSVLogger",
            "save_dir": "${hydra:runtime.output_dir}",
            "name": "",
            "version": "",
            "flush_logs_every_n_steps": 1,
        },
        "callbacks": [
            {
                # best.ckpt (lowest monitored validation metric; used for test and
                # packaging) and last.ckpt (every epoch; used to resume)
                "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                "dirpath": "${hydra:runtime.output_dir}",
                "filename": "best",
                "monitor": "${monitored_metric}",
                "mode": "min",
                "save_top_k": 1,
                "save_last": True,
            },
            {
                "_target_": "lightning.pytorch.callbacks.EarlyStopping",
                "monitor": "${monitored_metric}",
                "mode": "min",
                "patience": "${early_stopping_patience}",
            },
            {
                "_target_": "lightning.pytorch.callbacks.LearningRateMonitor",
                "logging_interval": "epoch",
            },
        ],
    }


def _model_section(p: Preset, type_names: list[str],
                   per_type_energy_shifts_eV: Mapping[str, float]) -> dict[str, Any]:
    """The model builder's arguments: the preset's architecture plus the common ones."""
    return {
        "_target_": (
            "nequip.model.NequIPGNNModel" if p.backend == "nequip" else "allegro.model.AllegroModel"
        ),
        "seed": "${seed}",
        "model_dtype": "${model_dtype}",
        # TorchScript/torch.compile at train time is refused by nequip on torch >= 2.10
        "compile_mode": "eager",
        "type_names": "${model_type_names}",
        "r_max": "${cutoff_radius}",
        **copy.deepcopy(p.architecture),
        "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
        "per_type_energy_scales": "${training_data_stats:forces_rms}",
        "per_type_energy_scales_trainable": False,
        "per_type_energy_shifts": {t: float(per_type_energy_shifts_eV[t]) for t in type_names},
        "per_type_energy_shifts_trainable": False,
    }


def _training_module_section(p: Preset, model: dict[str, Any],
                             test_has_stress: bool) -> dict[str, Any]:
    """The ``training_module`` section: EMA module, loss, metrics, Adam, LR scheduler."""
    with_stress = p.uses_stress
    return {
        "_target_": "nequip.train.EMALightningModule",
        "ema_decay": p.ema_decay,
        "loss": {
            "_target_": (
                "nequip.train.EnergyForceStressLoss"
                if with_stress
                else "nequip.train.EnergyForceLoss"
            ),
            "per_atom_energy": True,
            "coeffs": "${loss_coeffs}",
        },
        "val_metrics": _metrics_section(with_stress),
        "test_metrics": _test_metrics_section(with_stress or test_has_stress),
        "optimizer": {"_target_": "torch.optim.Adam", "lr": "${learning_rate}"},
        "lr_scheduler": {
            "scheduler": {
                "_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                "factor": "${lr_scheduler_factor}",
                "patience": "${lr_scheduler_patience}",
            },
            "monitor": "${monitored_metric}",
            "interval": "epoch",
            "frequency": 1,
        },
        "model": model,
    }


_INTERPOLATION = re.compile(r"^\$\{([A-Za-z_][\w.]*)\}$")


def _split_path(path: str) -> list[str]:
    parts = path.split(".")
    if not path or any(not part for part in parts):
        raise TrainConfigError(f"override key {path!r} is not a dotted path")
    return parts


def _child(node: Any, part: str, path: str) -> Any:
    if isinstance(node, dict):
        if part not in node:
            raise TrainConfigError(
                f"unknown override key {path!r}: no {part!r} here (known: {sorted(node)}); "
                "prefix the key with '+' to add a new one"
            )
        return node[part]
    if isinstance(node, list):
        if not part.isdigit() or int(part) >= len(node):
            raise TrainConfigError(
                f"unknown override key {path!r}: {part!r} is not an index of a list of "
                f"{len(node)}"
            )
        return node[int(part)]
    raise TrainConfigError(f"unknown override key {path!r}: {part!r} is below a plain value")


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    add = key.startswith("+")
    path = key[1:] if add else key
    parts = _split_path(path)
    node: Any = config
    i = 0
    hops = 0
    while True:
        if i == len(parts) - 1 and add:
            break
        child = _child(node, parts[i], key)
        match = _INTERPOLATION.match(child) if isinstance(child, str) else None
        last = i == len(parts) - 1
        if match and hops < 10 and not (last and isinstance(value, str) and "${" in value):
            # keep one source of truth: follow the interpolation to the value it names
            parts = _split_path(match.group(1)) + parts[i + 1 :]
            node, i, hops = config, 0, hops + 1
            continue
        if last:
            break
        node, i = child, i + 1
    name = parts[-1]
    if add:
        if not isinstance(node, dict):
            raise TrainConfigError(f"override key {key!r}: can only add keys to a section")
        if name in node:
            raise TrainConfigError(f"override key {key!r}: {path!r} exists; drop the '+'")
        node[name] = copy.deepcopy(value)
    elif isinstance(node, list):
        node[int(name)] = copy.deepcopy(value)
    else:
        node[name] = copy.deepcopy(value)


def apply_overrides(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of `config` with dotted-path `overrides` applied (see module docstring).

    Raises:
        TrainConfigError: naming the first unknown or malformed key.
    """
    out = copy.deepcopy(dict(config))
    for key, value in overrides.items():
        if not isinstance(key, str):
            raise TrainConfigError(f"override keys must be strings, got {key!r}")
        _set(out, key, value)
    return out


def check_config(config: Mapping[str, Any]) -> None:
    """Light sanity checks of values that are easy to get wrong in overrides."""
    if config.get("model_dtype") not in MODEL_DTYPES:
        raise TrainConfigError(
            f"model_dtype must be one of {MODEL_DTYPES}, got {config.get('model_dtype')!r}"
        )
    r_max = config.get("cutoff_radius")
    if not isinstance(r_max, int | float) or isinstance(r_max, bool) or r_max <= 0:
        raise TrainConfigError(f"cutoff_radius must be a positive number (Å), got {r_max!r}")
    for key in ("max_epochs", "batch_size", "seed"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise TrainConfigError(f"{key} must be a non-negative integer, got {value!r}")
    if config["batch_size"] < 1 or config["max_epochs"] < 1:
        raise TrainConfigError("batch_size and max_epochs must be at least 1")
    for term, weight in config.get("loss_coeffs", {}).items():
        if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
            raise TrainConfigError(f"loss_coeffs.{term} must be a number >= 0, got {weight!r}")


def config_to_yaml(config: Mapping[str, Any], header: str = "") -> str:
    """YAML text of `config`, in insertion order, with `header` lines as ``#`` comments."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    body = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False, width=100)
    return ("\n".join(lines) + "\n\n" if lines else "") + body
