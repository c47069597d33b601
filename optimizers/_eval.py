"""`eval_params`: the parameters at which to evaluate (or checkpoint) a model.

Most optimizers train and evaluate at the same point. Schedule-free methods
train at y and evaluate at x; averaging methods evaluate at the average. Such
a transformation marks its state type with an `eval_params(self, params)`
method, and `eval_params` finds it anywhere inside an optimizer state: in an
`optax.chain` tuple, under `optax.inject_hyperparams`, `optax.MultiSteps`,
`optax.masked` or any other wrapper that keeps inner states as pytree nodes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import jax
import optax


@runtime_checkable
class HasEvalParams(Protocol):
  """A state that knows the parameters to evaluate at."""

  def eval_params(self, params: optax.Params) -> optax.Params:
    ...


def _is_marked(node: Any) -> bool:
  # Check the type, not the instance: NamedTuple states are also tuples, and
  # a field called `eval_params` must not count.
  return callable(getattr(type(node), "eval_params", None))


def eval_params(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
  """The parameters to evaluate or checkpoint for any optimizer state.

  Args:
    opt_state: the state of any steplab or Optax optimizer or chain.
    params: the current (training) parameters.

  Returns:
    `params` unchanged for optimizers that evaluate where they train; the
    evaluation point (x for schedule-free, the averaged iterate for
    averaging methods) otherwise.

  Raises:
    ValueError: if the state holds more than one evaluation-point rule (e.g.
      two averaging transformations), which would be ambiguous.
  """
  marked = [
      node
      for node in jax.tree.leaves(opt_state, is_leaf=_is_marked)
      if _is_marked(node)
  ]
  if not marked:
    return params
  if len(marked) > 1:
    names = ", ".join(type(node).__name__ for node in marked)
    raise ValueError(
        "eval_params: the optimizer state holds several evaluation-point"
        f" rules ({names}); compose at most one averaging or schedule-free"
        " transformation."
    )
  return marked[0].eval_params(params)
