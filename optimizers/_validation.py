"""Validation of hyperparameters and trees, with errors that name the culprit.

Hyperparameters may be traced (inside `optax.inject_hyperparams`) or be
schedules, so only concrete Python/NumPy numbers are checked here; everything
else is left to the caller's responsibility and never branched on.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _maybe_traced_number(value: Any) -> bool:
  """Whether a value that is not a concrete real scalar may still be valid.

  Tracers (inject_hyperparams, jit) pass (they are the caller's
  responsibility, never branched on); None, strings, lists, complex numbers,
  arrays of more than one element and other objects do not: they would reach
  a JAX TypeError at the first update, broadcast a scalar hyperparameter over
  the parameters, or (a string learning rate) be silently misused.
  """
  return isinstance(value, jax.core.Tracer)


def concrete_value(value: Any) -> float | None:
  """The float value of a concrete scalar, or None for tracers/schedules."""
  if isinstance(value, bool):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic, jax.Array)) and not (
      jnp.issubdtype(value.dtype, jnp.floating) or jnp.issubdtype(value.dtype, jnp.integer)
      or jnp.issubdtype(value.dtype, jnp.bool_)):
    return None  # Complex or non-numeric arrays: rejected by the caller.
  if isinstance(value, numbers.Real):
    return float(value)
  if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) == 0:
    return float(value)
  if isinstance(value, jax.Array) and not isinstance(value, jax.core.Tracer):
    if value.ndim == 0:
      return float(value)
  return None


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float = -math.inf,
    high: float = math.inf,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
  """Raises ValueError if a concrete `value` is outside the given interval."""
  x = concrete_value(value)
  if x is None:
    if not _maybe_traced_number(value):
      raise ValueError(
          f"{owner}: `{name}` must be a real scalar, got {value!r} ({type(value).__name__})."
      )
    return
  ok_low = x >= low if low_inclusive else x > low
  ok_high = x <= high if high_inclusive else x < high
  if math.isnan(x) or not (ok_low and ok_high):
    lo = "[" if low_inclusive else "("
    hi = "]" if high_inclusive else ")"
    raise ValueError(
        f"{owner}: `{name}` must be in {lo}{low}, {high}{hi}, got {value!r}."
    )


def check_learning_rate(owner: str, learning_rate: Any) -> None:
  """A learning rate is a finite non-negative number or a schedule (callable)."""
  if callable(learning_rate):
    return
  check_range(owner, "learning_rate", learning_rate, 0.0, math.inf, high_inclusive=False)


def check_decay(owner: str, name: str, value: Any) -> None:
  """EMA decay rates (betas, momentum) live in [0, 1)."""
  check_range(owner, name, value, 0.0, 1.0, high_inclusive=False)


def check_non_negative(owner: str, name: str, value: Any) -> None:
  """A finite number >= 0 (weight decay, eps, ...); callables (schedules) pass."""
  if callable(value):
    return
  check_range(owner, name, value, 0.0, math.inf, high_inclusive=False)


def check_mu_dtype(owner: str, mu_dtype: Any) -> None:
  """`mu_dtype` is None or a floating (or complex) dtype.

  An integer or boolean first moment would truncate every update to 0 or 1.
  """
  if mu_dtype is None:
    return
  try:
    dtype = jnp.dtype(mu_dtype)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.inexact):
    raise ValueError(
        f"{owner}: `mu_dtype` must be None or a floating dtype (e.g. jnp.bfloat16, jnp.float32), got {mu_dtype!r}."
    )


def check_finite(owner: str, name: str, value: Any) -> None:
  """A finite real number (no inf, NaN, string, list); callables (schedules) pass."""
  if callable(value):
    return
  check_range(owner, name, value, low_inclusive=False, high_inclusive=False)


def check_positive(owner: str, name: str, value: Any) -> None:
  """A finite number > 0."""
  check_range(owner, name, value, 0.0, low_inclusive=False, high_inclusive=False)


def check_channel_axis(owner: str, channel_axis: Any) -> None:
  if not isinstance(channel_axis, int) or isinstance(channel_axis, bool):
    raise ValueError(
        f"{owner}: `channel_axis` must be an int, got {channel_axis!r}."
    )


def check_tree_matches(owner: str, updates: Any, state_tree: Any) -> None:
  """Raises a clear ValueError when gradients and optimizer state disagree.

  Without it, a mismatched tree surfaces deep inside `jax.tree.map` as an
  error about pytree definitions, or silently broadcasts a wrong shape.
  Runs at trace time only (structures and shapes are static).
  """
  ut = jax.tree.structure(updates)
  st = jax.tree.structure(state_tree)
  if ut != st:
    raise ValueError(
        f"{owner}: the gradient tree does not match the optimizer state "
        f"(was the state initialised with different params?).\n"
        f"  gradients: {ut}\n  state:     {st}"
    )
  paths = jax.tree_util.tree_leaves_with_path(updates)
  for (path, g), s in zip(paths, jax.tree.leaves(state_tree)):
    if np.shape(g) != np.shape(s):
      raise ValueError(
          f"{owner}: gradient at {jax.tree_util.keystr(path)} has shape "
          f"{np.shape(g)} but the optimizer state holds {np.shape(s)}."
      )


BACKENDS = ("xla", "pallas")


def check_backend(owner: str, backend: str) -> None:
  """Raises ValueError unless `backend` is one the executor runs (`_executor`)."""
  if backend not in BACKENDS:
    raise ValueError(f"{owner}: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
