"""A decoder-only byte-level Transformer LM and the workload around it.

One model and one data pipeline for every byte-level language-model workload
(`stdlib_lm`, `lm_transformer`); those modules only say where the bytes come
from and how big the model is.

Model: GPT-style, pre-LayerNorm blocks (causal multi-head self-attention, then
a GELU MLP, each a residual branch), learned absolute positions, a final
LayerNorm and an untied read-out over the 256 byte values. With `post_ln`
(the `*_post_ln` variants, like AlgoPerf's `wmt_post_ln`) the blocks are
post-LayerNorm instead and there is no final LayerNorm.

Data: the files' bytes, split by FILE so validation and test text never
appears in training: files are taken in the order of the SHA-256 of their
relative path and dealt to validation until it holds `validation_fraction` of
the bytes, then to test, the rest (and any file bigger than a split's share)
to training. With too few files for that (e.g. one big file) the
concatenation is cut by position instead. A training
batch is `batch_size` windows of `context_length + 1` bytes at offsets drawn
from `default_rng([seed, step])`; evaluation uses a FIXED set of
`num_eval_windows` evenly spaced windows per split, so it is cheap and the same
at every evaluation.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Any, Sequence

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from experiments.workloads import _common
from experiments.workloads import base

VOCAB_SIZE = 256  # Bytes.


class Dropout(nn.Module):
  """Inverted dropout whose rate is a call argument and may be traced.

  AlgoPerf submissions pass `dropout_rate` into their jitted step as an
  argument, so the rate can be a tracer; `nn.Dropout` branches on it in
  Python. A rate that is a Python 0 skips the mask; a traced 0 keeps every
  element exactly (x / 1).
  """

  @nn.compact
  def __call__(self, x, rate, deterministic: bool):
    if deterministic or (isinstance(rate, (int, float)) and rate == 0):
      return x
    keep = 1.0 - jnp.asarray(rate, jnp.float32)
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, x.shape)
    return jnp.where(mask, x / keep.astype(x.dtype), jnp.zeros_like(x))


class Block(nn.Module):
  """Pre-LN Transformer block: x + attn(LN(x)), then x + mlp(LN(x)).

  With `post_ln`: LN(x + attn(x)), then LN(x + mlp(x)) (the original
  Transformer's, as AlgoPerf's `wmt_post_ln`).
  """

  num_heads: int
  mlp_dim: int
  attention_dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  post_ln: bool = False

  @nn.compact
  def __call__(self, x, mask, deterministic: bool, dropout_rate):
    norm = lambda: nn.LayerNorm(dtype=self.dtype)
    h = x if self.post_ln else norm()(x)
    h = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, dropout_rate=self.attention_dropout_rate,
        deterministic=deterministic, kernel_init=_common.kernel_init,
    )(h, mask=mask)
    x = x + Dropout()(h, dropout_rate, deterministic)
    if self.post_ln:
      x = norm()(x)
    h = x if self.post_ln else norm()(x)
    dense = functools.partial(nn.Dense, dtype=self.dtype, kernel_init=_common.kernel_init)
    h = dense(x.shape[-1])(nn.gelu(dense(self.mlp_dim)(h)))
    x = x + Dropout()(h, dropout_rate, deterministic)
    return norm()(x) if self.post_ln else x


class TransformerLM(nn.Module):
  """Decoder-only LM: (batch, time) int tokens -> (batch, time, vocab) float32 logits."""

  vocab_size: int = VOCAB_SIZE
  context_length: int = 128
  model_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 512
  dropout_rate: float = 0.0
  dtype: Any = jnp.float32
  post_ln: bool = False  # Post-LN blocks and no final LayerNorm (see `Block`).

  @nn.compact
  def __call__(self, tokens, *, deterministic: bool = True, dropout_rate=None,
               attention_dropout_rate: float | None = None):
    """Logits; the dropout rates default to the module's (see `Dropout`)."""
    rate = self.dropout_rate if dropout_rate is None else dropout_rate
    attention_rate = self.dropout_rate if attention_dropout_rate is None else attention_dropout_rate
    length = tokens.shape[-1]
    if length > self.context_length:
      raise ValueError(f"sequence length {length} exceeds context_length={self.context_length}")
    init = _common.normal_init(0.02)
    x = nn.Embed(self.vocab_size, self.model_dim, embedding_init=init)(tokens)
    x = x + self.param("positions", init, (self.context_length, self.model_dim))[:length]
    x = Dropout()(x.astype(self.dtype), rate, deterministic)
    mask = nn.make_causal_mask(tokens)
    for _ in range(self.num_layers):
      x = Block(self.num_heads, self.mlp_dim, attention_rate, self.dtype, self.post_ln)(
          x, mask, deterministic, rate)
    if not self.post_ln:  # Post-LN blocks already end normalised.
      x = nn.LayerNorm(dtype=self.dtype)(x)
    logits = nn.Dense(self.vocab_size, dtype=self.dtype, kernel_init=_common.kernel_init)(x)
    return logits.astype(jnp.float32)


