"""Adam-mini: one second-moment value per Hessian block, numerically as adam-mini 1.1.1.

Adam-mini keeps Adam's first moment but replaces the per-parameter second
moment by one value per block of parameters (per attention head for queries
and keys, per output neuron for values, projections and MLPs, per token for
embeddings and the output layer, one per tensor otherwise; biases keep Adam).
At step t (from 1), for a block B with bc1 = 1 - b1^t, bc2 = 1 - b2^t:

    m   = b1 m + (1 - b1) g                         (full size)
    v_B = b2 v_B + (1 - b2) mean_{i in B} g_i^2     (one scalar per block)
    p  -= lr_t (wd_p p + m / bc1 / (sqrt(v_B) / sqrt(bc2) + eps))

Weight decay is decoupled (AdamW's `p *= 1 - lr wd` before the step, as the
reference) and skipped for norms and biases.

Partition (the reference's name rules, first rule wins, on the lower-cased
parameter path joined with "."):

  1. "bias"                                   -> Adam (per element)
  2. {q_proj, wq, query} / {k_proj, wk, key}  -> one v per attention head
  3. {embed, embd, wte}, {lm_head, output, final_layer}, {v_proj, wv, value},
     {o_proj, wo, attn.proj}, {feed_forward, linear, mlp}
                                              -> one v per output neuron (token)
  4. anything else                            -> one v for the whole tensor

Flax layouts: `Dense` kernels are (in, out), so "per output neuron" reduces
over every axis but the last; `nn.Embed`'s `embedding` (vocab, dim) keeps the
first axis (per token). `DenseGeneral` attention kernels (in, heads, head_dim)
give one block per head for q/k and one per (head, head_dim) neuron for v;
2-D q/k kernels (in, heads * head_dim) split their output axis into
`num_heads` (queries) or `num_kv_heads` (keys, grouped-query attention) heads,
as the reference's `view(-1, dim * dim / n_heads)` does on torch's (out, in)
weights. Flax's `MultiHeadDotProductAttention` names its output projection
`out`: a path component equal to "out" counts as an attention projection (the
reference knows only torch names). A 1-D tensor in a per-neuron rule (e.g. a
norm scale under an "mlp" module) is one block (the reference would fail).

Weight-decay exclusion: the reference skips decay when the name contains
"norm", "ln" or "bias"; the bare "ln" substring also hits unrelated names
(e.g. "kiln", "vulnerable"), so steplab matches "ln" only as a path-component
token: "ln", "ln_1", "ln_f", "lnf", "ln2", "final_ln", "attn_ln".

Defaults (reference): lr 1e-3, b1 0.9, b2 0.999, eps 1e-8, weight decay 0.

References:
  Zhang et al., "Adam-mini: Use Fewer Learning Rates To Gain More", ICLR 2025,
  https://arxiv.org/abs/2406.16793. Code: github.com/zyushun/Adam-mini (PyPI
  `adam-mini` 1.1.1).
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _executor
from optimizers import _numerics
from optimizers import _validation
from pallas_kernels import adam_family
from pallas_kernels import elementwise
from pallas_kernels import reductions

__all__ = ("adam_mini", "adam_mini_partition", "AdamMiniBlock", "print_adam_mini_partition",
    "scale_by_adam_mini", "ScaleByAdamMiniState")

QUERY_NAMES = ("q_proj", "wq", "query")
KEY_NAMES = ("k_proj", "wk", "key")
EMBEDDING_NAMES = ("embed", "embd", "wte")
OUTPUT_NAMES = ("lm_head", "output", "final_layer")
VALUE_NAMES = ("v_proj", "wv", "value")
ATTENTION_PROJECTION_NAMES = ("o_proj", "wo", "attn.proj")
MLP_NAMES = ("feed_forward", "linear", "mlp")
_FLAX_ATTENTION_OUT = "out"  # Path component of MultiHeadDotProductAttention's output.
_LN_TOKEN = re.compile(r"(^|_)ln(\d+|f)?($|_)")


class Block(NamedTuple):
  """How one leaf is cut into second-moment blocks.

  Attributes:
    rule: "adam" (per element), "head", "neuron", "token" or "whole".
    heads: split the last axis into (heads, -1) first (2-D q/k kernels); None: no split.
    axes: axes (of the split shape) averaged over; v keeps the others (keepdims).
  """

  rule: str
  heads: int | None
  axes: tuple[int, ...]


class ScaleByAdamMiniState(NamedTuple):
  """State of `scale_by_adam_mini`: count, full m, block v (keepdims shapes)."""

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates


def _path_name(path: Sequence[Any]) -> str:
  return ".".join(_numerics.key_names(path)).replace("/", ".").lower()


def _has(name: str, names: Sequence[str]) -> bool:
  return any(n in name for n in names)


def excluded_from_weight_decay(name: str) -> bool:
  """Norms and biases: "norm" or "bias" anywhere, "ln" as a path token (see module doc)."""
  name = name.lower()
  if "norm" in name or "bias" in name:
    return True
  return any(_LN_TOKEN.search(part) for part in re.split(r"[./]", name))


def _neuron_axes(leaf_name: str, ndim: int) -> tuple[int, ...]:
  """Axes averaged for "one v per output neuron / token" on a Flax leaf."""
  if leaf_name == "embedding":  # nn.Embed: (vocab, dim), per token.
    return tuple(range(1, ndim))
  return tuple(range(0, ndim - 1))  # Kernels (in..., out): keep the output axis.


def block_for(name: str, shape: Sequence[int], num_heads: int | None = None,
              num_kv_heads: int | None = None) -> Block:
  """The reference's rule for one parameter (path `name`, Flax `shape`)."""
  name = name.lower()
  ndim = len(shape)
  leaf_name = re.split(r"[./]", name)[-1]
  components = re.split(r"[./]", name)
  if "bias" in name:
    return Block("adam", None, ())
  if ndim == 0:
    return Block("whole", None, ())
  is_query, is_key = _has(name, QUERY_NAMES), _has(name, KEY_NAMES)
  if is_query or is_key:
    if ndim == 3:  # DenseGeneral (in, heads, head_dim).
      return Block("head", None, (0, 2))
    if ndim == 2:
      if num_heads is None:
        raise ValueError(
            f"adam_mini: {name!r} {tuple(shape)} is a query/key kernel; pass num_heads (and"
            " num_kv_heads for grouped-query attention) or a partition function."
        )
      heads = num_heads if is_query else (num_kv_heads or num_heads)
      if shape[-1] % heads:
        raise ValueError(
            f"adam_mini: {name!r} {tuple(shape)}: output axis {shape[-1]} is not divisible into"
            f" {heads} heads."
        )
      return Block("head", heads, (0, 2))  # (in, heads, head_dim): average in and head_dim.
    raise ValueError(f"adam_mini: query/key parameter {name!r} has unsupported shape {tuple(shape)}.")
  per_neuron = (
      _has(name, EMBEDDING_NAMES) or _has(name, OUTPUT_NAMES) or _has(name, VALUE_NAMES)
      or _has(name, ATTENTION_PROJECTION_NAMES) or _has(name, MLP_NAMES)
      or _FLAX_ATTENTION_OUT in components
  )
  if per_neuron and ndim >= 2:
    if leaf_name == "embedding" or _has(name, OUTPUT_NAMES) or _has(name, EMBEDDING_NAMES):
      return Block("token", None, _neuron_axes(leaf_name, ndim))
    if ndim == 3 and _has(name, VALUE_NAMES):  # DenseGeneral (in, heads, head_dim).
      return Block("neuron", None, (0,))
    return Block("neuron", None, _neuron_axes(leaf_name, ndim))
  return Block("whole", None, tuple(range(ndim)))


