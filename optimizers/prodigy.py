"""Prodigy, numerically as the reference `prodigyopt` 1.1.2.

Prodigy is Adam whose learning rate is scaled by d, an estimate of the
distance to the solution that only grows. With k the number of steps taken so
far, bc = sqrt(1 - b2^(k+1)) / (1 - b1^(k+1)) if `use_bias_correction` else 1,
and the OLD d:

    dlr = d lr bc
    r   = b3 r + (d / d0) dlr <g, x0 - x>            (over the whole tree)
    m   = b1 m + (1 - b1) d g,     v = b2 v + (1 - b2) d^2 g^2
    s   = b3 s + (d / d0) dlr g     (safeguard_warmup: (d / d0) d g)
    D   = sum |s|                                     (over the whole tree)
    if D == 0: stop here (no step; k does not advance; m, v, s keep the update)
    d_hat = d_coef r / D;   if d == d0: d = max(d, d_hat)
    d_max = max(d_max, d_hat);   d_new = min(d_max, d growth_rate)
    x  -= wd dlr x                                    (decoupled weight decay)
    x  -= dlr m / (sqrt(v) + d_new eps)               (b1 > 0)
    x  -= dlr d_new g / (sqrt(v) + d_new eps)         (b1 = 0: no m at all)

Coupled weight decay (`decouple=False`) adds `wd x` to g first. The learning
rate enters d's statistics, so it lives inside `scale_by_prodigy` (a float or an
Optax schedule; the schedule is indexed by its own counter, which advances on
every call, so a warmup from 0 is not stuck at a step that does nothing). With
lr = 0 the reference skips the step entirely (no statistic changes); so does
this. `slice_p` keeps x0 and s for every slice_p-th element of each flattened
leaf to save memory. d, d_max and r are global: the sums are plain `jnp`
reductions over the tree, which XLA computes on sharded leaves without
gathering them (with `slice_p > 1`, slicing a flattened sharded leaf can move
data).

Differences from the reference, each deliberate:
  * A zero gradient (D == 0) takes no step and does not advance k, as the
    reference; `optax.contrib.prodigy` divides by D and returns NaN there.
  * `slice_p > 1` subsamples each leaf in its own (Flax) layout; the reference
    flattens PyTorch's (out, in, ...) layout, so for tensors of rank >= 2 the
    sampled elements (and so d) differ from a torch run on transposed weights.
  * The reference computes the statistics with `.item()` in Python doubles
    even for float32 tensors; here they are in `_numerics.scalar_dtype()`
    (float64 with x64, else float32).
  * A NaN learning rate (a broken schedule) is not skipped: the reference's
    `lr > 0` test would skip every step silently; here `lr <= 0` skips (as
    the reference for 0 and negative values) and NaN reaches d and the
    parameters. Concrete hyperparameters are checked when the optimizer is
    built (finite real numbers in range; growth_rate may be inf): a string,
    list, None, inf or NaN raises ValueError naming the argument. Traced
    (inject_hyperparams) values and schedules cannot be checked there.
  * bfloat16/float16 parameters: `prodigy` runs on float32 master weights
    (`_numerics.with_compensated_updates`; the reference, in bf16, rounds the
    d0-sized first steps away, x never leaves x0 and d never grows: frozen).
    The building block `scale_by_prodigy` alone sees the parameters as given.
  * Complex parameters: each complex leaf is optimized as the real leaf of
    its (re, im) parts (`_numerics.complex_as_real`), so Prodigy on C^n is
    exactly Prodigy on R^2n (v per real component; the dot product is the
    real one, Re<conj(g), x0 - x>; D sums |re s| + |im s|). Gradients follow
    Optax's convention (pass conj(jax.grad) for a real loss). The reference
    has no complex support.

Non-finite gradients behave as in the reference: a NaN (or inf) makes the
dot product and D NaN; `D == 0` is False, so the step is taken; d_hat is NaN
and Python's max/min (reproduced here: a NaN never replaces d or d_max) keep
d, which stays frozen from then on (the numerator stays NaN); the NaN reaches
m, v and the parameters it touched, which become NaN; the other parameters
keep moving and the step count advances. Nothing is skipped silently. Wrap
the optimizer in `optax.apply_if_finite` to skip such steps instead.

Float32: early on x - x0 is a few ulps of x, so <g, x0 - x> amplifies ulp-level
differences in x; torch's own float32 run differs from its float64 run by up to
~1e-3 relative in d. Golden data pins float64 to 1e-10; float32 is compared to
the float64 reference trajectory at torch's own float32 error (see
tests/prodigy_test.py).

Defaults are the reference's: lr 1, betas (0.9, 0.999), b3 = sqrt(b2),
eps 1e-8, weight_decay 0, decouple True, use_bias_correction False,
safeguard_warmup False, d0 1e-6, d_coef 1, growth_rate inf, slice_p 1.

References:
  Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
  Learner", ICML 2024, https://arxiv.org/abs/2306.06101.
  Code: github.com/konstmish/prodigy (PyPI `prodigyopt` 1.1.2).
"""

