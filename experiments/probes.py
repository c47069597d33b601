"""Step-size probes from the learning-rate literature.

Three measurements that say where a good learning rate lies before (or while)
tuning it, each run from the runner with `--probe=...` (see experiments/run.py)
or called directly:

* `lr_range_test`: Smith's learning-rate range test. Train from
  initialisation while the learning rate grows exponentially, record the loss
  per step, and read off the rates where the loss falls and where it stops
  falling (`suggest_bounds`).
* `top_hessian_eigenvalue`: the sharpness lambda_1, the largest eigenvalue of
  the training loss's Hessian, by power iteration on Hessian-vector products.
  Gradient descent on a quadratic is stable iff lr < 2 / lambda_1; Cohen et
  al. find full-batch training drives lambda_1 up to that edge. The runner
  logs it at every evaluation with `--log_sharpness`.
* `max_lr_search`: Iyer et al.'s maximal initial learning rate, the largest
  constant rate at which training from a fresh initialisation reaches a
  threshold on the validation metric within a step budget, by bisection on
  log10(lr).

Probes train registry optimizers (`optimizers.registry`) through
`optax.inject_hyperparams`, so the probe sets the learning rate at every step
without recompiling; the other hyperparameters are the registry defaults
updated by the caller's point. Probes train at the rate they set: a point's
schedule keys (`warmup_factor`, `schedule`, ...) are ignored with a warning.
Training is data-parallel over the devices like the trainer's, with the
registry adapter's loss (`training_loss`).

References:
  L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV
  2017, arXiv:1506.01186 (section 3.3, the range test).
  G. Iyer, B. Hanin, D. Rolnick, "Maximal Initial Learning Rates in Deep ReLU
  Networks", ICML 2023, arXiv:2212.07295.
  J. Cohen, S. Kaur, Y. Li, J. Z. Kolter, A. Talwalkar, "Gradient Descent on
  Neural Networks Typically Occurs at the Edge of Stability", ICLR 2021,
  arXiv:2103.00065.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Mapping, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import batches
from experiments import logs
from experiments import sharding
from experiments import submission as submission_lib
from experiments.workloads.base import Workload
import optimizers

PROBES = ("lr_range", "sharpness", "max_lr")
LR_RANGE_JSON = "lr_range.json"
LR_RANGE_PNG = "lr_range.png"
SHARPNESS_JSON = "sharpness.json"
MAX_LR_JSON = "max_lr.json"
OUTPUT_FILES = {"lr_range": (LR_RANGE_JSON, LR_RANGE_PNG), "sharpness": (SHARPNESS_JSON,),
                "max_lr": (MAX_LR_JSON,)}
SHARPNESS_METRIC = "sharpness/lambda_1"

Progress = Callable[[str], None]


# --- Losses ------------------------------------------------------------------


training_loss = submission_lib.training_loss  # The objective the registry adapter differentiates.


# Bounded as the adapter's losses (see `submission_lib.LOSS_CACHE_SIZE`): a trial
# keeps what it looks up; the next trial with the same key reuses it, compiled.
@functools.lru_cache(maxsize=submission_lib.LOSS_CACHE_SIZE)
def hessian_loss(workload: Workload, label_smoothing: float = 0.0) -> Callable[..., Any]:
  """`training_loss` as `f(params, (batch, model_state, rng)) -> loss` for the HVP.

  Everything but the parameters rides in the second argument, so the same
  function object (and so the same compiled power iteration) serves every
  evaluation of a run.
  """
  loss = training_loss(workload, label_smoothing)
  return lambda params, data: loss(params, data[1], data[0], data[2])[0]


@functools.lru_cache(maxsize=submission_lib.LOSS_CACHE_SIZE)
def gradient_norm_fn(workload: Workload, label_smoothing: float = 0.0) -> Callable[..., jax.Array]:
  """Jitted `(params, model_state, batch, rng) -> ||grad||_2` of `training_loss`.

  The global (all-leaves) Euclidean norm, `optax.tree.norm` (what the
  deprecated `optax.global_norm` computes), of the same gradient the registry
  adapter computes at these arguments.
  """
  loss = training_loss(workload, label_smoothing)

  @jax.jit
  def grad_norm(params, model_state, batch, rng):
    grads, _ = jax.grad(loss, has_aux=True)(params, model_state, batch, rng)
    return optax.tree.norm(grads)

  return grad_norm


# --- Sharpness: the Hessian's top eigenvalue ----------------------------------


@dataclasses.dataclass(frozen=True)
class SharpnessResult:
  """The top Hessian eigenvalue and how the power iteration got there.

  Attributes:
    lambda_1: the largest (algebraic) eigenvalue estimate.
    num_iterations: Hessian-vector products spent (both passes).
    converged: whether the relative change fell below `tol`.
    estimates: the Rayleigh quotient after each iteration of the last pass
      (of the shifted operator H - shift I when `shift` is not 0).
    shift: 0, or the negative dominant eigenvalue the second pass shifted by.
  """

  lambda_1: float
  num_iterations: int
  converged: bool
  estimates: tuple[float, ...]
  shift: float = 0.0

  def as_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["estimates"] = list(self.estimates)
    # Gradient descent on the local quadratic model diverges above 2 / lambda_1.
    out["gd_stability_lr"] = 2.0 / self.lambda_1 if self.lambda_1 > 0 else math.inf
    return out


def hessian_vector_product(loss_fn: Callable[..., jax.Array], params: Any, batch: Any, vector: Any) -> Any:
  """H v for the Hessian H of `loss_fn(., batch)` at `params`, forward over reverse.

  `jax.jvp(jax.grad(f), (params,), (v,))`: one gradient evaluation's cost
  (times a small constant), never the Hessian itself.
  """
  return jax.jvp(lambda p: jax.grad(loss_fn)(p, batch), (params,), (vector,))[1]


@functools.partial(jax.jit, static_argnames=("loss_fn", "num_iterations"))
def _power_iteration(loss_fn, params, batch, v0, shift, tol, num_iterations):
  """Power iteration on H - shift I, on the device, as one compiled loop.

  Returns (Rayleigh quotient, iterations, converged, per-iteration estimates).
  """

  # Cast back to the parameters' dtypes: a float32 scalar times a bf16 leaf
  # would change the loop carry's type.
  like_params = lambda tree: optax.tree.cast_like(tree, params)

  def operator(v):
    return like_params(optax.tree.add_scale(hessian_vector_product(loss_fn, params, batch, v), -shift, v))

  def normalise(v):
    norm = jnp.asarray(optax.tree.norm(v), jnp.float32)
    return like_params(optax.tree.scale(1.0 / jnp.maximum(norm, 1e-30), v))

  def body(carry):
    i, v, estimate, _, history = carry
    hv = operator(v)
    new = jnp.asarray(optax.tree.vdot(v, hv), jnp.float32)  # |v| = 1: the Rayleigh quotient.
    done = (i > 0) & (jnp.abs(new - estimate) <= tol * jnp.abs(new))
    return i + 1, normalise(hv), new, done, history.at[i].set(new)

  def cond(carry):
    i, _, _, done, _ = carry
    return (i < num_iterations) & ~done

  start = (jnp.int32(0), normalise(v0), jnp.float32(0.0), jnp.bool_(False),
           jnp.full((num_iterations,), jnp.nan, jnp.float32))
  i, _, estimate, done, history = jax.lax.while_loop(cond, body, start)
  return estimate, i, done, history


def top_hessian_eigenvalue(
    loss_fn: Callable[[Any, Any], jax.Array],
    params: Any,
    batch: Any,
    num_iterations: int = 20,
    tol: float = 1e-3,
    rng: jax.Array | None = None,
) -> SharpnessResult:
  """The sharpness lambda_1 of `loss_fn(., batch)` at `params`, by power iteration.

  From a random unit vector v_0 (a tree like `params`), iterate

    w_k = H v_{k-1},   lambda^(k) = <v_{k-1}, w_k>,   v_k = w_k / ||w_k||_2,

  with H v a Hessian-vector product (`hessian_vector_product`) and tree math
  from `optax.tree`, until |lambda^(k) - lambda^(k-1)| <= tol |lambda^(k)| or
  `num_iterations` products. The Rayleigh quotient lambda^(k) converges to the
  eigenvalue of largest MAGNITUDE at the rate (|lambda_2| / |lambda_1|)^(2k).
  If that one is negative (a saddle-dominated start), a second pass on
  H - lambda I, whose eigenvalues lambda_i - lambda are >= 0, gives
  lambda_1 - lambda and so lambda_1 (the reported value is then exact only to
  the accuracy of the first pass).

  The whole iteration is one jitted `lax.while_loop` (no host round trip per
  product), compiled once per (`loss_fn`, shapes, `num_iterations`): pass the
  same `loss_fn` object each time (e.g. `hessian_loss(workload)`) to reuse it.

  Args:
    loss_fn: `f(params, batch) -> scalar`; `batch` is any pytree held fixed.
    params: where the Hessian is taken (any pytree; sharded arrays stay so).
    batch: the data (and anything else `loss_fn` needs).
    num_iterations: the most Hessian-vector products per pass.
    tol: relative change of the estimate at which to stop.
    rng: key for the start vector (default `jax.random.key(0)`).

  Returns:
    A `SharpnessResult`.

  Raises:
    ValueError: for num_iterations < 1 or tol < 0.

  References: Iyer, Hanin & Rolnick 2023 (arXiv:2212.07295) relate the maximal
  initial learning rate to lambda_1 at initialisation; Cohen et al. 2021
  (arXiv:2103.00065) follow lambda_1 along training (the edge of stability at
  2 / lr); power iteration on HVPs as in PyHessian (Yao et al. 2020).
  """
  if not isinstance(num_iterations, (int, np.integer)) or num_iterations < 1:
    raise ValueError(f"num_iterations must be a positive integer, got {num_iterations!r}")
  if not tol >= 0:
    raise ValueError(f"tol must be >= 0, got {tol!r}")
  rng = jax.random.key(0) if rng is None else rng

  def run(key, shift):
    v0 = optax.tree.random_like(key, params, jax.random.normal)
    estimate, count, done, history = _power_iteration(
        loss_fn, params, batch, v0, jnp.float32(shift), jnp.float32(tol), int(num_iterations))
    history = np.asarray(jax.device_get(history))
    return float(estimate), int(count), bool(done), tuple(float(h) for h in history[: int(count)])

  estimate, count, done, history = run(rng, 0.0)
  if estimate >= 0:
    return SharpnessResult(estimate, count, done, history)
  # The dominant eigenvalue is negative; a fresh start vector (the first
  # pass's end is orthogonal to lambda_1's eigenvector).
  shifted, count2, done2, history2 = run(jax.random.fold_in(rng, 1), estimate)
  return SharpnessResult(shifted + estimate, count + count2, done and done2, history2, shift=estimate)


# --- Training at a learning rate set per step --------------------------------


def optimizer_arguments(
    optimizer: str, hyperparameters: Mapping[str, Any] | None, *, probe: str = "probe",
) -> tuple[dict[str, Any], float]:
  """(factory arguments, label smoothing) for a registry optimizer in a probe.

  The registry defaults updated by `hyperparameters` (which may use
  `one_minus_<name>`); the adapter's schedule keys are dropped with a warning
  (a probe sets the learning rate itself); `label_smoothing` goes to the loss.

  Raises:
    ValueError: an unknown optimizer or hyperparameter name.
  """
  if optimizer not in optimizers.registry:
    raise ValueError(f"unknown optimizer {optimizer!r}; registered: {', '.join(sorted(optimizers.registry))}")
  spec = optimizers.registry[optimizer]
  point = dict(hyperparameters or {})
  label_smoothing = float(point.pop("label_smoothing", 0.0))
  schedule = sorted(k for k in point if k in submission_lib.SCHEDULE_KEYS
                    or k.startswith(submission_lib.SCHEDULE_OPTION_PREFIX))
  if schedule:
    logging.warning("%s: the probe sets the learning rate itself; ignoring %s", probe, schedule)
  kwargs = spec.hyperparameters(**{k: v for k, v in point.items() if k not in schedule})
  return kwargs, label_smoothing


# One key per `ProbeTraining` (its own optimizer), which keeps the step it gets.
@functools.lru_cache(maxsize=submission_lib.STEP_CACHE_SIZE)
def _probe_step(workload, optimizer, label_smoothing, needs_value):
  """The registry adapter's jitted step with the learning rate as an argument."""
  train_step = submission_lib.train_step(workload, optimizer, label_smoothing, needs_value)

  @jax.jit
  def step(params, model_state, opt_state, batch, rng, learning_rate):
    opt_state = opt_state._replace(hyperparams=dict(opt_state.hyperparams, learning_rate=learning_rate))
    return train_step(params, model_state, opt_state, batch, rng)

  return step