def adam_mini_partition(params: Any, num_heads: int | None = None,
                        num_kv_heads: int | None = None) -> Any:
  """The tree of `Block`s the reference's name rules give `params` (Flax layout)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, p: block_for(_path_name(path), jnp.shape(p), num_heads, num_kv_heads), params
  )


def _split_shape(shape: Sequence[int], block: Block) -> list[int]:
  """The leaf's shape with the last axis split into (heads, -1) where the block says so."""
  split = list(shape)
  if block.heads is not None:
    split = split[:-1] + [block.heads, split[-1] // block.heads]
  return split


def _v_shape(shape: Sequence[int], block: Block) -> tuple[int, ...]:
  if block.rule == "adam":
    return tuple(shape)
  return tuple(1 if i in block.axes else n for i, n in enumerate(_split_shape(shape, block)))


def print_adam_mini_partition(params: Any, num_heads: int | None = None,
                              num_kv_heads: int | None = None, partition: Any = None,
                              print_fn: Callable[[str], Any] = print) -> list[tuple[str, tuple, str, int]]:
  """Prints (and returns) path, shape, rule and number of v entries per leaf.

  `partition` (a tree of `Block`s or a function of params) overrides the name rules.
  The last line compares v entries with Adam's (one per parameter).
  """
  blocks = _resolve(partition, params, num_heads, num_kv_heads)
  rows = []
  for (path, p), block in zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(
      blocks, is_leaf=lambda x: isinstance(x, Block))):
    rows.append((_path_name(path), tuple(jnp.shape(p)), block.rule, math.prod(_v_shape(jnp.shape(p), block))))
  width = max([len(r[0]) for r in rows] + [4])
  print_fn(f"{'path':<{width}}  {'shape':<18} {'rule':<7} {'v entries':>10}")
  for name, shape, rule, n in rows:
    print_fn(f"{name:<{width}}  {str(shape):<18} {rule:<7} {n:>10,}")
  total_v = sum(r[3] for r in rows)
  total_p = sum(math.prod(r[1]) for r in rows)
  print_fn(f"v entries: {total_v:,} for {total_p:,} parameters ({total_v / max(total_p, 1):.2%} of Adam's)")
  return rows


