"""AdamP and SGDP, numerically as the reference `adamp` 0.3.0.

Both remove the radial component of the update of scale-invariant weights
(those followed by a normalisation layer), where it only grows the norm and
so shrinks the effective step. Scale invariance is detected from the raw
gradient g and weight w of every tensor of rank > 1:

    cos(x, y) = x.y / (max(|x|, eps) max(|y|, eps))
    channel view: if max_c |cos(g_c, w_c)| < delta / sqrt(channel size),
        u_c -= w^_c <w^_c, u_c> for every channel, w^_c = w_c / (|w_c| + eps)
    else whole-tensor view: the same test and projection with delta / sqrt(numel)
    either projection: wd_factor = wd_ratio, otherwise 1.

A channel is one output unit. Flax kernels are `(..., in, out)`, so the
channel axis is the LAST axis by default (`channel_axis=-1`); pass
`channel_axis=0` for PyTorch-layout `(out, in, ...)` weights.

AdamP at step t, `bc1 = 1 - b1^t`, `bc2 = 1 - b2^t`:

    m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2
    u = m / (sqrt(v) / sqrt(bc2) + eps)        (nesterov: (b1 m + (1 - b1) g) in place of m)
    u = project(u);  p *= 1 - lr wd wd_factor;  p -= lr / bc1 * u

SGDP:

    buf = momentum buf + (1 - dampening) g,  buf_0 = 0 (unlike torch SGD)
    d = g + momentum buf if nesterov else buf
    d = project(d);  p *= 1 - lr wd wd_factor / (1 - momentum);  p -= lr d

Without Nesterov, `d` is the momentum buffer itself and the reference projects
it in place, so the stored momentum is the projected one; kept here.

Weight decay depends on the projection outcome, so it is applied inside the
blocks (with the usual Optax `mask`): they return
`u / bc1 + wd wd_factor p` (AdamP) and `d + wd wd_factor p / (1 - momentum)`
(SGDP), and multiplying by `-lr` gives the reference's update exactly.

On the XLA path the view is decided from the per-channel sums of g w, g^2
and w^2 (one pass over g and w); the w.u sums (u recomputed) are taken only
when a view applies, in a `lax.cond`, as the reference takes them only when
it projects. With `backend="pallas"` (AdamP only) a projected leaf viewed as (rows,
channels) takes two fused passes: one reads g, m, v, w and writes the four
per-channel sums (the moments recomputed in registers, never stored), then
XLA forms the per-channel coefficients (a few numbers per channel), then one
pass reads g, m, v, w and the coefficients and writes the update, m and v.
Rank <= 1 leaves take the one-pass Adam step (packed when small).

References:
  Heo et al., "AdamP: Slowing Down the Slowdown for Momentum Optimizers on
  Scale-invariant Weights", ICLR 2021, https://arxiv.org/abs/2006.08217.
  Code: github.com/clovaai/AdamP (PyPI `adamp` 0.3.0).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from optimizers import _executor
from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay
from pallas_kernels import elementwise
from pallas_kernels import reductions

__all__ = ("adamp", "adamp_projection", "scale_by_adamp", "scale_by_sgdp", "ScaleByAdamPState",
    "ScaleBySGDPState", "sgdp")


class ScaleByAdamPState(NamedTuple):
  """State of `scale_by_adamp`: count and the two moments."""

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates


class ScaleBySGDPState(NamedTuple):
  """State of `scale_by_sgdp`: the (possibly projected) momentum buffer."""

  momentum: optax.Updates


def project(
    w: jax.Array,
    g: jax.Array,
    u: jax.Array,
    *,
    delta: Any,
    wd_ratio: Any,
    eps: Any,
    channel_axis: int = -1,
) -> tuple[jax.Array, jax.Array]:
  """AdamP's projection of update `u` for weight `w` with raw gradient `g`.

  Four per-channel sums (g.w, g.g, w.w, w.u) carry everything: the
  whole-tensor sums are their totals, and with w^ = w / (|w| + eps)

      u - w^ <w^, u> = u - w <w, u> / (|w| + eps)^2,

  so the update is one elementwise pass after the reductions, whichever
  view applies (the reference's math, without materialising w^ or both
  candidate projections). Which view applies depends on g and w only, so
  the w.u sums are taken only when one does, as the reference's.

  Args:
    w, g, u: same-shaped arrays of rank > 1 (computed in u's dtype).
    delta: cosine threshold (reference 0.1).
    wd_ratio: weight-decay factor when projected (reference 0.1).
    eps: the reference's eps (norm floor and w^ denominator).
    channel_axis: the output-channel axis (-1 for Flax layouts).

  Returns:
    `(projected u, wd_factor)`; `wd_factor` is `wd_ratio` if a projection
    happened and 1 otherwise.
  """
  return _project_if_matrix(w, g, lambda u: u, (u,), delta, wd_ratio, eps, channel_axis)


def _channel_sums(x, y, channel_axis):
  """Per-channel sums of x y (keepdims), each its own reduction with the product fused in.

  Separate reductions: a variadic or stacked one is slower on XLA:CPU. The
  optimization barrier keeps them as they are: unseparated, XLA folds each
  whole-tensor total (a sum of these sums) into a full reduction of the
  product, whose second consumer then makes it a materialised temporary.
  """
  axes = tuple(a for a in range(x.ndim) if a != channel_axis % x.ndim)
  return jax.lax.optimization_barrier(jnp.sum(x * y, axis=axes, keepdims=True))


def _views(gw, gg, ww, *, channel_size, delta, eps):
  """(channel view applies, whole-tensor view applies) from the per-channel sums of g w, g^2, w^2.

  The channels' largest cosine and the three totals come from one variadic
  reduction: a leaf's decision is then three small kernels, not a dozen (on
  XLA:CPU each small kernel costs a dispatch, which over ~50 leaves is
  comparable to a whole Adam step).
  """
  # cos(g, w) = g.w / (max(|g|, eps) max(|w|, eps)), as torch's.
  cosine = lambda gw, gg, ww: jnp.abs(gw) / (jnp.maximum(jnp.sqrt(gg), eps) * jnp.maximum(jnp.sqrt(ww), eps))
  zero, channels = jnp.zeros([], gw.dtype), jnp.asarray(gw.size, gw.dtype)
  largest, gw, gg, ww = jax.lax.reduce(
      (cosine(gw, gg, ww), gw, gg, ww), (jnp.asarray(-jnp.inf, gw.dtype), zero, zero, zero),
      lambda a, b: (jnp.maximum(a[0], b[0]), a[1] + b[1], a[2] + b[2], a[3] + b[3]), tuple(range(gw.ndim)))
  # Thresholds may be traced hyperparameters: select, never branch on them in Python.
  use_channel = largest < delta / jnp.sqrt(jnp.asarray(channel_size, largest.dtype))
  use_layer = cosine(gw, gg, ww) < delta / jnp.sqrt(channel_size * channels)
  return use_channel, use_layer


def _coefficient(ww, wu, use_channel, use_layer, eps):
  """Per-channel `coef` (projected u = u - w coef) for the view that applies (0 if none)."""
  coef = lambda wu, ww: wu / (jnp.sqrt(ww) + eps) ** 2
  layer = coef(jnp.sum(wu), jnp.sum(ww))
  return jnp.where(use_channel, coef(wu, ww), jnp.where(use_layer, layer, 0.0))


def projection_coefficients(
    gw: jax.Array,
    gg: jax.Array,
    ww: jax.Array,
    wu: jax.Array,
    *,
    channel_size: int,
    delta: Any,
    wd_ratio: Any,
    eps: Any,
) -> tuple[jax.Array, jax.Array]:
  """Per-channel `coef` (projected u = u - w coef) and `wd_factor` from the four sums.

  Args:
    gw, gg, ww, wu: the per-channel sums of g w, g^2, w^2 and w u (one
      entry per channel, any shape; their totals are the whole-tensor sums).
    channel_size: elements per channel.
    delta, wd_ratio, eps: as `project`.

  Returns:
    `(coef, wd_factor)`: coef shaped as the sums (zero where not projected).
  """
  use_channel, use_layer = _views(gw, gg, ww, channel_size=channel_size, delta=delta, eps=eps)
  wd_factor = jnp.where(use_channel | use_layer, wd_ratio, 1.0).astype(wu.dtype)
  return _coefficient(ww, wu, use_channel, use_layer, eps), wd_factor


def _project_if_matrix(w, g, u_fn, args, delta, wd_ratio, eps, channel_axis):
  """`(project(w, g, u), wd_factor)` for u = u_fn(*args); vectors and scalars are never projected.

  The views are decided from the sums of g w, g^2, w^2; only if one applies
  does a `lax.cond` branch take the w.u sums (u recomputed there from
  `args`, the updated state and the scalars u needs), so an unprojected
  leaf costs one reduction pass over g and w before its fused update, as the
  reference, which takes w.u only when it projects. Under `vmap` the cond
  becomes a select and both branches run: same values.
  """
  u = u_fn(*args)
  if w.ndim <= 1:
    return u, jnp.ones([], u.dtype)
  w, g = w.astype(u.dtype), g.astype(u.dtype)
  gw, gg, ww = (_channel_sums(x, y, channel_axis) for x, y in ((g, w), (g, g), (w, w)))
  use_channel, use_layer = _views(gw, gg, ww, channel_size=w.size // w.shape[channel_axis], delta=delta, eps=eps)

  def projected(w, args):
    wu = _channel_sums(w, u_fn(*args), channel_axis)
    return _coefficient(ww, wu, use_channel, use_layer, eps)

  projects = use_channel | use_layer
  coef = jax.lax.cond(projects, projected, lambda w, args: jnp.zeros_like(ww), w, args)
  return u - w * coef, jnp.where(projects, wd_ratio, 1.0).astype(u.dtype)


def _check_projection_args(owner, eps, delta, wd_ratio, weight_decay, axis):
  _validation.check_non_negative(owner, "eps", eps)
  _validation.check_non_negative(owner, "delta", delta)
  _validation.check_non_negative(owner, "wd_ratio", wd_ratio)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  _validation.check_channel_axis(owner, axis)


_COMPLEX_REASON = "the scale-invariance test and projection use real inner products"


def _check_channel_axis_in_range(owner, params, axis):
  """`channel_axis` must name an axis of every tensor that can be projected (ndim > 1).

  Python's modulo would otherwise wrap an out-of-range axis (5 on a matrix is
  axis 1) and silently project over the wrong channels.
  """
  for path, p in jax.tree_util.tree_leaves_with_path(params):
    ndim = jnp.ndim(p)
    if ndim > 1 and not -ndim <= axis < ndim:
      raise ValueError(
          f"{owner}: `channel_axis` {axis} is out of range for the {ndim}-d parameter at"
          f" {jax.tree_util.keystr(path)} (valid: {-ndim} .. {ndim - 1})."
      )


def _require_params(owner, params):
  if params is None:
    raise ValueError(
        f"{owner}: the projection needs the current parameters; call"
        " `update(grads, state, params)`."
    )


def _fused_direction(nesterov, scalars, g, m, v):
  """(m', v', w-independent direction u) of the fused passes, float32 moments."""
  b1, one_minus_b1, b2, one_minus_b2, sqrt_bc2, eps = scalars[:6]
  g32 = g.astype(jnp.float32)
  m = b1 * m + one_minus_b1 * g32
  v = b2 * v + one_minus_b2 * g32 * g32
  direction = b1 * m + one_minus_b1 * g32 if nesterov else m
  return g32, m, v, direction / (jnp.sqrt(v) / sqrt_bc2 + eps)


def _fused_channel_sums(nesterov, scalars, g, m, v, w):
  """Pass 1: the per-element products whose channel sums the projection needs."""
  g32, _, _, u = _fused_direction(nesterov, scalars, g, m, v)
  return g32 * w, g32 * g32, w * w, w * u


def _fused_step(nesterov, scalars, g, m, v, w, coef=0.0):
  """Pass 2: `(u - w coef) / bc1 + decay w`, m', v' (coef 0: not projected)."""
  bc1, decay = scalars[6:8]
  _, m, v, u = _fused_direction(nesterov, scalars, g, m, v)
  w = w.astype(jnp.float32)
  return ((u - w * coef) / bc1 + decay * w).astype(g.dtype), m, v


def _channel_view(shape, channel_axis):
  """(rows, channels) view of a leaf and whether channels are its columns, or None."""
  channel_axis %= len(shape)
  size = int(np.prod(shape))
  if channel_axis == len(shape) - 1:
    return (size // shape[-1], shape[-1]), True
  if channel_axis == 0:
    return (shape[0], size // shape[0]), False
  return None


class _Hyper(NamedTuple):
  """`scale_by_adamp`'s hyperparameters, for the fused (Pallas) passes."""

  b1: Any
  b2: Any
  eps: Any
  weight_decay: Any
  delta: Any
  wd_ratio: Any
  nesterov: bool
  channel_axis: int