class ProbeTraining:
  """Training from initialisation with the learning rate chosen at every step.

  The registry factory wrapped in `optax.inject_hyperparams`, so changing the
  rate (`step(lr)`) never recompiles. Initialisation, data order and per-step
  RNG follow the trainer's for the same seed, so step t sees the batch a trial
  with that seed sees.
  """

  def __init__(self, workload: Workload, optimizer: str, hyperparameters: Mapping[str, Any] | None = None,
               *, rng_seed: int = 0, batch_size: int | None = None,
               devices: Sequence[jax.Device] | None = None, probe: str = "probe"):
    kwargs, label_smoothing = optimizer_arguments(optimizer, hyperparameters, probe=probe)
    spec = optimizers.registry[optimizer]
    self.workload, self.rng_seed = workload, rng_seed
    self.batch_size = int(batch_size or workload.default_batch_size)
    self._data, self._replicated = sharding.data_parallel_shardings(self.batch_size, devices, workload.name)
    self.optimizer = optax.inject_hyperparams(spec.factory, static_args=spec.static_args)(**kwargs)
    self._init = jax.jit(self.optimizer.init)
    self._step = _probe_step(workload, self.optimizer, label_smoothing, spec.needs_value)
    self.reset()

  def reset(self) -> None:
    """Back to step 0 from the same initialisation (the seed's)."""
    model_rng, _, self._step_rng = jax.random.split(jax.random.key(self.rng_seed), 3)
    params, model_state = self.workload.init_model_fn(model_rng)
    self.params, self.model_state = jax.device_put((params, model_state), self._replicated)
    self.opt_state = jax.device_put(self._init(self.params), self._replicated)
    self.global_step = 0
    self._queue = batches.BatchQueue(self.workload, self.rng_seed, self.batch_size, 0, self._data)

  def step(self, learning_rate: float) -> jax.Array:
    """One update at `learning_rate`; the batch loss before it (on the device)."""
    rng = jax.random.fold_in(self._step_rng, self.global_step)
    self.params, self.model_state, self.opt_state, loss = self._step(
        self.params, self.model_state, self.opt_state, next(self._queue), rng,
        jnp.asarray(learning_rate, jnp.float32))
    self.global_step += 1
    return loss

  def evaluate(self, split: str = "validation") -> dict[str, float]:
    """The workload's metrics on `split` at the optimizer's evaluation point."""
    params = optimizers.eval_params(self.opt_state, self.params)
    return self.workload.eval_model(params, self.model_state, self._step_rng, split)