def _resolve(partition, params, num_heads, num_kv_heads):
  if partition is None:
    return adam_mini_partition(params, num_heads, num_kv_heads)
  return partition(params) if callable(partition) else partition


def _block_mean_sq(g: jax.Array, block: Block) -> jax.Array:
  """mean of |g|^2 over each block, in keepdims form (a jnp reduction: shards)."""
  g2 = _numerics.abs_sq(g)
  if block.rule == "adam":
    return g2
  if block.heads is not None:
    g2 = g2.reshape(g2.shape[:-1] + (block.heads, g2.shape[-1] // block.heads))
  return jnp.mean(g2, axis=block.axes, keepdims=True)


def _ema_term(one_minus_b2: Any, mean_sq: jax.Array, g: jax.Array, block: Block) -> jax.Array:
  """(1 - b2) mean_B |g|^2, also where mean_B |g|^2 alone overflows.

  A finite gradient above ~1.8e19 squares to inf in float32, and an inf v
  would zero every later step of the block for good. Where that happens (and
  only there, so the numbers elsewhere are unchanged), the term is
  recomputed as (sqrt(1 - b2) M)^2 mean_B (|g| / M)^2 with M = max_B |g|,
  which is finite while the term itself is (|g| < ~5.8e20 for b2 = 0.999).
  """
  term = one_minus_b2 * mean_sq

  def rescaled():
    a = jnp.abs(g).astype(mean_sq.real.dtype)
    if block.rule == "adam":
      return _numerics.scaled_abs_sq(one_minus_b2, a).astype(mean_sq.dtype)
    if block.heads is not None:
      a = a.reshape(a.shape[:-1] + (block.heads, a.shape[-1] // block.heads))
    top = jnp.max(a, axis=block.axes, keepdims=True)
    safe_top = jnp.where(top > 0, top, 1.0)
    mean = jnp.mean(jnp.square(a / safe_top), axis=block.axes, keepdims=True)
    return (_numerics.scaled_abs_sq(one_minus_b2, safe_top) * mean).astype(mean_sq.dtype)

  return jax.lax.cond(jnp.any(jnp.isinf(term)), rescaled, lambda: term)


def _saturate(v: jax.Array) -> jax.Array:
  """v capped at the dtype's largest finite value (NaN stays NaN).

  Where the second moment itself exceeds the dtype (|g| above ~5.8e20 in
  float32 with b2 = 0.999), v holds the largest finite value instead of inf:
  that step is tiny instead of a NaN, and v decays back by b2 per step
  instead of zeroing the block's steps for ever. A non-finite gradient still
  gives a non-finite update (optax.apply_if_finite catches it).
  """
  if jnp.iscomplexobj(v):  # Complex parameters: v holds |g|^2, real-valued.
    return jnp.minimum(v.real, jnp.finfo(v.real.dtype).max).astype(v.dtype)
  return jnp.minimum(v, jnp.finfo(v.dtype).max)


def _broadcast(v: jax.Array, block: Block, shape: Sequence[int]) -> jax.Array:
  """v (keepdims, split shape) as a factor broadcastable to the leaf `shape`."""
  if block.heads is not None:
    v = jnp.broadcast_to(v, v.shape[:-1] + (shape[-1] // block.heads,)).reshape(
        v.shape[:-2] + (shape[-1],))
  return v


def _momentum_step_rule(scalars, g, m, h, *, mu_dtype=None):
  """m' = b1 m + (1 - b1) g and u = m' / bc1 / h_B (h_B broadcast), both backends."""
  b1, one_minus_b1, bc1 = scalars
  m = b1 * m.astype(h.dtype) + one_minus_b1 * g.astype(h.dtype)
  return (m / _numerics.cast_like(bc1, m) / h).astype(g.dtype), m.astype(mu_dtype or h.dtype)


def _two_d_view(shape: Sequence[int], block: Block):
  """(2-D shape, per_row) of a leaf whose kept axes are all leading or all trailing."""
  split = _split_shape(shape, block)
  kept = [i for i in range(len(split)) if i not in block.axes]
  if not kept:  # One v for the tensor: any view; a per-column factor of equal values.
    shape = elementwise.lane_view(math.prod(split))
    return None if shape is None else (shape, False)
  k = min(kept)
  if all(i in block.axes for i in range(k)) and k > 0:  # Reduced axes leading: per column.
    return (math.prod(split[:k]), math.prod(split[k:])), False
  j = max(kept)
  if kept == list(range(j + 1)) and j + 1 < len(split):  # Kept axes leading: per row.
    return (math.prod(split[:j + 1]), math.prod(split[j + 1:])), True
  return None


def _square(_, g):
  """g^2, the rule of the block means' fused reduction."""
  return (g * g,)


def _fused_block_mean_sq(g, block, view):
  """`_block_mean_sq` from one fused per-row or per-column reduction of the 2-D view.

  Per row: the rows are the blocks. Per column: the columns are the kept axes
  followed by any trailing reduced axes (a head's head_dim), summed here over
  the few column sums. Whole tensor: the sum of the column sums.
  """
  (rows, cols), per_row = view
  split = _split_shape(g.shape, block)
  v_shape = _v_shape(g.shape, block)
  block_size = math.prod(split) // math.prod(v_shape)
  sums = reductions.axis_sums(_square, (), [g.reshape(rows, cols)], 1, axis=1 if per_row else 0)[0]
  kept = [i for i in range(len(split)) if i not in block.axes]
  if not per_row and not kept:
    sums = jnp.sum(sums)
  elif not per_row:
    k = min(kept)
    sums = jnp.sum(sums.reshape(split[k:]), axis=tuple(i - k for i in block.axes if i >= k), keepdims=True)
  return (sums / block_size).reshape(v_shape)


def _factor(h, block, shape, rows, cols, per_row):
  """The block value (h_B) as the (rows, 1) or (1, cols) factor of the 2-D view."""
  split = _split_shape(shape, block)
  if per_row:
    return jnp.reshape(h, (rows, 1))
  if len(block.axes) == len(split):  # Whole tensor: one value per column.
    return jnp.broadcast_to(jnp.reshape(h, (1, 1)), (1, cols))
  k = min(i for i in range(len(split)) if i not in block.axes)
  # Expand the trailing reduced axes (e.g. head_dim) into the columns.
  return jnp.broadcast_to(h, tuple(1 if i < k else n for i, n in enumerate(split))).reshape(1, cols)


def _leaf_update(g, m, v, block, scalars, fused, mu_dtype):
  """(u, m', v') of one leaf: v per block (`fused`: its block means and the
  momentum step as Pallas kernels where the leaf has a 2-D view), then the rule."""
  b1, b2, eps, bc1, sqrt_bc2 = scalars
  view = _two_d_view(g.shape, block) if fused else None
  mean_sq = _block_mean_sq(g.astype(v.dtype), block) if view is None else _fused_block_mean_sq(g, block, view)
  v = _saturate(b2 * v + _ema_term(_numerics.one_minus(b2), mean_sq, g.astype(v.dtype), block))
  h = jnp.sqrt(v) / _numerics.cast_like(sqrt_bc2, v) + eps
  rule = functools.partial(_momentum_step_rule, mu_dtype=mu_dtype)
  step_scalars = (b1, _numerics.one_minus(b1), bc1)
  if view is None or m.dtype != jnp.float32:  # No 2-D view: XLA for this leaf.
    return rule(step_scalars, g, m, _broadcast(h, block, g.shape)) + (v,)
  (rows, cols), per_row = view
  u, m = elementwise.fused_map_broadcast(rule, step_scalars, [g.reshape(rows, cols), m.reshape(rows, cols)],
                                         _factor(h, block, g.shape, rows, cols, per_row), aliases={1: 1})
  return u.reshape(g.shape), m.reshape(g.shape), v


def _check_args(owner, b1, b2, eps, num_heads, num_kv_heads, mu_dtype, backend):
  _validation.check_backend(owner, backend)
  _validation.check_decay(owner, "b1", b1)
  _validation.check_mu_dtype(owner, mu_dtype)
  _validation.check_decay(owner, "b2", b2)
  _validation.check_non_negative(owner, "eps", eps)
  for arg, value in (("num_heads", num_heads), ("num_kv_heads", num_kv_heads)):
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
      raise ValueError(f"{owner}: `{arg}` must be a positive int, got {value!r}.")
  if num_heads is not None and num_kv_heads is not None and num_heads % num_kv_heads:
    raise ValueError(f"{owner}: num_heads={num_heads} is not a multiple of num_kv_heads={num_kv_heads}.")


def scale_by_adam_mini(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    *,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    partition: Any = None,
    mu_dtype: Any | None = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Adam-mini's bias-corrected step m_hat / (sqrt(v_B_hat) + eps) (no sign flip).

  Args:
    b1, b2: moment decays (reference 0.9, 0.999).
    eps: added to sqrt(v_hat) (reference 1e-8).
    num_heads: attention heads, to split 2-D query kernels (reference n_heads).
    num_kv_heads: key heads for grouped-query attention (default num_heads).
    partition: a tree of `Block`s, or a function params -> tree of `Block`s,
      replacing the name rules (`adam_mini_partition`).
    mu_dtype: dtype of m (default: the state dtype).
    backend: "xla" (default) or "pallas": per-element (bias) leaves in the
      fused Adam kernel; block leaves update m and the step in one fused
      pass with the block's h_B read per row or column block
      (`elementwise.fused_map_broadcast`), after fused block means of g^2.
  """
  owner = "scale_by_adam_mini"
  _check_args(owner, b1, b2, eps, num_heads, num_kv_heads, mu_dtype, backend)

  def blocks_of(params):
    blocks = _resolve(partition, params, num_heads, num_kv_heads)
    return jax.tree.leaves(blocks, is_leaf=lambda x: isinstance(x, Block))

  def init_fn(params):
    if backend == "pallas":
      _numerics.reject_complex(owner, params, "backend='pallas' keeps real float32 moments; use backend='xla'")
    leaves, treedef = jax.tree.flatten(params)
    nu = [jnp.zeros(_v_shape(p.shape, b), _numerics.state_dtype(p.dtype)) for p, b in zip(leaves, blocks_of(params))]
    return ScaleByAdamMiniState(count=jnp.zeros([], jnp.int32), mu=_numerics.zeros_like_state(params, mu_dtype),
                                nu=treedef.unflatten(nu))

  def update_fn(updates, state, params=None):
    _validation.check_tree_matches(owner, updates, state.mu)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    bc1, sqrt_bc2 = _numerics.bias_correction(b1, t), jnp.sqrt(_numerics.bias_correction(b2, t))
    # The partition depends on names and shapes only: the updates tree has both.
    blocks = blocks_of(updates if params is None else params)
    leaves, treedef = jax.tree.flatten(updates)
    fused = backend == "pallas"

    def run(per_element_kernel, g, m, v, block):
      if per_element_kernel:  # Per-element v on Pallas: the fused Adam kernel, packed.
        return adam_family.tree_update(adam_family.adam_scalars(b1, b2, eps, bc1, jnp.square(sqrt_bc2)), g, m, v)
      return tuple(zip(*(_leaf_update(*leaf, (b1, b2, eps, bc1, sqrt_bc2), fused, mu_dtype)
                         for leaf in zip(g, m, v, block))))

    columns = [leaves, treedef.flatten_up_to(state.mu), treedef.flatten_up_to(state.nu), blocks]
    u, mu, nu = _executor.grouped(run, [fused and b.rule == "adam" for b in blocks], columns, 3)
    return treedef.unflatten(u), ScaleByAdamMiniState(count, treedef.unflatten(mu), treedef.unflatten(nu))

  return optax.GradientTransformation(init_fn, update_fn)


def weight_decay_mask(params: Any) -> Any:
  """True where Adam-mini decays: not norms or biases (see module doc)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: not excluded_from_weight_decay(_path_name(path)), params)


def adam_mini(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    num_heads: int | None = None,
    num_kv_heads: int | None = None,
    partition: Any = None,
    mask: Any = None,
    mu_dtype: Any | None = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Adam-mini (adam-mini 1.1.1's `Adam_mini`) as one `optax.chain`.

  Args:
    learning_rate: float or Optax schedule (reference 1e-3).
    b1, b2, eps: as Adam (reference 0.9, 0.999, 1e-8).
    weight_decay: decoupled, `p -= lr wd p` (reference 0).
    num_heads, num_kv_heads: attention heads for 2-D query/key kernels.
    partition: a tree of `Block`s or a function of params (default: name rules).
    mask: weight-decay mask; default `weight_decay_mask` (no norms, biases).
    mu_dtype: dtype of m.
    backend: "xla" (default) or "pallas" (see `scale_by_adam_mini`).
  """
  _validation.check_learning_rate("adam_mini", learning_rate)
  _validation.check_non_negative("adam_mini", "weight_decay", weight_decay)
  return optax.chain(
      scale_by_adam_mini(b1, b2, eps, num_heads=num_heads, num_kv_heads=num_kv_heads,
                         partition=partition, mu_dtype=mu_dtype, backend=backend),
      optax.add_decayed_weights(weight_decay, weight_decay_mask if mask is None else mask),
      optax.scale_by_learning_rate(learning_rate),
  )


AdamMiniBlock = Block  # The package exports the block type under this name.
