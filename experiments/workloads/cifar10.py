"""CIFAR-10 image classification with a ResNet (default: ResNet-18 for 32x32 inputs).

Data: the standard python-pickle release (`cifar-10-batches-py`: files
`data_batch_1` .. `data_batch_5` and `test_batch`, each a dict with b"data",
uint8 (N, 3072) channel-major, and b"labels"), read from `data_dir` or its
`cifar-10-batches-py/` subdirectory. The last `num_validation` (default 5000)
training images are the validation set; `test_batch` is the test set.

Training batches get the standard augmentation -- 4-pixel zero padding, a
random 32x32 crop and a random horizontal flip -- drawn from
`default_rng([seed, step, 1])`, so a batch is a pure function of (seed, step)
(the epoch permutation uses `[seed, epoch]`, which cannot collide: NumPy pads
seed lists with zeros). Inputs are normalised per channel.

Model: the CIFAR ResNet of He et al. (2016) -- 3x3 stem, no max-pool, basic
blocks -- with BatchNorm (momentum 0.9, as AlgoPerf) whose running statistics
are the model state. `stage_sizes` and `width` shrink it for tests.
"""

from __future__ import annotations

import functools
import os
import pickle
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from experiments.workloads import _common
from experiments.workloads import base

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = np.array([0.4914, 0.4822, 0.4465], np.float32) * 255
STD = np.array([0.2470, 0.2435, 0.2616], np.float32) * 255


def _read_batch(path: str) -> tuple[np.ndarray, np.ndarray]:
  """One pickle file -> uint8 images (N, 32, 32, 3) and int32 labels."""
  with open(path, "rb") as f:
    batch = pickle.load(f, encoding="bytes")
  images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return np.ascontiguousarray(images), np.asarray(batch[b"labels"], np.int32)


def load_cifar10(data_dir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """{"train", "test"} -> (images, labels) from the pickle batches in data_dir."""
  nested = os.path.join(data_dir, "cifar-10-batches-py")
  if not os.path.exists(os.path.join(data_dir, TEST_FILE)) and os.path.isdir(nested):
    data_dir = nested
  for name in TRAIN_FILES + (TEST_FILE,):
    if not os.path.isfile(os.path.join(data_dir, name)):
      raise FileNotFoundError(
          f"cifar10: missing {os.path.join(data_dir, name)}; data_dir must hold the python"
          f" version of CIFAR-10 ({', '.join(TRAIN_FILES)}, {TEST_FILE})"
      )
  train = [_read_batch(os.path.join(data_dir, name)) for name in TRAIN_FILES]
  return {
      "train": (np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])),
      "test": _read_batch(os.path.join(data_dir, TEST_FILE)),
  }


def augment(images: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
  """Random crop after zero padding, then random horizontal flip (NHWC)."""
  n, h, w, _ = images.shape
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  dy, dx = rng.integers(0, 2 * pad + 1, size=(2, n))
  flip = rng.random(n) < 0.5
  rows = (dy[:, None] + np.arange(h))[:, :, None]
  cols = dx[:, None] + np.arange(w)
  cols = np.where(flip[:, None], cols[:, ::-1], cols)[:, None, :]
  return padded[np.arange(n)[:, None, None], rows, cols]


class BasicBlock(nn.Module):
  filters: int
  strides: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype
    )
    conv = functools.partial(
        nn.Conv, use_bias=False, dtype=self.dtype, kernel_init=_common.kernel_init
    )
    y = nn.relu(norm()(conv(self.filters, (3, 3), self.strides)(x)))
    # Zero-init the last scale: each block starts as the identity (Goyal et al. 2017).
    y = norm(scale_init=nn.initializers.zeros)(conv(self.filters, (3, 3))(y))
    if x.shape != y.shape:
      x = norm()(conv(self.filters, (1, 1), self.strides)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  num_classes: int = 10
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = nn.Conv(
        self.width, (3, 3), use_bias=False, dtype=self.dtype,
        kernel_init=_common.kernel_init,
    )(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype)(x)
    x = nn.relu(x)
    for i, blocks in enumerate(self.stage_sizes):
      for j in range(blocks):
        x = BasicBlock(self.width * 2**i, 2 if i and not j else 1, self.dtype)(x, train)
    x = x.mean((1, 2))  # Global average pooling.
    x = nn.Dense(self.num_classes, dtype=self.dtype, kernel_init=_common.kernel_init)(x)
    return x.astype(jnp.float32)


class Cifar10ResNet(_common.ArrayClassificationWorkload):
  """CIFAR-10, ResNet-18 by default (11M parameters)."""

  name = "cifar10_resnet"
  default_batch_size = 128
  algoperf_base_workloads = ("cifar", "imagenet_resnet")  # For get_batch_size.
  num_classes = 10
  targets = base.Targets(
      metric="accuracy", mode="max", validation=0.93, test=0.92,
      max_allowed_runtime_sec=3600.0, eval_period_time_sec=60.0, step_hint=16_000,
      how_set=(
          "provisional, not calibrated (no CIFAR-10 copy offline): ResNet-18's usual accuracy"
          " after ~45 epochs at batch 128, loosened; calibrate with tools/calibrate_targets.py"
          " --workloads=cifar10_resnet --options='{\"data_dir\": ...}' on an accelerator"
      ),
  )

  def __init__(
      self,
      *,
      data_dir: str | None = None,
      num_validation: int = 5000,
      stage_sizes: Sequence[int] = (2, 2, 2, 2),
      width: int = 64,
      dtype: Any = jnp.float32,
      eval_batch_size: int = 1000,
  ):
    if data_dir is None:
      raise ValueError("cifar10_resnet needs data_dir=<directory of the CIFAR-10 python batches>")
    data = load_cifar10(data_dir)
    x, y = data["train"]
    if not 0 < num_validation < len(y):
      raise ValueError(f"num_validation={num_validation} must be in (0, {len(y)})")
    self._splits = {
        "train": (x[:-num_validation], y[:-num_validation]),
        "validation": (x[-num_validation:], y[-num_validation:]),
        "test": data["test"],
    }
    self.eval_batch_size = eval_batch_size
    self._model = ResNet(tuple(stage_sizes), width, self.num_classes, jnp.dtype(dtype))
    self._init = _common.jit_init(self._model, train=False)

  def _prepare_inputs(self, inputs):
    return (inputs.astype(np.float32) - MEAN) / STD

  def train_batch(self, seed, step, batch_size):
    images, labels = self._splits["train"]
    idx = _common.epoch_indices(seed, step, batch_size, len(labels))
    crops = augment(images[idx], np.random.default_rng([seed, step, 1]))
    return {"inputs": self._prepare_inputs(crops), "targets": labels[idx]}

  def init_model_fn(self, rng):
    variables = self._init(rng, np.zeros((1, 32, 32, 3), np.float32))
    return variables["params"], {"batch_stats": variables["batch_stats"]}

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               use_running_average_bn=None, dropout_rate=None, aux_dropout_rate=None):
    """Batch statistics (and updated running ones) iff `update_batch_norm`, as AlgoPerf.

    `use_running_average_bn=True` normalises with the running statistics even
    while updating them is asked for (AlgoPerf's flag); no dropout.
    """
    base.is_train_mode(mode)
    del rng, dropout_rate, aux_dropout_rate
    variables = {"params": params, **model_state}
    if update_batch_norm and not use_running_average_bn:
      logits, new_state = self._model.apply(
          variables, batch["inputs"], train=True, mutable=["batch_stats"]
      )
      return logits, {"batch_stats": new_state["batch_stats"]}
    return self._model.apply(variables, batch["inputs"], train=False), model_state
