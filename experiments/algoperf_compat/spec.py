"""AlgoPerf's submission API (`algoperf.spec`), for submissions run by steplab.

Submissions written for AlgoPerf import `from algoperf import spec` and use its
enums, `ShapeTuple`, `TrainingCompleteError` and type names. steplab's runner
makes this module importable as `algoperf.spec` when no real `algoperf` is
installed (see `experiments.algoperf_compat.install`), so such files run
unchanged. Names and enum values follow AlgoPerf's `algoperf/spec.py` (v0.6);
unlike it, this module needs neither PyTorch nor TensorFlow.

steplab's own workloads subclass `Workload` below, so they expose the same
attributes a submission reads (`step_hint`, `param_shapes`,
`model_params_types`, `metrics_logger`, targets, ...).
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union


class LossType(enum.Enum):
  SOFTMAX_CROSS_ENTROPY = 0
  SIGMOID_CROSS_ENTROPY = 1
  MEAN_SQUARED_ERROR = 2
  CTC_LOSS = 3
  MEAN_ABSOLUTE_ERROR = 4


class ForwardPassMode(enum.Enum):
  TRAIN = 0
  EVAL = 1


class ParameterType(enum.Enum):
  """What a parameter is; submissions get a tree of these per model."""

  WEIGHT = 0
  BIAS = 1
  CONV_WEIGHT = 2
  BATCH_NORM_SCALE = 3
  BATCH_NORM_BIAS = 4
  LAYER_NORM_SCALE = 5
  LAYER_NORM_BIAS = 6
  EMBEDDING = 7
  ATTENTION_Q = 8
  ATTENTION_K = 9
  ATTENTION_V = 10
  ATTENTION_OUT = 11
  ATTENTION_QKV = 12  # Fused query/key/value projections.
  ATTENTION_KV = 13  # Fused key/value projections.
  ATTENTION_BIAS = 14


class ShapeTuple:
  """A parameter's shape as one pytree LEAF (a plain tuple would be a node).

  `workload.param_shapes` is a tree of these, so
  `jax.tree.map(lambda s: jnp.zeros(s.shape_tuple), workload.param_shapes)`
  builds a zero tree like the parameters.
  """

  def __init__(self, shape_tuple):
    self.shape_tuple = tuple(shape_tuple)

  def __repr__(self) -> str:
    return f"ShapeTuple({self.shape_tuple})"

  def __eq__(self, other) -> bool:
    return isinstance(other, ShapeTuple) and self.shape_tuple == other.shape_tuple

  def __hash__(self) -> int:
    return hash(self.shape_tuple)


class TrainingCompleteError(Exception):
  """Raised by `update_params` to end training early (AlgoPerf's runner then
  evaluates once more and stops; a target not reached by then is a miss)."""


class Workload:
  """The part of AlgoPerf's `spec.Workload` every workload shares.

  steplab's `experiments.workloads.Workload` subclasses this and adds the
  abstract interface; AlgoPerf's metrics logger is attached by the runner.
  """

  metrics_logger: Any = None

  def attach_metrics_logger(self, metrics_logger: Any) -> None:
    self.metrics_logger = metrics_logger


Tensor = Any
Shape = Union[Tuple[int, ...], ShapeTuple]
ParameterShapeTree = Dict[str, Any]
ParameterKey = str
ParameterContainer = Any
ParameterTypeTree = Dict[ParameterKey, Any]
RandomState = Any
OptimizerState = Union[Dict[str, Any], Tuple[Any, Any]]
Hyperparameters = Any
Timing = int
Steps = int
ModelAuxiliaryState = Any
ModelInitState = Tuple[ParameterContainer, ModelAuxiliaryState]
UpdateReturn = Tuple[OptimizerState, ParameterContainer, ModelAuxiliaryState]

InitOptimizerFn = Callable[
    [Workload, ParameterContainer, ModelAuxiliaryState, Hyperparameters, RandomState],
    OptimizerState]
UpdateParamsFn = Callable[
    [Workload, ParameterContainer, ParameterTypeTree, ModelAuxiliaryState, Hyperparameters,
     Dict[str, Tensor], LossType, OptimizerState, List[Tuple[int, float]], int, RandomState,
     Optional[Dict[str, Any]]],
    UpdateReturn]
PrepareForEvalFn = Callable[
    [Workload, ParameterContainer, ParameterTypeTree, ModelAuxiliaryState, Hyperparameters,
     LossType, OptimizerState, List[Tuple[int, float]], int, RandomState],
    UpdateReturn]
DataSelectionFn = Callable[
    [Workload, Iterator[Dict[str, Any]], OptimizerState, ParameterContainer,
     ModelAuxiliaryState, Hyperparameters, int, RandomState],
    Dict[str, Tensor]]
