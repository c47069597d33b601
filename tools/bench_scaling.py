#!/usr/bin/env python3
"""The runner's step time over 1, 2, 4, 8 simulated devices, in one and in two processes.

Each configuration runs one trial of the real runner (`experiments.run`, or
`experiments.spmd` for several processes) on the CPU and reads the step time
off the trial's own clock: the submission time between consecutive
evaluations (`accumulated_submission_time` in `eval_measurements.csv`)
divided by the steps between them. The first interval holds the compilation
and is left out; the rest give the median and the range (the noise).

    python tools/bench_scaling.py
    python tools/bench_scaling.py --configs=1x1,1x8,2x4 --workload=stdlib_lm --steps=130

A configuration is `PxD` (P processes of D simulated devices each, data
parallel over all P*D) with an optional mesh: `1x8:data:2,fsdp:4`.

What this measures on a CPU: simulated devices share the machine's cores, so
adding devices adds no compute; the table shows what partitioning the step
costs (per-device programs, collectives, the launcher's processes), not a
speedup. On real accelerators each device brings its own compute and memory
bandwidth and the collectives run over ICI/NVLink; expect near-linear scaling
of the data-parallel step while the per-device batch keeps the device busy,
and FSDP's all-gathers hidden behind compute only at model sizes far above
this benchmark's.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
from typing import Sequence

from absl import app
from absl import flags

DEFAULT_CONFIGS = ("1x1", "1x2", "1x4", "1x8", "1x8:data:2,fsdp:4", "1x8:fsdp:8", "1x4s", "2x2", "1x8s", "2x4")
_CONFIGS = flags.DEFINE_list(
    "configs", list(DEFAULT_CONFIGS),
    "PxD[s][:mesh]: P processes of D devices; a trailing s (or P > 1) launches through experiments.spmd"
    " (jax.distributed with gloo collectives; 1xDs is the single-process reference for 2x(D/2)).")
_WORKLOAD = flags.DEFINE_string("workload", "stdlib_lm", "Workload (its batch must divide over 8 devices).")
_OPTIMIZER = flags.DEFINE_string("optimizer", "adamw", "Registry optimizer.")
_STEPS = flags.DEFINE_integer("steps", 130, "Steps per trial (stdlib_lm evaluates every 26 under --measure=steps).")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = re.compile(r"(\d+)x(\d+)(s?)(?::(.+))?")


def _parse(config: str) -> tuple[int, int, bool, str | None]:
  match = CONFIG.fullmatch(config)
  if not match:
    raise app.UsageError(f"--configs: {config!r} is not PxD[s][:mesh] (e.g. 2x4 or 1x8:data:2,fsdp:4)")
  processes, devices = int(match[1]), int(match[2])
  if processes < 1 or devices < 1:
    raise app.UsageError(f"--configs: {config!r} needs at least one process and one device")
  return processes, devices, bool(match[3]) or processes > 1, match[4]


def _run(config: str, directory: str) -> list[float]:
  """Runs one configuration; returns its per-step seconds, one per evaluation interval after the first."""
  processes, devices, spmd, mesh = _parse(config)
  flags_ = [f"--workload={_WORKLOAD.value}", f"--optimizer={_OPTIMIZER.value}", "--hparams={}",
            "--num_studies=1", f"--max_global_steps={_STEPS.value}", "--measure=steps", "--nopin_cpu_core",
            "--nosave_checkpoints", f"--experiment_dir={directory}"] + ([f"--mesh={mesh}"] if mesh else [])
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  if spmd:
    cmd = [sys.executable, "-m", "experiments.spmd", f"--num_processes={processes}",
           f"--devices_per_process={devices}", "--", *flags_]
  else:
    cmd = [sys.executable, "-m", "experiments.run", *flags_]
    env["XLA_FLAGS"] = " ".join([f for f in env.get("XLA_FLAGS", "").split()
                                 if not f.startswith("--xla_force_host_platform_device_count")]
                                + [f"--xla_force_host_platform_device_count={devices}"])
  result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
  if result.returncode:
    raise RuntimeError(f"{config} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
  path = os.path.join(directory, _OPTIMIZER.value, _WORKLOAD.value, "study_0", "trial_0", "eval_measurements.csv")
  with open(path) as f:
    rows = [(int(r["global_step"]), float(r["accumulated_submission_time"])) for r in csv.DictReader(f)]
  if len(rows) < 3:
    raise RuntimeError(f"{config}: {len(rows)} evaluations in {_STEPS.value} steps; raise --steps")
  return [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(rows[1:], rows[2:])]


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  configs = [c.strip() for c in _CONFIGS.value]
  for config in configs:
    _parse(config)
  print(f"{_OPTIMIZER.value} on {_WORKLOAD.value}, {_STEPS.value} steps per trial, {os.cpu_count()} CPU cores;"
        " ms per step from the runner's clock (median [min, max] over the evaluation intervals after the"
        " first, which compiles)\n", flush=True)
  print("| config | processes | devices | mesh | launcher | ms/step | range | vs 1x1 |")
  print("|---|---|---|---|---|---|---|---|", flush=True)
  base = None
  for config in configs:
    processes, devices, spmd, mesh = _parse(config)
    with tempfile.TemporaryDirectory(prefix="steplab_scaling_") as directory:
      times = _run(config, directory)
    median = statistics.median(times) * 1e3
    base = median if config == "1x1" else base
    ratio = f"{median / base:.2f}" if base else "-"
    print(f"| {config} | {processes} | {processes * devices} | {mesh or f'data:{processes * devices}'} |"
          f" {'spmd (gloo)' if spmd else 'run'} | {median:.1f} | {min(times) * 1e3:.1f}-{max(times) * 1e3:.1f} |"
          f" {ratio} |", flush=True)


if __name__ == "__main__":
  app.run(main)
