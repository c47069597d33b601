"""Device meshes and parameter sharding: data parallelism and FSDP.

A mesh is written as axis sizes, `data:2,fsdp:4` (8 devices). The batch is
split over every axis (each device holds 1/8 of it); parameters are split over
the `fsdp` axis (each of the 4 devices along it holds a quarter of every large
parameter; the 2 along `data` hold the same quarter), the rest replicated.
That is FSDP (ZeRO-3) as XLA's SPMD partitioner runs it: a layer's weights are
all-gathered for its forward and backward pass, gradients reduce-scattered to
their shards, and the optimizer update runs on each shard alone.

The rule (`fsdp_spec`) follows the parameter's shape, not its name, so it
serves any Flax model: a leaf of at least `min_size` elements is split along
its largest dimension that the fsdp axis divides (the last such on a tie);
smaller leaves (biases, norms' scales) and leaves with no divisible dimension
stay replicated (they are a small share of the bytes and splitting them
would add collectives for nothing).

Optimizer states follow their parameters: `init_state` applies the same shape
rule to every leaf of the state (`jax.eval_shape` of `init`) and builds it
with those output shardings, so a moment is born sharded like its parameter
(plain `jax.jit(init)` leaves zeros it cannot trace to a parameter whole on
one device or every device), and a statistic reduced over a tensor or the tree
(Prodigy's d, DoG's norms, Adam-mini's block means, AdamP's channel cosines,
the induced metric's trace) is computed from partial sums all-reduced across
shards, never by gathering the parameter (tests/sharding_test.py checks the
compiled HLO and the numbers of every registry optimizer).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import jax
import numpy as np

P = jax.sharding.PartitionSpec
MESH_AXES = ("data", "fsdp")
# Leaves below this many elements stay replicated (see the module docstring).
MIN_SHARDED_SIZE = 2**14


def parse_mesh(text: str) -> dict[str, int]:
  """`"data:2,fsdp:4"` -> {"data": 2, "fsdp": 4} (axes in MESH_AXES order; missing ones are 1).

  Raises:
    ValueError: an unknown or repeated axis, or a size that is not a positive int.
  """
  sizes = {}
  for part in (p.strip() for p in text.split(",") if p.strip()):
    match = re.fullmatch(r"(\w+)\s*:\s*(\d+)", part)
    if not match:
      raise ValueError(f"mesh {text!r}: {part!r} is not axis:size (e.g. data:2,fsdp:4)")
    axis, size = match[1], int(match[2])
    if axis not in MESH_AXES:
      raise ValueError(f"mesh {text!r}: unknown axis {axis!r}; axes are {', '.join(MESH_AXES)}")
    if axis in sizes:
      raise ValueError(f"mesh {text!r}: axis {axis!r} given twice")
    if size < 1:
      raise ValueError(f"mesh {text!r}: axis {axis!r} needs a size >= 1, got {size}")
    sizes[axis] = size
  if not sizes:
    raise ValueError(f"mesh {text!r}: name at least one axis (e.g. data:8 or data:2,fsdp:4)")
  return {axis: sizes.get(axis, 1) for axis in MESH_AXES}


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
  """A ("data", "fsdp") mesh over `devices` (default all), fsdp the faster-varying axis.

  Raises:
    ValueError: if the sizes do not multiply to the number of devices.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = tuple(int(sizes.get(axis, 1)) for axis in MESH_AXES)
  if math.prod(shape) != len(devices):
    raise ValueError(
        f"mesh {mesh_text(dict(zip(MESH_AXES, shape)))} needs {math.prod(shape)} devices,"
        f" there are {len(devices)}")
  # Neighbouring devices (e.g. the chips of one host) share an fsdp group: its all-gathers are the busiest.
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), MESH_AXES)


def fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int = MIN_SHARDED_SIZE) -> jax.sharding.PartitionSpec:
  """The PartitionSpec of one parameter (module docstring)."""
  if fsdp_size == 1 or math.prod(shape) < min_size:
    return P()
  candidates = [i for i, n in enumerate(shape) if n % fsdp_size == 0]
  if not candidates:
    return P()
  axis = max(candidates, key=lambda i: (shape[i], i))
  return P(*(("fsdp" if i == axis else None) for i in range(len(shape))))


def param_shardings(params: Any, mesh: jax.sharding.Mesh, min_size: int = MIN_SHARDED_SIZE) -> Any:
  """A NamedSharding per leaf of `params` (arrays or ShapeDtypeStructs)."""
  fsdp = mesh.shape["fsdp"]
  return jax.tree.map(lambda p: jax.sharding.NamedSharding(mesh, fsdp_spec(np.shape(p), fsdp, min_size)), params)


def init_state(optimizer: Any, params: Any, mesh: jax.sharding.Mesh, min_size: int = MIN_SHARDED_SIZE) -> Any:
  """`optimizer.init(params)` with every state leaf sharded by the parameters' rule."""
  abstract = jax.eval_shape(optimizer.init, params)
  return jax.jit(optimizer.init, out_shardings=param_shardings(abstract, mesh, min_size))(params)


def place(tree: Any, mesh: jax.sharding.Mesh, min_size: int = MIN_SHARDED_SIZE) -> Any:
  """`tree` put on the mesh by the rule (parameters, optimizer or model state alike)."""
  return jax.device_put(tree, param_shardings(tree, mesh, min_size))


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """The batch's leading dimension split over every mesh axis."""
  return jax.sharding.NamedSharding(mesh, P(MESH_AXES))


def trial_mesh(batch_size: int, sizes: Mapping[str, int] | None = None,
               devices: Sequence[jax.Device] | None = None, what: str = "the workload") -> jax.sharding.Mesh:
  """The mesh one trial runs on: `sizes` (default data parallel, `data:<all devices>`).

  Raises:
    ValueError: the sizes do not fit the devices, or `batch_size` does not
      divide over them (every device holds an equal slice of the batch).
  """
  devices = list(jax.devices() if devices is None else devices)
  mesh = make_mesh(sizes or {"data": len(devices)}, devices)
  if batch_size % mesh.size:
    raise ValueError(
        f"batch size {batch_size} for {what} is not divisible by the"
        f" {mesh.size} devices it is sharded over."
    )
  return mesh


def data_parallel_shardings(batch_size: int, devices: Sequence[jax.Device] | None = None,
                            what: str = "the workload"):
  """(batch sharding, replicated sharding) over `devices` (default all): plain data parallelism."""
  mesh = trial_mesh(batch_size, None, devices, what)
  return batch_sharding(mesh), jax.sharding.NamedSharding(mesh, P())


def mesh_text(sizes: Mapping[str, int]) -> str:
  """"data:2,fsdp:4" for axis sizes (a mesh's `.shape`, or `parse_mesh`'s result): the flag's syntax."""
  return ",".join(f"{axis}:{size}" for axis, size in sizes.items())


def bytes_per_device(tree: Any) -> dict[jax.Device, int]:
  """Bytes each device holds of a tree of (sharded) arrays."""
  out: dict[jax.Device, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device] = out.get(shard.device, 0) + shard.data.nbytes
  return out
