"""Numerical helpers shared by every optimizer in steplab.

Each helper exists because the obvious one-liner loses precision or breaks a
convention that the invariant suite checks; the comment on each says which.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax


def scalar_dtype() -> jnp.dtype:
  """The dtype for per-step scalars (t, bias corrections, rectification terms).

  The reference implementations compute these scalars in Python double
  precision. We follow them in float64 when x64 is enabled and fall back to
  float32 otherwise (TPUs have no native float64; the scalars are cheap either
  way). Scalars are cast to each leaf's dtype before they touch an array, so
  float32 parameters stay float32 even when x64 is on.
  """
  return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def state_dtype(param_dtype: Any) -> jnp.dtype:
  """Moments accumulate in at least float32.

  Averaging squared bfloat16 gradients in bfloat16 (8 bits of mantissa) loses
  most of the signal once `1 - b2` is below 2^-8, so low-precision parameters
  get float32 moments (mixed precision); float32 and float64 keep their own.
  """
  return jnp.promote_types(param_dtype, jnp.float32)


def step_count(count: jax.Array) -> jax.Array:
  """The step index t (from 1 after the first update) as a float scalar."""
  return jnp.asarray(count, scalar_dtype())


def power(decay: Any, t: jax.Array) -> jax.Array:
  """decay ** t for a float step index t, in the scalar dtype."""
  return jnp.asarray(decay, scalar_dtype()) ** t


def bias_correction(decay: Any, t: jax.Array) -> jax.Array:
  """1 - decay ** t, accurate also when decay is close to one.

  `1 - 0.999 ** t` in float32 cancels catastrophically for small t (0.999 ** t
  carries an absolute error of ~6e-8 while the result is ~1e-3 t), a relative
  error of up to 1e-4 in the bias correction. -expm1(t * log(decay)) keeps
  full relative precision for every t (log is exact to an ulp of its result
  for a representable decay; decay = 0 gives log = -inf and 1 - 0^t = 1).
  """
  decay = jnp.asarray(decay, scalar_dtype())
  return -jnp.expm1(t * jnp.log(decay))


def zeros_like_state(params: Any, dtype: Any = None) -> Any:
  """Zero moments for `params`, in `dtype` or the leaf's state dtype."""
  return jax.tree.map(
      lambda p: jnp.zeros(jnp.shape(p), dtype or state_dtype(p.dtype)), params
  )


def safe_increment(count: jax.Array) -> jax.Array:
  """int32 counter + 1 that saturates instead of wrapping (Optax's)."""
  return optax.safe_increment(count)


def cast_like(value: jax.Array, like: jax.Array) -> jax.Array:
  """Casts a scalar or array to the dtype of `like`."""
  return jnp.asarray(value).astype(like.dtype)


def tree_map_unzip(
    fn: Any, num_outputs: int, tree: Any, *rest: Any
) -> tuple[Any, ...]:
  """Maps `fn` (returning a `num_outputs`-tuple) over leaves; returns trees.

  Lets an update compute the new update and every new moment of a leaf in one
  function, so XLA sees one fused elementwise expression per leaf.
  """
  treedef = jax.tree.structure(tree)
  outs = treedef.flatten_up_to(jax.tree.map(fn, tree, *rest))
  columns = list(zip(*outs)) if outs else [()] * num_outputs
  return tuple(treedef.unflatten(list(column)) for column in columns)
