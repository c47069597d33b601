"""Reading an optimizer state: `eval_params` and `estimated_d`.

`eval_params` gives the parameters at which to evaluate (or checkpoint) a model.

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

__all__ = ("eval_params", "estimated_d", "HasEvalParams")


@runtime_checkable
class HasEvalParams(Protocol):
  """A state that knows the parameters to evaluate at."""

  def eval_params(self, params: optax.Params) -> optax.Params:
    ...


def _marked(opt_state: optax.OptState, method: str) -> list[Any]:
  """The nodes of `opt_state` whose type defines `method`, outermost first."""
  # Check the type, not the instance: NamedTuple states are also tuples, and
  # a field with the method's name must not count.
  is_marked = lambda node: callable(getattr(type(node), method, None))
  return [node for node in jax.tree.leaves(opt_state, is_leaf=is_marked) if is_marked(node)]


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
  marked = _marked(opt_state, "eval_params")
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


def estimated_d(opt_state: optax.OptState) -> jax.Array | None:
  """The step-size estimate d of a parameter-free optimizer, if the state has one.

  Prodigy and D-Adaptation estimate the distance to the solution, d, and scale
  their steps by it; their state types mark it with an `estimated_d(self)`
  method. The runner logs it; `schedule_free` weights its average with it,
  as the reference wrapper does.

  Args:
    opt_state: the state of any optimizer or chain.

  Returns:
    The scalar d, or None when no transformation in the state estimates one.

  Raises:
    ValueError: if several transformations in the state estimate a d.
  """
  marked = _marked(opt_state, "estimated_d")
  if not marked:
    return None
  if len(marked) > 1:
    names = ", ".join(type(node).__name__ for node in marked)
    raise ValueError(f"estimated_d: the optimizer state holds several d estimates ({names}).")
  return marked[0].estimated_d()