def _fused_leaf(h, g, m, v, p, scalars, on):
  """One projected leaf on the fused passes; None if it has no 2-D view."""
  view = _channel_view(p.shape, h.channel_axis)
  if view is None:
    return None
  (rows, cols), channels_last = view
  g2, m2, v2, p2 = (x.reshape(rows, cols) for x in (g, m, v, p))
  sums = reductions.axis_sums(functools.partial(_fused_channel_sums, h.nesterov), scalars, [g2, m2, v2, p2], 4,
                              axis=0 if channels_last else 1)
  coef, wd_factor = projection_coefficients(
      *sums, channel_size=rows if channels_last else cols, delta=h.delta, wd_ratio=h.wd_ratio, eps=h.eps)
  decay = h.weight_decay * wd_factor * _weight_decay.as_multiplier(on, jnp.float32)
  factor = coef.reshape((1, cols) if channels_last else (rows, 1))
  out = elementwise.fused_map_broadcast(
      functools.partial(_fused_step, h.nesterov), scalars + (decay,), [g2, m2, v2, p2], factor,
      aliases={1: 1, 2: 2})
  return tuple(x.reshape(p.shape) for x in out)


def _fused_update(owner, h, xla_leaf, updates, state, params, decay_on, bc1, sqrt_bc2):
  """`scale_by_adamp`'s update with backend="pallas": (u, mu, nu) trees."""
  for x in jax.tree.leaves((state.mu, state.nu)):
    if x.dtype != jnp.float32:
      raise ValueError(f"{owner}: backend='pallas' keeps float32 moments (mu_dtype must be float32 or None)")
  scalars = (h.b1, _numerics.one_minus(h.b1), h.b2, _numerics.one_minus(h.b2), sqrt_bc2, h.eps, bc1)
  leaves, treedef = jax.tree.flatten(updates)
  columns = [leaves] + [treedef.flatten_up_to(t) for t in (state.mu, state.nu, params)]
  flags = treedef.flatten_up_to(decay_on)
  out = [None] * len(leaves)
  plain = []  # Unprojected leaves: the executor packs them, one call per decay flag.
  for i, (g, m, v, p) in enumerate(zip(*columns)):
    if p.ndim > 1 and p.size:
      out[i] = _fused_leaf(h, g, m, v, p, scalars, flags[i])
    if out[i] is None and p.ndim <= 1:
      if not isinstance(flags[i], (bool, np.bool_)):
        raise ValueError(f"{owner}: backend='pallas' needs a concrete (Python bool) weight-decay mask")
      plain.append(i)
    elif out[i] is None:  # A middle channel axis: XLA for this leaf.
      out[i] = xla_leaf(g, m, v, p, flags[i], bc1, sqrt_bc2)
  results = _executor.tree_map(
      functools.partial(_fused_step, h.nesterov), lambda on: scalars + (h.weight_decay if on else 0.0,),
      [[c[i] for i in plain] for c in columns], 3, backend="pallas", aliases={1: 1, 2: 2},
      groups=[bool(flags[i]) for i in plain])
  for k, i in enumerate(plain):
    out[i] = tuple(r[k] for r in results)
  return tuple(treedef.unflatten([o[k] for o in out]) for k in range(3))


