"""One trial over several processes (multi-controller SPMD with `jax.distributed`).

Every process runs the same runner with the same flags; JAX joins their
devices into one global device set, the trainer's data-parallel mesh spans it
(`jax.devices()`), and each step's gradient is all-reduced across processes.
Process 0 is the primary: it alone prints, takes the trial locks, deletes
(`--overwrite`) and writes logs and checksum files (`experiments.logs` writes
nothing elsewhere). Orbax checkpoints are saved and restored by all processes
together (Orbax writes replicated arrays from the primary).

What could differ between processes must not steer them apart, or one waits
in a collective the other never reaches: decisions taken from the clock
(measured step cost, wall-clock budget and evaluation cadence) or from the
file system while the primary writes it are taken on process 0 and broadcast
(`broadcast`). Everything here is a no-op in a single process, so single-process
runs are unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

# Environment variables the runner's --coordinator_address, --num_processes and
# --process_id default to (experiments.spmd sets them).
COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"
NUM_PROCESSES_ENV = "JAX_NUM_PROCESSES"
PROCESS_ID_ENV = "JAX_PROCESS_ID"


def initialize(coordinator_address: str | None, num_processes: int | None, process_id: int | None) -> None:
  """`jax.distributed.initialize`, before anything touches JAX's devices.

  Given a coordinator, the processes are those of `num_processes` and
  `process_id`; without one, JAX detects the cluster itself (TPU pod slices,
  SLURM, MPI). On the CPU platform (JAX_PLATFORMS=cpu), collectives go
  through gloo -- with one process too, so that a one-process run sums its
  devices' gradients in gloo's order, as a run over several processes does.
  """
  platforms = os.environ.get("JAX_PLATFORMS", "") or jax.config.jax_platforms or ""
  if platforms.split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address:
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()


def is_multiprocess() -> bool:
  """Whether this run spans several processes (False until JAX's distributed client is up)."""
  return _initialized() and jax.process_count() > 1


def _initialized() -> bool:
  check = getattr(jax.distributed, "is_initialized", None)
  if check is not None:
    return check()
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top  (older JAX)
  return jax_distributed.global_state.client is not None


def is_primary() -> bool:
  """Whether this process prints and writes: process 0, or the only process."""
  return not is_multiprocess() or jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits until every process has reached `barrier(name)`; no-op in one process."""
  if is_multiprocess():
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _broadcast_array(x: np.ndarray) -> np.ndarray:
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.broadcast_one_to_all(x))


def broadcast(obj: Any) -> Any:
  """Process 0's `obj` (anything JSON can hold) on every process; `obj` itself in one process.

  Sent as its JSON text's bytes (its length first), so floats arrive exactly
  (JAX without x64 would round a float64 array to float32). A collective:
  every process must call it, in the same order.
  """
  if not is_multiprocess():
    return obj
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8) if is_primary() else np.zeros(0, np.uint8)
  length = int(_broadcast_array(np.asarray([len(data)], np.int32))[0])
  if not is_primary():
    data = np.zeros(length, np.uint8)
  return json.loads(_broadcast_array(data).astype(np.uint8).tobytes().decode())


def broadcast_flags(*flags: bool) -> tuple[bool, ...]:
  """Process 0's booleans on every process (one small collective); unchanged in one process."""
  if not is_multiprocess():
    return tuple(flags)
  return tuple(bool(v) for v in _broadcast_array(np.asarray(flags, np.int32)))
