"""Induced-metric optimisers: smoothed gradient clipping around any preconditioner.

The loss landscape y = L(x) embedded in R^{n+1} induces on parameter space the
metric G = P^-1 + xi g g^T over a base preconditioner P (P = I for SGD). By
Sherman-Morrison its natural-gradient step is

    G^-1 g = P g / (1 + xi g^T P g),

the base step, shortened where the gradient is large in the base metric: a
smooth gradient clipping. The author's code smooths the trace xi g^T P g with a
bias-corrected EMA and applies the factor to the base's (momentum) direction.
At step t (from 1), with d_t the base direction (bias-corrected momentum, times
P for the rms variant):

    tr_t  = xi <g_t, P_t g_t>                     (one scalar over the tree)
    mu_t  = beta mu_{t-1} + (1 - beta) tr_t,      mu_hat = mu_t / (1 - beta^t)
    s_t   = 1 / (1 + |mu_hat|)                    (log variant: L / (L^2 + mu_hat),
                                                   0 where L = mu_hat = 0: the reference's 0/0)
    p    -= lr_t (s_t d_t + wd p)                 (weight decay not scaled by s_t)

`scale_by_induced_metric(base, preconditioner=...)` turns any direction-producing
transformation into its induced-metric version: `base` gives d_t, and
`preconditioner(grads, base_state)` gives P_t g_t for the trace (an Optax state
does not expose its P, so the caller says how to read it; `adam_preconditioner`
does so for `optax.scale_by_adam` and steplab's RAdam states). Without a
preconditioner P = I.

Defaults (the author's current code): lr 0.1, momentum 0.9, xi 0.1, beta 0.8
(older commits had 0.1), b_rms 0.99, eps 1e-8, weight decay 0. Tuned xi on real
networks is tiny (1e-8 .. 1e-5).

Reference:
  T. R. Harvey, "Induced metric optimisers", arXiv:2509.03594.
  Code: github.com/harveyThomas4692/Induced-Metric-Optimiser (optimisers/
  torch_imp.py, jax_imp.py: CustomSGD, CustomSGDRMS, CustomSGDLog). No PyPI
  package carries it; golden data come from `tools/induced_metric_reference.py`,
  a NumPy transcription of the equations above.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _numerics
from optimizers import _validation
from pallas_kernels import reductions

__all__ = ("adam_preconditioner", "induced_metric_log", "induced_metric_rms", "induced_metric_sgd",
    "scale_by_induced_metric", "ScaleByDebiasedMomentsState", "ScaleByInducedMetricState")

Preconditioner = Callable[[optax.Updates, optax.OptState], optax.Updates]


class ScaleByInducedMetricState(NamedTuple):
  """State of `scale_by_induced_metric`: count, the trace EMA, the base's state."""

  count: chex.Array
  trace_ema: chex.Array
  base: optax.OptState


class ScaleByDebiasedMomentsState(NamedTuple):
  """State of the reference's own base: count, momentum and (rms) the g^2 EMA."""

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates | None


