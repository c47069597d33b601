"""A submission's per-step cost relative to a baseline, measured in isolation.

The step-measured workloads (`Targets.measure == "steps"`) rank optimizers
by steps to target, charged for what a step costs: a submission's
"cost-adjusted steps" are its steps times `relative_step_cost`, the ratio of
its `update_params` time to the baseline's on the same workload, batch and
machine. Wall-clock time on a shared CPU moves with whatever else the machine
does (a 10 s budget gave 249 to 18,316 steps under load); a RATIO of two
costs measured in alternation does not, since load slows both alike.

How it is measured (before training, outside the submission clock):

* both submissions are initialised on copies of the trial's initial state
  (submissions may donate their arguments) and run `WARMUP_STEPS` steps
  each, so compilation is excluded: compile time is a constant per
  (submission, workload) that a benchmark of the training algorithm should not
  rank (AlgoPerf charges it; on CPU it was 25-50% of time-to-target, and
  it is logged separately as `compile_seconds` in the trial's meta data);
* then rounds alternate ONE timed step of the submission with one of the
  baseline (the device synchronised after each, as the trainer does), for
  about `probe_seconds` (at least `MIN_ROUNDS` rounds). Load only ever ADDS
  time to a step, so each side's cost is a low quantile (`QUANTILE`) of its
  step times, the unloaded cost with a few lucky outliers ignored; the
  relative cost is the ratio of the two. Alternating step by step exposes
  both to the same load pattern.

`update_params` is called with `global_step=0`, no evaluation results and the
metrics logger detached, on a fixed training batch.

Over several processes (`experiments.distributed`) each times its own steps,
but all take process 0's number of rounds (the steps are collectives: every
process must run as many) and process 0's result.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from experiments import distributed

WARMUP_STEPS = 2
PROBE_SECONDS = 0.5
MIN_ROUNDS = 30
MAX_ROUNDS = 3000
QUANTILE = 0.1


@dataclasses.dataclass(frozen=True)
class StepCost:
  """Seconds per `update_params` of a submission and of the baseline.

  `seconds` and `baseline_seconds` are the low quantiles whose ratio is
  `relative`; `rounds` the number of alternating rounds timed.
  """

  relative: float
  seconds: float
  baseline_seconds: float
  compile_seconds: float
  baseline_compile_seconds: float
  rounds: int = 0

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)


def _copy(tree: Any) -> Any:
  return jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x, tree)


class _Stepper:
  """Chains `update_params` calls of one submission from a copy of a state."""

  def __init__(self, submission, workload, params, model_state, hparams, batch, rng, params_types,
               loss_type, time_fn):
    self._sub, self._workload, self._time_fn = submission, workload, time_fn
    self._hparams, self._batch, self._rng = hparams, batch, rng
    self._types, self._loss_type = params_types, loss_type
    self.params, self.model_state = _copy(params), _copy(model_state)
    self.optimizer_state = submission.init_optimizer_state(workload, self.params, self.model_state,
                                                           hparams, rng)

  def run(self, steps: int) -> float:
    """Seconds for `steps` chained steps, the device synchronised at both ends."""
    jax.block_until_ready((self.optimizer_state[0], self.params))
    start = self._time_fn()
    for _ in range(steps):
      self.optimizer_state, self.params, self.model_state = self._sub.update_params(
          self._workload, self.params, self._types, self.model_state, self._hparams, self._batch,
          self._loss_type, self.optimizer_state, [], 0, self._rng)
    jax.block_until_ready((self.optimizer_state[0], self.params, self.model_state))
    return self._time_fn() - start


def measure(
    submission,
    baseline,
    workload,
    params: Any,
    model_state: Any,
    hyperparameters: Any,
    baseline_hyperparameters: Any,
    batch: Any,
    rng: jax.Array,
    params_types: Any,
    loss_type: Any,
    *,
    probe_seconds: float = PROBE_SECONDS,
    progress: Callable[[str], None] = lambda m: None,
    time_fn: Callable[[], float] = time.perf_counter,
) -> StepCost:
  """The relative per-step cost of `submission` against `baseline` (module doc).

  Raises:
    ValueError: `probe_seconds` <= 0, or a clock that does not advance.
  """
  if not probe_seconds > 0:
    raise ValueError(f"probe_seconds must be positive, got {probe_seconds}")
  logger = workload.metrics_logger
  workload.attach_metrics_logger(None)  # The probe's steps are not the trial's.
  try:
    steppers = [
        _Stepper(submission, workload, params, model_state, hyperparameters, batch, rng, params_types,
                 loss_type, time_fn),
        _Stepper(baseline, workload, params, model_state, baseline_hyperparameters, batch, rng,
                 params_types, loss_type, time_fn),
    ]
    compile_seconds = [s.run(WARMUP_STEPS) for s in steppers]
    # Rounds from one more step each, so the probe lasts about probe_seconds.
    round_seconds = sum(stepper.run(1) for stepper in steppers)
    rounds = int(np.clip(np.ceil(probe_seconds / max(round_seconds, 1e-9)), MIN_ROUNDS, MAX_ROUNDS))
    rounds = distributed.broadcast(rounds)  # Process 0's: every process runs the same steps.
    times = np.empty((2, rounds))
    for r in range(rounds):
      for k in ((0, 1) if r % 2 == 0 else (1, 0)):  # Alternate who goes first, too.
        times[k, r] = steppers[k].run(1)
    low = np.quantile(times, QUANTILE, axis=1)
    if not low[1] > 0:
      raise ValueError(f"the baseline's steps took {low[1]} s: the clock does not advance")
  finally:
    workload.attach_metrics_logger(logger)
  cost = StepCost(
      relative=float(low[0] / low[1]), seconds=float(low[0]), baseline_seconds=float(low[1]),
      compile_seconds=float(compile_seconds[0]), baseline_compile_seconds=float(compile_seconds[1]),
      rounds=rounds)
  if distributed.is_multiprocess():  # Process 0's measurement, so that all take the same budget decisions.
    cost = StepCost(**distributed.broadcast(cost.as_dict()))
  progress(f"step cost: {cost.seconds * 1e3:.3g} ms vs the baseline's {cost.baseline_seconds * 1e3:.3g} ms"
           f" (relative {cost.relative:.3f}; {QUANTILE:g} quantiles of {rounds} alternating steps each)")
  return cost
