"""Numerical helpers shared by every optimizer in steplab.

Each helper exists because the obvious one-liner loses precision or breaks a
convention that the invariant suite checks; the comment on each says which.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from pallas_kernels import elementwise


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


def learning_rate_at(learning_rate: Any, count: jax.Array) -> Any:
  """A float learning rate, or an Optax schedule's value at `count`."""
  return learning_rate(count) if callable(learning_rate) else learning_rate


def one_minus(decay: Any) -> Any:
  """1 - decay, computed before any rounding to float32.

  For a Python float (0.999) this is exact in double precision (0.001),
  whereas rounding decay to float32 first gives 1 - f32(0.999) =
  0.00099998713, a 1.3e-5 relative error that would carry into every term
  built from it. For an array decay the subtraction is exact anyway.
  """
  return 1.0 - decay


def log_decay(decay: Any) -> jax.Array:
  """log(decay) to full relative precision, via log1p of -(1 - decay)."""
  return jnp.log1p(-jnp.asarray(one_minus(decay), scalar_dtype()))


def bias_correction(decay: Any, t: jax.Array) -> jax.Array:
  """1 - decay ** t, accurate also when decay is close to one.

  `1 - 0.999 ** t` in float32 cancels catastrophically for small t (0.999 ** t
  carries an absolute error of ~6e-8 while the result is ~1e-3 t), a relative
  error of up to 1e-4 in the bias correction. -expm1(t * log(decay)) keeps
  full relative precision for every t (decay = 0 gives log = -inf and
  1 - 0^t = 1).
  """
  return -jnp.expm1(t * log_decay(decay))


def _one_minus_x_over_expm1(x: jax.Array) -> jax.Array:
  """h(x) = 1 - x / expm1(x) for x > 0, without cancellation for small x.

  Series h(x) = x/2 - sum_k B_2k x^2k / (2k)! (Bernoulli numbers, up to
  x^12) below x = 0.5, where the truncation error is below 1e-15 relative;
  the direct formula above, where h > 0.23 and nothing cancels.
  """
  x2 = x * x
  series = x / 2 - x2 * (
      1 / 12 - x2 * (
          1 / 720 - x2 * (
              1 / 30240 - x2 * (
                  1 / 1209600 - x2 * (1 / 47900160 - x2 * (691 / 1307674368000))
              )
          )
      )
  )
  direct = 1.0 - x / jnp.expm1(jnp.maximum(x, 0.5))
  return jnp.where(x < 0.5, series, direct)


def sma_length(b2: Any, t: jax.Array) -> jax.Array:
  """RAdam's rho_t = rho_inf - 2 t b2^t / (1 - b2^t), rho_inf = 2/(1-b2) - 1.

  Written as rho_t = A - 1 + (2/L) h(t L) with L = -log(b2),
  A = 2/(1-b2) - 2/L and h as `_one_minus_x_over_expm1`. The textbook form
  subtracts two numbers near 2/(1-b2) (~2000 for b2 = 0.999) to get ~5, so in
  float32 rho_t would be off by ~4e-4 where the rectification switches on,
  and the rectification term by ~2e-4 relative. A depends on b2 only and is
  computed in double precision when b2 is a Python number.
  """
  if isinstance(b2, (int, float)):
    if b2 == 0.0:  # v is the last g^2: rho_t = rho_inf = 1, never rectified.
      return jnp.ones_like(t)
    log_b2 = math.log1p(-(1.0 - b2))
    a = 2.0 / (1.0 - b2) + 2.0 / log_b2
  else:
    log_b2 = log_decay(b2)
    a = 2.0 / jnp.asarray(one_minus(b2), scalar_dtype()) + 2.0 / log_b2
  neg_log_b2 = -jnp.asarray(log_b2, scalar_dtype())
  return a - 1.0 + 2.0 / neg_log_b2 * _one_minus_x_over_expm1(t * neg_log_b2)


def zeros_like_state(params: Any, dtype: Any = None) -> Any:
  """Zero moments for `params`, in `dtype` or the leaf's state dtype.

  zeros_like, not zeros(shape): under jit the moments then inherit their
  parameters' sharding (FSDP), instead of being created whole on every device.
  """
  return jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype or state_dtype(p.dtype)), params)