def _scale_by_debiased_moments(momentum: Any, b_rms: Any = None, eps: Any = 0.0) -> optax.GradientTransformation:
  """m_t / (1 - rho^t), times 1 / (sqrt(v_t / (1 - b_rms^t)) + eps) if b_rms.

  The references' direction (momentum SGD, or Adam's with eps outside the
  root). Moments live in the state dtype (float32 for bf16 parameters), which
  `optax.ema` / `optax.scale_by_adam` do not do for the second moment.
  """

  def init_fn(params):
    return ScaleByDebiasedMomentsState(
        count=jnp.zeros([], jnp.int32),
        mu=_numerics.zeros_like_state(params),
        nu=None if b_rms is None else _numerics.zeros_like_state(params),
    )

  def update_fn(updates, state, params=None):
    del params
    _validation.check_tree_matches("induced metric", updates, state.mu)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    correction1 = _numerics.bias_correction(momentum, t)
    if b_rms is None:
      mu = jax.tree.map(lambda g, m: momentum * m + _numerics.one_minus(momentum) * g.astype(m.dtype), updates, state.mu)
      direction = jax.tree.map(lambda g, m: (m / _numerics.cast_like(correction1, m)).astype(g.dtype), updates, mu)
      return direction, ScaleByDebiasedMomentsState(count, mu, None)
    inverse_root2 = jax.lax.rsqrt(_numerics.bias_correction(b_rms, t))

    def leaf(g, m, v):
      _, m, v = _numerics.adam_moments(g, m, v, momentum, b_rms)
      # sqrt(v / (1 - b_rms^t)) as sqrt(v) times a scalar: finite for every
      # finite v without an overflow branch, and cheaper per element.
      root = jnp.sqrt(v) * _numerics.cast_like(inverse_root2, v) + eps
      return (m / _numerics.cast_like(correction1, m) / root).astype(g.dtype), m, v

    direction, mu, nu = _numerics.tree_map_unzip(leaf, 3, updates, state.mu, state.nu)
    return direction, ScaleByDebiasedMomentsState(count, mu, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def adam_preconditioner(b2: Any = 0.999, eps: Any = 1e-8) -> Preconditioner:
  """P g = g / (sqrt(nu / (1 - b2^t)) + eps) from an Adam-style base state.

  Reads `nu` and `count` from the one state in the base's state tree that has
  both (`optax.scale_by_adam`, steplab's `scale_by_radam`; found also inside a
  chain or `inject_hyperparams`). `b2` and `eps` must be the base's. For RAdam
  this is the adaptive metric without the rectification factor.
  """

  def is_adam_state(x):
    return hasattr(x, "nu") and hasattr(x, "count") and not isinstance(x, ScaleByInducedMetricState)

  def precondition(grads, base_state):
    found = [x for x in jax.tree.leaves(base_state, is_leaf=is_adam_state) if is_adam_state(x)]
    if len(found) != 1:
      raise ValueError(
          "adam_preconditioner: the base state must hold exactly one state with `nu` and"
          f" `count` (an Adam-style moment), found {len(found)}; pass your own"
          " `preconditioner(grads, base_state) -> P grads`."
      )
    state = found[0]
    t = _numerics.step_count(state.count)
    inverse_root = jax.lax.rsqrt(_numerics.bias_correction(b2, t))

    def leaf(g, v):
      # sqrt(v) / sqrt(1 - b2^t), as sqrt(v) times a scalar: finite for every
      # finite v, so no overflow branch (a select, which XLA:CPU's reduction
      # kernels do not fuse) and one division per element (they are slow
      # there). v and the scalars pass a barrier, per leaf: otherwise XLA
      # shares the root with the base's direction (and the scalars'
      # broadcasts across leaves of one shape) and materialises them as
      # full-size temporaries.
      v, scale, eps_ = jax.lax.optimization_barrier(
          (v, _numerics.cast_like(inverse_root, v), jnp.asarray(eps, v.dtype)))
      return g / (jnp.sqrt(v) * scale + eps_)

    return jax.tree.map(leaf, grads, state.nu)

  return precondition


def _tree_vdot(a: Any, b: Any, dtype: Any) -> jax.Array:
  """sum over leaves of Re <a, b> (conj(a) . b), accumulated in `dtype`.

  A sum of elementwise products, not jnp.vdot: vdot flattens both arrays
  first, and flattening a parameter sharded along a minor dimension makes
  XLA all-gather it; the elementwise product keeps each shard's partial sum,
  all-reduced (tests/sharding_test.py). Complex leaves are conjugated (|g|^2
  for <g, g>), not cast to `dtype`, which would drop their imaginary parts.
  """

  def dot(x, y):
    if jnp.iscomplexobj(x) or jnp.iscomplexobj(y):
      wide = jnp.promote_types(jnp.result_type(x, y), dtype)
      return jnp.sum(jnp.real(jnp.conj(x.astype(wide)) * y.astype(wide))).astype(dtype)
    return jnp.sum(x.astype(dtype) * y.astype(dtype))

  pairs = list(zip(jax.tree.leaves(a), jax.tree.leaves(b)))
  # Small real vectors (biases, norm scales) in one reduction: XLA:CPU runs
  # every reduction as its own kernels, whose launches cost more than such
  # leaves (the barrier keeps XLA from splitting sum(concatenate) back into
  # sums). Never matrices: concatenating a sharded one would gather it.
  small = {i for i, (x, y) in enumerate(pairs)
           if x.ndim <= 1 and x.size < _SMALL and not (jnp.iscomplexobj(x) or jnp.iscomplexobj(y))}
  total = jnp.zeros([], dtype)
  if small:
    products = jnp.concatenate([(x.astype(dtype) * y.astype(dtype)).ravel()
                                for i, (x, y) in enumerate(pairs) if i in small])
    total = jnp.sum(jax.lax.optimization_barrier(products))
  return sum((dot(x, y) for i, (x, y) in enumerate(pairs) if i not in small), total)


_SMALL = 1 << 14  # Elements: a vector below this joins the others' one reduction.


def _trace_ema(previous: jax.Array, dot: jax.Array, xi: Any, beta: Any, grads: Any) -> jax.Array:
  """mu_t = beta mu_{t-1} + (1 - beta) xi <g, P g>, kept finite where it overflows.

  `grads` is the gradient tree when P = I (its overflow-safe norm then
  recomputes an overflowed |g|^2), else None. In the scalar dtype.
  """
  dtype = _numerics.scalar_dtype()
  trace = xi * dot
  trace_ema = beta * previous + _numerics.one_minus(beta) * trace
  if grads is not None:
    # |g|^2 overflows for a finite |g| above ~1.8e19 (float32 scalars), while
    # the EMA's term (1 - beta) xi |g|^2 may still fit: recompute it from
    # the overflow-safe norm there (only there: the numbers are unchanged
    # elsewhere).
    def rescaled():
      norm = _numerics.combine_norms(
          [_numerics.safe_norm(g, dtype) for g in jax.tree.leaves(grads)], dtype)
      term = _numerics.scaled_abs_sq(_numerics.one_minus(beta) * jnp.asarray(xi, dtype), norm)
      return beta * previous + term

    trace_ema = jax.lax.cond(jnp.isinf(trace_ema) & jnp.isinf(dot), rescaled, lambda: trace_ema)
  # A finite gradient above ~1.8e19 (float32 scalars, no x64) makes xi |g|^2
  # overflow to inf, and an inf EMA would zero every later step for good.
  # The EMA is capped at the largest finite value instead: that step's
  # factor is ~0 (the true 1 / (1 + mu_hat) is below float32's range too),
  # and the EMA decays back by beta per step. A non-finite gradient still
  # gives a non-finite update (inf * 0); NaN stays NaN.
  return jnp.minimum(trace_ema, jnp.finfo(trace_ema.dtype).max)


def _factor(trace_hat: jax.Array, loss: Any) -> jax.Array:
  """s_t: 1 / (1 + |mu_hat|), or L / (L^2 + mu_hat) for the log variant (`loss` L given, else None)."""
  if loss is None:
    return 1.0 / (1.0 + jnp.abs(trace_hat))
  loss = jnp.asarray(loss, trace_hat.dtype)
  denominator = jnp.square(loss) + trace_hat
  # At an exact minimum (L = 0, g = 0) the reference divides 0 by 0 and
  # writes NaN into the parameters; there is nothing to step, so 0.
  safe = jnp.where(denominator == 0, 1.0, denominator)
  return jnp.where(denominator == 0, 0.0, loss / safe)


def scale_by_induced_metric(
    base: optax.GradientTransformation | None = None,
    xi: float = 0.1,
    beta: float = 0.8,
    *,
    preconditioner: Preconditioner | None = None,
    use_loss: bool = False,
    backend: str = "xla",
) -> optax.GradientTransformationExtraArgs:
  """Scales the base's direction by the induced-metric factor (no sign flip).

  Args:
    base: the transformation giving the direction d_t (e.g.
      `optax.ema(0.9, debias=True)` for momentum SGD, `optax.scale_by_adam`);
      None: the gradient itself.
    xi: weight of the gradient term in the metric (reference 0.1).
    beta: EMA decay of the trace (reference 0.8).
    preconditioner: `(grads, new_base_state) -> P grads` for the trace
      xi <g, P g>; None: P = I.
    use_loss: the log variant, s = L / (L^2 + mu_hat) with the current loss L
      passed to `update` as `value=` (required then).
    backend: "xla" (default) or "pallas": the trace <g, P g> as a fused
      reduction (`pallas_kernels.reductions`, float32 accumulation).

  Returns:
    An `optax.GradientTransformationExtraArgs`; extra arguments also reach the base.
  """
  owner = "scale_by_induced_metric"
  _validation.check_backend(owner, backend)
  _validation.check_non_negative(owner, "xi", xi)
  _validation.check_decay(owner, "beta", beta)
  base = optax.with_extra_args_support(base if base is not None else optax.identity())

  def init_fn(params):
    if backend == "pallas":
      _numerics.reject_complex(owner, params, "backend='pallas' is real-only; use backend='xla'")
    dtype = _numerics.scalar_dtype()
    return ScaleByInducedMetricState(
        count=jnp.zeros([], jnp.int32), trace_ema=jnp.zeros([], dtype), base=base.init(params)
    )

  def update_fn(updates, state, params=None, **extra_args):
    value = extra_args.get("value")
    if use_loss and value is None:
      raise ValueError(
          "induced_metric_log (scale_by_induced_metric(use_loss=True)): the current loss is required; call"
          " `update(grads, state, params, value=loss)`."
      )
    direction, base_state = base.update(updates, state.base, params, **extra_args)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    metric_g = updates if preconditioner is None else preconditioner(updates, base_state)
    if backend == "pallas":
      _numerics.reject_complex(owner, updates, "backend='pallas' is real-only; use backend='xla'")
      dot = reductions.tree_sums(lambda _, g, pg: (g * pg,), (), [updates, metric_g])[0].astype(t.dtype)
    else:
      dot = _tree_vdot(updates, metric_g, t.dtype)
    # With P = I, `_trace_ema` recomputes an overflowed |g|^2 from the gradients' norm.
    trace_ema = _trace_ema(state.trace_ema, dot, xi, beta, updates if preconditioner is None else None)
    trace_hat = trace_ema / _numerics.bias_correction(beta, t)
    scale = _factor(trace_hat, value if use_loss else None)
    direction = jax.tree.map(lambda d: (d * _numerics.cast_like(scale, d)).astype(d.dtype), direction)
    return direction, ScaleByInducedMetricState(count=count, trace_ema=trace_ema, base=base_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _induced_metric(
    owner: str,
    base: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    xi: float,
    beta: float,
    weight_decay: Any,
    mask: Any,
    preconditioner: Preconditioner | None = None,
    use_loss: bool = False,
    backend: str = "xla",
) -> optax.GradientTransformationExtraArgs:
  """The three aliases: induced-metric block, unscaled decoupled decay, -lr."""
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  return optax.chain(
      scale_by_induced_metric(base, xi, beta, preconditioner=preconditioner, use_loss=use_loss,
                              backend=backend),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )


def induced_metric_sgd(
    learning_rate: optax.ScalarOrSchedule = 0.1,
    momentum: float = 0.9,
    xi: float = 0.1,
    beta: float = 0.8,
    weight_decay: float = 0.0,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformationExtraArgs:
  """Induced-metric SGD (reference `CustomSGD`): P = I, bias-corrected momentum.

  Equivalent to `scale_by_induced_metric(optax.ema(rho, debias=True))` then
  decay and -lr, with the momentum kept in float32 for bfloat16 parameters.

    m_t = rho m + (1 - rho) g,  d_t = m_t / (1 - rho^t),  tr_t = xi |g|^2
    p  -= lr (d_t / (1 + |mu_hat|) + wd p)

  Args:
    learning_rate: float or Optax schedule (reference 0.1).
    momentum: rho, EMA decay of the gradient (reference 0.9).
    xi, beta: metric weight and trace EMA decay (reference 0.1, 0.8).
    weight_decay: decoupled, not scaled by the metric factor (reference 0).
    mask: Optax weight-decay mask.
    backend: "xla" (default) or "pallas" (the trace as a fused reduction).
  """
  _validation.check_decay("induced_metric_sgd", "momentum", momentum)
  return _induced_metric(
      "induced_metric_sgd", _scale_by_debiased_moments(momentum), learning_rate, xi, beta, weight_decay, mask,
      backend=backend,
  )


def induced_metric_rms(
    learning_rate: optax.ScalarOrSchedule = 0.1,
    momentum: float = 0.9,
    xi: float = 0.1,
    beta: float = 0.8,
    b_rms: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformationExtraArgs:
  """Induced-metric RMS (reference `CustomSGDRMS`): Adam's P and direction.

    v_t = b_rms v + (1 - b_rms) g^2,  P_t = 1 / (sqrt(v_t / (1 - b_rms^t)) + eps)
    d_t = P_t m_t / (1 - rho^t),      tr_t = xi sum g^2 P_t

  i.e. `scale_by_induced_metric(optax.scale_by_adam(rho, b_rms, eps),
  preconditioner=adam_preconditioner(b_rms, eps))`, with the moments kept in
  float32 for bfloat16 parameters.

  Args:
    learning_rate: float or Optax schedule (reference 0.1).
    momentum: rho (reference 0.9).
    xi, beta: metric weight and trace EMA decay (reference 0.1, 0.8).
    b_rms: EMA decay of g^2 (reference 0.99).
    eps: added to the root (reference 1e-8).
    weight_decay: decoupled, not scaled by the metric factor (reference 0).
    mask: Optax weight-decay mask.
    backend: "xla" (default) or "pallas" (the trace as a fused reduction).
  """
  owner = "induced_metric_rms"
  _validation.check_decay(owner, "momentum", momentum)
  _validation.check_decay(owner, "b_rms", b_rms)
  _validation.check_non_negative(owner, "eps", eps)
  return _induced_metric(
      owner, _scale_by_debiased_moments(momentum, b_rms, eps), learning_rate, xi, beta, weight_decay, mask,
      preconditioner=adam_preconditioner(b_rms, eps), backend=backend,
  )


def induced_metric_log(
    learning_rate: optax.ScalarOrSchedule = 0.1,
    momentum: float = 0.9,
    xi: float = 0.1,
    beta: float = 0.8,
    weight_decay: float = 0.0,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformationExtraArgs:
  """Induced-metric SGD on log L (reference `CustomSGDLog`).

  As `induced_metric_sgd` with the factor L / (L^2 + mu_hat) for the current
  loss L, which `update` needs as `value=`:
  `opt.update(grads, state, params, value=loss)` (a clear error without it).

  Args:
    learning_rate: float or Optax schedule (reference 0.1).
    momentum: rho (reference 0.9).
    xi, beta: metric weight and trace EMA decay (reference 0.1, 0.8).
    weight_decay: decoupled, not scaled by the metric factor (reference 0).
    mask: Optax weight-decay mask.
    backend: "xla" (default) or "pallas" (the trace as a fused reduction).
  """
  _validation.check_decay("induced_metric_log", "momentum", momentum)
  return _induced_metric(
      "induced_metric_log", _scale_by_debiased_moments(momentum), learning_rate, xi, beta, weight_decay, mask,
      use_loss=True, backend=backend,
  )