# --- The learning-rate range test --------------------------------------------

# Suggested bounds (`suggest_bounds`): fast.ai's "minimum / 10" for the upper
# one, Smith's "1/3 or 1/4 of maximum_lr" for the lower one.
MIN_LOSS_DIVISOR = 10.0
BASE_DIVISOR = 4.0


@dataclasses.dataclass(frozen=True)
class LrBounds:
  """Suggested cyclical-learning-rate bounds read off a range test.

  Attributes:
    base_lr: the lower bound, max_lr / base_divisor.
    max_lr: the upper bound, lr_at_min / min_loss_divisor.
    lr_at_min: the rate at the minimum of the smoothed loss.
    steepest_lr: where the smoothed loss falls fastest per unit of log(lr)
      before its minimum (fast.ai's "steep" suggestion; for reference).
    rule: the rule, in words.
  """

  base_lr: float
  max_lr: float
  lr_at_min: float
  steepest_lr: float
  rule: str


@dataclasses.dataclass(frozen=True)
class LrRangeResult:
  """A range test: every step's rate, loss and smoothed loss, and the bounds.

  Attributes:
    lrs, losses, smoothed: per step taken (the run may stop early).
    stop_reason: "completed", "diverged" (smoothed loss above
      divergence_factor x its minimum) or "non-finite loss".
    bounds: the suggested bounds, or None when the loss never fell.
    settings: the test's arguments, for the record.
  """

  lrs: tuple[float, ...]
  losses: tuple[float, ...]
  smoothed: tuple[float, ...]
  stop_reason: str
  bounds: LrBounds | None
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def as_dict(self) -> dict[str, Any]:
    return dict(lrs=list(self.lrs), losses=list(self.losses), smoothed=list(self.smoothed),
                stop_reason=self.stop_reason, num_steps=len(self.lrs),
                bounds=dataclasses.asdict(self.bounds) if self.bounds else None,
                settings=dict(self.settings))


