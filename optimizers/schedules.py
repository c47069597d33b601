"""Learning-rate schedules from the literature, as Optax schedules.

Every function here returns an Optax schedule, `step -> float32 scalar`: it
is pure `jnp`, jit-able with traced int32 steps, and drops in as the
`learning_rate` (or, for the momentum schedules, the `b1`) of any optax or
steplab optimizer, directly or through `optax.inject_hyperparams`. Arguments
are checked when the schedule is built; a bad one raises `ValueError` naming
it and the allowed range.

| name | schedule |
|---|---|
| `warmup_stable_decay_schedule` | WSD: warmup, constant, cooldown (linear, cosine, 1-sqrt) |
| `linear_decay_to_zero_schedule` | D2Z: warmup, then linear decay to exactly 0 |
| `rex_schedule` | REX: warmup, then (1 - z) / (1 - z / 2) |
| `power_schedule` | Power scheduler: min(max, batch a n^b) of tokens n, optional decay |
| `cyclic_schedule`, `cyclic_momentum_schedule` | Smith's cyclical learning rates (and momentum) |
| `one_cycle_schedule`, `one_cycle_momentum_schedule` | 1cycle, as torch's `OneCycleLR` |
| `refined_schedule` | schedules refined from a previous run's gradient norms |

The runner's names for them, and reading logged gradient norms from a file,
are runner policy: `experiments.schedule_config`.

Steps count from 0, as Optax's (the schedule's value at step t is the
learning rate of update t + 1).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np
import optax

from optimizers import _validation

__all__ = ("cyclic_momentum_schedule", "cyclic_schedule", "linear_decay_to_zero_schedule",
    "one_cycle_momentum_schedule", "one_cycle_schedule", "power_schedule", "refined_schedule",
    "rex_schedule", "warmup_stable_decay_schedule")


# --- Shared pieces --------------------------------------------------------------


def _steps_f32(step: Any) -> jnp.ndarray:
  return jnp.asarray(step, jnp.float32)


def _float32(schedule: optax.Schedule) -> optax.Schedule:
  """The schedule with its output cast to a float32 scalar."""

  def wrapped(step):
    return jnp.asarray(schedule(step), jnp.float32)

  return wrapped


def _check_int(owner: str, name: str, value: Any, low: int = 0) -> int:
  """An integer count (not a bool, not a float) of at least `low`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise ValueError(f"{owner}: `{name}` must be an integer, got {value!r}.")
  if value < low:
    raise ValueError(f"{owner}: `{name}` must be an integer >= {low}, got {value!r}.")
  return int(value)


def _check_number(owner: str, name: str, value: Any, low: float = -math.inf,
                  high: float = math.inf, **inclusive: bool) -> float:
  """A finite concrete number in the given interval (schedules are built from numbers)."""
  if _validation.concrete_value(value) is None or isinstance(value, bool):
    raise ValueError(f"{owner}: `{name}` must be a number, got {value!r}.")
  _validation.check_range(owner, name, value, low, high, **inclusive)
  if not math.isfinite(float(value)):
    raise ValueError(f"{owner}: `{name}` must be finite, got {value!r}.")
  return float(value)


def _check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
  if value not in choices:
    raise ValueError(f"{owner}: `{name}` must be one of {list(choices)}, got {value!r}.")
  return value


def _check_warmup_args(owner: str, peak_value: Any, total_steps: Any, warmup_steps: Any,
                       init_value: Any) -> tuple[float, int, int, float]:
  """The arguments every warmup-then-decay schedule shares, checked."""
  return (_check_number(owner, "peak_value", peak_value, 0.0),
          _check_int(owner, "total_steps", total_steps, 1),
          _check_int(owner, "warmup_steps", warmup_steps, 0),
          _check_number(owner, "init_value", init_value, 0.0))


def _with_warmup(init_value: float, peak_value: float, warmup_steps: int,
                 main: optax.Schedule) -> optax.Schedule:
  """Linear warmup init_value -> peak_value over `warmup_steps`, then `main(t - warmup_steps)`."""
  if warmup_steps == 0:
    return main
  warmup = optax.linear_schedule(init_value, peak_value, warmup_steps)
  return optax.join_schedules([warmup, main], [warmup_steps])


# Cooldown shapes s(x), x in [0, 1] the cooldown progress; s(0) = 1, s(1) = 0.
COOLDOWN_SHAPES: Mapping[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "linear": lambda x: 1.0 - x,
    "cosine": lambda x: 0.5 * (1.0 + jnp.cos(jnp.pi * x)),
    "1-sqrt": lambda x: 1.0 - jnp.sqrt(x),
}

