"""AdaBound and AMSBound, numerically as the reference `adabound` 0.0.5.

At step t (from 1), with `bc1 = 1 - b1^t`, `bc2 = 1 - b2^t`,

    m_t = b1 m + (1 - b1) g,      v_t = b2 v + (1 - b2) g^2
    AMSBound: vmax_t = max(vmax, v_t) replaces v_t below
    s_t = lr_t sqrt(bc2) / bc1 / (sqrt(v_t) + eps)          (elementwise)
    final_lr_t = final_lr * lr_t / lr_0                     (bounds follow lr)
    lower = final_lr_t (1 - 1 / (gamma t + 1)),  upper = final_lr_t (1 + 1 / (gamma t))
    p -= clip(s_t, lower, upper) * m_t                      (m_t uncorrected)

`lr_0` is the learning rate the reference optimizer was built with (its
`base_lr`): `learning_rate` itself for a constant, `learning_rate(0)` for a
schedule unless `base_learning_rate` says otherwise.

Factoring: every term of the clip is proportional to `lr_t >= 0`, so
`clip(s_t, lower, upper) = lr_t * clip(s_t / lr_t, lower / lr_t, upper / lr_t)`
and `scale_by_adabound` returns the learning-rate-free part; the alias applies
`lr_t` afterwards with `optax.scale_by_learning_rate`, like every other chain.

Weight decay: the reference adds coupled L2 (`g += wd p`) before the moments;
`decoupled_weight_decay=True` gives `p -= lr wd p` instead.

References:
  Luo et al., "Adaptive Gradient Methods with Dynamic Bound of Learning
  Rate", ICLR 2019, https://arxiv.org/abs/1902.09843.
  Code: github.com/Luolc/AdaBound (PyPI `adabound` 0.0.5).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from optimizers import _executor
from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay

__all__ = ("adabound", "amsbound", "scale_by_adabound", "ScaleByAdaBoundState")


class ScaleByAdaBoundState(NamedTuple):
  """State of `scale_by_adabound`; `nu_max` is empty unless AMSBound."""

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates
  nu_max: optax.Updates


def adabound_rule(scalars, g, m, v, *v_max, mu_dtype=None):
  """One element's AdaBound (AMSBound with `v_max`) step, for both backends.

  scalars: (step_coef, lower, upper, b1, 1 - b1, b2, 1 - b2, eps). Returns
  (u, m, v[, v_max]); u in g's dtype, m in `mu_dtype` (default v's).
  """
  step_coef, lower, upper, b1, one_minus_b1, b2, one_minus_b2, eps = scalars
  g32 = g.astype(v.dtype)
  m = b1 * m.astype(v.dtype) + one_minus_b1 * g32
  v = b2 * v + one_minus_b2 * g32 * g32
  if v_max:
    v_max = (jnp.maximum(v_max[0], v),)
  denom = jnp.sqrt(v_max[0] if v_max else v) + eps
  step = jnp.clip(
      _numerics.cast_like(step_coef, v) / denom,
      _numerics.cast_like(lower, v),
      _numerics.cast_like(upper, v),
  )
  return ((step * m).astype(g.dtype), m.astype(mu_dtype or v.dtype), v) + v_max


def scale_by_adabound(
    b1: float = 0.9,
    b2: float = 0.999,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    eps: float = 1e-8,
    *,
    base_learning_rate: float = 1e-3,
    amsbound: bool = False,
    mu_dtype: Any | None = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AdaBound's bounded step per unit learning rate (no sign flip).

  Returns `clip(sqrt(bc2)/bc1/(sqrt(v)+eps), l_t, u_t) * m` with
  `l_t = final_lr / base_learning_rate * (1 - 1/(gamma t + 1))` and
  `u_t = final_lr / base_learning_rate * (1 + 1/(gamma t))`; multiplying by
  the learning rate `lr_t` afterwards gives the reference's step exactly.

  Args:
    b1, b2: moment decays (reference 0.9, 0.999).
    final_lr: the learning rate both bounds converge to, stated for the base
      learning rate (reference 0.1).
    gamma: convergence speed of the bounds (reference 1e-3).
    eps: added to `sqrt(v)` (reference 1e-8).
    base_learning_rate: the learning rate `final_lr` refers to (the
      reference's `base_lr`, the lr the optimizer was built with).
    amsbound: use the running maximum of `v` (AMSBound).
    mu_dtype: dtype of the first moment (default: the state dtype).
    backend: "xla" (default) or "pallas": `adabound_rule` in one fused
      kernel per large leaf (`_executor`).

  Returns:
    An `optax.GradientTransformation`.
  """
  owner = "scale_by_adabound"
  _validation.check_backend(owner, backend)
  _validation.check_decay(owner, "b1", b1)
  _validation.check_mu_dtype(owner, mu_dtype)
  _validation.check_decay(owner, "b2", b2)
  _validation.check_non_negative(owner, "final_lr", final_lr)
  _validation.check_positive(owner, "gamma", gamma)
  _validation.check_non_negative(owner, "eps", eps)
  _validation.check_positive(owner, "base_learning_rate", base_learning_rate)

  def init_fn(params):
    _numerics.reject_complex(
        "amsbound" if amsbound else "adabound", params,
        "its step size is clipped elementwise, and complex numbers have no order")
    return ScaleByAdaBoundState(
        count=jnp.zeros([], jnp.int32),
        mu=_numerics.zeros_like_state(params, mu_dtype),
        nu=_numerics.zeros_like_state(params),
        nu_max=_numerics.zeros_like_state(params) if amsbound else None,
    )

  def update_fn(updates, state, params=None):
    del params
    _validation.check_tree_matches(owner, updates, state.nu)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    step_coef = jnp.sqrt(_numerics.bias_correction(b2, t)) / (
        _numerics.bias_correction(b1, t)
    )
    final = jnp.asarray(final_lr, t.dtype) / base_learning_rate
    lower = final * (1.0 - 1.0 / (gamma * t + 1.0))
    upper = final * (1.0 + 1.0 / (gamma * t))

    scalars = (step_coef, lower, upper, b1, _numerics.one_minus(b1), b2, _numerics.one_minus(b2), eps)
    trees = [updates, state.mu, state.nu] + ([state.nu_max] if amsbound else [])
    outs = _executor.tree_map(functools.partial(adabound_rule, mu_dtype=mu_dtype), scalars, trees, len(trees),
                              backend=backend, aliases={i: i for i in range(1, len(trees))})
    u, mu, nu = outs[:3]
    nu_max = outs[3] if amsbound else None
    return u, ScaleByAdaBoundState(count=count, mu=mu, nu=nu, nu_max=nu_max)

  return optax.GradientTransformation(init_fn, update_fn)