def exponential_learning_rates(min_lr: float, max_lr: float, num_steps: int) -> np.ndarray:
  """lr_t = min_lr (max_lr / min_lr)^(t / (num_steps - 1)), t = 0 .. num_steps - 1.

  Raises:
    ValueError: unless 0 < min_lr < max_lr and num_steps >= 2.
  """
  if not (0 < min_lr < max_lr and math.isfinite(max_lr)):
    raise ValueError(f"need 0 < min_lr < max_lr < inf, got min_lr={min_lr!r}, max_lr={max_lr!r}")
  if not isinstance(num_steps, (int, np.integer)) or num_steps < 2:
    raise ValueError(f"num_steps must be an integer >= 2, got {num_steps!r}")
  return min_lr * (max_lr / min_lr) ** (np.arange(num_steps) / (num_steps - 1))


def smoothed_losses(losses: Sequence[float], smoothing: float = 0.98) -> np.ndarray:
  """The bias-corrected exponential moving average of `losses`.

  a_t = beta a_{t-1} + (1 - beta) loss_t with a_{-1} = 0, reported as
  a_t / (1 - beta^(t+1)) (the correction Adam uses), so early values are not
  pulled towards zero.
  """
  if not 0 <= smoothing < 1:
    raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
  out, average = [], 0.0
  for t, loss in enumerate(losses):
    average = smoothing * average + (1 - smoothing) * float(loss)
    out.append(average / (1 - smoothing ** (t + 1)))
  return np.asarray(out)