# The Power scheduler's decay adds IBM dolomite-engine's exponential decay
# to zero, (e^(1 - x) - 1) / (e - 1).
_POWER_DECAY_SHAPES: Mapping[str, Callable[[jnp.ndarray], jnp.ndarray]] = {
    "exponential": lambda x: jnp.expm1(1.0 - x) / math.expm1(1.0),
    **COOLDOWN_SHAPES,
}


# --- WSD, D2Z, REX ----------------------------------------------------------------


def warmup_stable_decay_schedule(
    peak_value: float,
    total_steps: int,
    warmup_steps: int = 0,
    decay_fraction: float = 0.2,
    decay_shape: str = "linear",
    init_value: float = 0.0,
    end_value: float = 0.0,
) -> optax.Schedule:
  r"""Warmup-Stable-Decay (WSD, "trapezoidal"): warmup, constant, cooldown.

  With W = `warmup_steps`, T = `total_steps`, D = round(decay_fraction T)
  cooldown steps starting at S = T - D, and x = (t - S) / D the cooldown
  progress,

      lr(t) = init + (peak - init) t / W          t < W
            = peak                                W <= t < S
            = end + (peak - end) s(x)             S <= t < T
            = end                                 t >= T

  with the cooldown shape s(x) (`decay_shape`):

      "linear":  s(x) = 1 - x
      "cosine":  s(x) = (1 + cos(pi x)) / 2
      "1-sqrt":  s(x) = 1 - sqrt(x)

  Defaults (linear cooldown over the last 20% to 0) follow Hägele et al.,
  who find a 20% linear cooldown matches a tuned cosine and "1-sqrt" better
  still; Dremov et al. study the cooldown shapes further. `round` is Python's
  (halves to even).

  References:
    Hägele et al., "Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations", NeurIPS 2024, https://arxiv.org/abs/2405.18392.
    Dremov et al., "Training Dynamics of the Cooldown Stage in
    Warmup-Stable-Decay Learning Rate Scheduler", TMLR 2025,
    https://arxiv.org/abs/2508.01483.

  Args:
    peak_value: the stable learning rate (>= 0).
    total_steps: T, the step at which the cooldown reaches `end_value` (>= 1).
    warmup_steps: W, linear warmup steps (0 <= W <= T - D).
    decay_fraction: the cooldown's share of `total_steps`, in [0, 1].
    decay_shape: "linear", "cosine" or "1-sqrt".
    init_value: learning rate at step 0 of the warmup.
    end_value: learning rate at and after `total_steps`.

  Returns:
    An `optax.Schedule`.
  """
  owner = "warmup_stable_decay_schedule"
  peak_value, total_steps, warmup_steps, init_value = _check_warmup_args(
      owner, peak_value, total_steps, warmup_steps, init_value)
  decay_fraction = _check_number(owner, "decay_fraction", decay_fraction, 0.0, 1.0)
  shape = COOLDOWN_SHAPES[_check_choice(owner, "decay_shape", decay_shape, tuple(COOLDOWN_SHAPES))]
  end_value = _check_number(owner, "end_value", end_value, 0.0)
  decay_steps = int(round(decay_fraction * total_steps))
  decay_start = total_steps - decay_steps
  if warmup_steps > decay_start:
    raise ValueError(
        f"{owner}: `warmup_steps` ({warmup_steps}) must be at most total_steps - "
        f"round(decay_fraction * total_steps) = {decay_start}: the warmup would run into the cooldown."
    )

  def cooldown(step):  # Steps counted from the cooldown's start S.
    x = jnp.clip(_steps_f32(step) / max(decay_steps, 1), 0.0, 1.0)
    return end_value + (peak_value - end_value) * shape(x)

  return _float32(optax.join_schedules(
      [optax.linear_schedule(init_value, peak_value, warmup_steps),
       optax.constant_schedule(peak_value), cooldown, optax.constant_schedule(end_value)],
      [warmup_steps, decay_start, total_steps],
  ))


def _check_warmup_before_end(owner: str, warmup_steps: int, total_steps: int) -> None:
  if warmup_steps >= total_steps:
    raise ValueError(
        f"{owner}: `warmup_steps` must be less than `total_steps` (the decay needs at least one step), "
        f"got warmup_steps={warmup_steps}, total_steps={total_steps}."
    )


