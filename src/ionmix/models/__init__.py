"""Students: a network on a physics baseline, loaded as one ASE calculator.

Public API:
    Baseline, BASELINES, read_record, write_record, residual_frames   (ionmix.models.baseline)
    load_model, load_committee, LoadedModel, model_paths             (ionmix.models.factory)
    CommitteeCalculator, ExplorationStop                             (ionmix.models.committee)
    load_calculator (a network alone, without its baseline)           (ionmix.models.network)
"""

from ionmix.models.baseline import (
    BASELINES,
    Baseline,
    BaselineError,
    read_record,
    residual_frames,
    write_record,
)
from ionmix.models.committee import CommitteeCalculator, ExplorationStop
from ionmix.models.factory import LoadedModel, ModelError, load_committee, load_model, model_paths
from ionmix.models.network import load_calculator

__all__ = ["BASELINES", "Baseline", "BaselineError", "CommitteeCalculator", "ExplorationStop",
           "LoadedModel", "ModelError", "load_calculator", "load_committee", "load_model",
           "model_paths",
           "read_record", "residual_frames", "write_record"]
