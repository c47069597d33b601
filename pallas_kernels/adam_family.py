"""One fused Pallas kernel for the Adam family's moment update and direction.

Per element, in one pass over memory (reads g, m, v; writes u, m, v, with m
and v aliased to their outputs so the update is in place under donation):

    m' = b1 m + (1 - b1) g
    v' = b2 v + (1 - b2) g^2
    u  = m' * (a / (sqrt(v') * c + eps) if adaptive else s)

The per-step scalars (a, c, s, the adaptive flag; b1, b2, eps) are an input
vector, never compile-time constants, so a learning-rate schedule or RAdam's
rectification term changes nothing in the compiled kernel:

  * Adam (optax.scale_by_adam, eps outside the root):
      a = 1 / bc1, c = 1 / sqrt(bc2), s = 0, adaptive.
  * RAdam (torch, eps on the uncorrected root):
      rectified:   a = r_t sqrt(bc2) / bc1, c = 1, adaptive;
      otherwise:   s = (1 if degenerated_to_sgd else 0) / bc1, not adaptive.

Layout and dispatch (see `tree_update`): a leaf whose size is a multiple of
TILE = 16 x 128 is viewed as (rows, 128) (a free reshape) and gets its own
kernel; all other leaves (biases, norms, odd sizes) are packed into one padded
buffer and updated by a single kernel, so a Transformer with hundreds of small
tensors launches one kernel per large tensor plus one. Gradients may be
bfloat16 (u is written in the gradient's dtype); moments are float32.

Backends (`jax.lax.platform_dependent`, so one jitted function serves all):
  * TPU: Mosaic, blocks of (BLOCK_ROWS, 128) rows in VMEM, scalars in SMEM.
    BLOCK_ROWS = 512 (256 KiB per float32 operand per buffer; 6 operands
    double-buffered stay under 4 MiB of VMEM on every generation).
  * GPU: Triton, (64, 128) blocks (8K elements per program: enough to hide
    latency, few enough to stay in registers); the scalar vector is one small
    block. Mosaic GPU is not used: its copies must move multiples of a
    warpgroup's 128 x 4 bytes and this kernel's scalar operand is smaller.
  * CPU: the same kernel in Pallas interpret mode (tests), since XLA:CPU
    cannot run Pallas kernels.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu
from jax.experimental.pallas import triton as pltriton

LANES = 128
SUBLANES = 16  # bfloat16 packs 16 rows per (8, 128) float32 tile on TPU.
TILE = SUBLANES * LANES
BLOCK_ROWS = {"tpu": 512, "cuda": 64, "cpu": 512}
# a, c, s, adaptive, b1, 1 - b1, b2, 1 - b2, eps; padded to a power of two
# (Triton blocks). 1 - b is passed, not computed from a rounded b in the
# kernel: 1 - f32(0.999) is 1.3e-5 off (see optimizers/_numerics.one_minus).
NUM_SCALARS = 16


def _scalar_vector(a, c, s, adaptive, b1, b2, eps) -> jax.Array:
  values = [a, c, s, adaptive, b1, 1.0 - b1, b2, 1.0 - b2, eps]
  values = [jnp.asarray(x, jnp.float32) for x in values]
  return jnp.stack(values + [jnp.zeros([], jnp.float32)] * (NUM_SCALARS - len(values)))


def adam_scalars(b1, b2, eps, bc1, bc2) -> jax.Array:
  """The scalar vector for optax.scale_by_adam's direction."""
  return _scalar_vector(1.0 / bc1, 1.0 / jnp.sqrt(bc2), 0.0, 1.0, b1, b2, eps)


def radam_scalars(b1, b2, eps, bc1, adaptive_coef, sgd_coef, rectified) -> jax.Array:
  """The scalar vector for steplab's (torch's) RAdam direction."""
  return _scalar_vector(adaptive_coef / bc1, 1.0, sgd_coef / bc1, jnp.where(rectified, 1.0, 0.0), b1, b2, eps)


def _kernel(s_ref, g_ref, m_ref, v_ref, u_ref, m_out, v_out):
  a, c, s, adaptive = s_ref[0], s_ref[1], s_ref[2], s_ref[3]
  b1, one_minus_b1, b2, one_minus_b2, eps = s_ref[4], s_ref[5], s_ref[6], s_ref[7], s_ref[8]
  g = g_ref[...].astype(jnp.float32)
  m = b1 * m_ref[...] + one_minus_b1 * g
  v = b2 * v_ref[...] + one_minus_b2 * g * g
  coef = jnp.where(adaptive > 0.5, a / (jnp.sqrt(v) * c + eps), s)
  u_ref[...] = (m * coef).astype(u_ref.dtype)
  m_out[...] = m
  v_out[...] = v


def _block_rows(rows: int, platform: str) -> int:
  """The largest power-of-two block (<= BLOCK_ROWS, >= SUBLANES) dividing rows."""
  block = BLOCK_ROWS[platform]
  while rows % block:
    block //= 2
  return block


