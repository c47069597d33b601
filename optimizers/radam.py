"""Rectified Adam (RAdam), numerically as `torch.optim.RAdam`.

With `rho_inf = 2 / (1 - b2) - 1` and, at step t (from 1),

    rho_t = rho_inf - 2 t b2^t / (1 - b2^t)
    r_t   = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
    m_t   = b1 m + (1 - b1) g,        v_t = b2 v + (1 - b2) g^2

the update is

    rho_t > threshold:  u = r_t * sqrt(1 - b2^t) / (1 - b1^t) * m_t / (sqrt(v_t) + eps)
    otherwise:          u = m_t / (1 - b1^t)   (degenerated_to_sgd=True, torch)
                        u = 0                  (degenerated_to_sgd=False, the original:
                                                nothing moves, decoupled decay included)

and `p -= lr * u`. Details that differ from `optax.radam` and are kept here:
`eps` is added to the *uncorrected* `sqrt(v_t)` (torch) rather than to the
bias-corrected one, and rectification needs `rho_t > 5` strictly (optax uses
`>=`). With `b2 = 0.999` the first five steps are unrectified.

Weight decay: torch's default is coupled (`g += wd p`); steplab defaults to
decoupled (`p -= lr wd p`, torch's `decoupled_weight_decay=True`, as AdamW),
and `decoupled_weight_decay=False` gives torch's default.

References:
  Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
  ICLR 2020, https://arxiv.org/abs/1908.03265.
  Code: torch.optim.RAdam (torch 2.13); original: github.com/LiyuanLucasLiu/RAdam
  (golden for degenerated_to_sgd=False: pytorch_optimizer.RAdam 4.1.0, a port of it).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _executor
from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay
from pallas_kernels import adam_family

__all__ = ("radam", "scale_by_radam", "ScaleByRAdamState")


class ScaleByRAdamState(NamedTuple):
  """State of `scale_by_radam`: int32 step count and the two moments."""

  count: chex.Array
  mu: optax.Updates
  nu: optax.Updates


def _check_args(owner, b1, b2, eps, threshold, nesterov, mu_dtype, backend):
  """Checks `scale_by_radam`'s concrete arguments when it is built (ValueError naming the argument)."""
  _validation.check_backend(owner, backend)
  if backend == "pallas" and nesterov:
    raise ValueError(f"{owner}: backend='pallas' does not cover nesterov=True; use backend='xla'.")
  _validation.check_decay(owner, "b1", b1)
  _validation.check_mu_dtype(owner, mu_dtype)
  _validation.check_decay(owner, "b2", b2)
  _validation.check_non_negative(owner, "eps", eps)
  _validation.check_range(owner, "threshold", threshold, 4.0)


