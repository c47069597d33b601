"""Trains a small Flax MLP with any registry optimizer and prints its loss curve.

The stand-in main job until the AlgoPerf-style runner lands:

    python -m experiments.example                       # radam vs adamw
    python -m experiments.example --optimizers=adabound,adamp --steps=500
    python -m experiments.example --hparams='{"learning_rate": 3e-3}'

The task is two interleaved spirals (a classic non-linear classification
problem generated here, no download), trained with minibatches; the table shows
train loss and held-out accuracy for every optimizer, evaluated at
`optimizers.eval_params` (the right point for averaging methods).
"""

from __future__ import annotations

import json
import time
from typing import Any, Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers

_OPTIMIZERS = flags.DEFINE_list(
    "optimizers", ["radam", "adamw"], "Registry names to train with."
)
_STEPS = flags.DEFINE_integer("steps", 2000, "Training steps per optimizer.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 128, "Minibatch size.")
_HPARAMS = flags.DEFINE_string(
    "hparams", "{}", "JSON overrides of the registry defaults, for every optimizer."
)
_SEED = flags.DEFINE_integer("seed", 0, "Seed for data, initialisation and batches.")
_REPORT_EVERY = flags.DEFINE_integer("report_every", 200, "Steps between rows.")


def spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """Two interleaved spirals with label noise-free classes 0 and 1."""
  t = np.sqrt(rng.uniform(size=n)) * 3 * np.pi
  labels = rng.integers(0, 2, size=n)
  sign = np.where(labels == 0, 1.0, -1.0)[:, None]
  points = sign * np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
  points += 0.02 * rng.normal(size=points.shape)
  return points.astype(np.float32), labels.astype(np.int32)


class MLP(nn.Module):
  features: Sequence[int] = (64, 64)

  @nn.compact
  def __call__(self, x):
    for width in self.features:
      x = nn.gelu(nn.Dense(width)(x))
    return nn.Dense(2)(x)


def train(name: str, hparams: dict[str, Any], seed: int) -> list[tuple[int, float, float]]:
  """Returns rows (step, mean train loss since last row, test accuracy)."""
  rng = np.random.default_rng(seed)
  x_train, y_train = spirals(4096, rng)
  x_test, y_test = spirals(1024, rng)
  model = MLP()
  params = model.init(jax.random.key(seed), x_train[:1])
  spec = optimizers.registry[name]
  optimizer = spec.build(**hparams)
  state = optimizer.init(params)

  def loss_fn(params, x, y):
    logits = model.apply(params, x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  @jax.jit
  def step(params, state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    extra = dict(value=loss) if spec.needs_value else {}  # induced_metric_log.
    updates, state = optimizer.update(grads, state, params, **extra)
    return optax.apply_updates(params, updates), state, loss

  @jax.jit
  def accuracy(params, state):
    logits = model.apply(optimizers.eval_params(state, params), x_test)
    return jnp.mean(jnp.argmax(logits, -1) == y_test)

  rows, losses = [], []
  for t in range(1, _STEPS.value + 1):
    batch = rng.integers(0, len(x_train), size=_BATCH_SIZE.value)
    params, state, loss = step(params, state, x_train[batch], y_train[batch])
    losses.append(loss)
    if t % _REPORT_EVERY.value == 0 or t == _STEPS.value:
      rows.append((t, float(np.mean(jax.device_get(losses))), float(accuracy(params, state))))
      losses = []
  return rows


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  try:
    hparams = json.loads(_HPARAMS.value)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--hparams is not valid JSON: {e}") from None
  if not isinstance(hparams, dict):
    raise app.UsageError("--hparams must be a JSON object")
  for name in _OPTIMIZERS.value:
    if name not in optimizers.registry:
      raise app.UsageError(
          f"unknown optimizer {name!r}; registered: {', '.join(sorted(optimizers.registry))}"
      )
  results = {}
  for name in _OPTIMIZERS.value:
    start = time.perf_counter()
    print(f"training {name} for {_STEPS.value} steps ...", flush=True)
    results[name] = train(name, hparams, _SEED.value)
    print(f"  done in {time.perf_counter() - start:.1f}s", flush=True)

  names = list(results)
  header = "| step | " + " | ".join(f"{n} loss | {n} acc" for n in names) + " |"
  print("\nTwo-spirals MLP: mean train loss over the last rows' steps, test accuracy")
  print(header)
  print("|" + "---|" * (1 + 2 * len(names)))
  for i, (t, _, _) in enumerate(results[names[0]]):
    cells = " | ".join(f"{results[n][i][1]:.4f} | {results[n][i][2]:.3f}" for n in names)
    print(f"| {t} | {cells} |")


if __name__ == "__main__":
  app.run(main)