def _warmup_then_to_zero(owner: str, peak_value: Any, total_steps: Any, warmup_steps: Any,
                         init_value: Any, beta: float) -> optax.Schedule:
  """Warmup, then peak r / ((1 - beta) + beta r), r = (T - t) / (T - W): D2Z (beta = 0) and REX."""
  peak_value, total_steps, warmup_steps, init_value = _check_warmup_args(
      owner, peak_value, total_steps, warmup_steps, init_value)
  _check_warmup_before_end(owner, warmup_steps, total_steps)
  decay_steps = total_steps - warmup_steps

  def decay(step):  # Steps counted from the end of warmup.
    # r, the share of the decay still ahead, (T - t) / (T - W), is exactly 0
    # at T. (optax.linear_schedule's 1 - t / n is not: XLA turns the division
    # into a multiplication by 1 / n, and 3.0 decays to 6.7e-8 instead of 0.)
    remaining = jnp.clip((decay_steps - _steps_f32(step)) / decay_steps, 0.0, 1.0)
    return peak_value * remaining / ((1.0 - beta) + beta * remaining)

  return _float32(_with_warmup(init_value, peak_value, warmup_steps, decay))


def linear_decay_to_zero_schedule(
    peak_value: float,
    total_steps: int,
    warmup_steps: int = 0,
    init_value: float = 0.0,
) -> optax.Schedule:
  r"""D2Z: linear warmup, then linear decay to exactly zero at `total_steps`.

      lr(t) = init + (peak - init) t / W          t < W
            = peak (1 - (t - W) / (T - W))        W <= t < T
            = 0                                   t >= T

  Bergsma et al. show that decaying linearly to zero (rather than to 10% of
  the peak, the usual cosine default) is best for LLM pre-training at
  compute-optimal and longer durations; it is also the worst-case optimal
  schedule of Defazio et al. (2023, see `refined_schedule`).

  References:
    Bergsma et al., "Straight to Zero: Why Linearly Decaying the Learning
    Rate to Zero Works Best for LLMs", 2025, https://arxiv.org/abs/2502.15938.

  Args:
    peak_value: the learning rate at the end of warmup (>= 0).
    total_steps: T, where the rate reaches 0 (>= 1).
    warmup_steps: W, linear warmup steps (0 <= W < T).
    init_value: learning rate at step 0 of the warmup.

  Returns:
    An `optax.Schedule`.
  """
  return _warmup_then_to_zero("linear_decay_to_zero_schedule", peak_value, total_steps, warmup_steps,
                              init_value, beta=0.0)


def rex_schedule(
    peak_value: float,
    total_steps: int,
    warmup_steps: int = 0,
    init_value: float = 0.0,
    beta: float = 0.5,
) -> optax.Schedule:
  r"""REX ("reflected exponential"): warmup, then (1 - z) / (1 - beta z).

  With z = (t - W) / (T - W) the progress after warmup,

      lr(t) = init + (peak - init) t / W          t < W
            = peak (1 - z) / (1 - beta z)         W <= t < T
            = 0                                   t >= T

  The paper's profile is beta = 1/2, i.e. (1 - z) / (1/2 + (1 - z) / 2),
  sampled every iteration: it stays above the linear decay early (budget
  robustness) and falls to zero at T. beta = 0 is the linear decay (D2Z);
  beta -> 1 approaches a constant rate with a final drop. Implementations
  differ: the `REX_LR` PyTorch scheduler (github.com/IvanVassi/REX_LR) uses
  r / (0.1 + 0.9 r) with r = 1 - z, which is `beta=0.9` here, and other ports
  write it r / (alpha + beta r) with (alpha, beta) = (0.1, 0.9).

  References:
    Chen, Wolfe, Kyrillidis, "REX: Revisiting Budgeted Training with an
    Improved Schedule", MLSys 2022, https://arxiv.org/abs/2107.04197.

  Args:
    peak_value: the learning rate at the end of warmup (>= 0).
    total_steps: T, where the rate reaches 0 (>= 1).
    warmup_steps: W, linear warmup steps (0 <= W < T).
    init_value: learning rate at step 0 of the warmup.
    beta: the profile's curvature, in [0, 1); 1/2 is the paper's.

  Returns:
    An `optax.Schedule`.
  """
  beta = _check_number("rex_schedule", "beta", beta, 0.0, 1.0, high_inclusive=False)
  return _warmup_then_to_zero("rex_schedule", peak_value, total_steps, warmup_steps, init_value, beta)


# --- Power scheduler ---------------------------------------------------------------


def power_schedule(
    batch_size: float,
    tokens_per_step: float,
    total_steps: int,
    warmup_steps: int = 0,
    decay_steps: int = 0,
    a: float = 4.0,
    b: float = -0.51,
    max_value: float = 0.02,
    decay_shape: str = "exponential",
) -> optax.Schedule:
  r"""The Power scheduler: a learning rate set by the tokens seen so far.

  With n = t * `tokens_per_step` the tokens trained on before step t,
  N_w = W * tokens_per_step, N_d = D * tokens_per_step, N = T * tokens_per_step,

      eta_power(n) = min(max_value, batch_size * a * n^b)

      lr(t) = (n / N_w) eta_power(N_w)                t < W
            = eta_power(n)                            W <= t <= T - D
            = f(x) eta_power(N - N_d)                 T - D < t,  x = (n - N + N_d) / N_d

  with f (`decay_shape`) falling from f(0) = 1 to f(1) = 0 and held at 0
  after T. Without a decay (D = 0, the default) the rate is eta_power(n)
  forever: the schedule needs no training length, which is the paper's point
  (`total_steps` then only bounds the warmup).

  From the paper: the optimal WSD learning rate follows eta_opt = beta a T^b
  in the batch size beta (sequences per batch, not tokens) and the token
  count T; the Power scheduler applies that law at every n, capped at
  max_value, so one (a, b) transfers across batch sizes and training
  lengths. Defaults a = 4, b = -0.51, max_value = 0.02: the paper's muP
  setting, as public re-implementations use it (other parametrisations need
  their own a, b). Decay: exponential to zero, f(x) = (e^(1 - x) - 1) / (e - 1),
  as the `ExponentialScheduler` of IBM's dolomite-engine (the authors'
  training framework) with decay factor 0; WSD's "linear", "cosine" and
  "1-sqrt" cooldowns are offered too.

  References:
    Shen et al., "Power Scheduler: A Batch Size and Token Number Agnostic
    Learning Rate Scheduler", 2024, https://arxiv.org/abs/2408.13359.
    Code: github.com/IBM/dolomite-engine (`PowerScheduler`,
    `ExponentialScheduler`).

  Args:
    batch_size: beta, sequences (samples) per optimizer step (> 0).
    tokens_per_step: tokens per optimizer step, batch_size x sequence
      length for language models (> 0).
    total_steps: T (>= 1): the decay, if any, ends here.
    warmup_steps: W, linear warmup steps from 0 to eta_power(N_w).
    decay_steps: D, the decay's steps at the end (W + D <= T).
    a: the law's coefficient (> 0).
    b: the law's exponent in the tokens (<= 0).
    max_value: the cap on the learning rate (> 0).
    decay_shape: "exponential", "linear", "cosine" or "1-sqrt".

  Returns:
    An `optax.Schedule`.
  """
  owner = "power_schedule"
  batch_size = _check_number(owner, "batch_size", batch_size, 0.0, low_inclusive=False)
  tokens_per_step = _check_number(owner, "tokens_per_step", tokens_per_step, 0.0, low_inclusive=False)
  total_steps = _check_int(owner, "total_steps", total_steps, 1)
  warmup_steps = _check_int(owner, "warmup_steps", warmup_steps, 0)
  decay_steps = _check_int(owner, "decay_steps", decay_steps, 0)
  a = _check_number(owner, "a", a, 0.0, low_inclusive=False)
  b = _check_number(owner, "b", b, high=0.0)
  max_value = _check_number(owner, "max_value", max_value, 0.0, low_inclusive=False)
  shape = _POWER_DECAY_SHAPES[
      _check_choice(owner, "decay_shape", decay_shape, tuple(_POWER_DECAY_SHAPES))]
  if warmup_steps + decay_steps > total_steps:
    raise ValueError(
        f"{owner}: `warmup_steps` + `decay_steps` must be at most `total_steps`, got "
        f"{warmup_steps} + {decay_steps} > {total_steps}."
    )

  def eta_power_at(tokens: float) -> float:  # Build-time values, in float64.
    return max_value if tokens <= 0 else min(max_value, batch_size * a * tokens**b)

  decay_start = total_steps - decay_steps
  warmup_peak = eta_power_at(warmup_steps * tokens_per_step)
  decay_peak = eta_power_at(decay_start * tokens_per_step)

  def schedule(step):
    t = _steps_f32(step)
    n = t * tokens_per_step
    safe_n = jnp.maximum(n, 1.0)  # n = 0 is capped at max_value below.
    eta_power = jnp.where(n > 0, jnp.minimum(max_value, batch_size * a * safe_n**b), max_value)
    lr = jnp.where(t < warmup_steps, warmup_peak * t / max(warmup_steps, 1), eta_power)
    if decay_steps:
      x = jnp.clip((t - decay_start) / decay_steps, 0.0, 1.0)
      lr = jnp.where(t > decay_start, decay_peak * shape(x), lr)
      lr = jnp.where(t >= total_steps, 0.0, lr)  # f(1) = 0, exactly.
    return lr

  return _float32(schedule)


# --- Cyclical learning rates and 1cycle --------------------------------------------

CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