from __future__ import annotations

import functools
import inspect
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _executor
from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay

__all__ = ("prodigy", "scale_by_prodigy", "ScaleByProdigyState")


class ScaleByProdigyState(NamedTuple):
  """State of `scale_by_prodigy`.

  `count` is Prodigy's k (steps taken); `schedule_count` indexes the learning
  rate schedule and advances on every call. `mu` is None when b1 = 0.
  """

  count: chex.Array
  schedule_count: chex.Array
  d: chex.Array
  d_max: chex.Array
  numerator: chex.Array
  mu: optax.Updates | None
  nu: optax.Updates
  init_params: optax.Updates  # x0, sliced.
  s: optax.Updates  # Sliced.

  def estimated_d(self) -> chex.Array:
    """The current distance estimate d (`optimizers.estimated_d`)."""
    return self.d


def _active(lr: jax.Array) -> jax.Array:
  """Whether the step happens: lr <= 0 skips it (the reference's `lr > 0`).

  A NaN learning rate (e.g. a broken schedule) is NOT skipped: the reference's
  `lr > 0` would skip every step silently; here NaN reaches d and the
  parameters, so the failure is visible.
  """
  return jnp.logical_not(lr <= 0)


def _sliced(x: jax.Array, slice_p: int) -> jax.Array:
  """Every slice_p-th element of the flattened leaf (the leaf itself if 1)."""
  return x if slice_p == 1 else jnp.reshape(x, (-1,))[::slice_p]


# The per-element rules, shared by both backends (`_executor`). Each computes
# in the state dtype of its last operand; `coupled_wd` is wd (decay flag) for
# coupled decay, else 0.


def _gradient(g, p, coupled_wd, like):
  """The gradient the statistics see: g, plus wd p for coupled decay."""
  g = g.astype(like.dtype)
  if isinstance(coupled_wd, float) and coupled_wd == 0.0:  # Decoupled: XLA keeps g + 0 p as a pass.
    return g
  return g + _numerics.cast_like(coupled_wd, g) * p.astype(g.dtype)


def _s_update(g, s, beta3, s_coef):
  """s after one step (g sliced like s)."""
  cast = _numerics.cast_like
  return cast(beta3, s) * s + cast(s_coef, s) * g.astype(s.dtype)


def _keep(active, new, old):
  """`new` where the step is taken (lr > 0), else `old` (the reference skips it)."""
  return jnp.where(active > 0.5, new, old)


def _sums_rule(scalars, g, p, p0, s):
  """Per element: g (x0 - x) and |s'|, the numerator's dot product and D (one read)."""
  coupled_wd, beta3, s_coef = scalars[:3]
  g = _gradient(g, p, coupled_wd, s)
  return g * (p0 - p.astype(p0.dtype)), jnp.abs(_s_update(g, s, beta3, s_coef))


def _s_rule(scalars, g, p, s):
  """s' (kept when the step is skipped)."""
  coupled_wd, beta3, s_coef, *_, active = scalars
  return (_keep(active, _s_update(_gradient(g, p, coupled_wd, s), s, beta3, s_coef), s),)


def _moments_rule(scalars, g, p, v, *m):
  """v' and m' (no m when b1 = 0), kept when the step is skipped."""
  coupled_wd, _, _, b1, d_one_minus_b1, b2, d2_one_minus_b2, active = scalars
  cast = _numerics.cast_like
  g = _gradient(g, p, coupled_wd, v)
  out = (_keep(active, cast(b2, v) * v + cast(d2_one_minus_b2, v) * g * g, v),)
  return out + tuple(_keep(active, cast(b1, x) * x + cast(d_one_minus_b1, x) * g, x) for x in m)


