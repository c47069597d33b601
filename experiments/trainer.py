"""One trial: train a submission on a workload under AlgoPerf's clock rules.

The clock starts after data, model and optimizer initialisation. It counts
data selection, `update_params` (compilation included) and
`prepare_for_eval`, with the device synchronised before every reading, and
excludes evaluation, logging and checkpointing, which are timed separately.
After a resume, `update_params` and `prepare_for_eval` are first run once on
copies of the restored state, outside every clock, their results discarded,
so that recompiling them is not charged again: a resumed trial's submission
time is the uninterrupted trial's (AlgoPerf instead charges the
recompilation after a preemption to the submission). The `steps` measure
counts steps, which a resume does not change.
An evaluation happens once at least `eval_period_time_sec` of submission time
has passed since the last one (and at the end); training stops when the
validation target is reached, when the submission time exceeds the budget, or
at `max_global_steps`. Steps-to-target, which does not depend on machine
speed, is logged next to time-to-target.

The submission sees what AlgoPerf's runner gives it (`submission_runner.py`,
`train_once`): hyperparameters as a namedtuple (None under self-tuning), raw
PRNG keys split as AlgoPerf splits them (per step: data selection, update,
prepare_for_eval, eval), `train_state` when `update_params` asks for it,
`workload.metrics_logger` attached, `spec.TrainingCompleteError` ending
training after one last evaluation, and training CONTINUES from the
optimizer state, parameters and model state `prepare_for_eval` returns (so a
schedule-free submission may hand out x and swap y back on its next update).

On a mesh of devices (`experiments.sharding`): by default data parallel over
all devices (the batch split along a "data" axis, parameters and optimizer
state replicated); with an "fsdp" axis the large parameters and their
optimizer state are split along it as well (FSDP). The same code
runs on one CPU, simulated CPU devices, a GPU or a TPU slice -- or over the
global device set of several processes (`experiments.distributed`): every
process builds the same global batch and puts its own shards; the wall-clock
measure's decisions (evaluate now, over budget) are process 0's, broadcast
each step, so that all processes evaluate and stop at the same steps; only
process 0 writes the logs.

Two optional diagnostics, both outside the submission clock:

* `log_sharpness`: at every evaluation, the top Hessian eigenvalue lambda_1
  of the training loss at the training parameters, on a fixed training batch
  (`probes.top_hessian_eigenvalue`), logged as `sharpness/lambda_1` with the
  evaluation's metrics; its time counts as evaluation time.
* `log_grad_norms`: the global norm of every step's gradient, written to
  `grad_norms.csv` (`step,grad_norm`; `step` is the `global_step` passed to
  `update_params`, so rows run 0, 1, ...). Submissions compute their
  gradients inside `update_params`, out of the trainer's sight, so the
  trainer recomputes the gradient of the workload's training loss
  (`probes.training_loss`, the registry adapter's) at the same parameters,
  model state, batch and RNG, before the update: for registry optimizers the
  very gradient the optimizer receives (after an evaluation, at the training
  parameters the adapter holds, `submission.training_params`; a file
  submission that swaps parameters in `prepare_for_eval` is measured at the
  parameters it handed back, the only ones the runner sees). That costs one more forward and
  backward pass per step; the trainer waits for it and counts it as logging
  time, never submission time. The norms stay on the device until the next
  evaluation (or the end), where they are fetched in one transfer and
  appended to the CSV atomically; on resume, rows from steps after the
  checkpoint are dropped and recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import types
from typing import Any, Callable, Iterator, Mapping, Sequence

from absl import logging
import jax
import numpy as np

from experiments import algoperf_compat
from experiments import batches
from experiments import checkpoints
from experiments import distributed
from experiments import logs
from experiments import probes
from experiments import sharding
from experiments import step_cost
from experiments import submission as submission_lib
import optimizers
from experiments.submission import Submission
from experiments.submission import make_hyperparameters
from experiments.workloads import base as workloads_base
from experiments.workloads.base import Workload

GRAD_NORMS_CSV = "grad_norms.csv"
MEASURES = workloads_base.MEASURES
# The eval_measurements.csv column a trial's time to target is read from.
TIME_COLUMNS = {"wallclock": "accumulated_submission_time", "steps": "cost_adjusted_steps"}
# The submission step costs are relative to: the registry optimizer the CPU
# workloads' targets were calibrated with.
COST_BASELINE = "adamw"


@dataclasses.dataclass
class _Span:
  """When a charged span started (moved forward by time charged elsewhere)."""

  start: float


@dataclasses.dataclass
class Clock:
  """Accumulated seconds, by what they were spent on."""

  submission: float = 0.0
  eval: float = 0.0
  logging: float = 0.0
  checkpoint: float = 0.0

  def as_dict(self) -> dict[str, float]:
    return dataclasses.asdict(self)

  @contextlib.contextmanager
  def charge(self, account: str, time_fn: Callable[[], float], *,
             outside: _Span | None = None) -> Iterator[_Span]:
    """Adds the seconds the `with` body takes to `account` (a field name).

    The body ends by synchronising the device work it timed: `time_fn`
    reads host time. `outside`: an enclosing span this time is taken out of
    (its start moves forward by it), so it is charged here only. A body that
    raises charges nothing: the trial fails.
    """
    span = _Span(time_fn())
    yield span
    elapsed = time_fn() - span.start
    setattr(self, account, getattr(self, account) + elapsed)
    if outside is not None:
      outside.start += elapsed


@dataclasses.dataclass(frozen=True)
class TrialResult:
  reached_target: bool
  time_to_target_sec: float  # inf if not reached
  steps_to_target: int | None
  global_step: int
  final_metrics: Mapping[str, float]
  clock: Mapping[str, float]
  measure: str = "wallclock"
  # Steps to target times the relative step cost ("steps" measure); inf if not reached.
  cost_adjusted_steps_to_target: float = math.inf
  step_cost: Mapping[str, float] | None = None

  @property
  def score_time(self) -> float:
    """The trial's time in its workload's measure (seconds or cost-adjusted steps)."""
    return self.cost_adjusted_steps_to_target if self.measure == "steps" else self.time_to_target_sec


def _optimizer_scalars(opt_state: Any) -> dict[str, float]:
  """Quantities an optimizer estimates that are worth a column in the logs.

  Prodigy's and D-Adaptation's step-size estimate d (`optimizers.estimated_d`);
  nothing for optimizers without one, or for a state with several.
  """
  try:
    d = optimizers.estimated_d(opt_state)
  except ValueError:
    return {}
  return {} if d is None else {"optimizer/d": float(d)}


class MetricsLogger:
  """`workload.metrics_logger`: what submissions log, into `measurements.csv`.

  AlgoPerf's submissions call `append_scalar_metrics(metrics, global_step)`
  (every 100 steps, say, with their loss and gradient norm); values may be
  device scalars. The time spent here is charged as logging time, and also
  stays in the submission's time: it is spent inside the submission's timed calls.
  """

  def __init__(self, log: logs.CsvLog, clock: "Clock", time_fn: Callable[[], float]):
    self._log, self._clock, self._time_fn = log, clock, time_fn

  def append_scalar_metrics(self, metrics: Mapping[str, Any], global_step: int,
                            preemption_count: int | None = None, is_eval: bool = False) -> None:
    del is_eval  # Evaluations are the runner's own rows.
    with self._clock.charge("logging", self._time_fn):
      values = jax.device_get(dict(metrics))
      row = {"global_step": int(global_step), **{k: float(np.asarray(v)) for k, v in values.items()}}
      if preemption_count is not None:
        row["preemption_count"] = preemption_count
      self._log.append(row)

  def finish(self) -> None:
    pass


def batch_size_for(submission: Submission, workload: Workload) -> tuple[int, str]:
  """(global batch size, the workload name it was asked for).

  `get_batch_size(workload.name)` first; a ValueError there (a name the
  submission does not know) falls back to the workload's
  `algoperf_base_workloads` in order, as AlgoPerf falls back to a variant's
  base workload.

  Raises:
    ValueError: no name was accepted (every answer quoted).
  """
  names = [workload.name, *getattr(workload, "algoperf_base_workloads", ())]
  errors = []
  for name in names:
    try:
      batch_size = submission.get_batch_size(name)
    except ValueError as e:
      errors.append(f"{name!r}: {e}")
      continue
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
      raise ValueError(f"{submission.name}.get_batch_size({name!r}) returned {batch_size!r}, not a positive int")
    return int(batch_size), name
  raise ValueError(f"{submission.name}.get_batch_size knows none of {names}: " + "; ".join(errors))


def algoperf_rngs(rng_seed: int, tuning_ruleset: str = "external"):
  """(data, optimizer-init, model-init, per-step base) raw keys, as AlgoPerf.

  AlgoPerf's runner seeds `PRNGKey(seed)`, splits once more under external
  tuning, then splits four ways; each step folds the step into the last key
  and splits that four ways (`step_rngs`).
  """
  rng = jax.random.PRNGKey(rng_seed)
  if tuning_ruleset == "external":
    rng, _ = jax.random.split(rng, 2)
  data_rng, opt_init_rng, model_init_rng, rng = jax.random.split(rng, 4)
  return data_rng, opt_init_rng, model_init_rng, rng


@jax.jit
def step_rngs(rng: jax.Array, step: jax.Array) -> jax.Array:
  """(data selection, update, prepare_for_eval, eval) keys of one step."""
  return tuple(jax.random.split(jax.random.fold_in(rng, step), 4))


def run_trial(
    workload: Workload,
    submission: Submission,
    hyperparameters: Mapping[str, Any] | None,
    *,
    trial_dir: str,
    rng_seed: int,
    record: Mapping[str, Any],
    max_global_steps: int | None = None,
    resume: bool = False,
    save_checkpoints: bool = True,
    time_fn: Callable[[], float] = time.perf_counter,
    budget_sec: float | None = None,
    progress: Callable[[str], None] = logging.info,
    devices: Sequence[jax.Device] | None = None,
    mesh: Mapping[str, int] | None = None,
    fsdp_min_size: int = sharding.MIN_SHARDED_SIZE,
    log_sharpness: bool = False,
    log_grad_norms: bool = False,
    stop_at_target: bool = True,
    tuning_ruleset: str = "external",
    preemption_count: int = 0,
    metrics_logger: bool = True,
    measure: str | None = None,
    budget_steps: float | None = None,
    cost_baseline: Submission | None = None,
    cost_time_fn: Callable[[], float] = time.perf_counter,
) -> TrialResult:
  """Trains until target, budget or `max_global_steps`; writes the trial logs.

  Args:
    workload, submission: what to run.
    hyperparameters: one point of the search space, or None (self-tuning:
      the submission gets None, as in AlgoPerf).
    trial_dir: where logs and checkpoints go.
    rng_seed: seeds data order, initialisation and per-step RNG.
    record: identity of the run (workload, submission, hyperparameters,
      rng_seed, ...), written to meta_data.json and checked on resume.
    max_global_steps: optional step cap (for quick runs and tests).
    resume: continue from the latest checkpoint (an error if it does not
      belong to this run).
    save_checkpoints: checkpoint after every evaluation.
    time_fn: the clock's time source (tests pass a fake one).
    budget_sec: submission-time budget; default the workload's.
    progress: where one-line progress messages go.
    devices: devices to train on (default: all of them).
    mesh: how the devices are laid out (`sharding.parse_mesh`, e.g.
      {"data": 2, "fsdp": 4}); default data parallel over all of them.
      Parameters, optimizer state and model state are placed by
      `sharding.fsdp_spec` (replicated when fsdp is 1), the batch split over
      every device; checkpoints are written and restored sharded.
    fsdp_min_size: leaves smaller than this stay replicated under FSDP.
    log_sharpness: log lambda_1 at every evaluation (see the module doc).
    log_grad_norms: write every step's gradient norm to grad_norms.csv.
    stop_at_target: end the trial at the first evaluation that reaches the
      target. False trains on to `max_global_steps` or the budget,
      for comparisons at equal steps (time-to-target is still recorded).
    tuning_ruleset: "external" or "self" (AlgoPerf seeds the RNG slightly
      differently for each).
    preemption_count: how many times this trial was resumed (logged, as
      AlgoPerf's `preemption_count` column).
    metrics_logger: attach a `MetricsLogger` as `workload.metrics_logger`
      (AlgoPerf attaches one); False leaves it None.
    measure: "wallclock" or "steps" (default: the workload's
      `targets.measure`). Under "steps" the budget is `budget_steps`
      cost-adjusted steps (default `targets.max_steps`), evaluations come
      every `targets.eval_period_steps` steps, and the trial's time is its
      cost-adjusted steps to target; the relative step cost against
      `cost_baseline` (default the registry's `COST_BASELINE`) is measured
      before training, outside the clock (`experiments.step_cost`), and kept
      across a resume. Wall-clock time is logged either way.
    budget_steps: see `measure`.
    cost_baseline: see `measure`.
    cost_time_fn: the step-cost probe's time source (tests pass a fake one).

  Returns:
    A `TrialResult`.
  """
  budget = _resolve_budget(workload, measure, budget_sec, budget_steps)
  targets = workload.targets
  target_key = f"validation/{targets.metric}"
  os.makedirs(trial_dir, exist_ok=True)
  hparams = make_hyperparameters(hyperparameters)
  batch_size, _ = batch_size_for(submission, workload)
  device_mesh = sharding.trial_mesh(batch_size, mesh, devices, workload.name)
  data_sharding = sharding.batch_sharding(device_mesh)
  spec = algoperf_compat.install()
  params_types = algoperf_compat.to_spec_enums(workload.model_params_types, spec)
  loss_type = algoperf_compat.to_spec_enums(workload.loss_type, spec)

  # --- Initialisation (not timed) --------------------------------------------
  _, opt_rng, model_rng, step_rng_base = algoperf_rngs(rng_seed, tuning_ruleset)
  params, model_state, optimizer_state = _initial_state(
      workload, submission, hparams, model_rng, opt_rng, device_mesh, fsdp_min_size)
  step, clock, last_eval_time, saved = 0, Clock(), 0.0, {}
  checkpointer = (checkpoints.TrialCheckpointer(trial_dir, fresh=not resume, warn=progress)
                  if (save_checkpoints or resume) else None)
  if resume:
    step, params, model_state, optimizer_state, saved = _restore(
        checkpointer, record, params, model_state, optimizer_state, device_mesh, fsdp_min_size)
    clock, last_eval_time = Clock(**saved["clock"]), saved["last_eval_time"]
    progress(f"resumed {trial_dir} at step {step} ({clock.submission:.1f}s of submission time)")
  # When the target was first reached, and whether the checkpoint was the trial's last (kept across a resume).
  reached_at = tuple(saved["reached_at"]) if saved.get("reached_at") else None  # (submission seconds, step)
  finished = bool(saved.get("finished"))
  metrics: dict[str, float] = dict(saved.get("metrics") or {})
  step_cost_record = saved.get("step_cost")  # Kept across a resume.
  if budget.measure == "steps" and step_cost_record is None:  # Before training, outside the clock.
    step_cost_record = step_cost.measure(
        submission, cost_baseline or submission_lib.registry_submission(COST_BASELINE), workload, params,
        model_state, hparams, None, batches.placed_batch(workload, rng_seed, 0, batch_size, data_sharding),
        opt_rng, params_types, loss_type, progress=progress, time_fn=cost_time_fn).as_dict()
  relative_cost = float(step_cost_record["relative"]) if budget.measure == "steps" else 1.0
  eval_log = logs.CsvLog.resume(os.path.join(trial_dir, "eval_measurements.csv"), max_step=step if resume else -1)
  train_log = logs.CsvLog.resume(os.path.join(trial_dir, "measurements.csv"), max_step=step if resume else -1)
  logs.write_json(os.path.join(trial_dir, "hparams.json"), dict(hyperparameters or {}))
  meta = _initial_meta(record, targets, target_key, budget, device_mesh, batch_size, preemption_count,
                       step_cost_record)
  logs.write_json(os.path.join(trial_dir, "meta_data.json"), meta)
  workload.attach_metrics_logger(MetricsLogger(train_log, clock, time_fn) if metrics_logger else None)
  queue = batches.BatchQueue(workload, rng_seed, batch_size, step, data_sharding)
  label_smoothing = float(hparams.label_smoothing) if hasattr(hparams, "label_smoothing") else 0.0
  grad_norms = _GradNorms(workload, label_smoothing, trial_dir, step if resume else 0) if log_grad_norms else None
  sharpness = (_Sharpness(workload, label_smoothing, rng_seed, batch_size, data_sharding,
                          step_rngs(step_rng_base, 0)[1]) if log_sharpness else None)
  eval_results: list[tuple[int, dict[str, float]]] = []
  train_state = _train_state(reached_at, last_eval_time, clock)
  extra = {"train_state": types.MappingProxyType(train_state)} if submission.needs_train_state else {}
  trial_start = time_fn()

  if resume and not finished:
    # Compile outside every clock, as restoring is: the uninterrupted run compiled once (module doc).
    _warm_up(workload, submission, queue, params, params_types, model_state, hparams, loss_type,
             optimizer_state, eval_results, step, step_rngs(step_rng_base, step), extra, spec)
    if metrics_logger:
      workload.attach_metrics_logger(MetricsLogger(train_log, clock, time_fn))
  elif not resume:
    checkpoints.fault_point("before_first_checkpoint")

  # --- Training loop ------------------------------------------------------------
  while not finished:
    data_rng, update_rng, prepare_rng, eval_rng = step_rngs(step_rng_base, step)
    with clock.charge("submission", time_fn) as step_span:
      batch = submission.data_selection(
          workload, queue, optimizer_state, params, model_state, hparams, step, data_rng
      )
      if grad_norms is not None:
        jax.block_until_ready(batch)  # Its transfer is the submission's time; the recomputed gradient is not.
        with clock.charge("logging", time_fn, outside=step_span):
          grad_norms.record(step, submission_lib.training_params(optimizer_state, params), model_state,
                            batch, update_rng)
      training_complete = False
      try:
        optimizer_state, params, model_state = submission.update_params(
            workload, params, params_types, model_state, hparams, batch, loss_type,
            optimizer_state, eval_results, step, update_rng, **extra,
        )
      except spec.TrainingCompleteError:
        training_complete = True  # AlgoPerf: the step counts, one last evaluation follows.
      jax.block_until_ready((optimizer_state[0], params, model_state))
    step += 1
    train_state.update(accumulated_submission_time=clock.submission, last_step_end_time=time_fn())

    at_cap = max_global_steps is not None and step >= max_global_steps
    if budget.measure == "steps":  # Stop when the next step would not fit in the budget.
      over_budget = (step + 1) * relative_cost > budget.steps
      due = step % budget.eval_period_steps == 0
    else:
      over_budget = clock.submission >= budget.seconds
      due = clock.submission - last_eval_time >= targets.eval_period_time_sec
      if distributed.is_multiprocess():  # Each process has its own clock: process 0 decides for all.
        over_budget, due = distributed.broadcast_flags(over_budget, due)
    if not (due or over_budget or at_cap or training_complete):
      continue

    if sharpness is not None:  # At the training point, before prepare_for_eval may swap it.
      with clock.charge("eval", time_fn):
        lambda_1 = sharpness(submission_lib.training_params(optimizer_state, params), model_state)
    # prepare_for_eval counts as submission time (AlgoPerf v0.6); training
    # continues from what it returns, as in AlgoPerf.
    del batch  # As AlgoPerf: a submission may donate buffers here.
    with clock.charge("submission", time_fn):
      if submission.prepare_for_eval is not None:
        optimizer_state, params, model_state = submission.prepare_for_eval(
            workload, params, params_types, model_state, hparams, loss_type,
            optimizer_state, eval_results, step, prepare_rng,
        )
        jax.block_until_ready((optimizer_state[0], params, model_state))
    last_eval_time = clock.submission
    past_budget = budget.measure == "wallclock" and clock.submission > budget.seconds
    if budget.measure == "wallclock" and distributed.is_multiprocess():
      past_budget, = distributed.broadcast_flags(past_budget)
    if past_budget and reached_at is None:
      # Never evaluate past the budget: the run ends without this eval.
      progress(f"budget of {budget.seconds:.0f}s exhausted at step {step}")
      break

    with clock.charge("eval", time_fn):
      metrics = _evaluate(workload, params, model_state, eval_rng)
      if sharpness is not None:
        metrics[probes.SHARPNESS_METRIC] = lambda_1
    eval_results.append((step, metrics))
    reached = targets.reached(metrics[target_key])
    if reached and reached_at is None:
      reached_at = (clock.submission, step)
    train_state.update(
        validation_goal_reached=reached_at is not None,
        test_goal_reached=train_state["test_goal_reached"] or workload.has_reached_test_target(metrics),
        is_time_remaining=not over_budget, last_eval_time=last_eval_time,
        accumulated_eval_time=clock.eval, training_complete=training_complete,
    )

    with clock.charge("logging", time_fn):
      _log_evaluation(eval_log, train_log, grad_norms, step, metrics, optimizer_state[0], clock,
                      total_duration=time_fn() - trial_start, relative_cost=relative_cost,
                      preemption_count=preemption_count)
      progress(f"{workload.name} step {step}: {target_key}={metrics[target_key]:.4f}"
               f" (target {targets.validation}), {budget.spent(step, relative_cost, clock.submission)}")
    train_state.update(accumulated_logging_time=clock.logging)

    finished = bool((reached and stop_at_target) or over_budget or at_cap or training_complete)
    if checkpointer is not None and save_checkpoints:
      with clock.charge("checkpoint", time_fn):
        state = dict(params=params, model_state=model_state, opt_state=optimizer_state[0])
        checkpointer.save(step, state, dict(record, clock=clock.as_dict(), last_eval_time=last_eval_time,
                                            step_cost=step_cost_record, reached_at=reached_at,
                                            finished=finished, metrics=metrics))

    if finished:
      if training_complete:
        progress(f"{submission.name} raised TrainingCompleteError at step {step}")
      checkpoints.fault_point("after_final_checkpoint")
      break

  if grad_norms is not None:
    with clock.charge("logging", time_fn):
      grad_norms.flush()  # Steps after the last evaluation (a budget-ended run has some).
  meta.update(_final_meta_fields(step, reached_at, clock, metrics, relative_cost))
  logs.write_json(os.path.join(trial_dir, "meta_data.json"), meta)
  if checkpointer is not None:
    checkpointer.close()
  workload.attach_metrics_logger(None)
  return _trial_result(step, reached_at, clock, metrics, budget.measure, relative_cost, step_cost_record)


@dataclasses.dataclass(frozen=True)
class _Budget:
  """What a trial's time is measured in, and how much of it the trial may spend.

  A "wallclock" trial may spend `seconds` of submission time; a "steps" trial
  `steps` cost-adjusted steps, evaluating every `eval_period_steps` steps.
  """

  measure: str
  seconds: float
  steps: float | None = None
  eval_period_steps: int | None = None

  @property
  def limit(self) -> float:
    """The budget in the trial's measure (meta_data.json's `budget`)."""
    return self.steps if self.measure == "steps" else self.seconds

  def spent(self, step: int, relative_cost: float, submission_time: float) -> str:
    """How much of the budget is spent, for a progress line."""
    if self.measure == "steps":
      return f"{step * relative_cost:.0f}/{self.steps:.0f} cost-adjusted steps"
    return f"{submission_time:.1f}s/{self.seconds:.0f}s"


def _resolve_budget(workload: Workload, measure: str | None, budget_sec: float | None,
                    budget_steps: float | None) -> _Budget:
  """run_trial's measure and budget arguments, defaults taken from the workload's targets.

  Raises:
    ValueError: an unknown measure, or a "steps" trial with no step budget.
  """
  targets = workload.targets
  seconds = targets.max_allowed_runtime_sec if budget_sec is None else budget_sec
  measure = measure or targets.measure
  if measure not in MEASURES:
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
  if measure != "steps":
    return _Budget(measure, seconds)
  if budget_steps is None:
    if targets.max_steps is None:
      raise ValueError(f"{workload.name} has no step budget (Targets.max_steps): pass budget_steps")
    budget_steps = float(targets.max_steps)
  eval_period_steps = (targets.eval_period_steps if targets.max_steps
                       else max(1, int(budget_steps) // workloads_base.EVALS_PER_BUDGET))
  return _Budget(measure, seconds, budget_steps, eval_period_steps)


def _initial_state(workload, submission, hparams, model_rng, opt_rng, device_mesh, fsdp_min_size):
  """(params, model_state, optimizer_state), initialised and placed on the mesh."""
  params, model_state = workload.init_model_fn(model_rng)
  params, model_state = sharding.place((params, model_state), device_mesh, fsdp_min_size)
  opt_state, update_fn = submission.init_optimizer_state(workload, params, model_state, hparams, opt_rng)
  # Placed by the parameters' rule (an optimizer's scalars may come out of init
  # committed to one device, which jit refuses to mix with the mesh's arrays).
  opt_state = sharding.place(opt_state, device_mesh, fsdp_min_size)
  return params, model_state, (opt_state, update_fn)


def _restore(checkpointer, record, params, model_state, optimizer_state, device_mesh, fsdp_min_size):
  """(step, params, model_state, optimizer_state, saved record) of the latest checkpoint.

  The initial state gives the restored one its structure; the restored state
  is placed on the mesh as the initial one was.
  """
  opt_state, update_fn = optimizer_state
  state = dict(params=params, model_state=model_state, opt_state=opt_state)
  step, restored, saved = checkpointer.restore(state, record)
  params, model_state, opt_state = sharding.place(
      (restored["params"], restored["model_state"], restored["opt_state"]), device_mesh, fsdp_min_size
  )
  return step, params, model_state, (opt_state, update_fn), saved


def _initial_meta(record, targets, target_key: str, budget: _Budget, device_mesh, batch_size: int,
                  preemption_count: int, step_cost_record) -> dict[str, Any]:
  """meta_data.json before training: the run's identity, target, budget and setup."""
  meta = dict(record)
  meta.update(
      target_metric=target_key, target_value=targets.validation, target_mode=targets.mode,
      max_allowed_runtime_sec=budget.seconds, status="running", reached_target=False,
      time_to_target_sec=None, steps_to_target=None, num_devices=device_mesh.size,
      mesh=sharding.mesh_text(device_mesh.shape),
      batch_size=batch_size, preemption_count=preemption_count, measure=budget.measure,
      time_column=TIME_COLUMNS[budget.measure], budget=budget.limit, step_cost=step_cost_record,
  )
  return meta


def _train_state(reached_at, last_eval_time: float, clock: Clock) -> dict[str, Any]:
  """AlgoPerf's bookkeeping when training starts, read-only to a submission that asks for it."""
  return dict(
      validation_goal_reached=reached_at is not None, test_goal_reached=False, is_time_remaining=True,
      last_eval_time=last_eval_time, training_complete=False,
      accumulated_submission_time=clock.submission, accumulated_eval_time=clock.eval,
      accumulated_logging_time=clock.logging, last_step_end_time=None,
  )


def _evaluate(workload: Workload, params: Any, model_state: Any, rng: jax.Array) -> dict[str, float]:
  """The metrics of every split, as "split/name"; float() waits for the device."""
  metrics = {}
  for split in ("train", "validation", "test"):
    for name, value in workload.eval_model(params, model_state, rng, split).items():
      metrics[f"{split}/{name}"] = float(value)
  return metrics


def _log_evaluation(eval_log: logs.CsvLog, train_log: logs.CsvLog, grad_norms: _GradNorms | None,
                    step: int, metrics: Mapping[str, float], opt_state: Any, clock: Clock, *,
                    total_duration: float, relative_cost: float, preemption_count: int) -> None:
  """One evaluation's rows of eval_measurements.csv and measurements.csv.

  Both carry the optimizer's scalars (and lambda_1, when logged); the
  gradient norms pending since the last evaluation are written too.
  """
  row = dict(global_step=step, accumulated_submission_time=clock.submission,
             accumulated_eval_time=clock.eval, accumulated_logging_time=clock.logging,
             accumulated_checkpoint_time=clock.checkpoint, **metrics,
             score=clock.submission, preemption_count=preemption_count,
             total_duration=total_duration, cost_adjusted_steps=step * relative_cost)
  optimizer_scalars = _optimizer_scalars(opt_state)
  if probes.SHARPNESS_METRIC in metrics:
    optimizer_scalars[probes.SHARPNESS_METRIC] = metrics[probes.SHARPNESS_METRIC]
  eval_log.append(dict(row, **optimizer_scalars))
  train_log.append(dict(global_step=step, train_loss=metrics.get("train/loss"),
                        accumulated_submission_time=clock.submission, **optimizer_scalars))
  if grad_norms is not None:
    grad_norms.flush()


def _final_meta_fields(step: int, reached_at, clock: Clock, metrics: Mapping[str, float],
                       relative_cost: float) -> dict[str, Any]:
  """meta_data.json's fields at the end of a trial."""
  return dict(
      status="complete", global_step=step, reached_target=reached_at is not None,
      time_to_target_sec=reached_at[0] if reached_at else None,
      steps_to_target=reached_at[1] if reached_at else None, clock=clock.as_dict(),
      final_metrics=metrics,
      cost_adjusted_steps_to_target=reached_at[1] * relative_cost if reached_at else None,
  )


def _trial_result(step: int, reached_at, clock: Clock, metrics: Mapping[str, float], measure: str,
                  relative_cost: float, step_cost_record) -> TrialResult:
  """The TrialResult of a finished trial (inf times when the target was not reached)."""
  return TrialResult(
      reached_target=reached_at is not None,
      time_to_target_sec=reached_at[0] if reached_at else math.inf,
      steps_to_target=reached_at[1] if reached_at else None,
      global_step=step, final_metrics=metrics, clock=clock.as_dict(), measure=measure,
      cost_adjusted_steps_to_target=reached_at[1] * relative_cost if reached_at else math.inf,
      step_cost=step_cost_record,
  )


def _copy(tree: Any) -> Any:
  """Fresh buffers of a tree's arrays (a submission may donate what it is given)."""
  return jax.tree.map(lambda x: jax.numpy.copy(x) if isinstance(x, jax.Array) else x, tree)


def _warm_up(workload, submission, queue, params, params_types, model_state, hparams, loss_type,
             optimizer_state, eval_results, step, rngs, extra, spec) -> None:
  """Runs update_params (and prepare_for_eval) once on copies, results discarded.

  After a resume, so that compiling them again is not charged to the
  submission: the uninterrupted run paid it once. The batch is the next
  step's, read without moving the queue; the metrics logger is detached.
  """
  _, update_rng, prepare_rng, _ = rngs
  workload.attach_metrics_logger(None)
  batch = queue.peek()
  state = _copy((optimizer_state, params, model_state))
  try:
    state = submission.update_params(
        workload, state[1], params_types, state[2], hparams, batch, loss_type, state[0],
        list(eval_results), step, update_rng, **extra)
  except spec.TrainingCompleteError:
    pass
  jax.block_until_ready((state[0][0], state[1], state[2]))
  if submission.prepare_for_eval is not None:
    state = _copy(state)
    state = submission.prepare_for_eval(workload, state[1], params_types, state[2], hparams, loss_type,
                                        state[0], list(eval_results), step, prepare_rng)
    jax.block_until_ready((state[0][0], state[1], state[2]))


class _GradNorms:
  """Per-step gradient norms: device scalars until `flush` writes them."""

  def __init__(self, workload: Workload, label_smoothing: float, trial_dir: str, start_step: int):
    self._norm = probes.gradient_norm_fn(workload, label_smoothing)
    # Rows of steps start_step and later are redone (after a resume) or stale.
    self._log = logs.CsvLog.resume(os.path.join(trial_dir, GRAD_NORMS_CSV), max_step=start_step - 1,
                                   step_key="step")
    self._pending: list[tuple[int, jax.Array]] = []

  def record(self, step: int, params: Any, model_state: Any, batch: Any, rng: jax.Array) -> None:
    """Computes the norm of the gradient at these arguments, waiting for it."""
    norm = self._norm(params, model_state, batch, rng)
    jax.block_until_ready(norm)  # Finished here, so the timed update does not wait for it.
    self._pending.append((step, norm))

  def flush(self) -> None:
    """Fetches the pending norms in one transfer and appends them to the CSV."""
    if not self._pending:
      return
    values = jax.device_get([norm for _, norm in self._pending])
    self._log.extend(dict(step=step, grad_norm=float(value))
                     for (step, _), value in zip(self._pending, values))
    self._pending = []


class _Sharpness:
  """lambda_1 of the training loss on a fixed training batch.

  Batch 0 of the seed with step 0's RNG (dropout, and the power iteration's
  start vector): what `probes.initial_sharpness` measures at initialisation.
  """

  def __init__(self, workload: Workload, label_smoothing: float, rng_seed: int, batch_size: int,
               data_sharding: Any, rng: jax.Array):
    self._loss = probes.hessian_loss(workload, label_smoothing)
    self._batch = batches.placed_batch(workload, rng_seed, 0, batch_size, data_sharding)
    self._rng = rng

  def __call__(self, params: Any, model_state: Any) -> float:
    result = probes.top_hessian_eigenvalue(self._loss, params, (self._batch, model_state, self._rng),
                                           rng=self._rng)
    return result.lambda_1
