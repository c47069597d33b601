"""A steplab submission: RAdam (torch semantics) with the baseline's schedule.

RAdam's rectification replaces most of the warmup, so the warmup is short
(2% of `step_hint`); the learning rate then decays with a cosine to zero at
`step_hint`, as the NAdamW baseline's.
"""

import optimizers

from experiments import submission as _submission

SEARCH_SPACE = {
    "learning_rate": {"min": 2e-4, "max": 1e-2, "scaling": "log"},
    "one_minus_b1": {"min": 5e-2, "max": 0.2, "scaling": "log"},
    "weight_decay": {"min": 1e-5, "max": 0.1, "scaling": "log"},
    "warmup_factor": {"feasible_points": [0.02]},
}

globals().update(
    _submission.as_module_api(
        _submission.optimizer_submission(
            "steplab_radam",
            optimizers.radam,
            defaults=dict(optimizers.registry["radam"].defaults, warmup_factor=0.02),
            search_space=SEARCH_SPACE,
        )
    )
)