def _statistics_rule(scalars, g, p, s, v, *m):
  """(s', v'[, m']) in one pass (s unsliced)."""
  return _s_rule(scalars, g, p, s) + _moments_rule(scalars, g, p, v, *m)


def _step_rule(scalars, g, p, v, *m, traced_b1=False):
  """old x - new x, formed as the reference: decay, then the step, each rounded.

  With Prodigy's d amplifying rounding differences, float32 parity needs the
  reference's roundings (addcdiv's order: (value t1) / t2).
  """
  coupled_wd, dlr, dlr_d_new, d_eps, decayed_dlr_wd, moves, b1_is_zero = scalars
  cast = _numerics.cast_like
  g = _gradient(g, p, coupled_wd, v)
  denom = jnp.sqrt(v) + cast(d_eps, v)
  from_g = cast(dlr_d_new, v) * g / denom  # b1 = 0: g and the NEW d.
  direction = cast(dlr, v) * m[0] / denom if m else from_g
  if m and traced_b1:
    direction = jnp.where(b1_is_zero > 0.5, from_g, direction)
  x = p.astype(v.dtype)
  x_decayed = x - cast(decayed_dlr_wd, v) * x
  return (jnp.where(moves > 0.5, x - (x_decayed - direction), 0.0).astype(p.dtype),)


def _new_d(numerator, denominator, active, d, d_max, d0, d_coef, growth_rate):
  """(moves, d_max', d'): whether the step happens (lr > 0, D != 0) and the new estimates.

  As the reference's Python `max(a, b)` / `min(a, b)` (b replaces a only if
  b > a, resp. b < a), so a NaN d_hat (a NaN or inf in a gradient) leaves d
  and d_max as they were while the step itself goes ahead (`D == 0` is
  False for a NaN D): the NaN reaches the parameters, as in the reference.
  """
  moves = active & jnp.logical_not(denominator == 0)
  d_hat = d_coef * numerator / jnp.where(moves, denominator, 1.0)
  d_grown = jnp.where((d == d0) & (d_hat > d), d_hat, d)
  d_max = jnp.where(d_hat > d_max, d_hat, d_max)
  d_grown = d_grown * growth_rate
  return moves, d_max, jnp.where(d_grown < d_max, d_grown, d_max)


def _check_args(owner, learning_rate, b1, b2, b3, eps, weight_decay, d0, d_coef, growth_rate, slice_p, backend):
  _validation.check_backend(owner, backend)
  if backend == "pallas" and slice_p != 1:
    raise ValueError(f"{owner}: backend='pallas' needs slice_p=1, got {slice_p}; use backend='xla'.")
  if backend == "pallas" and _validation.concrete_value(b1) is None:
    raise ValueError(f"{owner}: backend='pallas' needs a concrete b1 (not injected); use backend='xla'.")
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_decay(owner, "b1", b1)
  _validation.check_decay(owner, "b2", b2)
  if b3 is not None:
    _validation.check_decay(owner, "b3", b3)
  _validation.check_non_negative(owner, "eps", eps)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  _validation.check_positive(owner, "d0", d0)
  _validation.check_positive(owner, "d_coef", d_coef)
  # inf (the default) is unbounded growth.
  _validation.check_range(owner, "growth_rate", growth_rate, 0.0, low_inclusive=False)
  if not isinstance(slice_p, int) or isinstance(slice_p, bool) or slice_p < 1:
    raise ValueError(f"{owner}: `slice_p` must be an int >= 1, got {slice_p!r}.")


def _init(params, d0, slice_p, keep_mu):
  dtype = _numerics.scalar_dtype()
  init_params = _numerics.copy_to_state(jax.tree.map(lambda p: _sliced(p, slice_p), params))
  return ScaleByProdigyState(
      count=jnp.zeros([], jnp.int32), schedule_count=jnp.zeros([], jnp.int32),
      d=jnp.asarray(d0, dtype), d_max=jnp.asarray(d0, dtype), numerator=jnp.zeros([], dtype),
      mu=_numerics.zeros_like_state(params) if keep_mu else None, nu=_numerics.zeros_like_state(params),
      init_params=init_params, s=jax.tree.map(jnp.zeros_like, init_params))


def _bias_correction(count, b1, b2, use_bias_correction):
  """sqrt(1 - b2^(k+1)) / (1 - b1^(k+1)) in dlr, or 1 (the reference's default)."""
  if not use_bias_correction:
    return 1.0
  k_plus_1 = _numerics.step_count(count + 1)
  return jnp.sqrt(_numerics.bias_correction(b2, k_plus_1)) / _numerics.bias_correction(b1, k_plus_1)


