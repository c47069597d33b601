"""Optax transformations running on the fused kernels (`backend="pallas"`)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from pallas_kernels import adam_family

BACKENDS = ("xla", "pallas")


def _check_backend(owner: str, backend: str) -> None:
  """This module's own `backend` arguments (optimizers check theirs with `optimizers._validation`)."""
  if backend not in BACKENDS:
    raise ValueError(f"{owner}: unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")


def scale_by_adam(
    b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, *, backend: str = "pallas"
) -> optax.GradientTransformation:
  """`optax.scale_by_adam` (eps_root = 0) on the fused kernel; the same state.

  backend="xla" returns optax's own transformation, so checkpoints and chains
  are interchangeable between the two.
  """
  _check_backend("scale_by_adam", backend)
  reference = optax.scale_by_adam(b1, b2, eps)
  if backend == "xla":
    return reference

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    # Exactly optax's bias corrections (`1 - decay**count`, integer count), so
    # the two backends differ by kernel rounding only.
    bc1 = 1 - b1**count
    bc2 = 1 - b2**count
    scalars = adam_family.adam_scalars(b1, b2, eps, bc1, bc2)
    u, mu, nu = adam_family.tree_update(scalars, updates, state.mu, state.nu)
    return u, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

  def init_fn(params):
    state = reference.init(params)
    # Float32 moments whatever the parameter dtype (mixed precision).
    return state._replace(
        mu=optax.tree.cast(state.mu, jnp.float32), nu=optax.tree.cast(state.nu, jnp.float32))

  return optax.GradientTransformation(init_fn, update_fn)


def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 1e-4,
    mask: Any = None,
    *,
    backend: str = "pallas",
) -> optax.GradientTransformation:
  """`optax.adamw` with its moments and direction in the fused kernel."""
  return optax.chain(
      scale_by_adam(b1, b2, eps, backend=backend),
      optax.add_decayed_weights(weight_decay, mask),
      optax.scale_by_learning_rate(learning_rate),
  )