def split_by_file(
    files: Sequence[tuple[str, bytes]],
    validation_fraction: float,
    test_fraction: float,
    min_bytes: int,
) -> dict[str, np.ndarray]:
  """{"train", "validation", "test"} -> uint8 byte streams (see module docstring).

  Within a split, files are concatenated in path order. Falls back to cutting
  the concatenation by position (train | validation | test) when dealing whole
  files leaves a split under `min_bytes`.
  """
  if not (validation_fraction > 0 and test_fraction > 0 and validation_fraction + test_fraction < 1):
    raise ValueError(
        f"fractions must be positive with sum < 1, got validation={validation_fraction},"
        f" test={test_fraction}"
    )
  total = sum(len(data) for _, data in files)
  quota = {"validation": validation_fraction * total, "test": test_fraction * total}
  chosen = {"train": [], "validation": [], "test": []}
  sizes = dict.fromkeys(chosen, 0)
  for path, data in sorted(files, key=lambda f: hashlib.sha256(f[0].encode()).digest()):
    # A file larger than a split's quota stays in train, so no split exceeds twice its share.
    split = next((s for s in quota if sizes[s] < quota[s] and len(data) <= quota[s]), "train")
    chosen[split].append((path, data))
    sizes[split] += len(data)
  if min(sizes.values()) >= min_bytes:
    return {
        split: np.frombuffer(b"".join(d for _, d in sorted(fs)), np.uint8)
        for split, fs in chosen.items()
    }
  logging.info("too few files to split by file (bytes per split %s); splitting by position", sizes)
  stream = np.frombuffer(b"".join(d for _, d in sorted(files)), np.uint8)
  cut_val = int(total * (1 - validation_fraction - test_fraction))
  cut_test = int(total * (1 - test_fraction))
  splits = {"train": stream[:cut_val], "validation": stream[cut_val:cut_test],
            "test": stream[cut_test:]}
  short = {k: len(v) for k, v in splits.items() if len(v) < min_bytes}
  if short:
    raise ValueError(
        f"not enough text: splits {short} hold fewer than {min_bytes} bytes (one window);"
        f" {total} bytes in all"
    )
  return splits


def read_files(paths: Sequence[str], root: str, max_bytes: int | None) -> list[tuple[str, bytes]]:
  """(path relative to root, bytes) of `paths` in sorted order, whole files up to max_bytes.

  The first file is always read (truncated to max_bytes), so the result is
  never empty when `paths` is not.
  """
  out, total = [], 0
  for path in sorted(paths):
    size = os.path.getsize(path)
    if out and max_bytes is not None and total + size > max_bytes:
      break
    with open(path, "rb") as f:
      data = f.read(max_bytes)
    out.append((os.path.relpath(path, root), data))
    total += len(data)
  return out