def _cyclic_amplitude(owner: str, step_size: float, mode: str, gamma: float):
  """t -> max(0, 1 - x) * scale(t), the shared triangle of Smith's CLR."""
  step_size = _check_number(owner, "step_size", step_size, 0.0, low_inclusive=False)
  mode = _check_choice(owner, "mode", mode, CYCLIC_MODES)
  gamma = _check_number(owner, "gamma", gamma, 0.0, 1.0, low_inclusive=False)

  def amplitude(step):
    t = _steps_f32(step)
    cycle = jnp.floor(1.0 + t / (2.0 * step_size))
    x = jnp.abs(t / step_size - 2.0 * cycle + 1.0)
    if mode == "triangular":
      scale = 1.0
    elif mode == "triangular2":
      scale = 1.0 / 2.0 ** (cycle - 1.0)
    else:  # exp_range
      scale = gamma**t
    return jnp.maximum(0.0, 1.0 - x) * scale

  return amplitude


def _check_momenta(owner: str, base_momentum: Any, max_momentum: Any) -> tuple[float, float]:
  """0 <= base_momentum <= max_momentum < 1."""
  base_momentum = _check_number(owner, "base_momentum", base_momentum, 0.0, 1.0, high_inclusive=False)
  return base_momentum, _check_number(owner, "max_momentum", max_momentum, base_momentum, 1.0,
                                      high_inclusive=False)


