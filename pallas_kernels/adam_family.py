"""The Adam family's moment update and direction as one `elementwise` rule.

Per element (reads g, m, v; writes u, m, v, with m and v in place):

    m' = b1 m + (1 - b1) g
    v' = b2 v + (1 - b2) g^2
    u  = m' * (a / (sqrt(v') c + eps) if adaptive else s)

with per-step scalars

  * Adam (optax.scale_by_adam, eps outside the root):
      a = 1 / bc1, c = 1 / sqrt(bc2), s = 0, adaptive.
  * RAdam (torch, eps on the uncorrected root):
      rectified:   a = r_t sqrt(bc2) / bc1, c = 1, adaptive;
      otherwise:   s = (1 if degenerated_to_sgd else 0) / bc1, not adaptive.

1 - b is a scalar of its own, computed before rounding to float32
(1 - f32(0.999) is 1.3e-5 off; see optimizers/_numerics.one_minus).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from pallas_kernels import elementwise


def adam_scalars(b1, b2, eps, bc1, bc2) -> tuple:
  """The scalars of optax.scale_by_adam's direction."""
  return (1.0 / bc1, 1.0 / jnp.sqrt(bc2), 0.0, 1.0, b1, 1.0 - b1, b2, 1.0 - b2, eps)


def radam_scalars(b1, b2, eps, bc1, adaptive_coef, sgd_coef, rectified) -> tuple:
  """The scalars of steplab's (torch's) RAdam direction."""
  return (adaptive_coef / bc1, 1.0, sgd_coef / bc1, jnp.where(rectified, 1.0, 0.0),
          b1, 1.0 - b1, b2, 1.0 - b2, eps)


def adam_family_direction(scalars, g, m, v):
  """The rule: (u, m', v') from (g, m, v); u in g's dtype, moments float32."""
  a, c, s, adaptive, b1, one_minus_b1, b2, one_minus_b2, eps = scalars
  g32 = g.astype(jnp.float32)
  m = b1 * m + one_minus_b1 * g32
  v = b2 * v + one_minus_b2 * g32 * g32
  coef = jnp.where(adaptive > 0.5, a / (jnp.sqrt(v) * c + eps), s)
  return (m * coef).astype(g.dtype), m, v


def tree_update(scalars: tuple, grads: Any, mu: Any, nu: Any) -> tuple[Any, Any, Any]:
  """(u, mu', nu') over trees, fused (see `elementwise.tree_map`)."""
  for x in jax.tree.leaves((mu, nu)):
    if x.dtype != jnp.float32:
      raise ValueError("backend='pallas' keeps float32 moments (mu_dtype must be float32 or None)")
  return elementwise.tree_map(adam_family_direction, scalars, [grads, mu, nu], 3, aliases={1: 1, 2: 2})


def bytes_per_param(grad_dtype: Any = jnp.float32) -> int:
  """The traffic floor of the fused direction: read g, m, v; write u, m, v."""
  return 2 * jnp.dtype(grad_dtype).itemsize + 4 * 4
