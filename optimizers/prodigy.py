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

import inspect
import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay


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


def _sliced(x: jax.Array, slice_p: int) -> jax.Array:
  """Every slice_p-th element of the flattened leaf (the leaf itself if 1)."""
  return x if slice_p == 1 else jnp.reshape(x, (-1,))[::slice_p]


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

  Returns:
    An `optax.GradientTransformation` whose state has `estimated_d()`.
  """
  owner = "scale_by_prodigy"
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_decay(owner, "b1", b1)
  _validation.check_decay(owner, "b2", b2)
  if b3 is not None:
    _validation.check_decay(owner, "b3", b3)
  _validation.check_non_negative(owner, "eps", eps)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  _validation.check_positive(owner, "d0", d0)
  _validation.check_positive(owner, "d_coef", d_coef)
  _validation.check_positive(owner, "growth_rate", growth_rate)
  if not isinstance(slice_p, int) or isinstance(slice_p, bool) or slice_p < 1:
    raise ValueError(f"{owner}: `slice_p` must be an int >= 1, got {slice_p!r}.")
  # b1 = 0 drops m from the state; a traced b1 keeps it (and branches with where).
  keep_mu = _validation.concrete_value(b1) != 0.0

  def init_fn(params):
    dtype = _numerics.scalar_dtype()
    init_params = _numerics.copy_to_state(jax.tree.map(lambda p: _sliced(p, slice_p), params))
    return ScaleByProdigyState(
        count=jnp.zeros([], jnp.int32),
        schedule_count=jnp.zeros([], jnp.int32),
        d=jnp.asarray(d0, dtype),
        d_max=jnp.asarray(d0, dtype),
        numerator=jnp.zeros([], dtype),
        mu=_numerics.zeros_like_state(params) if keep_mu else None,
        nu=_numerics.zeros_like_state(params),
        init_params=init_params,
        s=jax.tree.map(jnp.zeros_like, init_params),
    )

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: `params` are required (Prodigy measures x0 - x).")
    _validation.check_tree_matches(owner, updates, state.nu)
    dtype = _numerics.scalar_dtype()
    lr = _numerics.learning_rate_at(learning_rate, state.schedule_count)
    lr = jnp.asarray(lr, dtype)
    if b3 is not None:
      beta3 = b3
    elif isinstance(b2, (int, float)):
      beta3 = math.sqrt(b2)  # In double precision, as the reference.
    else:
      beta3 = jnp.sqrt(jnp.asarray(b2, dtype))
    d = state.d
    k_plus_1 = _numerics.step_count(state.count + 1)
    if use_bias_correction:
      bc = jnp.sqrt(_numerics.bias_correction(b2, k_plus_1)) / _numerics.bias_correction(b1, k_plus_1)
    else:
      bc = 1.0
    dlr = d * lr * bc
    decay_mask = _weight_decay.mask_tree(mask, params)

    def gradient(g, p, decayed):
      g = g.astype(_numerics.state_dtype(g.dtype))
      if decouple:
        return g
      return g + weight_decay * _weight_decay.as_multiplier(decayed, g.dtype) * p.astype(g.dtype)

    grads = jax.tree.map(gradient, updates, params, decay_mask)
    ratio = d / d0
    s_coef = ratio * (d if safeguard_warmup else dlr)
    cast = _numerics.cast_like

    # The numerator and D: sums of per-leaf sums over the whole tree.
    def dot_term(g, p, p0):
      return jnp.sum(
          _sliced(g, slice_p).astype(dtype) * (p0 - _sliced(p, slice_p).astype(p0.dtype)).astype(dtype)
      )

    dot = sum(jax.tree.leaves(jax.tree.map(dot_term, grads, params, state.init_params)), jnp.zeros([], dtype))
    numerator = beta3 * state.numerator + ratio * dlr * dot
    s = jax.tree.map(
        lambda s, g: cast(beta3, s) * s + cast(s_coef, s) * _sliced(g, slice_p).astype(s.dtype),
        state.s, grads,
    )
    nu = jax.tree.map(
        lambda v, g: cast(b2, v) * v + cast(d * d * (1.0 - b2), v) * g * g, state.nu, grads
    )
    if keep_mu:
      mu = jax.tree.map(lambda m, g: cast(b1, m) * m + cast(d * (1.0 - b1), m) * g, state.mu, grads)
    else:
      mu = None
    denominator = sum(
        jax.tree.leaves(jax.tree.map(lambda x: jnp.sum(jnp.abs(x)).astype(dtype), s)),
        jnp.zeros([], dtype),
    )

    # lr = 0: the reference skips the whole step (statistics included).
    active = lr > 0
    moves = active & (denominator > 0)
    d_hat = d_coef * numerator / jnp.where(moves, denominator, 1.0)
    d_grown = jnp.where(d == d0, jnp.maximum(d, d_hat), d)
    d_max = jnp.maximum(state.d_max, d_hat)
    d_new = jnp.minimum(d_max, d_grown * growth_rate)

    def step(g, m, v, p, decayed):
      denom = jnp.sqrt(v) + cast(d_new * eps, v)
      if keep_mu:
        direction = cast(dlr, v) * m / denom  # addcdiv's order: (value t1) / t2.
        if _validation.concrete_value(b1) is None:  # Traced b1: b1 = 0 uses g, NEW d.
          direction = jnp.where(b1 == 0, cast(dlr * d_new, v) * g / denom, direction)
      else:
        direction = cast(dlr * d_new, v) * g / denom
      # The new parameters as the reference forms them (decay, then the step,
      # each rounded), returned as old - new: with Prodigy's d amplifying
      # rounding differences, float32 parity needs the same roundings.
      x = p.astype(v.dtype)
      if decouple:
        x_decayed = x - cast(weight_decay * dlr, v) * _weight_decay.as_multiplier(decayed, v.dtype) * x
      else:
        x_decayed = x
      return jnp.where(moves, x - (x_decayed - direction), 0.0).astype(p.dtype)

    mu_or_grads = mu if keep_mu else grads
    new_updates = jax.tree.map(step, grads, mu_or_grads, nu, params, decay_mask)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(active, a, b), new, old)
    new_state = ScaleByProdigyState(
        count=jnp.where(moves, optax.safe_increment(state.count), state.count),
        schedule_count=optax.safe_increment(state.schedule_count),
        d=jnp.where(moves, d_new, d),
        d_max=jnp.where(moves, d_max, state.d_max),
        numerator=jnp.where(moves, numerator, state.numerator),
        mu=keep(mu, state.mu) if keep_mu else None,
        nu=keep(nu, state.nu),
        init_params=state.init_params,
        s=keep(s, state.s),
    )
    return new_updates, new_state

  return optax.GradientTransformation(init_fn, update_fn)


def prodigy(*args, **kwargs) -> optax.GradientTransformation:
  """Prodigy (prodigyopt 1.1.2 defaults); see the module docstring.

  `chain(scale_by_prodigy(...), negate)`, with `scale_by_prodigy`'s arguments
  (learning_rate, b1, b2, b3, eps, weight_decay, decouple,
  use_bias_correction, safeguard_warmup, d0, d_coef, growth_rate, slice_p,
  mask); `optimizers.estimated_d(state)` reads d.

  Returns:
    An `optax.GradientTransformation`.
  """
  return optax.chain(scale_by_prodigy(*args, **kwargs), optax.scale(-1.0))


# The same arguments as the building block, for users, the registry and
# optax.inject_hyperparams (which all read the signature).
prodigy.__signature__ = inspect.signature(scale_by_prodigy)