def copy_to_state(params: Any) -> Any:
  """A copy of `params` in the state dtype, for state that starts at x_0.

  Always a new buffer: `jnp.asarray` would return the parameter array itself
  when the dtype already matches, and a user who jits the step with both
  params and state donated would then donate one buffer twice (an XLA error),
  or, without donation, keep an alias that an in-place update could clobber.
  """
  return jax.tree.map(lambda p: jnp.array(p, state_dtype(p.dtype), copy=True), params)


def adam_moments(
    g: jax.Array, m: jax.Array, v: jax.Array, b1: Any, b2: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """One leaf's EMA update of g and g^2, computed in the state dtype of v.

  Returns (g, m, v) all in v's dtype (at least float32, see `state_dtype`),
  so bf16 gradients and a bf16 `mu_dtype` first moment are widened before
  they are averaged; the caller casts m back to its storage dtype.
  """
  g = g.astype(v.dtype)
  m = b1 * m.astype(v.dtype) + (1.0 - b1) * g
  if jnp.iscomplexobj(g):  # |g|^2, as optax's scale_by_adam (g * g would be complex).
    v = b2 * v + (1.0 - b2) * abs_sq(g).astype(v.dtype)
  else:
    v = b2 * v + (1.0 - b2) * g * g
  return g, m, v


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


def key_names(path: Any) -> tuple[str, ...]:
  """The names along a JAX key path: dict keys, attribute names, sequence indices."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def in_state_dtype(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformation:
  """`inner` run on gradients and parameters promoted to their state dtype.

  For wrapping Optax blocks that keep their state in the parameter dtype
  (`optax.trace`, `optax.scale_by_adam`'s second moment, Muon's momentum):
  bfloat16 parameters then get float32 state, as everywhere in steplab
  (`state_dtype`), and the updates come back in each gradient's own dtype.
  float32 and float64 leaves pass through unchanged, so the numbers equal
  `inner`'s there.
  """
  inner = optax.with_extra_args_support(inner)

  def promote(tree):
    return jax.tree.map(lambda x: jnp.asarray(x, state_dtype(jnp.result_type(x))), tree)

  def init_fn(params):
    return inner.init(promote(params))

  def update_fn(updates, state, params=None, **extra_args):
    promoted = None if params is None else promote(params)
    new_updates, state = inner.update(promote(updates), state, promoted, **extra_args)
    new_updates = jax.tree.map(lambda u, g: u.astype(jnp.result_type(g)), new_updates, updates)
    return new_updates, state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


from typing import NamedTuple  # pylint: disable=g-import-not-at-top,g-bad-import-order


def safe_norm(x: jax.Array, dtype: Any) -> jax.Array:
  """|x| (Euclidean; the modulus for complex x) in `dtype`, without overflow.

  `sqrt(sum(x^2))` overflows once an element exceeds ~1.8e19 in float32
  (1e20^2 is inf) and underflows below ~1e-19, although the norm itself is
  representable. Scaling by max|x| first (as LAPACK's nrm2) keeps every
  square in [0, 1]. A non-finite element gives a non-finite norm (inf for
  inf, NaN for NaN), never a silent 0; an all-zero (or empty) x gives 0.
  """
  return safe_norm_of(lambda x: x, x, dtype=dtype)


def safe_norm_of(fn: Callable[..., jax.Array], *inputs: jax.Array, dtype: Any) -> jax.Array:
  """`safe_norm(fn(*inputs), dtype)` for an elementwise `fn`, with nothing full-size written.

  The max and the scaled sum each compute fn from the inputs: XLA:CPU writes
  a value shared by two reductions out as a full-size temporary (a DoG step
  held three, 12 bytes per parameter, for its overflow branch), so the
  second pass reads them `unshared` (`pallas_kernels.elementwise.unshared`).
  """
  magnitude = lambda *xs: jnp.abs(fn(*xs)).astype(dtype)
  if math.prod(jnp.shape(inputs[0])) == 0:
    return jnp.zeros([], dtype)
  m = jnp.max(magnitude(*inputs))
  scale = jnp.where((m > 0) & jnp.isfinite(m), m, jnp.ones([], dtype))
  return scale * jnp.sqrt(jnp.sum(jnp.square(magnitude(*elementwise.unshared(inputs)) / scale)))


def combine_norms(norms: Any, dtype: Any) -> jax.Array:
  """The Euclidean norm of a list of norms (the norm of the concatenation), safely."""
  if not norms:
    return jnp.zeros([], dtype)
  return safe_norm(jnp.stack([jnp.asarray(n, dtype) for n in norms]), dtype)


class CompensatedState(NamedTuple):
  """State of `with_compensated_updates`: per leaf, master - params (float32).

  Low-precision leaves (bfloat16, float16) carry the rounding error of their
  parameters; other leaves carry None, no buffer: every state array is one
  more buffer handed to and from each step, and on the CPU a scalar
  placeholder per leaf cost DoG ~7% of its step (tools/bench_step.py).
  """

  residual: Any


def _low_precision(dtype: Any) -> bool:
  """bfloat16, float16 (floating leaves narrower than their state dtype)."""
  return jnp.issubdtype(dtype, jnp.floating) and jnp.dtype(dtype) != state_dtype(dtype)


def with_compensated_updates(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformation:
  """`inner` (a chain whose updates are ADDED to params) on float32 master weights.

  For bfloat16/float16 parameters, a parameter-free method's first steps (a
  d0 = 1e-6 or a reps_rel = 1e-6 relative step) are far below half an ulp of
  the parameter, so `apply_updates` rounds them away, the parameters never
  move and an estimate built from the distance travelled (DoG's rbar,
  Prodigy's d) never grows: the optimizer is frozen for good. Here the inner
  transformation sees master weights x = params + residual and gradients in
  float32, its update moves x in float32, and the update returned (in the
  gradient dtype) takes the parameters to x rounded to their dtype; the
  rounding error is kept in the state (Kahan-style compensation, 4 bytes per
  low-precision parameter). The residual is recomputed from the parameters the
  user actually gets (`optax.apply_updates`), so it stays below an ulp.
  float32/float64 leaves pass through untouched (the same numbers as
  `inner`, None in the residual tree). `inner` must produce the final,
  signed update and its state must be a tuple (an `optax.chain`): the state
  is `inner_state + (CompensatedState,)`.
  """
  inner = optax.with_extra_args_support(inner)

  def master(params, state):
    return jax.tree.map(
        lambda p, r: p.astype(state_dtype(p.dtype)) + r if _low_precision(p.dtype) else p, params, state.residual)

  # None for a float32/float64 leaf: the residual tree has no leaf there.
  residual_of = lambda p: jnp.zeros_like(p, dtype=state_dtype(p.dtype)) if _low_precision(p.dtype) else None

  def init_fn(params):
    promoted = jax.tree.map(lambda p: jnp.asarray(p, state_dtype(jnp.result_type(p))), params)
    residual = jax.tree.map(residual_of, params)
    inner_state = inner.init(promoted)
    return tuple(inner_state) + (CompensatedState(residual),)

  def update_fn(updates, state, params=None, **extra_args):
    comp = state[-1]
    inner_state = tuple(state[:-1])
    if params is None:
      new_updates, inner_state = inner.update(
          jax.tree.map(lambda g: g.astype(state_dtype(g.dtype)), updates), inner_state, None, **extra_args)
      return jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates), inner_state + (comp,)
    x = master(params, comp)
    grads = jax.tree.map(lambda g: g.astype(state_dtype(g.dtype)), updates)
    inner_updates, inner_state = inner.update(grads, inner_state, x, **extra_args)

    def leaf(u, g, p, xm, r):
      if not _low_precision(p.dtype):
        return u.astype(g.dtype), r
      # The roundings are explicit (reduce_precision): under jit XLA may
      # drop a float32 -> bfloat16 -> float32 round trip (excess precision),
      # which would make the residual 0 and the compensation a no-op.
      info = jnp.finfo(p.dtype)
      rounded = lambda y: jax.lax.reduce_precision(y, exponent_bits=info.nexp, mantissa_bits=info.nmant)
      new_master = xm + u.astype(xm.dtype)
      out = rounded(new_master - p.astype(xm.dtype))
      new_p = rounded(p.astype(xm.dtype) + out)  # What optax.apply_updates gives: p + out, rounded once.
      return out.astype(g.dtype), new_master - new_p

    out, residual = tree_map_unzip(leaf, 2, inner_updates, updates, params, x, comp.residual)
    return out, inner_state + (CompensatedState(residual),)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def abs_sq(x: jax.Array) -> jax.Array:
  """|x|^2, real, for real or complex x (optax's numerics.abs_sq).

  For complex x, x * x (or jnp.square) is a complex number, not the squared
  magnitude a second moment needs. Real x gives x * x unchanged.
  """
  if jnp.iscomplexobj(x):
    return jnp.square(jnp.real(x)) + jnp.square(jnp.imag(x))
  return x * x


def scaled_abs_sq(coef: Any, x: jax.Array) -> jax.Array:
  """coef |x|^2 (0 <= coef <= 1) as |x| (coef |x|): finite whenever the result is.

  For second moments fed a finite gradient whose square overflows (1e20 in
  float32): (1 - b2) |g|^2 fits although |g|^2 does not. (Not
  (sqrt(coef) |x|)^2: XLA folds that back into coef |x|^2 and overflows
  again; and no optimization barrier, which Pallas kernels cannot lower.)
  Callers use it only where the plain product overflowed, so ordinary
  numbers are unchanged.
  """
  real = jnp.abs(x)
  return real * (jnp.real(jnp.asarray(coef)).astype(real.dtype) * real)


def sqrt_ratio(v: jax.Array, c: Any) -> jax.Array:
  """sqrt(v / c), or sqrt(v) / sqrt(c) where v / c alone overflows (v finite).

  Bias-corrected roots sqrt(v / bc2) with bc2 ~ 1e-3 overflow for v above
  ~3e35 in float32 although the root is ~1e19; the plain form is kept
  everywhere else (the references' rounding).
  """
  root = jnp.sqrt(v / c)
  return jnp.where(jnp.isinf(jnp.real(root)) & jnp.isfinite(v), jnp.sqrt(v) / jnp.sqrt(c), root)


def reject_complex(owner: str, params: Any, reason: str) -> None:
  """Raises ValueError naming `owner` if any leaf of `params` is complex.

  For rules that are undefined on complex numbers (ordering: clip, min;
  real-only projections), where a silent step would be a wrong number.
  Runs at trace time (dtypes are static).
  """
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if jnp.iscomplexobj(leaf):
      raise ValueError(
          f"{owner}: complex parameters are not supported ({reason}); the leaf at"
          f" {jax.tree_util.keystr(path)} is {jnp.result_type(leaf)}."
      )


def complex_as_real(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformation:
  """`inner` with each complex leaf seen as a real leaf of (re, im) pairs.

  A complex leaf of shape S becomes a real leaf of shape S + (2,) (its real
  and imaginary parts on a new last axis) for params, gradients and so for
  the state; the updates come back as complex leaves. The optimizer then runs
  on C^n exactly as on R^2n (the same trajectory as the real problem split
  into parts), whatever products, norms or moments it forms, with no
  conj-awareness needed inside. Real leaves pass through untouched.
  """
  inner = optax.with_extra_args_support(inner)

  def split(x):
    return jnp.stack([jnp.real(x), jnp.imag(x)], -1) if jnp.iscomplexobj(x) else x

  def merge(u, g):
    return jax.lax.complex(u[..., 0], u[..., 1]).astype(jnp.result_type(g)) if jnp.iscomplexobj(g) else u

  def init_fn(params):
    return inner.init(jax.tree.map(split, params))

  def update_fn(updates, state, params=None, **extra_args):
    real_params = None if params is None else jax.tree.map(split, params)
    new_updates, state = inner.update(jax.tree.map(split, updates), state, real_params, **extra_args)
    return jax.tree.map(merge, new_updates, updates), state

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
