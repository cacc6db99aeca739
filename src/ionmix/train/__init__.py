"""Training NequIP and Allegro models from extxyz datasets with the nequip framework.

Public API:
    PRESETS, Preset, get_preset, build_config, apply_overrides   (ionmix.train.presets)
    per_type_energy_shifts                                        (ionmix.train.energy)
    run_training, TrainResult, loss_curve, read_test_metrics      (ionmix.train.run)
    train_from_store                                              (ionmix.train.from_store)
    evaluate                                                      (ionmix.train.evaluate)
    TrainConfigError, TrainDataError, TrainRunError               (ionmix.train.errors)

Heavy imports (torch, nequip) happen only when a model is loaded or evaluated.
"""

from .energy import ENERGY_REFERENCE_MODES, per_type_energy_shifts
from .errors import TrainConfigError, TrainDataError, TrainRunError
from .evaluate import evaluate
from .from_store import train_from_store
from .presets import PRESETS, Preset, apply_overrides, build_config, config_to_yaml, get_preset
from .run import TrainResult, loss_curve, read_metrics_csv, read_test_metrics, run_training

__all__ = [
    "ENERGY_REFERENCE_MODES",
    "PRESETS",
    "Preset",
    "TrainConfigError",
    "TrainDataError",
    "TrainResult",
    "TrainRunError",
    "apply_overrides",
    "build_config",
    "config_to_yaml",
    "evaluate",
    "get_preset",
    "loss_curve",
    "per_type_energy_shifts",
    "read_metrics_csv",
    "read_test_metrics",
    "run_training",
    "train_from_store",
]
