"""Fused elementwise updates: one Pallas kernel per optimizer rule, any number of operands.

An optimizer's per-element update is a pure function

    rule(scalars, *arrays) -> tuple of arrays

of per-step scalars (learning rate, bias corrections, bounds, ...) and the
leaves it reads (gradient, moments, ...). `tree_map(rule, scalars, trees)`
runs it over trees in one pass over memory per kernel: the scalars travel as
one float32 vector (SMEM on TPU), so they are inputs, never compile-time
constants, and a schedule or a traced hyperparameter does not recompile; the
state operands are aliased to their outputs, so under donation the update is
in place. The same `rule` is what the optimizer's XLA path maps over leaves,
so the two backends share one implementation of the math.

Dispatch: a leaf whose size is a multiple of TILE = 16 x 128 is viewed as
(rows, 128) (a free reshape) and gets its own kernel; all other leaves are
packed into one padded float32 buffer per operand and share one kernel, so a
tree with hundreds of small tensors launches one kernel per large tensor plus
one. Packing copies only the small leaves' bytes.

Backends (`jax.lax.platform_dependent`, so one jitted function serves all):
  * TPU: Mosaic, (512, 128) blocks in VMEM (256 KiB per float32 operand per
    buffer: seven double-buffered operands stay under 4 MiB on every
    generation), scalars in SMEM, a `parallel` grid.
  * GPU: Triton, (64, 128) blocks (8K elements per program), the scalar vector
    as one small block. Mosaic GPU is not used: its copies must move
    multiples of a warpgroup's 128 x 4 bytes and the scalar operand is smaller.
  * CPU: the same kernel in Pallas interpret mode (tests); XLA:CPU cannot run
    Pallas kernels.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

LANES = 128
SUBLANES = 16  # bfloat16 packs 16 rows per (8, 128) float32 tile on TPU.
TILE = SUBLANES * LANES
BLOCK_ROWS = {"tpu": 512, "cuda": 64, "cpu": 512}
MIN_SCALARS = 16  # Triton blocks are powers of two.

Rule = Callable[..., Sequence[jax.Array]]

_IN_KERNEL = contextvars.ContextVar("steplab_in_kernel", default=False)


@contextlib.contextmanager
def kernel_body():
  """Marks the tracing of a kernel body (the rule's call inside a Pallas kernel)."""
  token = _IN_KERNEL.set(True)
  try:
    yield
  finally:
    _IN_KERNEL.reset(token)


def unshared(x: Any) -> Any:
  """`x` (an array or a tree), as a value XLA will not share with `x`'s other uses: for recomputing a term.

  XLA:CPU does not repeat an expensive elementwise producer (a division, a
  square root) in each of its consumers: it writes it out as a full-size
  temporary and reads it back, one more pass over memory. A rule that uses
  such a term twice computes it a second time from `unshared(input)`: under
  XLA an optimization barrier (so CSE does not merge the two), inside a
  Pallas kernel, whose body is one fused loop anyway and where barriers do
  not lower, `x` itself.
  """
  return x if _IN_KERNEL.get() else jax.lax.optimization_barrier(x)


def scalar_vector(scalars: Sequence[Any]) -> jax.Array:
  """The scalars as one float32 vector, padded to a power of two >= 16."""
  values = [jnp.asarray(x, jnp.float32) for x in scalars]
  size = MIN_SCALARS
  while size < len(values):
    size *= 2
  return jnp.stack(values + [jnp.zeros([], jnp.float32)] * (size - len(values)))


def block_rows(rows: int, platform: str) -> int:
  block = BLOCK_ROWS[platform]
  while rows % block:
    block //= 2
  return block


def platform_specs(platform: str, vector: jax.Array):
  """(scalar-vector BlockSpec, compiler params) of a 2-D `parallel` grid.

  TPU: the scalars in SMEM, both grid axes parallel (megacore). Triton: the
  vector as one small block; 4 warps per (64, 128) block. CPU: interpret.
  """
  if platform == "tpu":
    return (pl.BlockSpec(memory_space=pltpu.SMEM),
            pltpu.CompilerParams(dimension_semantics=("parallel", "parallel")))
  params = pltriton.CompilerParams(num_warps=4) if platform == "cuda" else None
  return pl.BlockSpec((vector.shape[0],), lambda i, j: (0,)), params


def _kernel_call(rule, num_scalars, out_dtypes, aliases, blocks, factor, vector, *arrays, platform):
  """The pallas_call of `rule` over (R, C) operands in (bm, bc) blocks.

  factor: None, "row" or "column": the last operand is then an (R, 1) or
  (1, C) factor, read once per block (see `fused_map_broadcast`).
  """
  rows, cols = arrays[0].shape
  bm, bc = blocks
  tile = pl.BlockSpec((bm, bc), lambda i, j: (i, j))
  specs = [tile] * (len(arrays) - (factor is not None))
  if factor == "row":
    specs.append(pl.BlockSpec((bm, 1), lambda i, j: (i, 0)))
  elif factor == "column":
    specs.append(pl.BlockSpec((1, bc), lambda i, j: (0, j)))
  scalar_spec, params = platform_specs(platform, vector)
  num_in = len(arrays)

  def kernel(s_ref, *refs):
    scalars = tuple(s_ref[i] for i in range(num_scalars))
    with kernel_body():
      outputs = rule(scalars, *(r[...] for r in refs[:num_in]))
    for ref, value in zip(refs[num_in:], outputs):
      ref[...] = value.astype(ref.dtype)

  return pl.pallas_call(
      kernel,
      out_shape=tuple(jax.ShapeDtypeStruct((rows, cols), d) for d in out_dtypes),
      grid=(rows // bm, cols // bc),
      in_specs=[scalar_spec] + specs,
      out_specs=tuple(tile for _ in out_dtypes),
      # +1: operand 0 is the scalar vector.
      input_output_aliases={i + 1: o for i, o in aliases.items()},
      compiler_params=params,
      interpret=platform == "cpu",
      name=getattr(rule, "__name__", "steplab_elementwise"),
  )(vector, *arrays)


def _call(rule, num_scalars, out_dtypes, aliases, vector, *arrays, platform):
  blocks = (block_rows(arrays[0].shape[0], platform), LANES)
  return _kernel_call(rule, num_scalars, out_dtypes, aliases, blocks, None, vector, *arrays, platform=platform)


def fused_map(rule: Rule, scalars: Sequence[Any], arrays: Sequence[jax.Array],
              aliases: Mapping[int, int] = ()) -> tuple[jax.Array, ...]:
  """rule over 2-D (rows, 128) operands (rows a multiple of 16), one kernel.

  Args:
    rule: `(scalars, *arrays) -> outputs`, elementwise.
    scalars: per-step scalars (floats or traced), passed as float32.
    arrays: the operands, all of one (rows, 128) shape.
    aliases: input index -> output index updated in place (where the dtypes agree).

  Returns:
    The rule's outputs, with the dtypes it produces.
  """
  shape = arrays[0].shape
  if len(shape) != 2 or shape[1] != LANES or shape[0] % SUBLANES or any(a.shape != shape for a in arrays):
    raise ValueError(
        f"fused_map: operands must share one (rows, {LANES}) shape with rows % {SUBLANES} == 0,"
        f" got {[a.shape for a in arrays]}")
  scalars = tuple(scalars)
  sample = jax.eval_shape(lambda *xs: rule(tuple(jnp.zeros([], jnp.float32) for _ in scalars), *xs), *arrays)
  out_dtypes = tuple(o.dtype for o in sample)
  # In place where the dtypes agree (a packed float32 operand whose output the
  # rule casts, e.g. a bfloat16 first moment, is written to a new buffer).
  aliases = {i: o for i, o in dict(aliases).items() if arrays[i].dtype == out_dtypes[o]}
  vector = scalar_vector(scalars)
  call = functools.partial(_call, rule, len(scalars), out_dtypes, aliases)
  return tuple(jax.lax.platform_dependent(
      vector, *arrays,
      tpu=functools.partial(call, platform="tpu"),
      cuda=functools.partial(call, platform="cuda"),
      default=functools.partial(call, platform="cpu"),
  ))


def lane_view(size: int) -> tuple[int, int] | None:
  """The (rows, LANES) 2-D view the kernels tile a flat array of `size` elements in.

  None where `size` is not a multiple of LANES (no lane-dense view); for
  callers that reshape a leaf themselves (e.g. for `fused_map_broadcast`).
  """
  return (size // LANES, LANES) if size and size % LANES == 0 else None


def is_direct(x) -> bool:
  """Whether a leaf gets its own kernel (a whole number of tiles)."""
  return x.size > 0 and x.size % TILE == 0


def kernel_count(tree: Any) -> int:
  """How many kernels `tree_map` launches for leaves shaped like `tree`'s."""
  leaves = [x for x in jax.tree.leaves(tree) if x.size]
  return sum(map(is_direct, leaves)) + int(any(not is_direct(x) for x in leaves))


def tree_map(rule: Rule, scalars: Sequence[Any], trees: Sequence[Any], num_outputs: int,
             aliases: Mapping[int, int] = ()) -> tuple[Any, ...]:
  """`fused_map` over trees of one structure; returns `num_outputs` trees.

  Outputs keep each leaf's shape; their dtypes are the rule's (for packed
  leaves: computed in float32, then cast to the dtype the rule gives that leaf).
  """
  treedef = jax.tree.structure(trees[0])
  columns = [treedef.flatten_up_to(t) for t in trees]
  num_leaves = len(columns[0])
  outs = [[None] * num_leaves for _ in range(num_outputs)]
  scalars = tuple(scalars)
  small = []
  for i in range(num_leaves):
    leaves = [c[i] for c in columns]
    x = leaves[0]
    if is_direct(x):
      flat = [a.reshape(a.size // LANES, LANES) for a in leaves]
      for k, y in enumerate(fused_map(rule, scalars, flat, aliases)):
        outs[k][i] = y.reshape(x.shape)
    elif x.size:
      small.append(i)
    else:
      zeros = tuple(jnp.zeros([], jnp.float32) for _ in scalars)
      for k, y in enumerate(rule(zeros, *leaves)):
        outs[k][i] = y
  if small:
    sizes = [columns[0][i].size for i in small]
    total = sum(sizes)
    padded = -(-total // TILE) * TILE

    def pack(column):
      flat = jnp.concatenate([jnp.ravel(column[i]).astype(jnp.float32) for i in small])
      return jnp.pad(flat, (0, padded - total)).reshape(padded // LANES, LANES)

    packed = fused_map(rule, scalars, [pack(c) for c in columns], aliases)
    dtypes = [
        [o.dtype for o in jax.eval_shape(lambda *xs: rule(tuple(jnp.zeros([], jnp.float32) for _ in scalars), *xs),
                                         *[c[i] for c in columns])]
        for i in small
    ]
    start = 0
    for j, (i, n) in enumerate(zip(small, sizes)):
      for k, y in enumerate(packed):
        outs[k][i] = jnp.ravel(y)[start:start + n].reshape(columns[0][i].shape).astype(dtypes[j][k])
      start += n
  return tuple(treedef.unflatten(o) for o in outs)


def _pow2_divisor(n: int, limit: int, multiple: int) -> int | None:
  """The largest power of two <= limit dividing n and a multiple of `multiple`."""
  block = limit
  while block >= multiple:
    if n % block == 0:
      return block
    block //= 2
  return None


def blocks_2d(rows: int, cols: int, platform: str) -> tuple[int, int] | None:
  """(row block, column block) for a 2-D operand, or None if no legal tiling.

  TPU: multiples of (8, 128) or the full dimension. Triton: powers of two.
  The caps keep about 1 MiB per float32 operand block.
  """
  bm = _pow2_divisor(rows, 256, 8)
  bc = _pow2_divisor(cols, 1024, 128)
  if platform == "cpu":
    return bm or rows, bc or cols
  if platform == "tpu":
    return bm or (rows if rows <= 256 else None), bc or (cols if cols <= 1024 else None)
  return bm, bc  # Triton: powers of two only.


def fused_map_broadcast(rule: Rule, scalars: Sequence[Any], arrays: Sequence[jax.Array],
                        factor: jax.Array, aliases: Mapping[int, int] = ()) -> tuple[jax.Array, ...]:
  """rule over 2-D (R, C) operands plus a per-row (R, 1) or per-column (1, C) factor.

  For per-block statistics broadcast over their block (Adam-mini's v): the
  factor is read once per block of the grid, never expanded to full size.
  On a platform where (R, C) has no legal tiling (Triton needs powers of
  two) the branch computes the rule with XLA instead.
  """
  rows, cols = arrays[0].shape
  per_row = factor.shape == (rows, 1)
  if not per_row and factor.shape != (1, cols):
    raise ValueError(f"fused_map_broadcast: factor must be ({rows}, 1) or (1, {cols}), got {factor.shape}")
  scalars = tuple(scalars)
  operands = tuple(arrays) + (factor,)
  sample = jax.eval_shape(lambda *xs: rule(tuple(jnp.zeros([], jnp.float32) for _ in scalars), *xs), *operands)
  out_dtypes = tuple(o.dtype for o in sample)
  aliases = {i: o for i, o in dict(aliases).items() if arrays[i].dtype == out_dtypes[o]}
  vector = scalar_vector(scalars)

  def branch(platform):
    if None in blocks_2d(rows, cols, platform):
      return lambda vector, *xs: tuple(rule(tuple(vector[k] for k in range(len(scalars))), *xs))
    return functools.partial(_kernel_call, rule, len(scalars), out_dtypes, aliases,
                             blocks_2d(rows, cols, platform), "row" if per_row else "column",
                             platform=platform)

  return tuple(jax.lax.platform_dependent(
      vector, *operands, tpu=branch("tpu"), cuda=branch("cuda"), default=branch("cpu")))
