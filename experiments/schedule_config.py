"""The runner's schedules by name: search-space keys to `optimizers.schedules`.

A search-space point's `schedule` key names a schedule of `SCHEDULE_NAMES`
and its `schedule_<option>` keys give that schedule's options
(`experiments.submission.build_optimizer` strips the prefix);
`schedule_from_config` builds it. The refined schedule reads the gradient
norms a previous trial logged (`grad_norms.csv`, `read_grad_norms`).

This is runner policy (names, defaults, file formats), so it lives here;
`optimizers.schedules` holds the schedules themselves.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from typing import Any, Callable, Mapping

import jax.numpy as jnp
import numpy as np
import optax

from optimizers import schedules


def _number(owner: str, name: str, value: Any, low: float, high: float = math.inf, *,
            low_inclusive: bool = True) -> float:
  """A finite real number in the interval; search-space values are plain numbers."""
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
    raise ValueError(f"{owner}: `{name}` must be a finite number, got {value!r}.")
  if not (low <= value if low_inclusive else low < value) or value > high:
    raise ValueError(f"{owner}: `{name}` must be in {'[' if low_inclusive else '('}{low}, {high}], "
                     f"got {value!r}.")
  return float(value)


def _count(owner: str, name: str, value: Any, low: int) -> int:
  """An integer (not a bool, not a float) of at least `low`."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise ValueError(f"{owner}: `{name}` must be an integer >= {low}, got {value!r}.")
  return int(value)


# --- Gradient norms logged by a previous run -----------------------------------------


def read_grad_norms(path: str) -> tuple[np.ndarray, np.ndarray | None]:
  """(grad_norms, steps or None) from a `.npy` file or a `step,grad_norm` CSV.

  A `.npy` holds a 1-D array of norms (one per step) or an (N, 2) array of
  (step, grad_norm) rows. A CSV needs a header with a `grad_norm` column and
  usually a `step` column (the runner's `grad_norms.csv`); other columns are
  ignored, and without `step` the rows are steps 0, 1, 2, ...
  """
  owner = "refined_schedule_from_file"
  if not os.path.exists(path):
    raise ValueError(f"{owner}: no such file: {path!r}.")
  if path.endswith(".npy"):
    data = np.load(path, allow_pickle=False)
    if data.ndim == 1:
      return data, None
    if data.ndim == 2 and data.shape[1] == 2:
      return data[:, 1], data[:, 0]
    raise ValueError(
        f"{owner}: {path!r} must hold a 1-D array of norms or (step, grad_norm) rows, got shape "
        f"{data.shape}.")
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    columns = [c.strip() for c in reader.fieldnames or ()]
    if "grad_norm" not in columns:
      raise ValueError(
          f"{owner}: {path!r} needs a header with a `grad_norm` column (and `step`), got {columns}.")
    reader.fieldnames = columns
    norms, steps = [], []
    for row in reader:
      if not any(isinstance(v, str) and v.strip() for v in row.values()):
        continue  # Blank line.
      try:
        norms.append(float(row["grad_norm"]))
        if "step" in columns:
          steps.append(float(row["step"]))
      except (TypeError, ValueError) as e:
        raise ValueError(f"{owner}: {path!r} line {reader.line_num}: cannot read {row!r} ({e}).") from e
  return np.asarray(norms, np.float64), (np.asarray(steps, np.float64) if "step" in columns else None)


def refined_schedule_from_file(
    path: str,
    peak_value: float,
    smoothing_window: float = 0.1,
    norm_power: float = 2.0,
    warmup_steps: int = 0,
    *,
    total_steps: int | None = None,
) -> optax.Schedule:
  """`optimizers.refined_schedule` from norms a previous run stored (see `read_grad_norms`).

  Reads a `.npy` (norms, or (step, grad_norm) rows) or a CSV with header
  `step,grad_norm` (the runner's `grad_norms.csv` in each trial directory),
  then refines as `refined_schedule` with the file's steps.

  Args:
    path: the `.npy` or `.csv` file.
    peak_value, smoothing_window, norm_power, warmup_steps, total_steps: as
      `optimizers.refined_schedule`.

  Returns:
    An `optax.Schedule`.

  Raises:
    ValueError: an unreadable file, or norms `refined_schedule` rejects (the
      message names the file).
  """
  norms, steps = read_grad_norms(path)
  try:
    return schedules.refined_schedule(norms, peak_value, smoothing_window, norm_power, warmup_steps,
                                      steps=steps, total_steps=total_steps)
  except ValueError as e:
    raise ValueError(f"refined_schedule_from_file({path!r}): {e}") from None