def scale_by_radam(
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    threshold: float = 5.0,
    *,
    degenerated_to_sgd: bool = True,
    nesterov: bool = False,
    mu_dtype: Any | None = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Scales updates by RAdam's rectified adaptive step (no sign flip, no lr).

  Args:
    b1: decay of the first-moment EMA (torch default 0.9).
    b2: decay of the second-moment EMA (torch default 0.999).
    eps: added to `sqrt(v_t)` before bias correction, as torch (1e-8).
    threshold: rectify iff `rho_t > threshold` (torch: 5).
    degenerated_to_sgd: before rectification, step with the bias-corrected
      momentum (True, torch) or not at all (False, the original code).
    nesterov: use the Nesterov-style momentum of NAdam,
      `b1 m_t / (1 - b1^(t+1)) + (1 - b1) g / (1 - b1^t)`, in place of
      `m_t / (1 - b1^t)` (as `optax.scale_by_radam(nesterov=True)`; torch's
      RAdam has no such option).
    mu_dtype: dtype of the first moment; default: the state dtype (at least
      float32, see `_numerics.state_dtype`).
    backend: "xla" (default) or "pallas": the moments and the direction in
      one fused kernel (`pallas_kernels.adam_family`; float32 moments, no
      nesterov). Same state, same numbers to float32 rounding.

  Returns:
    An `optax.GradientTransformation`.
  """
  owner = "scale_by_radam"
  _check_args(owner, b1, b2, eps, threshold, nesterov, mu_dtype, backend)

  def init_fn(params):
    if backend == "pallas":
      _numerics.reject_complex(owner, params, "backend='pallas' keeps float32 moments; use backend='xla'")
    return ScaleByRAdamState(
        count=jnp.zeros([], jnp.int32),
        mu=_numerics.zeros_like_state(params, mu_dtype),
        nu=_numerics.zeros_like_state(params),
    )

  def update_fn(updates, state, params=None):
    del params
    _validation.check_tree_matches(owner, updates, state.nu)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    bc1 = _numerics.bias_correction(b1, t)
    bc1_next = _numerics.bias_correction(b1, t + 1) if nesterov else None
    bc2 = _numerics.bias_correction(b2, t)
    rho_inf = 2.0 / jnp.asarray(_numerics.one_minus(b2), t.dtype) - 1.0
    rho_t = _numerics.sma_length(b2, t)
    rectified = rho_t > threshold
    # Clamped so the untaken branch never produces NaN (rho_t < 4 early on).
    r_sq = (rho_t - 4.0) * (rho_t - 2.0) * rho_inf / (
        (rho_inf - 4.0) * (rho_inf - 2.0) * rho_t
    )
    adaptive_coef = jnp.where(
        rectified, jnp.sqrt(jnp.maximum(r_sq, 0.0)) * jnp.sqrt(bc2), 0.0
    )
    sgd_coef = jnp.where(rectified, 0.0, 1.0 if degenerated_to_sgd else 0.0)
    nesterov_coefs = (b1 / bc1_next, (1.0 - b1) / bc1) if nesterov else ()
    scalars = adam_family.radam_scalars(b1, b2, eps, bc1, adaptive_coef, sgd_coef, rectified, nesterov_coefs)
    if backend == "pallas":
      u, mu, nu = adam_family.tree_update(scalars, updates, state.mu, state.nu)
    else:
      rule = functools.partial(adam_family.adam_family_direction, mu_dtype=mu_dtype, nesterov=nesterov)
      u, mu, nu = _executor.tree_map(rule, scalars, [updates, state.mu, state.nu], 3)
    return u, ScaleByRAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def radam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    *,
    decoupled_weight_decay: bool = True,
    degenerated_to_sgd: bool = True,
    nesterov: bool = False,
    threshold: float = 5.0,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """RAdam as torch.optim.RAdam (defaults: lr 1e-3, betas (0.9, 0.999), eps 1e-8).

  `chain([coupled decay], scale_by_radam, [decoupled decay], -lr)`; see the
  module docstring for the update rule.

  Args:
    learning_rate: a float or an Optax schedule.
    b1, b2, eps, threshold, degenerated_to_sgd, nesterov, mu_dtype: see
      `scale_by_radam`.
    weight_decay: decay rate (default 0).
    decoupled_weight_decay: True (default): `p -= lr wd p` every step
      (with degenerated_to_sgd=False, as the original: only in rectified
      steps, so nothing moves before rectification); False: coupled L2,
      `g += wd p`, torch's default.
    mask: Optax-style mask (tree or callable) selecting decayed leaves.
    backend: "xla" (default) or "pallas" (see `scale_by_radam`).

  Returns:
    An `optax.GradientTransformation`.
  """
  _validation.check_learning_rate("radam", learning_rate)
  _validation.check_non_negative("radam", "weight_decay", weight_decay)
  _validation.check_decay("radam", "b2", b2)  # Before _decay_when_rectified reads it.
  block = scale_by_radam(
      b1,
      b2,
      eps,
      threshold,
      degenerated_to_sgd=degenerated_to_sgd,
      nesterov=nesterov,
      mu_dtype=mu_dtype,
      backend=backend,
  )
  if decoupled_weight_decay and not degenerated_to_sgd:
    # The original (LiyuanLucasLiu/RAdam) decays p only in the steps it takes:
    # before rectification nothing moves at all, decay included.
    return optax.chain(
        block,
        _decay_when_rectified(weight_decay, mask, b2, threshold),
        optax.scale_by_learning_rate(learning_rate),
    )
  return optax.chain(
      *_weight_decay.around(
          block, weight_decay, mask, decoupled=decoupled_weight_decay
      ),
      optax.scale_by_learning_rate(learning_rate),
  )


class DecayWhenRectifiedState(NamedTuple):
  """State of the decoupled decay of `radam(degenerated_to_sgd=False)`."""

  count: chex.Array
  decay: optax.OptState


def _decay_when_rectified(weight_decay: Any, mask: Any, b2: Any, threshold: Any) -> optax.GradientTransformation:
  """`optax.add_decayed_weights`, applied only in steps where rho_t > threshold.

  The same test on the same step count as `scale_by_radam`, so the decay is
  on exactly when the rectified step is.
  """
  decay = optax.add_decayed_weights(weight_decay, mask)

  def init_fn(params):
    return DecayWhenRectifiedState(jnp.zeros([], jnp.int32), decay.init(params))

  def update_fn(updates, state, params=None):
    count = optax.safe_increment(state.count)
    rectified = _numerics.sma_length(b2, _numerics.step_count(count)) > threshold
    decayed, decay_state = decay.update(updates, state.decay, params)
    out = jax.tree.map(lambda u, d: jnp.where(rectified, d, u), updates, decayed)
    return out, DecayWhenRectifiedState(count, decay_state)

  return optax.GradientTransformation(init_fn, update_fn)