def _call(scalars, g, m, v, *, platform: str):
  rows = g.shape[0]
  block = _block_rows(rows, platform)
  tile = pl.BlockSpec((block, LANES), lambda i: (i, 0))
  if platform == "tpu":
    scalar_spec = pl.BlockSpec(memory_space=pltpu.SMEM)
    params = pltpu.CompilerParams(dimension_semantics=("parallel",))
  else:
    scalar_spec = pl.BlockSpec((NUM_SCALARS,), lambda i: (0,))
    params = pltriton.CompilerParams(num_warps=4) if platform == "cuda" else None
  return pl.pallas_call(
      _kernel,
      out_shape=(
          jax.ShapeDtypeStruct(g.shape, g.dtype),
          jax.ShapeDtypeStruct(m.shape, jnp.float32),
          jax.ShapeDtypeStruct(v.shape, jnp.float32),
      ),
      grid=(rows // block,),
      in_specs=[scalar_spec, tile, tile, tile],
      out_specs=(tile, tile, tile),
      input_output_aliases={2: 1, 3: 2},  # m and v in place.
      compiler_params=params,
      interpret=platform == "cpu",
      name="steplab_adam_family",
  )(scalars, g, m, v)


def fused_update(scalars: jax.Array, g: jax.Array, m: jax.Array, v: jax.Array):
  """(u, m', v') for 2-D (rows, 128) operands, rows a multiple of SUBLANES.

  Chooses the TPU, GPU (Triton) or CPU (interpret) kernel by the platform the
  enclosing computation is lowered for.
  """
  if g.ndim != 2 or g.shape[1] != LANES or g.shape[0] % SUBLANES:
    raise ValueError(f"fused_update: operands must be (rows, {LANES}) with rows % {SUBLANES} == 0, got {g.shape}")
  if m.dtype != jnp.float32 or v.dtype != jnp.float32:
    raise ValueError(f"fused_update: moments must be float32, got {m.dtype}, {v.dtype}")
  return jax.lax.platform_dependent(
      scalars, g, m, v,
      tpu=functools.partial(_call, platform="tpu"),
      cuda=functools.partial(_call, platform="cuda"),
      default=functools.partial(_call, platform="cpu"),
  )


def _is_direct(x) -> bool:
  return x.size > 0 and x.size % TILE == 0


def tree_update(scalars: jax.Array, grads: Any, mu: Any, nu: Any) -> tuple[Any, Any, Any]:
  """`fused_update` over trees: one kernel per large leaf, one for the rest.

  Returns (u, mu', nu') with the trees' structure, shapes and dtypes (u in the
  gradient's dtype, moments float32).
  """
  g_leaves, treedef = jax.tree.flatten(grads)
  m_leaves = treedef.flatten_up_to(mu)
  v_leaves = treedef.flatten_up_to(nu)
  for m, v in zip(m_leaves, v_leaves):
    if m.dtype != jnp.float32 or v.dtype != jnp.float32:
      raise ValueError("backend='pallas' keeps float32 moments (mu_dtype must be float32 or None)")
  u_out, m_out, v_out = [None] * len(g_leaves), [None] * len(g_leaves), [None] * len(g_leaves)
  small = []
  for i, (g, m, v) in enumerate(zip(g_leaves, m_leaves, v_leaves)):
    if _is_direct(g):
      shape2d = (g.size // LANES, LANES)
      u, m2, v2 = fused_update(scalars, g.reshape(shape2d), m.reshape(shape2d), v.reshape(shape2d))
      u_out[i], m_out[i], v_out[i] = u.reshape(g.shape), m2.reshape(g.shape), v2.reshape(g.shape)
    elif g.size:
      small.append(i)
    else:
      u_out[i], m_out[i], v_out[i] = g, m, v
  if small:
    # One packed kernel for all small leaves: packing copies only their bytes.
    # The packed gradient is float32 (bf16 and f32 leaves may mix).
    sizes = [g_leaves[i].size for i in small]
    total = sum(sizes)
    padded = -(-total // TILE) * TILE

    def pack(leaves, dtype):
      flat = jnp.concatenate([jnp.ravel(x).astype(dtype) for x in leaves])
      return jnp.pad(flat, (0, padded - total)).reshape(padded // LANES, LANES)

    u, m2, v2 = fused_update(
        scalars,
        pack([g_leaves[i] for i in small], jnp.float32),
        pack([m_leaves[i] for i in small], jnp.float32),
        pack([v_leaves[i] for i in small], jnp.float32),
    )
    offsets = [0]
    for n in sizes:
      offsets.append(offsets[-1] + n)
    u, m2, v2 = (jnp.ravel(x) for x in (u, m2, v2))
    for k, i in enumerate(small):
      sl = slice(offsets[k], offsets[k + 1])
      shape = g_leaves[i].shape
      u_out[i] = u[sl].reshape(shape).astype(g_leaves[i].dtype)
      m_out[i] = m2[sl].reshape(shape)
      v_out[i] = v2[sl].reshape(shape)
  return tuple(treedef.unflatten(x) for x in (u_out, m_out, v_out))


def kernel_count(grads: Any) -> int:
  """How many kernels `tree_update` launches for this tree."""
  leaves = [g for g in jax.tree.leaves(grads) if g.size]
  return sum(map(_is_direct, leaves)) + int(any(not _is_direct(g) for g in leaves))


def bytes_per_param(grad_dtype: Any = jnp.float32) -> int:
  """The traffic floor of the fused direction: read g, m, v; write u, m, v."""
  g = jnp.dtype(grad_dtype).itemsize
  return 2 * g + 4 * 4


__all__: Sequence[str] = (
    "adam_scalars", "radam_scalars", "fused_update", "tree_update", "kernel_count", "bytes_per_param",
)
