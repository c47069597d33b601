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

from experiments.algoperf_compat import spec

Batch = Mapping[str, np.ndarray]
Params = Any
ModelState = Any  # e.g. batch-norm statistics; None when the model has none.


# AlgoPerf's enums, one definition (steplab's copy of `algoperf.spec`).
ParameterType = spec.ParameterType
ForwardPassMode = spec.ForwardPassMode
LossType = spec.LossType


def is_train_mode(mode: Any) -> bool:
  """Whether a `model_fn` mode is training.

  Accepts AlgoPerf's `spec.ForwardPassMode` members (steplab's or a real
  AlgoPerf installation's: matched by name) and, for steplab's own callers,
  the strings "train" and "eval". Anything else is an error rather than a
  silent evaluation-mode pass.
  """
  if isinstance(mode, enum.Enum) and type(mode).__name__ == "ForwardPassMode":
    name = mode.name
  elif isinstance(mode, str):
    name = mode.upper()
  else:
    name = None
  if name not in ("TRAIN", "EVAL"):
    raise ValueError(f"model_fn mode must be spec.ForwardPassMode.TRAIN/EVAL (or 'train'/'eval'), got {mode!r}")
  return name == "TRAIN"


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


MEASURES = ("wallclock", "steps")
# Budget coherence for step-measured workloads: the baseline's schedule
# (warmup + cosine over step_hint) must span the step budget, so no registry
# optimizer spends more than this fraction of its budget with its learning
# rate already at its final value.
MAX_FINAL_FRACTION = 0.1
# Evaluations per step budget: a target reached at a fifth of the budget is
# still resolved by at least ten evaluations (at half of it, by 25).
EVALS_PER_BUDGET = 50


