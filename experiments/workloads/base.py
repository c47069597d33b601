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
from typing import Any, Literal, Mapping

import jax
import numpy as np

Batch = Mapping[str, np.ndarray]
Params = Any
ModelState = Any  # e.g. batch-norm statistics; None when the model has none.


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

  def num_params(self) -> int:
    shapes = jax.tree.leaves(self.param_shapes(), is_leaf=lambda x: isinstance(x, tuple))
    return int(sum(np.prod(s) for s in shapes))