def suggest_bounds(lrs: Sequence[float], smoothed: Sequence[float], *,
                   min_loss_divisor: float = MIN_LOSS_DIVISOR,
                   base_divisor: float = BASE_DIVISOR) -> LrBounds | None:
  """Cyclical-learning-rate bounds from a range test's smoothed loss.

  The rule: with i* = argmin_t smoothed_t (over the finite values),

    max_lr  = lrs[i*] / min_loss_divisor      (default / 10)
    base_lr = max_lr / base_divisor           (default / 4)

  Smith (2017, section 3.3) takes the upper bound where the loss stops
  falling and becomes ragged, and the lower one "1/3 or 1/4 of maximum_lr".
  The smoothed minimum lr_at_min is where the loss stops falling, but it sits
  at the edge of divergence and, because the moving average lags by about
  beta / (1 - beta) steps, past the raw minimum; dividing it by 10 (fast.ai's
  `lr_find` "minimum" suggestion) backs off by a decade. `steepest_lr` (the
  most negative slope of the smoothed loss in log(lr) before i*) is reported
  alongside, not used.

  Returns:
    The bounds, or None when the minimum is at the first step (the loss never
    fell: start the test at a smaller rate).
  """
  lrs = np.asarray(lrs, np.float64)
  smoothed = np.asarray(smoothed, np.float64)
  if lrs.shape != smoothed.shape or lrs.ndim != 1:
    raise ValueError(f"lrs and smoothed must be 1-D of one length, got {lrs.shape} and {smoothed.shape}")
  if min_loss_divisor < 1 or base_divisor < 1:
    raise ValueError(f"divisors must be >= 1, got {min_loss_divisor!r}, {base_divisor!r}")
  finite = np.where(np.isfinite(smoothed), smoothed, np.inf)
  if not np.isfinite(finite).any():
    return None
  i_min = int(np.argmin(finite))
  if i_min == 0:
    return None
  slopes = np.diff(smoothed[: i_min + 1]) / np.diff(np.log(lrs[: i_min + 1]))
  steepest = float(lrs[int(np.argmin(slopes)) + 1])
  max_lr = float(lrs[i_min]) / min_loss_divisor
  return LrBounds(
      base_lr=max_lr / base_divisor, max_lr=max_lr, lr_at_min=float(lrs[i_min]), steepest_lr=steepest,
      rule=(f"max_lr = lr at the minimum smoothed loss / {min_loss_divisor:g};"
            f" base_lr = max_lr / {base_divisor:g}"),
  )


