"""Training batches placed on the devices, in the trainer's order.

Batch t of a seed is `workload.train_batch(seed, t, batch_size)`, the same
for a trial, a resumed trial and a probe with that seed; here it is put on
the devices with the batch sharding (`experiments.sharding`). Shared by the
trainer and the probes, which import nothing from each other for it.
"""

from __future__ import annotations

from typing import Any

import jax

from experiments.workloads.base import Workload


def placed_batch(workload: Workload, seed: int, step: int, batch_size: int, sharding: Any) -> dict[str, Any]:
  """Training batch `step` of `seed`, put on the devices with `sharding`."""
  return jax.device_put(dict(workload.train_batch(seed, step, batch_size)), sharding)


class BatchQueue:
  """The input queue: batches for steps start_step, start_step + 1, ...

  Its position is the next global step, so it is checkpointed as that step.
  """

  def __init__(self, workload: Workload, seed: int, batch_size: int, start_step: int, sharding: Any):
    self.workload, self.seed, self.batch_size = workload, seed, batch_size
    self.step = start_step
    self._sharding = sharding

  def __iter__(self):
    return self

  def __next__(self):
    batch = self.peek()
    self.step += 1
    return batch

  def peek(self) -> dict[str, Any]:
    """The next batch, without moving the queue."""
    return placed_batch(self.workload, self.seed, self.step, self.batch_size, self._sharding)