# --- The name table ------------------------------------------------------------------


def _constant(lr, total, warmup):
  del total
  if warmup:
    return optax.warmup_constant_schedule(0.0, lr, warmup)
  return optax.constant_schedule(lr)


def _cosine(lr, total, warmup, init_value=0.0, end_value=0.0):
  owner = "schedule_from_config('cosine')"
  if warmup >= total:
    raise ValueError(
        f"{owner}: `warmup_steps` must be less than `total_steps` (the decay needs at least one step), "
        f"got warmup_steps={warmup}, total_steps={total}.")
  return optax.warmup_cosine_decay_schedule(
      _number(owner, "init_value", init_value, 0.0), lr, warmup_steps=warmup,
      decay_steps=total, end_value=_number(owner, "end_value", end_value, 0.0))


def _wsd(lr, total, warmup, **options):
  return schedules.warmup_stable_decay_schedule(lr, total, warmup, **options)


def _d2z(lr, total, warmup, **options):
  return schedules.linear_decay_to_zero_schedule(lr, total, warmup, **options)


def _rex(lr, total, warmup, **options):
  return schedules.rex_schedule(lr, total, warmup, **options)


def _power(lr, total, warmup, batch_size=None, tokens_per_step=None, decay_steps=None,
           decay_fraction=None, **options):
  owner = "schedule_from_config('power')"
  missing = [k for k, v in (("batch_size", batch_size), ("tokens_per_step", tokens_per_step)) if v is None]
  if missing:
    raise ValueError(
        f"{owner}: needs options {missing} (search-space keys schedule_<option>; the runner fills "
        f"them from the workload).")
  if decay_steps is not None and decay_fraction is not None:
    raise ValueError(f"{owner}: give `decay_steps` or `decay_fraction`, not both.")
  if decay_fraction is not None:
    decay_steps = int(round(_number(owner, "decay_fraction", decay_fraction, 0.0, 1.0) * total))
  return schedules.power_schedule(batch_size, tokens_per_step, total, warmup, decay_steps or 0,
                                  max_value=lr, **options)


def _cyclic(lr, total, warmup, base_value=None, base_fraction=None, step_size=None,
            num_cycles=None, **options):
  del warmup  # The cycle starts at its base: its own warmup.
  owner = "schedule_from_config('cyclic')"
  if base_value is not None and base_fraction is not None:
    raise ValueError(f"{owner}: give `base_value` or `base_fraction`, not both.")
  if step_size is not None and num_cycles is not None:
    raise ValueError(f"{owner}: give `step_size` or `num_cycles`, not both.")
  if base_value is None:
    base_value = lr * _number(owner, "base_fraction", 0.25 if base_fraction is None else base_fraction,
                              0.0, 1.0)
  if step_size is None:
    cycles = _number(owner, "num_cycles", 4 if num_cycles is None else num_cycles, 0.0,
                     low_inclusive=False)
    step_size = total / (2.0 * cycles)
  return schedules.cyclic_schedule(base_value, lr, step_size, **options)


def _one_cycle(lr, total, warmup, **options):
  del warmup  # `pct_start` sets 1cycle's warmup.
  return schedules.one_cycle_schedule(lr, total, **options)


def _refined(lr, total, warmup, grad_norms_path=None, **options):
  if grad_norms_path is None:
    raise ValueError(
        "schedule_from_config('refined'): needs option `grad_norms_path` (search-space key "
        "schedule_grad_norms_path): a previous run's grad_norms.csv or .npy.")
  return refined_schedule_from_file(grad_norms_path, lr, warmup_steps=warmup, total_steps=total,
                                    **options)


