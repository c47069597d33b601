#!/usr/bin/env python3
"""Per-device optimizer-state bytes under FSDP: AdamW vs Adam-mini on lm_transformer's model.

For each model size it builds the parameter tree of `lm_transformer`'s
Transformer LM abstractly (`jax.eval_shape`), shards it with
`experiments.sharding`'s rule on a data x fsdp mesh (default data:2,fsdp:4,
8 simulated CPU devices), and reports the bytes of AdamW's and Adam-mini's
state that each device holds: replicated (the runner's default) and sharded
(`sharding.init_state`). Sizes that fit this machine are also built for real
on the simulated devices and their per-device bytes read off the arrays'
shards ("measured"), which checks the accounting.

    python tools/bench_sharding.py
    python tools/bench_sharding.py --mesh=fsdp:8 --sizes=19m,300m,1.3b --measure_up_to=100000000
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")  # Before JAX starts.

import math  # pylint: disable=g-import-not-at-top,wrong-import-position
from typing import Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import optax

from experiments import sharding
from experiments.workloads import transformer
import optimizers

# name -> (model_dim, num_layers, num_heads, mlp_dim); context 512, 256 byte tokens as lm_transformer.
SIZES = {
    "19m": (512, 6, 8, 2048),  # lm_transformer's default model.
    "300m": (1024, 24, 16, 4096),
    "1.3b": (2048, 24, 16, 8192),
}
_SIZES = flags.DEFINE_list("sizes", ["19m", "300m", "1.3b"], f"Model sizes: {', '.join(SIZES)}.")
_MESH = flags.DEFINE_string("mesh", "data:2,fsdp:4", "Mesh (experiments.sharding.parse_mesh).")
_MEASURE_UP_TO = flags.DEFINE_integer(
    "measure_up_to", 50_000_000, "Build models up to this many parameters for real and measure their shards.")


def _model(size: str) -> transformer.TransformerLM:
  dim, layers, heads, mlp = SIZES[size]
  return transformer.TransformerLM(context_length=512, model_dim=dim, num_layers=layers, num_heads=heads,
                                   mlp_dim=mlp)


def _accounted(abstract, mesh) -> int:
  """Bytes per device of an abstract tree under the shape rule (the largest device's share)."""
  fsdp = mesh.shape["fsdp"]
  total = 0
  for leaf in jax.tree.leaves(abstract):
    split = sharding.fsdp_spec(leaf.shape, fsdp) != sharding.P()
    total += math.prod(leaf.shape) * leaf.dtype.itemsize // (fsdp if split else 1)
  return total


def main(argv: Sequence[str]) -> None:
  del argv
  mesh = sharding.make_mesh(sharding.parse_mesh(_MESH.value))
  print(f"mesh {dict(mesh.shape)} over {mesh.size} {jax.devices()[0].platform} devices;"
        f" parameters split over fsdp when >= {sharding.MIN_SHARDED_SIZE} elements\n")
  print("| model | params | optimizer | state, replicated (MiB/device) | state, FSDP (MiB/device) |"
        " FSDP measured (MiB/device) | vs AdamW FSDP |")
  print("|---|---|---|---|---|---|---|")
  for size in _SIZES.value:
    model = _model(size)
    init = lambda rng: model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]  # pylint: disable=cell-var-from-loop
    abstract = jax.eval_shape(init, jax.random.key(0))
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(abstract))
    heads = SIZES[size][2]
    params = None
    if count <= _MEASURE_UP_TO.value:
      params = jax.jit(init, out_shardings=sharding.param_shardings(abstract, mesh))(jax.random.key(0))
    adamw_fsdp = None
    for name, optimizer in (("adamw", optax.adamw(1e-3)), ("adam_mini", optimizers.adam_mini(num_heads=heads))):
      state = jax.eval_shape(optimizer.init, abstract)
      replicated = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))
      fsdp = _accounted(state, mesh)
      adamw_fsdp = adamw_fsdp or fsdp
      measured = "-"
      if params is not None:
        real = sharding.init_state(optimizer, params, mesh)
        measured = f"{max(sharding.bytes_per_device(real).values()) / 2**20:.1f}"
        del real
      print(f"| {size} | {count / 1e6:.1f}M | {name} | {replicated / 2**20:.1f} | {fsdp / 2**20:.1f} | {measured}"
            f" | {fsdp / adamw_fsdp:.3f} |", flush=True)
    del params


if __name__ == "__main__":
  app.run(main)
