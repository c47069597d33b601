"""The workload interface, after AlgoPerf's `spec.Workload`.

A workload owns its data, model, loss, metrics and targets. The runner only
talks to this interface, so a workload written for steplab looks like one
written for AlgoPerf (`init_model_fn`, `model_fn`, `loss_fn`, `eval_model`,
targets, budget, `step_hint`, `eval_period_time_sec`).

Differences from AlgoPerf, on purpose:
  * Data is a deterministic function of (seed, step): `train_batch(seed,
    step, batch_size)` returns the batch for any global step, so a resumed run
    sees exactly the batches an uninterrupted run would (the iterator
    position is just the step), and data selection needs no hidden state.
  * Batches are dicts of NumPy arrays ("inputs", "targets", optional
    "weights" for padding); the runner shards them over devices.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
import functools
from typing import Any, Literal, Mapping

import jax
import numpy as np

Batch = Mapping[str, np.ndarray]
Params = Any
ModelState = Any  # e.g. batch-norm statistics; None when the model has none.


class ParameterType(enum.Enum):
  """What a parameter is, as AlgoPerf's `spec.ParameterType` names it.

  Submissions receive a tree of these (`current_params_types`) to treat, say,
  norms and biases differently from weights.
  """

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
  ATTENTION_QKV = 12
  ATTENTION_KV = 13
  ATTENTION_BIAS = 14


_ATTENTION_KERNELS = {
    "query": ParameterType.ATTENTION_Q, "key": ParameterType.ATTENTION_K,
    "value": ParameterType.ATTENTION_V, "out": ParameterType.ATTENTION_OUT,
    "qkv": ParameterType.ATTENTION_QKV, "kv": ParameterType.ATTENTION_KV,
}


def parameter_type(path: tuple[str, ...], ndim: int) -> ParameterType:
  """The type of the parameter at Flax `path` (module names, then the leaf's).

  Flax's naming is the signal: `nn.Embed` stores "embedding", norms store
  "scale"/"bias" under a `*Norm*` module, `nn.MultiHeadDotProductAttention`
  keeps its projections in "query"/"key"/"value"/"out", and a "kernel" of more
  than two axes outside attention is a convolution's.
  """
  leaf, modules = path[-1], path[:-1]
  if leaf == "embedding" or any("Embed" in m for m in modules) or leaf == "positions":
    return ParameterType.EMBEDDING
  norm = next((m for m in reversed(modules) if "Norm" in m), None)
  if norm is not None and leaf in ("scale", "bias"):
    batch = "BatchNorm" in norm
    if leaf == "scale":
      return ParameterType.BATCH_NORM_SCALE if batch else ParameterType.LAYER_NORM_SCALE
    return ParameterType.BATCH_NORM_BIAS if batch else ParameterType.LAYER_NORM_BIAS
  if modules and modules[-1] in _ATTENTION_KERNELS and any("Attention" in m for m in modules):
    return ParameterType.ATTENTION_BIAS if leaf == "bias" else _ATTENTION_KERNELS[modules[-1]]
  if leaf == "bias":
    return ParameterType.BIAS
  if leaf == "kernel" and ndim > 2:
    return ParameterType.CONV_WEIGHT
  return ParameterType.WEIGHT


def _key_name(key: Any) -> str:
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


@dataclasses.dataclass(frozen=True)
class Targets:
  """What counts as success, and how long a submission may try.

  Attributes:
    metric: name of the validation metric the target is on (a key of the
      dict `eval_model` returns, without the split prefix), e.g. "accuracy".
    mode: "max" if higher is better (accuracy), "min" if lower (loss, ppl).
    validation: the validation target value.
    test: the test target value (reported, not used to stop).
    max_allowed_runtime_sec: the submission-time budget.
    eval_period_time_sec: evaluate at least this much submission time apart.
    step_hint: the step budget a well-tuned baseline needs (schedules use it).
    how_set: one sentence saying how the targets were set.
  """

  metric: str
  mode: Literal["max", "min"]
  validation: float
  test: float
  max_allowed_runtime_sec: float
  eval_period_time_sec: float
  step_hint: int
  how_set: str

  def reached(self, value: float) -> bool:
    if self.mode == "max":
      return value >= self.validation
    return value <= self.validation


class Workload(abc.ABC):
  """A benchmark workload. Subclasses set `name`, `targets`, `loss_type`."""

  name: str
  targets: Targets
  loss_type: Literal["softmax_cross_entropy", "sigmoid_cross_entropy", "mean_squared_error"]
  default_batch_size: int

  # --- Data -------------------------------------------------------------------

  @abc.abstractmethod
  def train_batch(self, seed: int, step: int, batch_size: int) -> Batch:
    """The training batch for global `step` (deterministic in seed and step)."""

  @abc.abstractmethod
  def eval_batches(self, split: Literal["train", "validation", "test"], batch_size: int):
    """Yields evaluation batches of `split` covering it once (padded + weights)."""

  # --- Model ------------------------------------------------------------------

  @abc.abstractmethod
  def init_model_fn(self, rng: jax.Array) -> tuple[Params, ModelState]:
    """Initial parameters and model state (None if stateless)."""

  @abc.abstractmethod
  def model_fn(
      self,
      params: Params,
      batch: Batch,
      model_state: ModelState,
      mode: Literal["train", "eval"],
      rng: jax.Array,
      update_batch_norm: bool,
  ) -> tuple[jax.Array, ModelState]:
    """Logits (or predictions) for `batch["inputs"]` and the new model state."""

  @abc.abstractmethod
  def loss_fn(
      self,
      label_batch: jax.Array,
      logits_batch: jax.Array,
      mask_batch: jax.Array | None = None,
      label_smoothing: float = 0.0,
  ) -> dict[str, jax.Array]:
    """{"summed": sum of per-example losses, "n_valid_examples", "per_example"}."""

  @abc.abstractmethod
  def eval_model(
      self,
      params: Params,
      model_state: ModelState,
      rng: jax.Array,
      split: Literal["train", "validation", "test"],
  ) -> dict[str, float]:
    """Metrics on `split`, e.g. {"loss": ..., "accuracy": ...}; must include
    `targets.metric`."""

  # --- Derived ----------------------------------------------------------------

  def param_shapes(self, rng: jax.Array | None = None) -> Any:
    """Parameter shapes, without allocating (via jax.eval_shape)."""
    rng = jax.random.key(0) if rng is None else rng
    params, _ = jax.eval_shape(self.init_model_fn, rng)
    return jax.tree.map(lambda x: x.shape, params)

  @functools.cached_property
  def model_params_types(self) -> Any:
    """A tree like the parameters of `ParameterType`s (AlgoPerf's name).

    Inferred from the Flax parameter paths by `parameter_type`; a workload
    whose names say otherwise overrides this.
    """
    shapes = self.param_shapes()
    return jax.tree_util.tree_map_with_path(
        lambda path, shape: parameter_type(tuple(_key_name(k) for k in path), len(shape)),
        shapes, is_leaf=lambda x: isinstance(x, tuple),
    )

  def num_params(self) -> int:
    shapes = jax.tree.leaves(self.param_shapes(), is_leaf=lambda x: isinstance(x, tuple))
    return int(sum(np.prod(s) for s in shapes))
