"""AlgoPerf's `algoperf.random_utils` for JAX: raw uint32 PRNG keys.

AlgoPerf's runner hands submissions raw keys (`jax.random.PRNGKey`), not
typed ones, so code that indexes or reshapes a key keeps working.
"""

from __future__ import annotations

import jax

PRNGKey = jax.random.PRNGKey


def split(key: jax.Array, num: int = 2) -> jax.Array:
  return jax.random.split(key, num)


def fold_in(key: jax.Array, data: int) -> jax.Array:
  return jax.random.fold_in(key, data)
