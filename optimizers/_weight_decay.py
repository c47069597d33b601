"""Weight decay placement shared by the optimizer aliases.

Coupled (L2) decay adds `wd * p` to the gradient before the moments see it;
decoupled decay adds it to the preconditioned update, so that with the
learning rate applied afterwards it becomes `p -= lr * wd * p` (AdamW). Both
reuse `optax.add_decayed_weights`, which already handles masks and skips a
constant zero decay at no cost.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax


def around(
    block: optax.GradientTransformation,
    weight_decay: Any,
    mask: Any,
    *,
    decoupled: bool,
) -> list[optax.GradientTransformation]:
  """`block` with weight decay before it (coupled) or after it (decoupled)."""
  decay = optax.add_decayed_weights(weight_decay, mask)
  return [block, decay] if decoupled else [decay, block]


def scaled_by_learning_rate(
    weight_decay: Any, learning_rate: Any, mask: Any
) -> optax.GradientTransformation:
  """Adds `lr_t * wd * p`: decoupled decay after a block that already applied lr.

  Used where the learning rate cannot be factored out of the block (AdaMod's
  step-size EMA mixes learning rates of different steps).
  """
  if callable(learning_rate):
    return optax.add_decayed_weights(
        lambda count: weight_decay * learning_rate(count), mask
    )
  if isinstance(weight_decay, (int, float)) and weight_decay == 0.0:
    return optax.add_decayed_weights(0.0, mask)
  return optax.add_decayed_weights(weight_decay * learning_rate, mask)


def mask_tree(mask: Any, params: Any) -> Any:
  """Expands an Optax-style mask (tree, prefix tree or callable) to `params`.

  For blocks that apply weight decay internally (AdamP, SGDP), where the
  decay factor depends on the block's own computation and so cannot be a
  separate `optax.add_decayed_weights`.
  """
  if mask is None:
    return jax.tree.map(lambda _: True, params)
  resolved = mask(params) if isinstance(mask, Callable) else mask
  return jax.tree.map(
      lambda m, sub: jax.tree.map(lambda _: m, sub), resolved, params
  )


def as_multiplier(flag: Any, dtype: Any) -> jax.Array:
  """A mask entry as 0/1 in `dtype` (works for Python and traced booleans)."""
  return jnp.asarray(flag).astype(dtype)
