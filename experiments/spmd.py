"""Starts the processes of one multi-process run on this machine.

    python -m experiments.spmd --num_processes=2 --devices_per_process=2 -- \\
        --workload=logreg --optimizer=adamw --num_studies=1

runs `python -m experiments.run <flags after -->` in `--num_processes`
processes joined by `jax.distributed` (coordinator on localhost, a free
port), each on the CPU with `--devices_per_process` simulated devices
(XLA_FLAGS=--xla_force_host_platform_device_count) and gloo collectives, so
every trial trains data-parallel over all their devices together
(experiments/distributed.py). `--num_processes=1` runs one process the same
way (jax.distributed, gloo): its results are bitwise those of N processes
with the same total number of devices (a plain `experiments.run` on as many
devices differs in float32 rounding: XLA's in-process all-reduce sums the
devices' gradients in another order). Process 0's output streams through; the
others' stdout and stderr go to `{process_log_dir}/process_{i}.stdout|.stderr`
(default a temporary directory, kept and named if a process fails). When a
process dies or fails, the others are killed (they would wait for it in
their next collective) and the launcher exits non-zero naming it.

On a TPU pod slice no launcher is needed: every worker runs the runner with
`--distributed` (see docs/scaling.md).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from experiments import distributed

POLL_SECONDS = 0.1


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _describe(code: int) -> str:
  if code < 0:
    try:
      return f"killed by {signal.Signals(-code).name}"
    except ValueError:
      return f"killed by signal {-code}"
  return f"exit status {code}"


def launch(runner_args: Sequence[str], num_processes: int, devices_per_process: int,
           log_dir: str | None = None, port: int | None = None, env: dict[str, str] | None = None) -> int:
  """Runs the runner in `num_processes` processes; returns 0, or 1 after the first failure (reported)."""
  if num_processes < 1 or devices_per_process < 1:
    raise ValueError(f"need --num_processes and --devices_per_process >= 1, got {num_processes}, {devices_per_process}")
  base = dict(os.environ if env is None else env)
  flag = f"--xla_force_host_platform_device_count={devices_per_process}"
  base["XLA_FLAGS"] = " ".join([f for f in base.get("XLA_FLAGS", "").split()
                                if not f.startswith("--xla_force_host_platform_device_count")] + [flag])
  base["JAX_PLATFORMS"] = "cpu"
  for name in (distributed.COORDINATOR_ENV, distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV):
    base.pop(name, None)
  # With one process too: jax.distributed and gloo collectives, the reference a run over several
  # processes equals bitwise (a plain `experiments.run` sums the devices' gradients in another order).
  base[distributed.COORDINATOR_ENV] = f"localhost:{port or _free_port()}"
  base[distributed.NUM_PROCESSES_ENV] = str(num_processes)
  log_dir = log_dir or tempfile.mkdtemp(prefix="steplab_spmd_")
  os.makedirs(log_dir, exist_ok=True)
  cmd = [sys.executable, "-m", "experiments.run", *runner_args]
  procs, files = [], []
  try:
    for index in range(num_processes):
      proc_env = dict(base)
      proc_env[distributed.PROCESS_ID_ENV] = str(index)
      if index == 0:
        procs.append(subprocess.Popen(cmd, env=proc_env))
      else:
        out = open(os.path.join(log_dir, f"process_{index}.stdout"), "w")
        err = open(os.path.join(log_dir, f"process_{index}.stderr"), "w")
        files += [out, err]
        procs.append(subprocess.Popen(cmd, env=proc_env, stdout=out, stderr=err))
    failed = None
    while failed is None and any(p.poll() is None for p in procs):
      failed = next((i for i, p in enumerate(procs) if p.poll() not in (None, 0)), None)
      time.sleep(POLL_SECONDS)
    if failed is None:
      failed = next((i for i, p in enumerate(procs) if p.returncode != 0), None)
  finally:
    for p in procs:  # After a failure (or an interrupt): the others would wait in a collective.
      if p.poll() is None:
        p.kill()
    for p in procs:
      p.wait()
    for f in files:
      f.close()
  if failed is None:
    return 0
  where = "" if failed == 0 else f"; its output: {log_dir}/process_{failed}.stdout and .stderr"
  print(f"error: process {failed} of {num_processes} failed ({_describe(procs[failed].returncode)}){where};"
        " the others were stopped.", file=sys.stderr, flush=True)
  return 1


def main(argv: Sequence[str] | None = None) -> int:
  """The command line (argparse, not absl: the runner's flags follow `--` untouched)."""
  parser = argparse.ArgumentParser(prog="python -m experiments.spmd", description=__doc__.split("\n")[0],
                                   usage="%(prog)s [options] -- <experiments.run flags>")
  parser.add_argument("--num_processes", type=int, default=2, help="How many runner processes.")
  parser.add_argument("--devices_per_process", type=int, default=1, help="Simulated CPU devices per process.")
  parser.add_argument("--process_log_dir", default=None,
                      help="Where processes 1.. write process_{i}.stdout and .stderr (default: a temporary directory).")
  parser.add_argument("--port", type=int, default=None, help="Coordinator port on localhost (default: a free one).")
  parser.add_argument("runner_args", nargs=argparse.REMAINDER, help="after --: the runner's flags")
  args = parser.parse_args(argv)
  runner_args = args.runner_args[1:] if args.runner_args[:1] == ["--"] else args.runner_args
  try:
    return launch(runner_args, args.num_processes, args.devices_per_process, args.process_log_dir, args.port)
  except ValueError as e:
    parser.error(str(e))


if __name__ == "__main__":
  sys.exit(main())
