"""steplab optimizers: the recent learning-rate literature as Optax transformations.

Every optimizer comes as a building block `scale_by_<name>` and a full
optimizer `<name>(learning_rate, ...)` built as one `optax.chain`, with the
reference implementation's defaults. `registry` lists them all with tuning
search spaces; `eval_params` gives the parameters to evaluate at. `schedules`
holds learning-rate (and momentum) schedules from the literature as Optax
schedules (the runner builds them by name: `experiments.schedule_config`).
"""

from optimizers._eval import estimated_d
from optimizers._eval import eval_params
from optimizers._eval import HasEvalParams
from optimizers.adabound import adabound
from optimizers.adabound import amsbound
from optimizers.adabound import scale_by_adabound
from optimizers.adabound import ScaleByAdaBoundState
from optimizers.adam_mini import adam_mini
from optimizers.adam_mini import adam_mini_partition
from optimizers.adam_mini import Block as AdamMiniBlock
from optimizers.adam_mini import print_adam_mini_partition
from optimizers.adam_mini import scale_by_adam_mini
from optimizers.adam_mini import ScaleByAdamMiniState
from optimizers.adamod import adamod
from optimizers.adamod import scale_by_adamod
from optimizers.adamod import ScaleByAdaModState
from optimizers.adamp import adamp
from optimizers.adamp import project as adamp_projection
from optimizers.adamp import scale_by_adamp
from optimizers.adamp import scale_by_sgdp
from optimizers.adamp import ScaleByAdamPState
from optimizers.adamp import ScaleBySGDPState
from optimizers.adamp import sgdp
from optimizers.dog import dog
from optimizers.dog import ldog
from optimizers.dog import polynomial_decay_averaging
from optimizers.dog import PolynomialDecayAveragingState
from optimizers.dog import scale_by_dog
from optimizers.dog import ScaleByDoGState
from optimizers.induced_metric import adam_preconditioner
from optimizers.induced_metric import induced_metric_log
from optimizers.induced_metric import induced_metric_rms
from optimizers.induced_metric import induced_metric_sgd
from optimizers.induced_metric import scale_by_induced_metric
from optimizers.induced_metric import ScaleByDebiasedMomentsState
from optimizers.induced_metric import ScaleByInducedMetricState
from optimizers.lion import lion
from optimizers.lion import scale_by_lion
from optimizers.lion import ScaleByLionState
from optimizers.muon import muon
from optimizers.muon import muon_dimension_numbers
from optimizers.muon import muon_partition
from optimizers.muon import MuonDimensionNumbers
from optimizers.muon import ScaleByMuonState
from optimizers.prodigy import prodigy
from optimizers.prodigy import scale_by_prodigy
from optimizers.prodigy import ScaleByProdigyState
from optimizers.radam import radam
from optimizers.schedule_free import schedule_free
from optimizers.schedule_free import schedule_free_adamw
from optimizers.schedule_free import schedule_free_eval_params
from optimizers.schedule_free import schedule_free_radam
from optimizers.schedule_free import schedule_free_sgd
from optimizers.schedule_free import ScheduleFreeState
from optimizers.sgd import sgd_momentum
from optimizers.sgd import sgd_nesterov
from optimizers.schedules import cyclic_momentum_schedule
from optimizers.schedules import cyclic_schedule
from optimizers.schedules import linear_decay_to_zero_schedule
from optimizers.schedules import one_cycle_momentum_schedule
from optimizers.schedules import one_cycle_schedule
from optimizers.schedules import power_schedule
from optimizers.schedules import refined_schedule
from optimizers.schedules import rex_schedule
from optimizers.schedules import warmup_stable_decay_schedule
from optimizers.radam import scale_by_radam
from optimizers.radam import ScaleByRAdamState
from optimizers.registry import OptimizerSpec
from optimizers.registry import Registry
from optimizers.registry import registry

__all__ = (
    "AdamMiniBlock",
    "ScaleByAdamMiniState",
    "adam_mini",
    "adam_mini_partition",
    "print_adam_mini_partition",
    "scale_by_adam_mini",
    "HasEvalParams",
    "OptimizerSpec",
    "Registry",
    "ScaleByAdaBoundState",
    "ScaleByAdaModState",
    "PolynomialDecayAveragingState",
    "ScaleByAdamPState",
    "ScaleByDebiasedMomentsState",
    "ScaleByDoGState",
    "ScaleByMuonState",
    "MuonDimensionNumbers",
    "ScaleByInducedMetricState",
    "ScaleByLionState",
    "ScaleByProdigyState",
    "ScaleByRAdamState",
    "ScaleBySGDPState",
    "ScheduleFreeState",
    "adabound",
    "adam_preconditioner",
    "adamod",
    "adamp",
    "adamp_projection",
    "amsbound",
    "cyclic_momentum_schedule",
    "cyclic_schedule",
    "dog",
    "estimated_d",
    "induced_metric_log",
    "induced_metric_rms",
    "induced_metric_sgd",
    "eval_params",
    "ldog",
    "lion",
    "muon",
    "muon_dimension_numbers",
    "muon_partition",
    "linear_decay_to_zero_schedule",
    "one_cycle_momentum_schedule",
    "one_cycle_schedule",
    "polynomial_decay_averaging",
    "power_schedule",
    "prodigy",
    "radam",
    "refined_schedule",
    "registry",
    "rex_schedule",
    "scale_by_adabound",
    "scale_by_adamod",
    "scale_by_adamp",
    "scale_by_dog",
    "scale_by_induced_metric",
    "scale_by_lion",
    "scale_by_prodigy",
    "scale_by_radam",
    "scale_by_sgdp",
    "schedule_free",
    "schedule_free_adamw",
    "schedule_free_eval_params",
    "schedule_free_radam",
    "schedule_free_sgd",
    "sgd_momentum",
    "sgd_nesterov",
    "sgdp",
    "warmup_stable_decay_schedule",
)
