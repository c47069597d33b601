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

from pallas_kernels import elementwise

LANES = elementwise.LANES


def _axis_partials(rule, num_scalars, num_outputs, blocks, axis, vector, *arrays, platform):
  """Per-column (axis 0) or per-row (axis 1) sums of the rule's outputs over (R, C) operands.

  Each (bm, bc) block writes its partial sums and XLA adds the few partials:
  column sums as an (8, bc) tile on TPU (output tiles are (8, 128)
  multiples; one row elsewhere), row sums as a (bm, 1) column of a
  (C / bc, R, 1) output (its last dimension is whole, as TPU requires).
  """
  rows, cols = arrays[0].shape
  bm, bc = blocks
  fold = 8 if platform == "tpu" else 1
  scalar_spec, params = elementwise.platform_specs(platform, vector)
  num_in = len(arrays)
  if axis == 0:
    out_shape, out_spec = (rows // bm * fold, cols), pl.BlockSpec((fold, bc), lambda i, j: (i, j))
  else:
    out_shape, out_spec = (cols // bc, rows, 1), pl.BlockSpec((None, bm, 1), lambda i, j: (j, i, 0))

  def kernel(s_ref, *refs):
    scalars = tuple(s_ref[i] for i in range(num_scalars))
    with elementwise.kernel_body():
      values = rule(scalars, *(r[...].astype(jnp.float32) for r in refs[:num_in]))
    for ref, value in zip(refs[num_in:], values):
      if axis == 0:
        ref[...] = jnp.sum(value.reshape(bm // fold, fold, bc), axis=0)
      else:
        ref[...] = jnp.sum(value, axis=1, keepdims=True)

  outs = pl.pallas_call(
      kernel,
      out_shape=tuple(jax.ShapeDtypeStruct(out_shape, jnp.float32) for _ in range(num_outputs)),
      grid=(rows // bm, cols // bc),
      in_specs=[scalar_spec] + [pl.BlockSpec((bm, bc), lambda i, j: (i, j))] * num_in,
      out_specs=tuple(out_spec for _ in range(num_outputs)),
      compiler_params=params,
      interpret=platform == "cpu",
      name="steplab_reduction",
  )(vector, *arrays)
  return tuple(jnp.sum(o, axis=0).reshape(-1) for o in outs)


def fused_sums(rule: Callable[..., Sequence[jax.Array]], scalars: Sequence[Any],
               arrays: Sequence[jax.Array], num_outputs: int) -> tuple[jax.Array, ...]:
  """Sums of the rule's outputs over (rows, 128) operands, one kernel."""
  shape = arrays[0].shape
  if len(shape) != 2 or shape[1] != LANES or shape[0] % elementwise.SUBLANES:
    raise ValueError(f"fused_sums: operands must be (rows, {LANES}) with rows % 16 == 0, got {shape}")
  scalars = tuple(scalars)

  def branch(platform):
    blocks = (elementwise.block_rows(shape[0], platform), LANES)
    partials = functools.partial(_axis_partials, rule, len(scalars), num_outputs, blocks, 0, platform=platform)
    return lambda *xs: tuple(jnp.sum(c) for c in partials(*xs))

  return tuple(jax.lax.platform_dependent(
      elementwise.scalar_vector(scalars), *arrays, tpu=branch("tpu"), cuda=branch("cuda"), default=branch("cpu")))


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



def axis_sums(rule: Callable[..., Sequence[jax.Array]], scalars: Sequence[Any],
              arrays: Sequence[jax.Array], num_outputs: int, axis: int) -> tuple[jax.Array, ...]:
  """Float32 sums of the rule's outputs over `axis` of 2-D (R, C) operands.

  axis=0: one sum per column (AdamP's per-output-channel cosines of a Flax
  kernel viewed as (in..., out); Adam-mini's per-neuron and per-head means);
  axis=1: one per row (Adam-mini's per-token embedding means). One read of
  the operands. Where (R, C) has no legal tiling on a platform (Triton needs
  powers of two; TPU column partials fold rows into (8, bc) tiles) XLA
  computes the sums instead.
  """
  rows, cols = arrays[0].shape
  if any(a.shape != (rows, cols) for a in arrays):
    raise ValueError(f"axis_sums: operands must share one 2-D shape, got {[a.shape for a in arrays]}")
  if axis not in (0, 1):
    raise ValueError(f"axis_sums: axis must be 0 (per column) or 1 (per row), got {axis!r}")
  scalars = tuple(scalars)

  def branch(platform):
    blocks = elementwise.blocks_2d(rows, cols, platform)
    if None in blocks or (platform == "tpu" and axis == 0 and blocks[0] % 8):
      return lambda vector, *xs: tuple(
          jnp.sum(v, axis=axis) for v in rule(tuple(vector[k] for k in range(len(scalars))),
                                              *(x.astype(jnp.float32) for x in xs)))
    return functools.partial(_axis_partials, rule, len(scalars), num_outputs, blocks, axis, platform=platform)

  return tuple(jax.lax.platform_dependent(
      elementwise.scalar_vector(scalars), *arrays, tpu=branch("tpu"), cuda=branch("cuda"), default=branch("cpu")))
