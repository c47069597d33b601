"""The AlgoPerf NAdamW baseline: NAdamW, linear warmup then cosine decay.

As AlgoPerf's JAX baseline: `optax.nadamw` with decoupled weight decay, the
learning rate warmed up linearly over `warmup_factor * step_hint` steps and
decayed with a cosine to zero at `step_hint`; tuned over learning rate,
1 - b1, b2 and weight decay (`warmup_factor` fixed at 0.05).
"""

import optax

from experiments import submission as _submission

SEARCH_SPACE = {
    "learning_rate": {"min": 2e-4, "max": 5e-3, "scaling": "log"},
    "one_minus_b1": {"min": 5e-2, "max": 0.2, "scaling": "log"},
    "b2": {"feasible_points": [0.999]},
    "weight_decay": {"min": 1e-3, "max": 0.2, "scaling": "log"},
    "warmup_factor": {"feasible_points": [0.05]},
}

globals().update(
    _submission.as_module_api(
        _submission.optimizer_submission(
            "nadamw_baseline",
            optax.nadamw,
            defaults=dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4,
                          warmup_factor=0.05),
            search_space=SEARCH_SPACE,
        )
    )
)