def scale_by_adamp(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    *,
    channel_axis: int = -1,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AdamP's projected Adam direction plus its decoupled decay (no lr, no sign).

  Args:
    b1, b2, eps: Adam's (reference 0.9, 0.999, 1e-8).
    weight_decay: decoupled decay, scaled by `wd_ratio` where projected.
    delta: cosine threshold for scale invariance (reference 0.1).
    wd_ratio: weight-decay factor for projected tensors (reference 0.1).
    nesterov: Nesterov momentum in the direction (reference False).
    channel_axis: output-channel axis of rank > 1 tensors (-1: Flax).
    mu_dtype: dtype of the first moment (default: the state dtype).
    mask: Optax-style mask selecting decayed leaves.
    backend: "xla" (default) or "pallas": the fused two-pass projection
      (module docstring); float32 moments. Leaves whose channel axis is
      neither the first nor the last take the XLA path.

  Returns:
    An `optax.GradientTransformation` returning `u / bc1 + wd wd_factor p`.
  """
  owner = "scale_by_adamp"
  _validation.check_decay(owner, "b1", b1)
  _validation.check_mu_dtype(owner, mu_dtype)
  _validation.check_decay(owner, "b2", b2)
  _check_projection_args(owner, eps, delta, wd_ratio, weight_decay, channel_axis)
  _validation.check_backend(owner, backend)
  hyper = _Hyper(b1, b2, eps, weight_decay, delta, wd_ratio, nesterov, channel_axis)

  def xla_leaf(g, m, v, p, on, bc1, sqrt_bc2):
    g32, m, v = _numerics.adam_moments(g, m, v, b1, b2)

    def u_fn(g32, m, v, k):
      inverse_root_bc2, eps_, b1_, one_minus_b1 = k
      direction = b1_ * m + one_minus_b1 * g32 if nesterov else m
      # sqrt(v) / sqrt(bc2) as a product: divisions are slow in XLA:CPU's reductions.
      return direction / (jnp.sqrt(v) * inverse_root_bc2 + eps_)

    k = tuple(jnp.asarray(x, v.dtype) for x in (1.0 / sqrt_bc2, eps, b1, 1.0 - b1))
    u, wd_factor = _project_if_matrix(p, g32, u_fn, (g32, m, v, k), delta, wd_ratio, eps, channel_axis)
    decay = weight_decay * wd_factor * _weight_decay.as_multiplier(on, v.dtype)
    out = u / _numerics.cast_like(bc1, v) + decay * p.astype(v.dtype)
    return out.astype(g.dtype), m.astype(mu_dtype or v.dtype), v

  def init_fn(params):
    _numerics.reject_complex(owner, params, _COMPLEX_REASON)
    _check_channel_axis_in_range(owner, params, channel_axis)
    return ScaleByAdamPState(
        count=jnp.zeros([], jnp.int32),
        mu=_numerics.zeros_like_state(params, mu_dtype),
        nu=_numerics.zeros_like_state(params),
    )

  def update_fn(updates, state, params=None):
    _require_params(owner, params)
    _validation.check_tree_matches(owner, updates, state.nu)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    bc1 = _numerics.bias_correction(b1, t)
    sqrt_bc2 = jnp.sqrt(_numerics.bias_correction(b2, t))
    decay_on = _weight_decay.mask_tree(mask, params)
    if backend == "pallas":
      u, mu, nu = _fused_update(owner, hyper, xla_leaf, updates, state, params, decay_on, bc1, sqrt_bc2)
    else:
      leaf = lambda g, m, v, p, on: xla_leaf(g, m, v, p, on, bc1, sqrt_bc2)
      u, mu, nu = _numerics.tree_map_unzip(leaf, 3, updates, state.mu, state.nu, params, decay_on)
    return u, ScaleByAdamPState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adamp(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    nesterov: bool = False,
    *,
    channel_axis: int = -1,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AdamP (reference defaults: lr 1e-3, betas (0.9, 0.999), delta 0.1, wd_ratio 0.1).

  `chain(scale_by_adamp, -lr)`; see the module docstring for the rule and
  `scale_by_adamp` for the arguments.
  """
  _validation.check_learning_rate("adamp", learning_rate)
  return optax.chain(
      scale_by_adamp(
          b1,
          b2,
          eps,
          weight_decay,
          delta,
          wd_ratio,
          nesterov,
          channel_axis=channel_axis,
          mu_dtype=mu_dtype,
          mask=mask,
          backend=backend,
      ),
      optax.scale_by_learning_rate(learning_rate),
  )


def scale_by_sgdp(
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    *,
    channel_axis: int = -1,
    mu_dtype: Any | None = None,
    mask: Any = None,
) -> optax.GradientTransformation:
  """SGDP's projected momentum direction plus its decay (no lr, no sign).

  Args:
    momentum: momentum factor in [0, 1) (reference 0).
    dampening: the gradient enters the buffer as `(1 - dampening) g` (0).
    weight_decay: decoupled decay, `wd wd_factor / (1 - momentum)` per step.
    nesterov: Nesterov momentum (reference False).
    eps, delta, wd_ratio, channel_axis, mask: as `scale_by_adamp`.
    mu_dtype: storage dtype of the momentum buffer (default: the state
      dtype, at least float32); the arithmetic is in the state dtype.

  Returns:
    An `optax.GradientTransformation` returning
    `d + wd wd_factor p / (1 - momentum)`.
  """
  owner = "scale_by_sgdp"
  _validation.check_mu_dtype(owner, mu_dtype)
  _validation.check_decay(owner, "momentum", momentum)
  _validation.check_range(owner, "dampening", dampening, 0.0, 1.0)
  _check_projection_args(
      owner, eps, delta, wd_ratio, weight_decay, channel_axis
  )

  def init_fn(params):
    _numerics.reject_complex(owner, params, _COMPLEX_REASON)
    _check_channel_axis_in_range(owner, params, channel_axis)
    return ScaleBySGDPState(momentum=_numerics.zeros_like_state(params, mu_dtype))

  def update_fn(updates, state, params=None):
    _require_params(owner, params)
    _validation.check_tree_matches(owner, updates, state.momentum)
    decay_on = _weight_decay.mask_tree(mask, params)

    def leaf(g, buf, p, on):
      dtype = _numerics.state_dtype(g.dtype)

      g32 = g.astype(dtype)
      k = (jnp.asarray(momentum, dtype), jnp.asarray(1.0 - dampening, dtype))
      new_buf = lambda g32, buf, k: k[0] * buf + k[1] * g32

      # From the old buffer, not the new one: the new one is then never a
      # full-size temporary (written, then read back by the projection and
      # the update), only recomputed where it is needed.
      def direction(g32, buf, k):
        return g32 + k[0] * new_buf(g32, buf, k) if nesterov else new_buf(g32, buf, k)

      args = (g32, buf.astype(dtype), k)
      d, wd_factor = _project_if_matrix(p, g32, direction, args, delta, wd_ratio, eps, channel_axis)
      # The reference projects its momentum buffer in place (not with Nesterov).
      buf = new_buf(*args) if nesterov else d
      decay = (
          weight_decay
          * wd_factor
          / (1.0 - momentum)
          * _weight_decay.as_multiplier(on, dtype)
      )
      out = d + decay * p.astype(dtype)
      return out.astype(g.dtype), buf.astype(mu_dtype or dtype)

    u, buf = _numerics.tree_map_unzip(
        leaf, 2, updates, state.momentum, params, decay_on
    )
    return u, ScaleBySGDPState(momentum=buf)

  return optax.GradientTransformation(init_fn, update_fn)


def sgdp(
    learning_rate: optax.ScalarOrSchedule,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    eps: float = 1e-8,
    delta: float = 0.1,
    wd_ratio: float = 0.1,
    *,
    channel_axis: int = -1,
    mu_dtype: Any | None = None,
    mask: Any = None,
) -> optax.GradientTransformation:
  """SGDP (the reference requires lr; momentum 0, delta 0.1, wd_ratio 0.1).

  `chain(scale_by_sgdp, -lr)`; see the module docstring for the rule and
  `scale_by_sgdp` for the arguments.
  """
  _validation.check_learning_rate("sgdp", learning_rate)
  return optax.chain(
      scale_by_sgdp(
          momentum,
          dampening,
          weight_decay,
          nesterov,
          eps,
          delta,
          wd_ratio,
          channel_axis=channel_axis,
          mu_dtype=mu_dtype,
          mask=mask,
      ),
      optax.scale_by_learning_rate(learning_rate),
  )


adamp_projection = project  # The package exports the projection under this name.
