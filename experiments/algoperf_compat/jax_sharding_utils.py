"""AlgoPerf's `algoperf.jax_sharding_utils`: one-axis data-parallel shardings.

The mesh spans all devices along one axis named "batch", as AlgoPerf's; the
runner's own "data" mesh has the same devices, so arrays placed by either are
used by the other without a copy.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P


def _mesh() -> jax.sharding.Mesh:
  return jax.sharding.Mesh(jax.devices(), ("batch",))


def get_replicate_sharding() -> NamedSharding:
  """Every device holds the whole array."""
  return NamedSharding(_mesh(), P())


def get_batch_dim_sharding() -> NamedSharding:
  """The leading (batch) axis is split over the devices."""
  return NamedSharding(_mesh(), P("batch"))


def shard_along_batch_dim(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.device_put(x, get_batch_dim_sharding()), tree)


def replicate(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.device_put(x, get_replicate_sharding()), tree)


def display_shard_info(x: jax.Array) -> None:
  for shard in x.addressable_shards:
    print(f"shard.device: {shard.device}, index: {shard.index}, replica_id: {shard.replica_id}.")