# name -> (builder(learning_rate, total_steps, warmup_steps, **options), options).
_CONFIG: Mapping[str, tuple[Callable[..., optax.Schedule], tuple[str, ...]]] = {
    "constant": (_constant, ()),
    "cosine": (_cosine, ("init_value", "end_value")),
    "wsd": (_wsd, ("decay_fraction", "decay_shape", "init_value", "end_value")),
    "d2z": (_d2z, ("init_value",)),
    "rex": (_rex, ("init_value", "beta")),
    "power": (_power, ("batch_size", "tokens_per_step", "decay_steps", "decay_fraction", "a", "b",
                       "decay_shape")),
    "cyclic": (_cyclic, ("base_value", "base_fraction", "step_size", "num_cycles", "mode", "gamma")),
    "one_cycle": (_one_cycle, ("pct_start", "anneal_strategy", "div_factor", "final_div_factor",
                               "three_phase")),
    "refined": (_refined, ("grad_norms_path", "smoothing_window", "norm_power")),
}

SCHEDULE_NAMES: tuple[str, ...] = tuple(_CONFIG)


def schedule_from_config(
    name: str,
    *,
    learning_rate: float,
    total_steps: int,
    warmup_steps: int = 0,
    **options: Any,
) -> optax.Schedule:
  """A schedule by name, for the experiment runner's search spaces.

  `learning_rate` is the schedule's peak (max) value; a search-space point's
  `schedule` key picks the name and `schedule_<option>` keys give `options`.

  Names, what they build, and their options (defaults):

    "constant"   linear warmup from 0, then `learning_rate`; no options.
    "cosine"     `optax.warmup_cosine_decay_schedule` to 0 at `total_steps`;
                 init_value (0), end_value (0).
    "wsd"        `warmup_stable_decay_schedule`; decay_fraction (0.2),
                 decay_shape ("linear"), init_value (0), end_value (0).
    "d2z"        `linear_decay_to_zero_schedule`; init_value (0).
    "rex"        `rex_schedule`; init_value (0), beta (0.5).
    "power"      `power_schedule` with max_value = learning_rate; batch_size
                 and tokens_per_step (required), decay_steps or
                 decay_fraction (0), a, b, decay_shape.
    "cyclic"     `cyclic_schedule` with max_value = learning_rate; base_value
                 or base_fraction (0.25, Smith's 1/4 of the max), step_size or
                 num_cycles (4: step_size = total_steps / 8), mode, gamma.
    "one_cycle"  `one_cycle_schedule` with max_value = learning_rate;
                 pct_start (0.3), anneal_strategy, div_factor,
                 final_div_factor, three_phase.
    "refined"    `refined_schedule_from_file`, stretched to `total_steps`;
                 grad_norms_path (required), smoothing_window (0.1),
                 norm_power (2).

  The schedules are `optimizers.schedules`'. `warmup_steps` is each
  schedule's linear warmup; "cyclic" and "one_cycle" ignore it (their cycle
  rises from its base on its own: `step_size`, `pct_start`). Defaults not in
  the table are the functions' own.

  Args:
    name: one of `SCHEDULE_NAMES`.
    learning_rate: the peak learning rate (>= 0).
    total_steps: the schedule's length (>= 1).
    warmup_steps: linear warmup steps (>= 0).
    **options: the named schedule's options (table above).

  Returns:
    An `optax.Schedule` with float32 values.

  Raises:
    ValueError: an unknown name (listing `SCHEDULE_NAMES`), an unknown option
      (listing the schedule's options) or an invalid value.
  """
  owner = "schedule_from_config"
  if name not in _CONFIG:
    raise ValueError(f"{owner}: unknown schedule {name!r}; valid names: {list(SCHEDULE_NAMES)}.")
  builder, valid = _CONFIG[name]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ValueError(
        f"{owner}: schedule {name!r} has no option(s) {unknown}; valid options: {list(valid) or 'none'}.")
  learning_rate = _number(owner, "learning_rate", learning_rate, 0.0)
  total_steps = _count(owner, "total_steps", total_steps, 1)
  warmup_steps = _count(owner, "warmup_steps", warmup_steps, 0)
  schedule = builder(learning_rate, total_steps, warmup_steps, **options)
  # optax's own schedules ("constant", "cosine") may return Python or float64 values.
  return lambda step: jnp.asarray(schedule(step), jnp.float32)
