"""Byte-level Transformer LM on any text: a file or a directory of files.

The accelerator-sized sibling of `stdlib_lm` (same model and pipeline, see
`transformer.py`): `data_dir` is one text file (split by position) or a
directory, read recursively, hidden files and directories skipped (split by
file). The default model (6 layers, 512 wide, 512-byte context, bfloat16
compute, about 19M parameters) is meant for one GPU or TPU.

The targets depend on the text, so the defaults are placeholders: pass
`targets=` calibrated for your data (tools/calibrate_targets.py
--workloads=lm_transformer --options='{"data_dir": ...}' on an accelerator).
"""

from __future__ import annotations

import os
from typing import Any

import jax.numpy as jnp

from experiments.workloads import base
from experiments.workloads import transformer


def text_files(data_dir: str) -> list[str]:
  """`data_dir` itself if a file, else every non-hidden file below it."""
  if os.path.isfile(data_dir):
    return [data_dir]
  if not os.path.isdir(data_dir):
    raise FileNotFoundError(f"lm_transformer: data_dir {data_dir!r} does not exist")
  paths = []
  for dirpath, dirnames, filenames in os.walk(data_dir):
    dirnames[:] = [d for d in dirnames if not d.startswith(".")]
    paths += [os.path.join(dirpath, f) for f in filenames if not f.startswith(".")]
  if not paths:
    raise ValueError(f"lm_transformer: no files under data_dir {data_dir!r}")
  return paths


class LmTransformer(transformer.ByteLMWorkload):
  """Transformer LM on `data_dir`'s bytes (perplexity per byte)."""

  name = "lm_transformer"
  default_batch_size = 64
  algoperf_base_workloads = ("finewebedu_lm", "wmt")  # For get_batch_size.
  targets = base.Targets(
      metric="perplexity", mode="min", validation=3.0, test=3.0,
      max_allowed_runtime_sec=3600.0, eval_period_time_sec=120.0, step_hint=20_000,
      how_set=(
          "placeholder, not calibrated: targets depend on data_dir; pass targets= set with"
          " tools/calibrate_targets.py --workloads=lm_transformer --options='{\"data_dir\": ...}'"
      ),
  )

  def __init__(
      self,
      *,
      data_dir: str | None = None,
      max_bytes: int | None = None,
      context_length: int = 512,
      model_dim: int = 512,
      num_layers: int = 6,
      num_heads: int = 8,
      mlp_dim: int = 2048,
      dtype: Any = jnp.bfloat16,
      num_eval_windows: int = 512,
      targets: base.Targets | None = None,
      **kwargs,
  ):
    if data_dir is None:
      raise ValueError("lm_transformer needs data_dir=<a text file or a directory of them>")
    root = data_dir if os.path.isdir(data_dir) else os.path.dirname(data_dir)
    files = transformer.read_files(text_files(data_dir), root, max_bytes)
    if targets is not None:
      self.targets = targets
    super().__init__(
        files, context_length=context_length, model_dim=model_dim, num_layers=num_layers,
        num_heads=num_heads, mlp_dim=mlp_dim, dtype=dtype, num_eval_windows=num_eval_windows,
        **kwargs,
    )