@dataclasses.dataclass(frozen=True)
class Targets:
  """What counts as success, and how long a submission may try.

  Attributes:
    metric: name of the validation metric the target is on (a key of the
      dict `eval_model` returns, without the split prefix), e.g. "accuracy".
    mode: "max" if higher is better (accuracy), "min" if lower (loss, ppl).
    validation: the validation target value.
    test: the test target value (reported, not used to stop).
    max_allowed_runtime_sec: the submission-time budget (wall-clock measure).
    eval_period_time_sec: evaluate at least this much submission time apart
      (wall-clock measure).
    step_hint: the step budget a well-tuned baseline needs (schedules use it).
    how_set: one sentence saying how the targets were set.
    measure: "wallclock" (AlgoPerf's: submission seconds, for accelerators)
      or "steps" (the CPU workloads: cost-adjusted steps, i.e. steps times
      the submission's per-step cost relative to the baseline's measured in
      isolation, `experiments.step_cost`; it does not move with machine load).
    max_steps: the step budget in cost-adjusted steps (measure "steps");
      between step_hint and (1 + MAX_FINAL_FRACTION) step_hint, so the
      baseline's schedule spans it.
    tuned_baseline: the point the targets were calibrated at,
      {"optimizer": registry name, "hyperparameters": {...}}; rerun it with
      `python -m experiments.run --workload=W --optimizer=adamw
      --hparams='{"learning_rate": ...}' --num_studies=10`.
  """

  metric: str
  mode: Literal["max", "min"]
  validation: float
  test: float
  max_allowed_runtime_sec: float
  eval_period_time_sec: float
  step_hint: int
  how_set: str
  measure: Literal["wallclock", "steps"] = "wallclock"
  max_steps: int | None = None
  tuned_baseline: Mapping[str, Any] | None = dataclasses.field(default=None, compare=False)

  def __post_init__(self):
    if self.measure not in MEASURES:
      raise ValueError(f"Targets.measure must be one of {MEASURES}, got {self.measure!r}")
    if self.measure == "steps":
      if not isinstance(self.max_steps, int) or self.max_steps < 1:
        raise ValueError(f"measure 'steps' needs a positive integer max_steps, got {self.max_steps!r}")
      if not self.step_hint <= self.max_steps <= (1 + MAX_FINAL_FRACTION) * self.step_hint:
        raise ValueError(
            f"incoherent step budget: max_steps={self.max_steps} must lie in [step_hint,"
            f" {1 + MAX_FINAL_FRACTION:g} x step_hint] = [{self.step_hint},"
            f" {int((1 + MAX_FINAL_FRACTION) * self.step_hint)}] so the baseline's schedule spans it")

  @property
  def eval_period_steps(self) -> int:
    """Steps between evaluations under the "steps" measure."""
    if self.max_steps is None:
      raise ValueError("eval_period_steps applies to the 'steps' measure only")
    return max(1, self.max_steps // EVALS_PER_BUDGET)

  def reached(self, value: float, target: float | None = None) -> bool:
    """Whether `value` meets `target` (default the validation target)."""
    target = self.validation if target is None else target
    if self.mode == "max":
      return value >= target
    return value <= target


class Workload(spec.Workload, abc.ABC):
  """A benchmark workload. Subclasses set `name`, `targets`, `loss_type`.

  Besides steplab's interface it has the attributes an AlgoPerf submission
  reads: `step_hint`, `param_shapes` (a tree of `spec.ShapeTuple`),
  `model_params_types`, `target_metric_name`, `validation_target_value`,
  `test_target_value`, `max_allowed_runtime_sec`, `eval_period_time_sec`,
  `has_reached_validation_target`, `metrics_logger`; `model_fn` takes
  AlgoPerf's `spec.ForwardPassMode` and dropout rates; `loss_fn` takes a
  traced `label_smoothing`. `loss_type` is a `spec.LossType`.

  `algoperf_base_workloads` names the AlgoPerf workloads whose batch size a
  submission's `get_batch_size` is asked for when it does not know this
  workload's name (AlgoPerf asks for a variant's base workload the same way).
  """

  name: str
  targets: Targets
  loss_type: LossType
  default_batch_size: int
  algoperf_base_workloads: tuple[str, ...] = ()

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
      mode: ForwardPassMode,
      rng: jax.Array,
      update_batch_norm: bool,
      use_running_average_bn: bool | None = None,
      dropout_rate: float | jax.Array | None = None,
      aux_dropout_rate: float | None = None,
  ) -> tuple[jax.Array, ModelState]:
    """Logits (or predictions) for `batch["inputs"]` and the new model state.

    `mode` is a `spec.ForwardPassMode` (see `is_train_mode`). Dropout rates
    default (None) to the workload's own; `dropout_rate` may be traced.
    """

  @abc.abstractmethod
  def loss_fn(
      self,
      label_batch: jax.Array,
      logits_batch: jax.Array,
      mask_batch: jax.Array | None = None,
      label_smoothing: float | jax.Array = 0.0,
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

  # --- AlgoPerf's attributes ----------------------------------------------------

  @property
  def step_hint(self) -> int:
    return self.targets.step_hint

  @property
  def target_metric_name(self) -> str:
    return self.targets.metric

  @property
  def validation_target_value(self) -> float:
    return self.targets.validation

  @property
  def test_target_value(self) -> float:
    return self.targets.test

  @property
  def max_allowed_runtime_sec(self) -> float:
    return self.targets.max_allowed_runtime_sec

  @property
  def eval_period_time_sec(self) -> float:
    return self.targets.eval_period_time_sec

  def has_reached_validation_target(self, eval_result: Mapping[str, float]) -> bool:
    return self.targets.reached(eval_result[f"validation/{self.targets.metric}"])

  def has_reached_test_target(self, eval_result: Mapping[str, float]) -> bool:
    return self.targets.reached(eval_result[f"test/{self.targets.metric}"], self.targets.test)

  # --- Derived ----------------------------------------------------------------

  @functools.cached_property
  def param_shapes(self) -> Any:
    """Parameter shapes as a tree of `spec.ShapeTuple`, without allocating."""
    params, _ = jax.eval_shape(self.init_model_fn, jax.random.key(0))
    return jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params)

  @functools.cached_property
  def model_params_types(self) -> Any:
    """A tree like the parameters of `ParameterType`s (AlgoPerf's name).

    Inferred from the Flax parameter paths by `parameter_type`; a workload
    whose names say otherwise overrides this.
    """
    return jax.tree_util.tree_map_with_path(
        lambda path, shape: parameter_type(tuple(_key_name(k) for k in path), len(shape.shape_tuple)),
        self.param_shapes,
    )

  def num_params(self) -> int:
    return int(sum(np.prod(s.shape_tuple) for s in jax.tree.leaves(self.param_shapes)))