def cyclic_schedule(
    base_value: float,
    max_value: float,
    step_size: float,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> optax.Schedule:
  r"""Cyclical learning rates (CLR): a triangle wave between two bounds.

  From the paper,

      cycle = floor(1 + t / (2 step_size))
      x     = |t / step_size - 2 cycle + 1|
      lr(t) = base + (max - base) max(0, 1 - x) scale(t)

  with scale = 1 ("triangular"), 1 / 2^(cycle - 1) ("triangular2": the
  amplitude halves every cycle) or gamma^t ("exp_range"), the modes and
  formulas of torch's `CyclicLR` too. The rate starts at `base_value`, peaks
  at `max_value` after `step_size` steps and is back at the base after
  2 `step_size` steps. The paper suggests step_size = 2-10 epochs of
  iterations, base_value = max_value / 3 or / 4 (from an LR range test), and
  stopping at the end of a cycle.

  References:
    Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017,
    https://arxiv.org/abs/1506.01186.

  Args:
    base_value: the lower bound (>= 0).
    max_value: the upper bound (>= base_value).
    step_size: steps per half cycle (> 0).
    mode: "triangular", "triangular2" or "exp_range".
    gamma: the decay of "exp_range", in (0, 1] (ignored otherwise).

  Returns:
    An `optax.Schedule`.
  """
  owner = "cyclic_schedule"
  base_value = _check_number(owner, "base_value", base_value, 0.0)
  max_value = _check_number(owner, "max_value", max_value, base_value)
  amplitude = _cyclic_amplitude(owner, step_size, mode, gamma)
  return _float32(lambda step: base_value + (max_value - base_value) * amplitude(step))


def cyclic_momentum_schedule(
    base_momentum: float,
    max_momentum: float,
    step_size: float,
    mode: str = "triangular",
    gamma: float = 1.0,
) -> optax.Schedule:
  r"""Cyclical momentum, moving opposite to `cyclic_schedule`'s learning rate.

      momentum(t) = max_m - (max_m - base_m) max(0, 1 - x) scale(t)

  with x and scale as in `cyclic_schedule` (same `step_size`, `mode`,
  `gamma`): momentum is `max_momentum` where the learning rate is at its base
  and `base_momentum` at its peak, as torch's `CyclicLR(cycle_momentum=True)`
  (defaults there 0.8 and 0.9). Pass it as `b1` (or `momentum`) through
  `optax.inject_hyperparams`.

  References:
    Smith, "A disciplined approach to neural network hyper-parameters: Part
    1", 2018, https://arxiv.org/abs/1803.09820 (cyclical momentum);
    Smith 2017, https://arxiv.org/abs/1506.01186.

  Args:
    base_momentum: the lower bound, in [0, 1).
    max_momentum: the upper bound, in [base_momentum, 1).
    step_size, mode, gamma: as `cyclic_schedule` (the same for both).

  Returns:
    An `optax.Schedule`.
  """
  owner = "cyclic_momentum_schedule"
  base_momentum, max_momentum = _check_momenta(owner, base_momentum, max_momentum)
  amplitude = _cyclic_amplitude(owner, step_size, mode, gamma)
  return _float32(lambda step: max_momentum - (max_momentum - base_momentum) * amplitude(step))


ANNEAL_STRATEGIES = ("cos", "linear")


def _one_cycle(owner: str, total_steps: int, pct_start: float, anneal_strategy: str,
               three_phase: bool, phase_values: Sequence[tuple[float, float]]) -> optax.Schedule:
  """torch's OneCycleLR phase walk for one quantity (start, end) per phase."""
  total_steps = _check_int(owner, "total_steps", total_steps, 1)
  pct_start = _check_number(owner, "pct_start", pct_start, 0.0, 1.0)
  _check_choice(owner, "anneal_strategy", anneal_strategy, ANNEAL_STRATEGIES)
  if not isinstance(three_phase, bool):
    raise ValueError(f"{owner}: `three_phase` must be a bool, got {three_phase!r}.")
  if three_phase and pct_start > 0.5:
    raise ValueError(
        f"{owner}: with three_phase=True the first two phases are symmetric, so `pct_start` "
        f"must be in [0, 0.5], got {pct_start!r}."
    )
  # torch's phase boundaries: a phase covers steps (previous end, end].
  ends = [pct_start * total_steps - 1.0]
  if three_phase:
    ends.append(2.0 * pct_start * total_steps - 2.0)
  ends.append(total_steps - 1.0)
  starts = [0.0] + ends[:-1]
  values = list(phase_values)
  ends_a, starts_a = jnp.asarray(ends, jnp.float32), jnp.asarray(starts, jnp.float32)
  begin_a = jnp.asarray([v[0] for v in values], jnp.float32)
  finish_a = jnp.asarray([v[1] for v in values], jnp.float32)

  def schedule(step):
    t = jnp.clip(_steps_f32(step), 0.0, total_steps - 1.0)  # Held at the end value after.
    # The first phase with t <= end, else the last one.
    phase = jnp.minimum(jnp.sum(t[..., None] > ends_a[:-1], axis=-1), len(ends) - 1)
    length = ends_a[phase] - starts_a[phase]
    pct = jnp.where(length > 0, (t - starts_a[phase]) / jnp.where(length > 0, length, 1.0), 1.0)
    begin, finish = begin_a[phase], finish_a[phase]
    if anneal_strategy == "cos":
      return finish + (begin - finish) / 2.0 * (jnp.cos(jnp.pi * pct) + 1.0)
    return (finish - begin) * pct + begin

  return _float32(schedule)


def one_cycle_schedule(
    max_value: float,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    three_phase: bool = False,
) -> optax.Schedule:
  r"""1cycle learning rate, with torch's `OneCycleLR` phases and defaults.

  With initial = max / div_factor, min = initial / final_div_factor and
  P = pct_start T, the phases (torch's, each annealed by cosine
  `a + (b - a)(1 - cos(pi p)) / 2` or linearly over its own progress p) are

      two-phase:    initial -> max over steps [0, P - 1],  max -> min over (P - 1, T - 1]
      three_phase:  initial -> max over [0, P - 1],  max -> initial over (P - 1, 2P - 2],
                    initial -> min over (2P - 2, T - 1]

  The value is held at `min` after step T - 1 (torch raises past T).
  `three_phase=True` is the paper's shape (symmetric warmup and cooldown,
  then annihilation); the two-phase default is fastai's, which torch follows.

  Difference from `optax.cosine_onecycle_schedule`: optax peaks at step
  int(P) and ends at step T, interpolating between its boundaries; this one
  peaks at step P - 1 and reaches `min` at step T - 1 exactly as torch
  (phase boundaries may be fractional), offers linear annealing and three
  phases, and comes with `one_cycle_momentum_schedule`, which optax lacks.

  References:
    Smith & Topin, "Super-Convergence: Very Fast Training of Neural Networks
    Using Large Learning Rates", 2017, https://arxiv.org/abs/1708.07120.
    Code: torch.optim.lr_scheduler.OneCycleLR.

  Args:
    max_value: the peak learning rate (>= 0).
    total_steps: T, the cycle's length in steps (>= 1).
    pct_start: the share of the cycle spent increasing, in [0, 1] ([0, 0.5]
      with three_phase).
    anneal_strategy: "cos" or "linear".
    div_factor: initial = max_value / div_factor (> 0).
    final_div_factor: min = initial / final_div_factor (> 0).
    three_phase: the paper's three phases instead of fastai's two.

  Returns:
    An `optax.Schedule`.
  """
  owner = "one_cycle_schedule"
  max_value = _check_number(owner, "max_value", max_value, 0.0)
  div_factor = _check_number(owner, "div_factor", div_factor, 0.0, low_inclusive=False)
  final_div_factor = _check_number(owner, "final_div_factor", final_div_factor, 0.0,
                                   low_inclusive=False)
  initial = max_value / div_factor
  minimum = initial / final_div_factor
  if three_phase:
    phases = [(initial, max_value), (max_value, initial), (initial, minimum)]
  else:
    phases = [(initial, max_value), (max_value, minimum)]
  return _one_cycle(owner, total_steps, pct_start, anneal_strategy, three_phase, phases)


def one_cycle_momentum_schedule(
    total_steps: int,
    base_momentum: float = 0.85,
    max_momentum: float = 0.95,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> optax.Schedule:
  r"""1cycle momentum, opposite to `one_cycle_schedule`, as torch's `OneCycleLR`.

      two-phase:    max_m -> base_m over [0, P - 1],  base_m -> max_m over (P - 1, T - 1]
      three_phase:  max_m -> base_m, base_m -> max_m, then max_m held

  over the same phases (same `total_steps`, `pct_start`, `anneal_strategy`,
  `three_phase`) as the learning rate, so momentum is lowest where the rate
  peaks. torch writes it into `momentum` or, for Adam-type optimizers, into
  `betas[0]`; here pass it as `b1`:

      optax.inject_hyperparams(optimizers.radam)(
          learning_rate=one_cycle_schedule(0.01, T), b1=one_cycle_momentum_schedule(T))

  References:
    Smith, "A disciplined approach to neural network hyper-parameters: Part
    1", 2018, https://arxiv.org/abs/1803.09820; Smith & Topin 2017,
    https://arxiv.org/abs/1708.07120. Defaults: torch's OneCycleLR.

  Args:
    total_steps: T (>= 1).
    base_momentum: the momentum at the learning rate's peak, in [0, 1).
    max_momentum: the momentum at the start and end, in [base_momentum, 1).
    pct_start, anneal_strategy, three_phase: as `one_cycle_schedule` (the
      same for both).

  Returns:
    An `optax.Schedule`.
  """
  owner = "one_cycle_momentum_schedule"
  base_momentum, max_momentum = _check_momenta(owner, base_momentum, max_momentum)
  if three_phase:
    phases = [(max_momentum, base_momentum), (base_momentum, max_momentum), (max_momentum, max_momentum)]
  else:
    phases = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
  return _one_cycle(owner, total_steps, pct_start, anneal_strategy, three_phase, phases)


# --- Refined schedules ---------------------------------------------------------------


def median_filter(values: Any, width: int) -> np.ndarray:
  """The refinement paper's median filter of a 1-D sequence (odd `width`).

  As the authors' code: `scipy.ndimage.median_filter(size=width,
  mode="nearest")` after reflecting the sequence past its end, so the window
  repeats the first value at the start and mirrors the last values at the end.
  """
  from scipy import ndimage  # pylint: disable=g-import-not-at-top  # Only the refined schedules need it.

  values = np.asarray(values, np.float64)
  if width <= 1:
    return values.copy()
  pad = 2 * width
  padded = np.pad(values, (0, pad), mode="reflect")
  return ndimage.median_filter(padded, size=width, mode="nearest")[:-pad]


def _refined_values(owner: str, grad_norms: Any, smoothing_window: float, norm_power: float,
                    steps: Any, total_steps: int | None) -> np.ndarray:
  """`refined_schedule`'s multipliers w_t / max w in [0, 1], one per step (NumPy, float64)."""
  norms = np.array(grad_norms, dtype=np.float64)
  if norms.ndim != 1:
    raise ValueError(f"{owner}: `grad_norms` must be 1-D, got shape {norms.shape}.")
  if norms.size == 0:
    raise ValueError(f"{owner}: `grad_norms` is empty.")
  bad = np.flatnonzero(~np.isfinite(norms))
  if bad.size:
    raise ValueError(
        f"{owner}: `grad_norms` must be finite; entry {bad[0]} is {float(norms[bad[0]])!r} "
        f"({bad.size} non-finite entries).")
  bad = np.flatnonzero(norms <= 0)
  if bad.size:
    raise ValueError(
        f"{owner}: `grad_norms` must be positive; entry {bad[0]} is {float(norms[bad[0]])!r} "
        f"({bad.size} non-positive entries).")
  smoothing_window = _check_number(owner, "smoothing_window", smoothing_window, 0.0, 1.0)
  norm_power = _check_number(owner, "norm_power", norm_power, 0.0, low_inclusive=False)

  if steps is None:
    logged = np.arange(norms.size, dtype=np.float64)
  else:
    logged = np.asarray(steps)
    if logged.shape != norms.shape:
      raise ValueError(
          f"{owner}: `steps` must give one step per norm, got shape {logged.shape} for "
          f"{norms.size} norms.")
    if not np.all(np.isfinite(logged.astype(np.float64))) or np.any(logged != np.round(logged)) \
        or np.any(logged < 0):
      raise ValueError(f"{owner}: `steps` must be non-negative integers.")
    logged = logged.astype(np.float64)
    if np.any(np.diff(logged) <= 0):
      i = int(np.flatnonzero(np.diff(logged) <= 0)[0])
      raise ValueError(
          f"{owner}: `steps` must be strictly increasing; step {logged[i + 1]:.0f} follows "
          f"{logged[i]:.0f} (entry {i + 1}).")
  length = int(logged[-1]) + 1  # The logged run's steps 0 .. last.
  if total_steps is None:
    if length < 2:
      raise ValueError(f"{owner}: need gradient norms over at least 2 steps, got {length}.")
    total_steps = length
  total_steps = _check_int(owner, "total_steps", total_steps, 2)
  # Per-step norms, linearly interpolated between logged steps (held at the
  # ends), the run's [0, length - 1] stretched onto [0, total_steps - 1].
  positions = np.linspace(0.0, length - 1.0, total_steps)
  per_step = np.interp(positions, logged, norms)
  width = 2 * (int(smoothing_window * total_steps) // 2) + 1
  smoothed = median_filter(per_step, width)
  inverse = (smoothed / smoothed.min())**-norm_power  # Scaled to max 1 (w's scale cancels): no underflow.
  # w_t = g_t^-p sum_{s > t} g_s^-p, with an empty sum (0) at the last step.
  tail = np.concatenate([np.cumsum(inverse[::-1])[::-1][1:], [0.0]])
  weights = inverse * tail
  return weights / np.max(weights)


def refined_schedule(
    grad_norms: Any,
    peak_value: float,
    smoothing_window: float = 0.1,
    norm_power: float = 2.0,
    warmup_steps: int = 0,
    *,
    steps: Any = None,
    total_steps: int | None = None,
) -> optax.Schedule:
  r"""A schedule refined from the gradient norms of a previous run.

  Algorithm 1 of the paper: median-filter the logged norms ||g_t|| (window
  tau T, `smoothing_window` = tau), then

      w_t = ||g_t||^-p  sum_{s=t+1}^{T-1} ||g_s||^-p,     t = 0 .. T - 1
      lr(t) = peak min(1, t / W) w_t / max_s w_s,         lr(t >= T) = 0

  p = `norm_power` = 2 for SGD-type methods with Euclidean norms (the
  paper's theorem for SGD); for Adam-type (coordinate-wise) methods the
  paper weights by the l1 norms of the gradients with p = 1 (the authors'
  code refines its l1-norm sequences with weights ||g_t||_1^-1): log
  ||g_t||_1 and pass `norm_power=1`. Constant norms give w_t prop. to
  T - 1 - t, the linear decay to zero that is worst-case optimal; rising
  norms late in training give a faster final decay, small early norms an
  automatic warmup. w_{T-1} = 0, so the schedule ends at 0. The optional
  `warmup_steps` multiplies by a linear ramp (steplab's addition, for runs
  whose first norms were logged under a warmup).

  Inputs: one norm per step (`steps=None`), or norms logged every k steps
  with `steps` their (0-based, strictly increasing) step indices; the norms
  are linearly interpolated to every step 0 .. steps[-1] (held constant
  before the first logged step). `total_steps` stretches the logged run onto
  a run of another length (the reference code resamples the same way).
  Defaults: tau = 0.1 and the filter's padding are the authors' code
  (facebookresearch/adaptive_scheduling: `find_closed_form_schedule` and the
  README's median filter).

  References:
    Defazio, Cutkosky, Mehta, Mishchenko, "When, Why and How Much? Adaptive
    Learning Rate Scheduling by Refinement" (v2: "Optimal Linear Decay
    Learning Rate Schedules and Further Refinements"), 2023,
    https://arxiv.org/abs/2310.07831.

  Args:
    grad_norms: 1-D array-like of positive, finite gradient norms.
    peak_value: the schedule's maximum (>= 0).
    smoothing_window: tau, the median filter's width as a fraction of the
      steps, in [0, 1] (0: no filtering).
    norm_power: p (> 0): 2 for SGD with l2 norms, 1 for Adam with l1 norms.
    warmup_steps: W, an extra linear warmup multiplier (0: none).
    steps: the step index of each norm (default 0, 1, 2, ...).
    total_steps: the schedule's length T (default: the logged run's,
      steps[-1] + 1 or len(grad_norms)); at least 2.

  Returns:
    An `optax.Schedule`.
  """
  owner = "refined_schedule"
  peak_value = _check_number(owner, "peak_value", peak_value, 0.0)
  warmup_steps = _check_int(owner, "warmup_steps", warmup_steps, 0)
  values = _refined_values(owner, grad_norms, smoothing_window, norm_power, steps, total_steps)
  length = values.size
  if warmup_steps >= length:
    raise ValueError(
        f"{owner}: `warmup_steps` must be less than the schedule's {length} steps, got {warmup_steps}.")
  table = jnp.asarray(peak_value * values, jnp.float32)

  def schedule(step):
    t = jnp.asarray(step)
    value = table[jnp.clip(t, 0, length - 1).astype(jnp.int32)]
    if warmup_steps:
      value = value * jnp.minimum(1.0, _steps_f32(t) / warmup_steps)
    return jnp.where(t >= length, table[-1], value)

  return _float32(schedule)
