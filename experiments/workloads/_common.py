"""Pieces every workload shares: deterministic sampling, padded evaluation, losses.

Kept in one place so that "train_batch is a pure function of (seed, step)" and
"every evaluation example counts exactly once" are implemented once.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterator, Literal, Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.workloads import base

Split = Literal["train", "validation", "test"]
SPLITS = ("train", "validation", "test")


def check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def check_batch_size(batch_size: int) -> None:
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")


@functools.lru_cache(maxsize=8)
def _epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  perm.flags.writeable = False
  return perm


def epoch_indices(seed: int, step: int, batch_size: int, n: int) -> np.ndarray:
  """Example indices of the batch at `step`: epochs of fresh permutations.

  Global position p = step * batch_size + i is example `perm_e[p % n]` of epoch
  e = p // n, with perm_e drawn from `default_rng([seed, e])`. So the batch is a
  pure function of its arguments (resuming at any step reproduces it), every
  epoch sees each example once, and a batch may straddle two epochs.
  """
  check_batch_size(batch_size)
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}")
  positions = int(step) * int(batch_size) + np.arange(batch_size, dtype=np.int64)
  epochs, offsets = np.divmod(positions, n)
  out = np.empty(batch_size, np.int64)
  for epoch in np.unique(epochs):
    where = epochs == epoch
    out[where] = _epoch_permutation(int(seed), int(epoch), n)[offsets[where]]
  return out


def padded_batches(
    arrays: Mapping[str, np.ndarray], batch_size: int
) -> Iterator[dict[str, np.ndarray]]:
  """Yields `arrays` in order, in batches of exactly `batch_size` rows.

  The last batch is zero-padded; "weights" (float32, shape (batch,)) is 1 for
  real rows and 0 for padding, so every row counts once and there is only one
  batch shape to compile.
  """
  check_batch_size(batch_size)
  n = len(next(iter(arrays.values())))
  for start in range(0, n, batch_size):
    stop = min(start + batch_size, n)
    pad = batch_size - (stop - start)
    batch = {}
    for key, value in arrays.items():
      chunk = value[start:stop]
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
      batch[key] = chunk
    batch["weights"] = np.concatenate(
        [np.ones(stop - start, np.float32), np.zeros(pad, np.float32)]
    )
    yield batch


def softmax_cross_entropy(
    label_batch: jax.Array,
    logits_batch: jax.Array,
    mask_batch: jax.Array | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, jax.Array]:
  """Summed softmax cross-entropy over integer labels, AlgoPerf's loss_fn contract.

  `label_smoothing` may be a Python number or a traced scalar.

  Works for any leading shape: (batch,) labels for classification, (batch,
  time) for language models. A mask of lower rank than the labels (e.g. the
  per-example "weights" of an LM eval batch) is broadcast over the trailing
  axes, so `n_valid_examples` counts tokens for an LM.
  """
  logits = logits_batch.astype(jnp.float32)
  num_classes = logits.shape[-1]
  if isinstance(label_smoothing, (int, float)) and label_smoothing == 0:
    # The common case, without materialising one-hot labels.
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits, label_batch)
  else:  # A number or a traced value (AlgoPerf submissions pass it into jit).
    one_hot = optax.smooth_labels(jax.nn.one_hot(label_batch, num_classes), label_smoothing)
    per_example = optax.softmax_cross_entropy(logits, one_hot)
  if mask_batch is None:
    mask = jnp.ones_like(per_example)
  else:
    mask = jnp.asarray(mask_batch, jnp.float32)
    mask = jnp.broadcast_to(mask.reshape(mask.shape + (1,) * (per_example.ndim - mask.ndim)),
                            per_example.shape)
  per_example = per_example * mask
  return {"summed": per_example.sum(), "n_valid_examples": mask.sum(), "per_example": per_example}


def kernel_init(key, shape, dtype=jnp.float32):
  """Flax's default kernel init (LeCun normal), drawn flat and reshaped.

  The same distribution as `nn.initializers.lecun_normal()` for Dense and
  conv kernels (fan-in = every axis but the last), but XLA:CPU compiles random
  draws slowly, the more so the higher their rank (jax 0.10.2: 4.6 s for one
  (3, 3, 4, 8) draw, 0.5 s for (20, 10), 0.2 s flat), and a model's init
  compiles one draw per kernel: this keeps start-up and tests fast on CPU.
  """
  fan_in = math.prod(shape[:-1])
  stddev = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # Std of N(0, 1) truncated to [-2, 2].
  flat = jax.random.truncated_normal(key, -2.0, 2.0, (math.prod(shape),), dtype)
  return (flat * stddev).astype(dtype).reshape(shape)


def normal_init(stddev: float) -> Callable[..., jax.Array]:
  """N(0, stddev^2) entries, drawn flat (see `kernel_init`)."""

  def init(key, shape, dtype=jnp.float32):
    return (stddev * jax.random.normal(key, (math.prod(shape),), dtype)).reshape(shape)

  return init


def jit_init(module, **kwargs) -> Callable[..., Any]:
  """`module.init` jitted: run eagerly it compiles op by op (10 s for a small ResNet)."""
  return jax.jit(functools.partial(module.init, **kwargs))


class EvalMixin:
  """`eval_model` as a sum of jitted per-batch statistics over `eval_batches`.

  A subclass supplies `eval_batch_size`, `_batch_stats(params, model_state,
  batch) -> {name: summed value}` (traced once, jitted and cached on the
  instance) and `_finalize(totals) -> {name: float}`. Sums stay on the device
  until the end: one transfer per evaluation.
  """

  eval_batch_size: int
  _jitted_batch_stats: Callable[..., Any] | None = None

  def _batch_stats(self, params, model_state, batch) -> dict[str, jax.Array]:
    raise NotImplementedError

  def _finalize(self, totals: dict[str, float]) -> dict[str, float]:
    raise NotImplementedError

  def eval_model(self, params, model_state, rng, split):
    del rng  # Evaluation is deterministic.
    check_split(split)
    if self._jitted_batch_stats is None:
      self._jitted_batch_stats = jax.jit(self._batch_stats)
    totals = None
    for batch in self.eval_batches(split, self.eval_batch_size):  # pytype: disable=attribute-error
      stats = self._jitted_batch_stats(params, model_state, batch)
      totals = stats if totals is None else jax.tree.map(jnp.add, totals, stats)
    if totals is None:
      raise ValueError(f"split {split!r} of {self.name} is empty")  # pytype: disable=attribute-error
    return self._finalize({k: float(v) for k, v in jax.device_get(totals).items()})


class ClassifierEvalMixin(EvalMixin):
  """Loss and accuracy of a classifier whose model_fn returns logits."""

  def _batch_stats(self, params, model_state, batch):
    logits, _ = self.model_fn(  # pytype: disable=attribute-error
        params, batch, model_state, base.ForwardPassMode.EVAL, None, update_batch_norm=False
    )
    weights = batch["weights"]
    loss = self.loss_fn(batch["targets"], logits, weights)  # pytype: disable=attribute-error
    correct = (jnp.argmax(logits, -1) == batch["targets"]) * weights
    return {"loss": loss["summed"], "correct": correct.sum(), "count": weights.sum()}

  def _finalize(self, totals):
    return {"loss": totals["loss"] / totals["count"],
            "accuracy": totals["correct"] / totals["count"]}


class ArrayClassificationWorkload(ClassifierEvalMixin, base.Workload):
  """A classifier on in-memory arrays: `self._splits[split] = (inputs, labels)`.

  Training batches are epochs of fresh permutations (`epoch_indices`);
  "train" evaluation covers a fixed subset of the training set as large as the
  validation set (as AlgoPerf does), so its cost does not grow with the data.
  """

  loss_type = base.LossType.SOFTMAX_CROSS_ENTROPY
  eval_batch_size = 1000
  _splits: dict[str, tuple[np.ndarray, np.ndarray]]

  def _prepare_inputs(self, inputs: np.ndarray) -> np.ndarray:
    """Stored inputs -> model inputs (e.g. uint8 -> normalised float32)."""
    return inputs

  @property
  def num_train_examples(self) -> int:
    return len(self._splits["train"][1])

  def num_examples(self, split: Split) -> int:
    """Rows `eval_batches(split, ...)` covers."""
    check_split(split)
    if split == "train":
      return min(self.num_train_examples, len(self._splits["validation"][1]))
    return len(self._splits[split][1])

  def train_batch(self, seed, step, batch_size):
    inputs, labels = self._splits["train"]
    idx = epoch_indices(seed, step, batch_size, len(labels))
    return {"inputs": self._prepare_inputs(inputs[idx]), "targets": labels[idx]}

  def eval_batches(self, split, batch_size):
    check_split(split)
    inputs, labels = self._splits[split]
    n = self.num_examples(split)
    for batch in padded_batches({"inputs": inputs[:n], "targets": labels[:n]}, batch_size):
      batch["inputs"] = self._prepare_inputs(batch["inputs"])
      yield batch

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    return softmax_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)
