"""AdaMod, numerically as the reference `adamod` 0.0.3.

At step t (from 1), with `bc1 = 1 - b1^t`, `bc2 = 1 - b2^t`,

    m_t   = b1 m + (1 - b1) g,      v_t = b2 v + (1 - b2) g^2
    eta_t = lr_t sqrt(bc2) / bc1 / (sqrt(v_t) + eps)         (elementwise)
    s_t   = b3 s + (1 - b3) eta_t,  s_0 = 0, no bias correction
    p    -= lr_t wd p + min(eta_t, s_t) * m_t                (m_t uncorrected)

The step-size EMA `s_t` averages learning rates of different steps, so the
learning rate cannot be factored out of the block: `scale_by_adamod` takes it
and returns the full (positive) step. Weight decay is decoupled and applied
before the step, as the reference does (`p -= lr wd p` does not change the
step, which never reads p).

`b3` defaults to 0.999, the reference code's default (its README says 0.9999).

References:
  Ding et al., "An Adaptive and Momental Bound Method for Stochastic
  Learning", 2019, https://arxiv.org/abs/1910.12249.
  Code: github.com/lancopku/AdaMod (PyPI `adamod` 0.0.3).
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

__all__ = ("adamod", "scale_by_adamod", "ScaleByAdaModState")


class ScaleByAdaModState(NamedTuple):
  """State of `scale_by_adamod`: count, moments and the step-size EMA."""

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates
  eta_avg: optax.Updates


def adamod_rule(scalars, g, m, v, s, *, mu_dtype=None):
  """One element's AdaMod step, for both backends.

  scalars: (step_coef, b1, 1 - b1, b2, 1 - b2, b3, 1 - b3, eps). Returns
  (u, m, v, s); u in g's dtype, m in `mu_dtype` (default v's).
  """
  step_coef, b1, one_minus_b1, b2, one_minus_b2, b3, one_minus_b3, eps = scalars
  g32 = g.astype(v.dtype)
  m = b1 * m.astype(v.dtype) + one_minus_b1 * g32
  v = b2 * v + one_minus_b2 * g32 * g32
  eta = lambda v: _numerics.cast_like(step_coef, v) / (jnp.sqrt(v) + eps)
  s = b3 * s + one_minus_b3 * eta(v)
  # eta again for the step, not shared: XLA:CPU would write it out as a
  # full-size temporary for its two consumers (`_executor.unshared`).
  step = jnp.minimum(eta(_executor.unshared(v)), s) * m
  return step.astype(g.dtype), m.astype(mu_dtype or v.dtype), v, s


def scale_by_adamod(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.999,
    eps: float = 1e-8,
    *,
    mu_dtype: Any | None = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AdaMod's momentally bounded step, learning rate included (no sign flip).

  Args:
    learning_rate: a float or an Optax schedule (reference 1e-3).
    b1, b2: moment decays (reference 0.9, 0.999).
    b3: decay of the step-size EMA (reference code 0.999).
    eps: added to `sqrt(v)` (reference 1e-8).
    mu_dtype: dtype of the first moment (default: the state dtype).
    backend: "xla" (default) or "pallas": `adamod_rule` in one fused kernel
      per large leaf (`pallas_kernels.elementwise`).

  Returns:
    An `optax.GradientTransformation` whose updates are `min(eta, s) * m`.
  """
  owner = "scale_by_adamod"
  _validation.check_backend(owner, backend)
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_decay(owner, "b1", b1)
  _validation.check_mu_dtype(owner, mu_dtype)
  _validation.check_decay(owner, "b2", b2)
  _validation.check_decay(owner, "b3", b3)
  _validation.check_non_negative(owner, "eps", eps)
  rule = functools.partial(adamod_rule, mu_dtype=mu_dtype)

  def init_fn(params):
    _numerics.reject_complex(
        "adamod", params, "its step size is the elementwise min(eta, s), and complex numbers have no order")
    return ScaleByAdaModState(
        count=jnp.zeros([], jnp.int32),
        mu=_numerics.zeros_like_state(params, mu_dtype),
        nu=_numerics.zeros_like_state(params),
        eta_avg=_numerics.zeros_like_state(params),
    )

  def update_fn(updates, state, params=None):
    del params
    _validation.check_tree_matches(owner, updates, state.nu)
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    step_coef = (
        jnp.asarray(lr, t.dtype)
        * jnp.sqrt(_numerics.bias_correction(b2, t))
        / _numerics.bias_correction(b1, t)
    )

    scalars = (step_coef, b1, _numerics.one_minus(b1), b2, _numerics.one_minus(b2), b3,
               _numerics.one_minus(b3), eps)
    trees = [updates, state.mu, state.nu, state.eta_avg]
    u, mu, nu, eta_avg = _executor.tree_map(rule, scalars, trees, 4, backend=backend, aliases={1: 1, 2: 2, 3: 3})
    return u, ScaleByAdaModState(count=count, mu=mu, nu=nu, eta_avg=eta_avg)

  return optax.GradientTransformation(init_fn, update_fn)


def adamod(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    b3: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """AdaMod (reference defaults: lr 1e-3, betas (0.9, 0.999), b3 0.999).

  `chain(scale_by_adamod(lr), + lr wd p, negate)`; see the module docstring.

  Args:
    learning_rate, b1, b2, b3, eps, mu_dtype: see `scale_by_adamod`.
    weight_decay: decoupled decay rate, `p -= lr wd p` (default 0).
    mask: Optax-style mask selecting decayed leaves.
    backend: "xla" (default) or "pallas" (see `scale_by_adamod`).

  Returns:
    An `optax.GradientTransformation`.
  """
  _validation.check_non_negative("adamod", "weight_decay", weight_decay)
  return optax.chain(
      scale_by_adamod(learning_rate, b1, b2, b3, eps, mu_dtype=mu_dtype, backend=backend),
      _weight_decay.scaled_by_learning_rate(weight_decay, learning_rate, mask),
      optax.scale(-1.0),
  )
