#!/usr/bin/env python3
"""Optimizer-state memory of Adam-mini against optax.adamw, on real Flax trees.

Everything is abstract (`jax.eval_shape` on `init`), so an 8B-parameter model
costs nothing to measure. For each model it prints the parameters, the bytes
of AdamW's state (m, v), Adam-mini's (m, one v per block), their ratio, and
Adam-mini's number of second-moment entries. The Adam-mini paper claims about
50% less optimizer memory than AdamW (v nearly vanishes, m stays).

Models:
  * `stdlib_lm`: the runner's byte-level Transformer (experiments/workloads/
    transformer.py; Flax MultiHeadDotProductAttention, DenseGeneral q/k/v).
  * `llama3_8b`: a Llama-3-8B-shaped decoder (dim 4096, 32 layers, 32 heads,
    8 kv heads, MLP 14336, vocab 128256) written below with Hugging Face's
    module names (q_proj, k_proj, v_proj, o_proj, mlp.gate/up/down_proj,
    embed_tokens, lm_head, *_layernorm), 2-D kernels, grouped-query attention.
  * `llama_tiny`: the same architecture at dim 256, 4 layers (quick check).

    python tools/bench_memory.py
    python tools/bench_memory.py --models=llama3_8b --print_partition
"""

from __future__ import annotations

import math
from typing import Sequence

from absl import app
from absl import flags
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from experiments.workloads import transformer
import optimizers

_MODELS = flags.DEFINE_list("models", ["stdlib_lm", "llama_tiny", "llama3_8b"], "Models to measure.")
_PRINT_PARTITION = flags.DEFINE_bool("print_partition", False, "Print Adam-mini's partition of each model.")


class LlamaLayer(nn.Module):
  dim: int
  heads: int
  kv_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x):
    head_dim = self.dim // self.heads
    dense = lambda features, name: nn.Dense(features, use_bias=False, name=name)
    h = nn.RMSNorm(name="input_layernorm")(x)
    q = dense(self.dim, "self_attn.q_proj")(h)
    k = dense(self.kv_heads * head_dim, "self_attn.k_proj")(h)
    v = dense(self.kv_heads * head_dim, "self_attn.v_proj")(h)
    del q, k  # Shapes only: attention itself is irrelevant to the state size.
    x = x + dense(self.dim, "self_attn.o_proj")(jnp.tile(v, (1, 1, self.heads // self.kv_heads)))
    h = nn.RMSNorm(name="post_attention_layernorm")(x)
    h = nn.silu(dense(self.mlp_dim, "mlp.gate_proj")(h)) * dense(self.mlp_dim, "mlp.up_proj")(h)
    return x + dense(self.dim, "mlp.down_proj")(h)


class Llama(nn.Module):
  vocab: int
  dim: int
  layers: int
  heads: int
  kv_heads: int
  mlp_dim: int

  @nn.compact
  def __call__(self, tokens):
    x = nn.Embed(self.vocab, self.dim, name="embed_tokens")(tokens)
    for i in range(self.layers):
      x = LlamaLayer(self.dim, self.heads, self.kv_heads, self.mlp_dim, name=f"layers_{i}")(x)
    x = nn.RMSNorm(name="norm")(x)
    return nn.Dense(self.vocab, use_bias=False, name="lm_head")(x)


def model_params(name: str):
  """(abstract params, num_heads, num_kv_heads) of a named model."""
  tokens = jnp.zeros((1, 8), jnp.int32)
  if name == "stdlib_lm":
    model = transformer.TransformerLM()
    heads, kv_heads = model.num_heads, None
  elif name == "llama3_8b":
    model = Llama(vocab=128256, dim=4096, layers=32, heads=32, kv_heads=8, mlp_dim=14336)
    heads, kv_heads = 32, 8
  elif name == "llama_tiny":
    model = Llama(vocab=1024, dim=256, layers=4, heads=8, kv_heads=2, mlp_dim=768)
    heads, kv_heads = 8, 2
  else:
    raise app.UsageError(f"unknown model {name!r}; valid: stdlib_lm, llama_tiny, llama3_8b")
  params = jax.eval_shape(lambda: model.init(jax.random.key(0), tokens))
  return params, heads, kv_heads


def state_bytes(optimizer, params) -> int:
  state = jax.eval_shape(optimizer.init, params)
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  rows = []
  for name in _MODELS.value:
    params, heads, kv_heads = model_params(name)
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    mini = optimizers.adam_mini(num_heads=heads, num_kv_heads=kv_heads)
    adamw_bytes = state_bytes(optax.adamw(1e-3), params)
    mini_bytes = state_bytes(mini, params)
    v_entries = sum(math.prod(x.shape) for x in jax.tree.leaves(jax.eval_shape(mini.init, params)[0].nu))
    if _PRINT_PARTITION.value:
      optimizers.print_adam_mini_partition(params, heads, kv_heads)
    rows.append((name, count, adamw_bytes, mini_bytes, v_entries))
  print("| model | parameters | AdamW state | Adam-mini state | Adam-mini / AdamW | Adam-mini v entries (% of params) |")
  print("|---|---:|---:|---:|---:|---:|")
  for name, count, adamw_bytes, mini_bytes, v_entries in rows:
    print(f"| {name} | {count:,} | {adamw_bytes / 2**20:,.1f} MiB | {mini_bytes / 2**20:,.1f} MiB |"
          f" {mini_bytes / adamw_bytes:.4f} | {v_entries:,} ({v_entries / count:.4%}) |")


if __name__ == "__main__":
  app.run(main)