def lr_range_sweep(
    step_fn: Callable[[float], Any],
    min_lr: float,
    max_lr: float,
    num_steps: int,
    *,
    smoothing: float = 0.98,
    divergence_factor: float = 4.0,
    progress: Progress = logging.info,
) -> LrRangeResult:
  """The range test's loop over any `step_fn(lr) -> loss` (see `lr_range_test`).

  Takes one step per rate of `exponential_learning_rates`, and stops after
  the first step whose loss is not finite or whose smoothed loss exceeds
  `divergence_factor` times the smallest smoothed loss so far.
  """
  if not divergence_factor > 1:
    raise ValueError(f"divergence_factor must be > 1, got {divergence_factor!r}")
  schedule = exponential_learning_rates(min_lr, max_lr, num_steps)
  if not 0 <= smoothing < 1:
    raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
  lrs, losses, smoothed = [], [], []
  average, best, stop_reason = 0.0, math.inf, "completed"
  report_every = max(1, num_steps // 10)
  for t, lr in enumerate(schedule):
    loss = float(step_fn(float(lr)))
    average = smoothing * average + (1 - smoothing) * loss
    value = average / (1 - smoothing ** (t + 1))
    lrs.append(float(lr))
    losses.append(loss)
    smoothed.append(value)
    best = min(best, value)
    if t % report_every == 0:
      progress(f"lr_range step {t}/{num_steps}: lr {lr:.3g}, loss {loss:.4g}, smoothed {value:.4g}")
    if not math.isfinite(loss):
      stop_reason = "non-finite loss"
    elif value > divergence_factor * best:
      stop_reason = "diverged"
    if stop_reason != "completed":
      progress(f"lr_range stopped at step {t} (lr {lr:.3g}): {stop_reason}")
      break
  return LrRangeResult(
      lrs=tuple(lrs), losses=tuple(losses), smoothed=tuple(smoothed), stop_reason=stop_reason,
      bounds=suggest_bounds(lrs, smoothed),
      settings=dict(min_lr=min_lr, max_lr=max_lr, num_steps=num_steps, smoothing=smoothing,
                    divergence_factor=divergence_factor),
  )


def lr_range_test(
    workload: Workload,
    optimizer: str,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 10.0,
    num_steps: int = 200,
    smoothing: float = 0.98,
    divergence_factor: float = 4.0,
    rng_seed: int = 0,
    batch_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: Progress = logging.info,
) -> LrRangeResult:
  """Smith's learning-rate range test of a registry optimizer on a workload.

  From initialisation, step t (t = 0 .. num_steps - 1) trains on the
  workload's training batch t at

    lr_t = min_lr (max_lr / min_lr)^(t / (num_steps - 1)),

  recording the batch loss (taken before that step's update) and its
  bias-corrected moving average (`smoothed_losses`, beta = `smoothing`). It
  stops early once the smoothed loss exceeds `divergence_factor` times its
  minimum or the loss is not finite. `suggest_bounds` gives the cyclical
  bounds. The exponential sweep (rather than Smith's linear one) is the
  common form (fast.ai's `lr_find`): equal resolution per decade.

  Args:
    workload, optimizer: what to probe (a registry name).
    hyperparameters: the optimizer's other hyperparameters (default: the
      registry's); a `learning_rate` in it is overridden.
    min_lr, max_lr, num_steps: the sweep.
    smoothing, divergence_factor: smoothing of the loss; when to stop.
    rng_seed: initialisation and data order, as a trial with this seed.
    batch_size: default the workload's.
    devices: data-parallel devices (default all).
    progress: one-line progress messages.

  Returns:
    An `LrRangeResult`.

  Reference: Smith, "Cyclical Learning Rates for Training Neural Networks",
  WACV 2017, arXiv:1506.01186, section 3.3.
  """
  training = ProbeTraining(workload, optimizer, hyperparameters, rng_seed=rng_seed,
                           batch_size=batch_size, devices=devices, probe="lr_range")
  result = lr_range_sweep(training.step, min_lr, max_lr, num_steps, smoothing=smoothing,
                          divergence_factor=divergence_factor, progress=progress)
  settings = dict(result.settings, workload=workload.name, optimizer=optimizer,
                  hyperparameters=dict(hyperparameters or {}), rng_seed=rng_seed,
                  batch_size=training.batch_size)
  return dataclasses.replace(result, settings=settings)


def write_lr_range(result: LrRangeResult, directory: str) -> list[str]:
  """Writes `lr_range.json` and, with matplotlib, `lr_range.png`; returns the paths."""
  paths = [os.path.join(directory, LR_RANGE_JSON)]
  logs.write_json(paths[0], result.as_dict())
  try:
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("matplotlib is not installed: no %s (pip install matplotlib).", LR_RANGE_PNG)
    return paths
  # Figure without pyplot renders with the Agg canvas: no display, no global state.
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  ax.plot(result.lrs, result.losses, color="C0", alpha=0.3, lw=0.8, label="loss")
  ax.plot(result.lrs, result.smoothed, color="C0", lw=1.8, label="smoothed loss")
  finite = [s for s in result.smoothed if math.isfinite(s)]
  if finite:  # Diverged steps would squash the curves: from the lowest loss to a bit above the start.
    low = min(finite + [v for v in result.losses if math.isfinite(v)])
    span = finite[0] - low + 1e-12
    ax.set_ylim(low - 0.05 * span, finite[0] + 0.3 * span)
  if result.bounds is not None:
    for value, name, style in ((result.bounds.base_lr, "base_lr", ":"), (result.bounds.max_lr, "max_lr", "--"),
                               (result.bounds.lr_at_min, "min smoothed loss", "-.")):
      ax.axvline(value, color="k", ls=style, lw=0.9, label=f"{name} {value:.2g}")
  ax.set(xscale="log", xlabel="learning rate", ylabel="training loss",
         title=f"LR range test ({result.stop_reason})")
  ax.legend(loc="best", fontsize="small")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(os.path.join(directory, LR_RANGE_PNG))
  fig.savefig(paths[-1], dpi=100)
  return paths


# --- Sharpness at initialisation ---------------------------------------------


def initial_sharpness(
    workload: Workload,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    num_iterations: int = 100,
    tol: float = 1e-3,
    rng_seed: int = 0,
    batch_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
) -> dict[str, Any]:
  """lambda_1 of the training loss at initialisation, on training batch 0.

  The initialisation, batch and dropout key are those of a trial with
  `rng_seed` at step 0; `hyperparameters` matter only through
  `label_smoothing`. A one-off measurement, so it allows more iterations
  than the per-evaluation one (it still stops at `tol`). Returns
  `SharpnessResult.as_dict()` plus the settings.
  """
  label_smoothing = float(dict(hyperparameters or {}).get("label_smoothing", 0.0))
  batch_size = int(batch_size or workload.default_batch_size)
  data, replicated = sharding.data_parallel_shardings(batch_size, devices, workload.name)
  model_rng, _, step_rng = jax.random.split(jax.random.key(rng_seed), 3)
  params, model_state = jax.device_put(workload.init_model_fn(model_rng), replicated)
  batch = batches.placed_batch(workload, rng_seed, 0, batch_size, data)
  rng = jax.random.fold_in(step_rng, 0)
  result = top_hessian_eigenvalue(hessian_loss(workload, label_smoothing), params,
                                  (batch, model_state, rng), num_iterations, tol, rng)
  return dict(result.as_dict(), workload=workload.name, batch_size=batch_size, rng_seed=rng_seed,
              label_smoothing=label_smoothing, tol=tol, max_iterations=num_iterations)


# --- Maximal initial learning rate -------------------------------------------


@dataclasses.dataclass(frozen=True)
class MaxLrTrial:
  """One training run of the search.

  Attributes:
    learning_rate: its constant rate.
    reached: whether the validation metric reached the threshold.
    best_metric: the best validation metric seen (None if never evaluated or
      not finite).
    steps: steps trained (fewer than the budget once reached or diverged).
  """

  learning_rate: float
  reached: bool
  best_metric: float | None
  steps: int


@dataclasses.dataclass(frozen=True)
class MaxLrResult:
  """The bracket [lr_low, lr_high] around the maximal initial learning rate.

  Attributes:
    lr_low: the largest rate that reached the threshold (None: none did).
    lr_high: the smallest rate that did not (None: even the largest did).
    trials: every run, in the order run.
    settings: the search's arguments (threshold, metric, budget, ...).
  """

  lr_low: float | None
  lr_high: float | None
  trials: tuple[MaxLrTrial, ...]
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def as_dict(self) -> dict[str, Any]:
    return dict(lr_low=self.lr_low, lr_high=self.lr_high, max_lr=self.lr_low,
                trials=[dataclasses.asdict(t) for t in self.trials], settings=dict(self.settings))


def bisect_max_lr(
    trial_fn: Callable[[float], MaxLrTrial],
    lr_low: float,
    lr_high: float,
    num_bisections: int = 8,
    progress: Progress = logging.info,
) -> MaxLrResult:
  """Bisection on log10(lr) for the largest rate at which `trial_fn` succeeds.

  Assumes monotonicity: if training reaches the threshold at some rate, it
  does at every smaller one in the range (Iyer et al.'s premise; true up to
  noise for a budget long enough for the small rates). Then success is
  [lr_low, eta*) and the search keeps lo (succeeded) < eta* <= hi (failed):

    1. run lr_low; if it fails, return (None, lr_low);
    2. run lr_high; if it succeeds, return (lr_high, None);
    3. `num_bisections` times: mid = sqrt(lo * hi) (the midpoint of
       log10 lo and log10 hi); lo = mid on success, else hi = mid.

  The bracket's width is log10(lr_high / lr_low) / 2^num_bisections decades,
  for num_bisections + 2 trials. A violation of the assumption shows as a
  trial list whose successes and failures interleave in lr.
  """
  if not (0 < lr_low < lr_high and math.isfinite(lr_high)):
    raise ValueError(f"need 0 < lr_low < lr_high < inf, got {lr_low!r}, {lr_high!r}")
  if not isinstance(num_bisections, (int, np.integer)) or num_bisections < 0:
    raise ValueError(f"num_bisections must be an integer >= 0, got {num_bisections!r}")
  trials: list[MaxLrTrial] = []

  def run(lr):
    trial = trial_fn(float(lr))
    trials.append(trial)
    shown = "n/a" if trial.best_metric is None else f"{trial.best_metric:.4g}"
    progress(f"max_lr trial {len(trials)}/{num_bisections + 2}: lr {lr:.4g}"
             f" {'reached' if trial.reached else 'missed'} the threshold (best {shown}, {trial.steps} steps)")
    return trial.reached

  if not run(lr_low):
    return MaxLrResult(None, float(lr_low), tuple(trials))
  if run(lr_high):
    return MaxLrResult(float(lr_high), None, tuple(trials))
  lo, hi = math.log10(lr_low), math.log10(lr_high)
  for _ in range(num_bisections):
    mid = 0.5 * (lo + hi)
    if run(10.0 ** mid):
      lo = mid
    else:
      hi = mid
  return MaxLrResult(10.0 ** lo, 10.0 ** hi, tuple(trials))


def max_lr_search(
    workload: Workload,
    optimizer: str,
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    lr_low: float = 1e-6,
    lr_high: float = 10.0,
    num_bisections: int = 8,
    step_budget: int | None = None,
    threshold: float | None = None,
    num_evals: int = 10,
    rng_seed: int = 0,
    batch_size: int | None = None,
    devices: Sequence[jax.Device] | None = None,
    progress: Progress = logging.info,
) -> MaxLrResult:
  """Iyer et al.'s maximal initial learning rate of a registry optimizer.

  Each trial trains from the same fresh initialisation (that of `rng_seed`,
  so trials differ only in the rate) at a CONSTANT learning rate for at most
  `step_budget` steps, evaluating the workload's target metric on the
  validation split every `step_budget / num_evals` steps and at the end; it
  succeeds once the metric reaches `threshold` in the workload's direction
  (`targets.mode`) and stops early then, or when the training loss is no
  longer finite. `bisect_max_lr` brackets the largest succeeding rate.

  Args:
    workload, optimizer: what to probe (a registry name).
    hyperparameters: the optimizer's other hyperparameters (default the
      registry's); schedule keys are ignored (the rate is constant).
    lr_low, lr_high: the search range.
    num_bisections: bisection steps after the two end points.
    step_budget: steps per trial (default the workload's `step_hint`).
    threshold: the validation target (default the workload's).
    num_evals: evaluations per trial.
    rng_seed, batch_size, devices, progress: as `lr_range_test`.

  Returns:
    A `MaxLrResult`.

  Reference: Iyer, Hanin & Rolnick, "Maximal Initial Learning Rates in Deep
  ReLU Networks", ICML 2023, arXiv:2212.07295.
  """
  targets = workload.targets
  step_budget = int(targets.step_hint if step_budget is None else step_budget)
  threshold = float(targets.validation if threshold is None else threshold)
  if step_budget < 1 or num_evals < 1:
    raise ValueError(f"step_budget and num_evals must be >= 1, got {step_budget}, {num_evals}")
  if not math.isfinite(threshold):
    raise ValueError(f"threshold must be finite, got {threshold!r}")
  goal = dataclasses.replace(targets, validation=threshold)
  training = ProbeTraining(workload, optimizer, hyperparameters, rng_seed=rng_seed,
                           batch_size=batch_size, devices=devices, probe="max_lr")
  eval_every = max(1, step_budget // num_evals)

  def trial(lr: float) -> MaxLrTrial:
    training.reset()
    best = None
    for t in range(1, step_budget + 1):
      loss = training.step(lr)
      if t % eval_every and t != step_budget:
        continue
      value = training.evaluate("validation")[targets.metric]
      if math.isfinite(value) and (best is None or (value > best if targets.mode == "max" else value < best)):
        best = value
      if goal.reached(value):
        return MaxLrTrial(lr, True, best, t)
      if not math.isfinite(float(loss)):
        break  # Diverged: no later step can recover.
    return MaxLrTrial(lr, False, best, t)

  result = bisect_max_lr(trial, lr_low, lr_high, num_bisections, progress)
  settings = dict(workload=workload.name, optimizer=optimizer, hyperparameters=dict(hyperparameters or {}),
                  metric=f"validation/{targets.metric}", mode=targets.mode, threshold=threshold,
                  step_budget=step_budget, num_evals=num_evals, lr_low=lr_low, lr_high=lr_high,
                  num_bisections=num_bisections, rng_seed=rng_seed, batch_size=training.batch_size)
  return dataclasses.replace(result, settings=settings)
