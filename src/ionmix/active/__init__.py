"""Active learning (`ionmix learn`): a committee explores, the teacher labels what the
committee disagrees on, the committee retrains — until its NPT density stops moving."""

from ionmix.active.loop import LearnConfig, LearnResult, load_learn_config, run_learning
from ionmix.active.select import Selection, TrustWindow, select
from ionmix.models import CommitteeCalculator, ExplorationStop, load_committee

__all__ = ["CommitteeCalculator", "ExplorationStop", "LearnConfig", "LearnResult",
           "Selection", "TrustWindow", "load_committee", "load_learn_config", "run_learning",
           "select"]