def _base_learning_rate(owner: str, learning_rate: Any, base: Any) -> Any:
  """The reference's `base_lr`: the learning rate at construction."""
  if base is not None:
    return base
  if not callable(learning_rate):
    return learning_rate
  lr0 = learning_rate(0)
  value = _validation.concrete_value(lr0)
  if value is not None and value <= 0.0:
    raise ValueError(
        f"{owner}: the schedule's first learning rate is {value}, so the bounds"
        " (final_lr * lr_t / lr_0) are undefined; pass `base_learning_rate`,"
        " the learning rate that `final_lr` refers to."
    )
  return lr0


def adabound(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    amsbound: bool = False,
    decoupled_weight_decay: bool = False,
    base_learning_rate: float | None = None,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AdaBound (reference defaults: lr 1e-3, final_lr 0.1, gamma 1e-3).

  `chain([coupled L2], scale_by_adabound, [decoupled decay], -lr)`; see the
  module docstring for the update rule.

  Args:
    learning_rate: a float or an Optax schedule; the bounds follow it.
    b1, b2, final_lr, gamma, eps, amsbound, mu_dtype: see `scale_by_adabound`.
    weight_decay: decay rate (default 0).
    decoupled_weight_decay: False (default, the reference): coupled L2
      `g += wd p`; True: `p -= lr wd p`.
    base_learning_rate: the learning rate `final_lr` refers to; default: the
      constant learning rate, or the schedule's value at step 0.
    mask: Optax-style mask selecting decayed leaves.
    backend: "xla" (default) or "pallas" (see `scale_by_adabound`).

  Returns:
    An `optax.GradientTransformation`.
  """
  owner = "amsbound" if amsbound else "adabound"
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  block = scale_by_adabound(
      b1,
      b2,
      final_lr,
      gamma,
      eps,
      base_learning_rate=_base_learning_rate(
          owner, learning_rate, base_learning_rate
      ),
      amsbound=amsbound,
      mu_dtype=mu_dtype,
      backend=backend,
  )
  return optax.chain(
      *_weight_decay.around(
          block, weight_decay, mask, decoupled=decoupled_weight_decay
      ),
      optax.scale_by_learning_rate(learning_rate),
  )


def amsbound(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    final_lr: float = 0.1,
    gamma: float = 1e-3,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    decoupled_weight_decay: bool = False,
    base_learning_rate: float | None = None,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AMSBound: `adabound(..., amsbound=True)` (same defaults and arguments)."""
  return adabound(
      learning_rate,
      b1,
      b2,
      final_lr,
      gamma,
      eps,
      weight_decay,
      amsbound=True,
      decoupled_weight_decay=decoupled_weight_decay,
      base_learning_rate=base_learning_rate,
      mu_dtype=mu_dtype,
      mask=mask,
      backend=backend,
  )
