"""Lion (EvoLved Sign Momentum), numerically as the reference `lion-pytorch` 0.2.5.

Each step, with momentum m (zero at the start):

    c   = b1 m + (1 - b1) g
    p  -= lr_t (sign(c) + wd p)        (decoupled weight decay, scaled by lr_t)
    m   = b2 m + (1 - b2) g

The step interpolates the momentum with the gradient (b1) before taking the
sign, and tracks the momentum with another decay (b2). Every coordinate moves
by exactly lr_t (0 where c = 0), so the paper pairs it with a learning rate 3-10x
smaller than AdamW's and a weight decay 3-10x larger.

Defaults are the reference's (lr 1e-4, b1 0.9, b2 0.99, weight decay 0);
`optax.lion` has the same rule with weight decay 1e-3 by default. The
reference multiplies p by (1 - lr wd) before adding -lr sign(c); here the
chain adds -lr (sign(c) + wd p), the same in exact arithmetic (float32: one
rounding apart). For complex parameters sign(c) = c / |c|, as torch's `sgn`.

References:
  Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
  https://arxiv.org/abs/2302.06675.
  Code: github.com/lucidrains/lion-pytorch (PyPI `lion-pytorch` 0.2.5).
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

__all__ = ("lion", "scale_by_lion", "ScaleByLionState")


class ScaleByLionState(NamedTuple):
  """State of `scale_by_lion`."""

  count: chex.Array
  mu: optax.Updates


def lion_rule(scalars, g, m, *, mu_dtype=None):
  """One element's Lion step, for both backends.

  scalars: (b1, 1 - b1, b2, 1 - b2). Returns (sign(b1 m + (1 - b1) g) in g's
  dtype, b2 m + (1 - b2) g in `mu_dtype`, default m's).
  """
  b1, one_minus_b1, b2, one_minus_b2 = scalars
  dtype = jnp.promote_types(g.dtype, m.dtype)  # bf16 gradients, float32 momentum: in float32.
  g_wide, m_wide = g.astype(dtype), m.astype(dtype)
  direction = jnp.sign(b1 * m_wide + one_minus_b1 * g_wide)
  m_out = b2 * m_wide + one_minus_b2 * g_wide
  return direction.astype(g.dtype), m_out.astype(mu_dtype or m.dtype)


def scale_by_lion(
    b1: float = 0.9,
    b2: float = 0.99,
    mu_dtype: Any | None = None,
    *,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Lion's direction: sign(b1 m + (1 - b1) g), then m = b2 m + (1 - b2) g.

  Args:
    b1: interpolation between momentum and gradient for the sign (reference 0.9).
    b2: momentum decay (reference 0.99).
    mu_dtype: dtype of the momentum (default: the parameters').
    backend: "xla" (default) or "pallas": `lion_rule` run by the executor
      (`optimizers._executor`), as fused kernels under Pallas.

  Returns:
    An `optax.GradientTransformation`.
  """
  owner = "scale_by_lion"
  _validation.check_backend(owner, backend)
  _validation.check_decay(owner, "b1", b1)
  _validation.check_decay(owner, "b2", b2)
  _validation.check_mu_dtype(owner, mu_dtype)
  rule = functools.partial(lion_rule, mu_dtype=mu_dtype)
  scalars = (b1, _numerics.one_minus(b1), b2, _numerics.one_minus(b2))

  def init_fn(params):
    return ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=_numerics.zeros_like_state(params, mu_dtype))

  def update_fn(updates, state, params=None):
    del params
    _validation.check_tree_matches(owner, updates, state.mu)
    direction, mu = _executor.tree_map(rule, scalars, [updates, state.mu], 2, backend=backend, aliases={1: 1})
    return direction, ScaleByLionState(count=optax.safe_increment(state.count), mu=mu)

  return optax.GradientTransformation(init_fn, update_fn)


def lion(
    learning_rate: optax.ScalarOrSchedule = 1e-4,
    b1: float = 0.9,
    b2: float = 0.99,
    weight_decay: float = 0.0,
    *,
    mu_dtype: Any | None = None,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Lion (reference defaults: lr 1e-4, betas (0.9, 0.99), weight decay 0).

  `chain(scale_by_lion, add_decayed_weights(weight_decay, mask), -lr)`, as
  `optax.lion`; see the module docstring for the update rule.

  Args:
    learning_rate: a float or an Optax schedule.
    b1, b2, mu_dtype, backend: see `scale_by_lion`.
    weight_decay: decoupled decay rate, applied as lr_t wd p (default 0).
    mask: Optax-style mask selecting decayed leaves.

  Returns:
    An `optax.GradientTransformation`.
  """
  _validation.check_learning_rate("lion", learning_rate)
  _validation.check_non_negative("lion", "weight_decay", weight_decay)
  return optax.chain(
      scale_by_lion(b1, b2, mu_dtype, backend=backend),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )
