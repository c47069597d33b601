"""Fused sum reductions over trees: global norms and dot products in one pass.

`leaf_sums(rule, scalars, trees)` returns, per leaf, the sums over elements of
each output of an elementwise `rule(scalars, *leaves) -> outputs` (e.g. `x * x` for a
squared norm, `g * (x - x0)` for a dot product, several at once), without
materialising the rule's outputs: each large leaf is read once by a kernel
that writes per-block partial sums, and XLA adds the few partials. Leaves
that are not a whole number of 16 x 128 tiles are small by construction of
the models this serves and are reduced by XLA directly (no packing copy).

Accumulation is float32 (the partials of one block are summed in float32
lanes, then the blocks). Backends as `elementwise`: TPU (Mosaic; each block's
(512, 128) rule outputs folded to one (8, 128) tile), GPU (Triton; a (1, 128)
row per block), CPU (interpret mode).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

from pallas_kernels import elementwise

LANES = elementwise.LANES


def _partials(rule, num_scalars, num_outputs, vector, *arrays, platform):
  rows = arrays[0].shape[0]
  block = elementwise._block_rows(rows, platform)  # pylint: disable=protected-access
  grid = rows // block
  fold = 8 if platform == "tpu" else 1  # TPU output tiles are (8, 128).
  tile = pl.BlockSpec((block, LANES), lambda i: (i, 0))
  out_tile = pl.BlockSpec((fold, LANES), lambda i: (i, 0))
  if platform == "tpu":
    scalar_spec = pl.BlockSpec(memory_space=pltpu.SMEM)
    params = pltpu.CompilerParams(dimension_semantics=("parallel",))
  else:
    scalar_spec = pl.BlockSpec((vector.shape[0],), lambda i: (0,))
    params = pltriton.CompilerParams(num_warps=4) if platform == "cuda" else None
  num_in = len(arrays)

  def kernel(s_ref, *refs):
    scalars = tuple(s_ref[i] for i in range(num_scalars))
    values = rule(scalars, *(r[...].astype(jnp.float32) for r in refs[:num_in]))
    for ref, value in zip(refs[num_in:], values):
      if fold == 1:
        ref[...] = jnp.sum(value, axis=0, keepdims=True)
      else:
        ref[...] = jnp.sum(value.reshape(block // fold, fold, LANES), axis=0)

  outs = pl.pallas_call(
      kernel,
      out_shape=tuple(jax.ShapeDtypeStruct((grid * fold, LANES), jnp.float32) for _ in range(num_outputs)),
      grid=(grid,),
      in_specs=[scalar_spec] + [tile] * num_in,
      out_specs=tuple(out_tile for _ in range(num_outputs)),
      compiler_params=params,
      interpret=platform == "cpu",
      name="steplab_reduction",
  )(vector, *arrays)
  return tuple(jnp.sum(o) for o in outs)


def fused_sums(rule: Callable[..., Sequence[jax.Array]], scalars: Sequence[Any],
               arrays: Sequence[jax.Array], num_outputs: int) -> tuple[jax.Array, ...]:
  """Sums of the rule's outputs over (rows, 128) operands, one kernel."""
  shape = arrays[0].shape
  if len(shape) != 2 or shape[1] != LANES or shape[0] % elementwise.SUBLANES:
    raise ValueError(f"fused_sums: operands must be (rows, {LANES}) with rows % 16 == 0, got {shape}")
  scalars = tuple(scalars)
  call = functools.partial(_partials, rule, len(scalars), num_outputs)
  return tuple(jax.lax.platform_dependent(
      elementwise.scalar_vector(scalars), *arrays,
      tpu=functools.partial(call, platform="tpu"),
      cuda=functools.partial(call, platform="cuda"),
      default=functools.partial(call, platform="cpu"),
  ))


def leaf_sums(rule: Callable[..., Sequence[jax.Array]], scalars: Sequence[Any], trees: Sequence[Any],
              num_outputs: int = 1) -> list[tuple[jax.Array, ...]]:
  """Per leaf, the float32 sums over elements of each of the rule's outputs."""
  treedef = jax.tree.structure(trees[0])
  columns = [treedef.flatten_up_to(t) for t in trees]
  out = []
  for leaves in zip(*columns):
    if elementwise.is_direct(leaves[0]):
      flat = [x.reshape(x.size // LANES, LANES) for x in leaves]
      out.append(fused_sums(rule, scalars, flat, num_outputs))
    else:
      values = rule(tuple(jnp.asarray(x, jnp.float32) for x in scalars), *(x.astype(jnp.float32) for x in leaves))
      out.append(tuple(jnp.sum(v) for v in values))
  return out


def tree_sums(rule: Callable[..., Sequence[jax.Array]], scalars: Sequence[Any], trees: Sequence[Any],
              num_outputs: int = 1) -> tuple[jax.Array, ...]:
  """The sums over the whole tree (e.g. a global squared norm)."""
  per_leaf = leaf_sums(rule, scalars, trees, num_outputs)
  return tuple(sum((s[k] for s in per_leaf), jnp.zeros([], jnp.float32)) for k in range(num_outputs))