def _beta3(b2, b3, dtype):
  if b3 is not None:
    return b3
  if isinstance(b2, (int, float)):
    return math.sqrt(b2)  # In double precision, as the reference.
  return jnp.sqrt(jnp.asarray(b2, dtype))


def _step_scalars(state, learning_rate, b1, b2, b3, d0, use_bias_correction, safeguard_warmup):
  """(b3, dlr, s's coefficient, whether the step happens), from the OLD d, in the scalar dtype."""
  dtype, d = _numerics.scalar_dtype(), state.d
  lr = jnp.asarray(_numerics.learning_rate_at(learning_rate, state.schedule_count), dtype)
  beta3, dlr = _beta3(b2, b3, dtype), d * lr * _bias_correction(state.count, b1, b2, use_bias_correction)
  return beta3, dlr, d / d0 * (d if safeguard_warmup else dlr), _active(lr)


def _decay_rates(mask, params, weight_decay, decouple, dtype):
  """(mask tree, coupled, wd_of): per mask flag, the wd added to g and the decay rate.

  `coupled(flag)` is a Python 0.0 for decoupled decay, so that `_gradient`
  skips the term (XLA keeps g + 0 p, an extra read of p).
  """
  wd_of = lambda flag: weight_decay * _weight_decay.as_multiplier(flag, dtype)
  coupled = lambda flag: 0.0 if decouple else wd_of(flag)
  return _weight_decay.mask_tree(mask, params), coupled, wd_of


def _sliced_tree(tree, slice_p):
  """`_sliced` on every leaf: the elements whose x0 and s are kept."""
  return jax.tree.map(lambda x: _sliced(x, slice_p), tree)


def _statistics(run, scalars, columns, slice_p, groups):
  """Pass 2: (s', v', [m']) from columns [g, x, s, v, (m)], run by `run` (`_executor.tree_map`).

  One pass for slice_p = 1 (s, v and m updated in place under Pallas); else
  s from the sliced leaves in a pass of its own, then v (and m).
  """
  updates, params, s, nu, *mu = columns
  keep_mu = len(mu)
  if slice_p == 1:
    s, nu, *mu = run(_statistics_rule, scalars, columns, 2 + keep_mu,
                     aliases={2: 0, 3: 1, 4: 2} if keep_mu else {2: 0, 3: 1}, groups=groups)
  else:
    (s,) = run(_s_rule, scalars, [_sliced_tree(updates, slice_p), _sliced_tree(params, slice_p), s], 1, groups=groups)
    nu, *mu = run(_moments_rule, scalars, [updates, params, nu] + mu, 1 + keep_mu, groups=groups)
  return s, nu, mu


def _advance(state, moves, d_new, d_max, numerator, s, nu, mu):
  """The next state: s, v and m as given; k, d, d_max and r advance only when the step moves."""
  return state._replace(
      count=jnp.where(moves, optax.safe_increment(state.count), state.count),
      schedule_count=optax.safe_increment(state.schedule_count), d=jnp.where(moves, d_new, state.d),
      d_max=jnp.where(moves, d_max, state.d_max), numerator=jnp.where(moves, numerator, state.numerator),
      mu=mu[0] if mu else None, nu=nu, s=s)


