"""SGD with heavy-ball or Nesterov momentum: AlgoPerf's momentum baselines.

With momentum mu and weight decay wd, each step (t = mu t + g from t = 0)

    g <- g + wd p                       (coupled L2, the default)
    t <- mu t + g
    u  = t            (heavy ball)      u = g + mu t   (Nesterov)
    p <- p - lr u                       (decoupled: p <- p - lr (u + wd p))

This is `optax.sgd(learning_rate, momentum, nesterov)` (`optax.trace`, which
keeps no dampening, as torch.optim.SGD) after `optax.add_decayed_weights`,
exactly the chain of AlgoPerf's archived `momentum` and `nesterov` baselines
(`algorithms/archived_paper_baselines/{momentum,nesterov}/jax/submission.py`,
forked from init2winit). Their weight decay is COUPLED: it is added to the
gradient before the momentum, so it is scaled by the learning rate and carried
by the momentum (for heavy ball the same as adding it after the momentum
trace; for Nesterov slightly different). `decoupled_weight_decay=True` instead
adds `wd p` after the momentum (`p -= lr wd p`, AdamW's placement).

Deviation from plain `optax.sgd`: bfloat16 parameters get a float32 momentum
(steplab's mixed-precision rule); float32 runs equal optax's to the bit.

References:
  Polyak, "Some methods of speeding up the convergence of iteration methods",
  1964 (heavy ball); Nesterov, "A method for solving the convex programming
  problem with convergence rate O(1/k^2)", 1983; Sutskever et al., "On the
  importance of initialization and momentum in deep learning", ICML 2013.
  Code: optax.sgd; AlgoPerf (mlcommons/algorithmic-efficiency) archived
  momentum/nesterov baselines.
"""

from __future__ import annotations

from typing import Any

import optax

from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay

__all__ = ("sgd_momentum", "sgd_nesterov")


def sgd_momentum(
    learning_rate: optax.ScalarOrSchedule = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    *,
    decoupled_weight_decay: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
  """SGD with heavy-ball momentum (AlgoPerf's `momentum` baseline).

  Defaults: lr 0.1 and momentum 0.9, the usual SGD values (optax.sgd and
  AlgoPerf set none; both lie inside AlgoPerf's search space), no decay.

  Args:
    learning_rate: a float or an Optax schedule.
    momentum: the momentum coefficient mu in [0, 1) (0: plain SGD).
    weight_decay: L2 coefficient (default 0).
    nesterov: Nesterov momentum, `u = g + mu t` (see `sgd_nesterov`).
    decoupled_weight_decay: False (default, AlgoPerf): `g += wd p` before the
      momentum; True: `p -= lr wd p` after it.
    mask: Optax-style mask (tree or callable) selecting decayed leaves.

  Returns:
    An `optax.GradientTransformation`.

  Raises:
    ValueError: for a negative learning rate or weight decay, or a momentum
      outside [0, 1).
  """
  owner = "sgd_nesterov" if nesterov else "sgd_momentum"
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_decay(owner, "momentum", momentum)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  block = _numerics.in_state_dtype(optax.trace(decay=momentum, nesterov=nesterov))
  return optax.chain(
      *_weight_decay.around(block, weight_decay, mask, decoupled=decoupled_weight_decay),
      optax.scale_by_learning_rate(learning_rate),
  )


def sgd_nesterov(
    learning_rate: optax.ScalarOrSchedule = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    *,
    decoupled_weight_decay: bool = False,
    mask: Any = None,
) -> optax.GradientTransformation:
  """SGD with Nesterov momentum (AlgoPerf's `nesterov` baseline).

  `sgd_momentum(..., nesterov=True)`; the same defaults and arguments.
  """
  return sgd_momentum(
      learning_rate,
      momentum,
      weight_decay,
      nesterov=True,
      decoupled_weight_decay=decoupled_weight_decay,
      mask=mask,
  )