class ByteLMWorkload(_common.EvalMixin, base.Workload):
  """Next-byte prediction with `TransformerLM` on given files.

  Subclasses call `__init__` with the files and model size and set `name`,
  `targets`, `default_batch_size` (and `post_ln`, for a post-LN variant). The
  metric is perplexity = exp(mean token cross-entropy in nats) over the fixed
  evaluation windows.
  """

  loss_type = base.LossType.SOFTMAX_CROSS_ENTROPY
  post_ln = False  # Post-LN blocks (a variant's change; see `Block`).

  def __init__(
      self,
      files: Sequence[tuple[str, bytes]],
      *,
      context_length: int,
      model_dim: int,
      num_layers: int,
      num_heads: int,
      mlp_dim: int,
      dropout_rate: float = 0.0,
      dtype: Any = jnp.float32,
      num_eval_windows: int = 128,
      eval_batch_size: int = 64,
      validation_fraction: float = 0.1,
      test_fraction: float = 0.1,
  ):
    if not files:
      raise ValueError(f"{self.name}: no input files")
    if model_dim % num_heads:
      raise ValueError(f"model_dim={model_dim} is not divisible by num_heads={num_heads}")
    self.context_length = context_length
    self.eval_batch_size = eval_batch_size
    self._splits = split_by_file(files, validation_fraction, test_fraction, context_length + 1)
    self._eval_offsets = {
        split: np.unique(np.linspace(0, len(s) - context_length - 1, num_eval_windows).astype(int))
        for split, s in self._splits.items()
    }
    self._model = TransformerLM(
        VOCAB_SIZE, context_length, model_dim, num_layers, num_heads, mlp_dim, dropout_rate,
        jnp.dtype(dtype), self.post_ln,
    )
    self._init = _common.jit_init(self._model)

  def num_bytes(self, split: _common.Split) -> int:
    _common.check_split(split)
    return len(self._splits[split])

  def _windows(self, split: str, offsets: np.ndarray) -> dict[str, np.ndarray]:
    idx = offsets[:, None] + np.arange(self.context_length + 1)
    windows = self._splits[split][idx].astype(np.int32)
    return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}

  def train_batch(self, seed, step, batch_size):
    _common.check_batch_size(batch_size)
    high = len(self._splits["train"]) - self.context_length  # Last start + 1.
    offsets = np.random.default_rng([seed, step]).integers(0, high, size=batch_size)
    return self._windows("train", offsets)

  def eval_batches(self, split, batch_size):
    _common.check_split(split)
    yield from _common.padded_batches(self._windows(split, self._eval_offsets[split]), batch_size)

  def init_model_fn(self, rng):
    tokens = np.zeros((1, self.context_length), np.int32)
    return self._init(rng, tokens)["params"], None

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm,
               use_running_average_bn=None, dropout_rate=None, aux_dropout_rate=None):
    """Logits. `dropout_rate` (residual and embedding dropout, may be traced) and
    `aux_dropout_rate` (attention-probability dropout, a Python number, as
    AlgoPerf's WMT model) default to the workload's `dropout_rate`."""
    del update_batch_norm, use_running_average_bn  # No batch norm.
    if aux_dropout_rate is not None and not isinstance(aux_dropout_rate, (int, float)):
      raise ValueError(f"aux_dropout_rate must be a Python number (it is static), got {aux_dropout_rate!r}")
    rate = self._model.dropout_rate if dropout_rate is None else dropout_rate
    attention_rate = self._model.dropout_rate if aux_dropout_rate is None else aux_dropout_rate
    no_dropout = isinstance(rate, (int, float)) and rate == 0 and attention_rate == 0
    train = base.is_train_mode(mode) and not no_dropout
    if train and rng is None:
      raise ValueError("model_fn needs an rng in train mode when a dropout rate is not 0")
    logits = self._model.apply(
        {"params": params}, batch["inputs"], deterministic=not train, dropout_rate=rate,
        attention_dropout_rate=attention_rate, rngs={"dropout": rng} if train else None,
    )
    return logits, model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    return _common.softmax_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

  def _batch_stats(self, params, model_state, batch):
    logits, _ = self.model_fn(params, batch, model_state, base.ForwardPassMode.EVAL, None, False)
    loss = self.loss_fn(batch["targets"], logits, batch["weights"])
    return {"loss": loss["summed"], "tokens": loss["n_valid_examples"]}

  def _finalize(self, totals):
    loss = totals["loss"] / totals["tokens"]
    return {"loss": loss, "perplexity": float(np.exp(loss))}