def scale_by_prodigy(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float | None = None,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decouple: bool = True,
    use_bias_correction: bool = False,
    safeguard_warmup: bool = False,
    d0: float = 1e-6,
    d_coef: float = 1.0,
    growth_rate: float = math.inf,
    slice_p: int = 1,
    *,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Prodigy's step, learning rate and weight decay included (no sign flip).

  Args:
    learning_rate: a float or an Optax schedule (reference 1.0).
    b1, b2: moment decays (reference 0.9, 0.999); b1 = 0 keeps no m.
    b3: decay of r and s (reference: sqrt(b2) when None).
    eps: added to sqrt(v), scaled by d (reference 1e-8).
    weight_decay: decay rate (reference 0).
    decouple: AdamW-style decay `x -= wd dlr x` (True, reference) or L2
      added to the gradient (False).
    use_bias_correction: Adam's bias correction in dlr (reference False).
    safeguard_warmup: s accumulates (d/d0) d g instead of (d/d0) dlr g, so a
      learning-rate warmup does not slow d down (reference False).
    d0: initial d (reference 1e-6).
    d_coef: multiplier of the estimate d_hat (reference 1).
    growth_rate: d grows at most by this factor per step (reference inf).
    slice_p: keep x0 and s for every slice_p-th element (reference 1).
    mask: Optax-style mask selecting the leaves that weight decay applies to.
    backend: "xla" (default) or "pallas": the same three passes (the dot
      product and |s| as one reduction, the statistics, the step) as fused
      kernels, float32 sums; slice_p = 1 and a concrete b1 only.

  Returns:
    An `optax.GradientTransformation` whose state has `estimated_d()`.
  """
  owner = "scale_by_prodigy"
  _check_args(owner, learning_rate, b1, b2, b3, eps, weight_decay, d0, d_coef, growth_rate, slice_p, backend)
  # b1 = 0 drops m from the state; a traced b1 keeps it (and branches with where).
  keep_mu = _validation.concrete_value(b1) != 0.0
  run = functools.partial(_executor.tree_map, backend=backend)
  step_rule = functools.partial(_step_rule, traced_b1=_validation.concrete_value(b1) is None)

  init_fn = functools.partial(_init, d0=d0, slice_p=slice_p, keep_mu=keep_mu)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: `params` are required (Prodigy measures x0 - x).")
    _validation.check_tree_matches(owner, updates, state.nu)
    dtype, d = _numerics.scalar_dtype(), state.d
    beta3, dlr, s_coef, active = _step_scalars(
        state, learning_rate, b1, b2, b3, d0, use_bias_correction, safeguard_warmup)
    mask_tree, coupled, wd_of = _decay_rates(mask, params, weight_decay, decouple, dtype)
    mu = [state.mu] if keep_mu else []

    # Pass 1: the numerator's dot product and D = sum |s'| (one fused reduction).
    columns = [_sliced_tree(updates, slice_p), _sliced_tree(params, slice_p), state.init_params, state.s]
    dot, denominator = _executor.tree_sums(_sums_rule, lambda flag: (coupled(flag), beta3, s_coef), columns, 2,
                                           backend=backend, groups=mask_tree, dtype=dtype)
    numerator = beta3 * state.numerator + d / d0 * dlr * dot
    moves, d_max, d_new = _new_d(numerator, denominator, active, d, state.d_max, d0, d_coef, growth_rate)

    # Pass 2: s, v (and m), kept as they were when lr <= 0. Pass 3: the step.
    stats = lambda flag: (coupled(flag), beta3, s_coef, b1, d * (1.0 - b1), b2, d * d * (1.0 - b2),
                          jnp.where(active, 1.0, 0.0))
    s, nu, mu = _statistics(run, stats, [updates, params, state.s, state.nu] + mu, slice_p, mask_tree)
    step = lambda flag: (coupled(flag), dlr, dlr * d_new, d_new * eps, wd_of(flag) * dlr if decouple else 0.0,
                         jnp.where(moves, 1.0, 0.0), jnp.where(jnp.asarray(b1) == 0, 1.0, 0.0))
    (new_updates,) = run(step_rule, step, [updates, params, nu] + mu, 1, groups=mask_tree)
    return new_updates, _advance(state, moves, d_new, d_max, numerator, s, nu, mu)

  # Complex leaves: Prodigy on their (re, im) parts (module docstring).
  return _numerics.complex_as_real(optax.GradientTransformation(init_fn, update_fn))


def prodigy(*args, **kwargs) -> optax.GradientTransformation:
  """Prodigy (prodigyopt 1.1.2 defaults); see the module docstring.

  `chain(scale_by_prodigy(...), negate)` (on float32 master weights for
  bfloat16/float16 parameters: the state gets one more element at the end), with `scale_by_prodigy`'s arguments
  (learning_rate, b1, b2, b3, eps, weight_decay, decouple,
  use_bias_correction, safeguard_warmup, d0, d_coef, growth_rate, slice_p,
  mask); `optimizers.estimated_d(state)` reads d.

  Returns:
    An `optax.GradientTransformation`.
  """
  # bfloat16/float16 parameters: float32 master weights (module docstring).
  return _numerics.with_compensated_updates(optax.chain(scale_by_prodigy(*args, **kwargs), optax.scale(-1.0)))


# The same arguments as the building block, for users, the registry and
# optax.inject_hyperparams (which all read the signature).
prodigy.__signature__ = inspect.signature(scale_by_prodigy)
