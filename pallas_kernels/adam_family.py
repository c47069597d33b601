"""The Adam family's moment update and direction as one `elementwise` rule.

Per element (reads g, m, v; writes u, m, v, with m and v in place):

    m' = b1 m + (1 - b1) g
    v' = b2 v + (1 - b2) |g|^2
    u  = m_hat * (a / (sqrt(v') c + eps) if adaptive else s),   m_hat = m' / d1

with per-step scalars

  * Adam (optax.scale_by_adam, eps outside the root):
      d1 = bc1, a = 1, c = 1 / sqrt(bc2), s = 0, adaptive.
  * RAdam (torch, eps on the uncorrected root):
      d1 = bc1; rectified:  a = r_t sqrt(bc2), c = 1, adaptive;
                otherwise:  s = 1 if degenerated_to_sgd else 0, not adaptive.
  * Nesterov (`nesterov=True`, NAdam's momentum, XLA only in steplab):
      m_hat = k1 m' + k2 g with k1 = b1 / bc1(t+1), k2 = (1 - b1) / bc1(t),
      the last two scalars.

The same function is the XLA path of `optimizers.scale_by_radam` (any state
dtype: it computes in v's dtype) and the Pallas kernel (float32). 1 - b is a
scalar of its own, computed before rounding to float32 (1 - f32(0.999) is
1.3e-5 off; see optimizers/_numerics.one_minus).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from pallas_kernels import elementwise


def adam_scalars(b1, b2, eps, bc1, bc2) -> tuple:
  """The scalars of optax.scale_by_adam's direction."""
  return (bc1, 1.0, 1.0 / jnp.sqrt(bc2), 0.0, 1.0, b1, 1.0 - b1, b2, 1.0 - b2, eps)


def radam_scalars(b1, b2, eps, bc1, adaptive_coef, sgd_coef, rectified, nesterov_coefs=()) -> tuple:
  """The scalars of steplab's (torch's) RAdam direction; `nesterov_coefs`: (k1, k2)."""
  return (bc1, adaptive_coef, 1.0, sgd_coef, jnp.where(rectified, 1.0, 0.0),
          b1, 1.0 - b1, b2, 1.0 - b2, eps) + tuple(nesterov_coefs)


def adam_family_direction(scalars, g, m, v, *, mu_dtype=None, nesterov=False):
  """The rule: (u, m', v') from (g, m, v); u in g's dtype, m in `mu_dtype` (default v's), v in v's."""
  d1, a, c, s, adaptive, b1, one_minus_b1, b2, one_minus_b2, eps, *k = scalars
  cast = lambda x: jnp.asarray(x).astype(v.dtype)  # Traced (x64) scalars: keep v's dtype.
  x = g.astype(v.dtype)
  m = b1 * m.astype(v.dtype) + one_minus_b1 * x
  if jnp.iscomplexobj(x):  # |g|^2 (as optax.scale_by_adam).
    v = b2 * v + one_minus_b2 * (jnp.square(x.real) + jnp.square(x.imag)).astype(v.dtype)
  else:
    v = b2 * v + one_minus_b2 * x * x
  m_hat = cast(k[0]) * m + cast(k[1]) * x if nesterov else m / cast(d1)
  u = m_hat * jnp.where(adaptive > 0.5, cast(a) / (jnp.sqrt(v) * cast(c) + eps), cast(s))
  return u.astype(g.dtype), m.astype(mu_dtype or v.dtype), v


def tree_update(scalars: tuple, grads: Any, mu: Any, nu: Any) -> tuple[Any, Any, Any]:
  """(u, mu', nu') over trees, fused (see `elementwise.tree_map`)."""
  for x in jax.tree.leaves((mu, nu)):
    if x.dtype != jnp.float32:
      raise ValueError("backend='pallas' keeps float32 moments (mu_dtype must be float32 or None)")
  return elementwise.tree_map(adam_family_direction, scalars, [grads, mu, nu], 3, aliases={1: 1, 2: 2})


def bytes_per_param(grad_dtype: Any = jnp.float32) -> int:
  """The traffic floor of the fused direction: read g, m, v; write u, m, v."""
  return 2 * jnp.dtype(grad_dtype).itemsize + 4 * 4
