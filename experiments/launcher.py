"""Run the trials of a sweep as Ray tasks: one process per trial, bounded retries.

The runner (`python -m experiments.run --launcher=ray`) plans the trials,
checks every flag and point, and hands this module one command per trial (the
runner itself, selecting that trial with `--trial_shard=k/N` and resuming it
with `--resume_last_run`). Each command runs in its own process inside a Ray
task that holds the trial's resources (`num_cpus`, `num_gpus`, custom ones such
as TPU), so Ray places trials on the cluster and the devices of one trial are
its own. A command that fails (non-zero exit, or the task's worker died) is
run again, resuming from the trial's newest intact checkpoint, up to
`retries` more times; what still fails is returned, never dropped.

Ray is an optional extra: `pip install -e ".[ray]"`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
import warnings
from typing import Any, Callable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Job:
  """One trial's command: `python {argv}` in `cwd`, its output in `{log_path}.attempt_{a}.log`."""

  label: str  # e.g. "radam study 0 trial 2"
  argv: tuple[str, ...]
  cwd: str
  log_path: str

  def attempt_log(self, attempt: int) -> str:
    return f"{self.log_path}.attempt_{attempt}.log"


def _die_with_parent() -> None:
  """Linux: the trial's process gets SIGKILL when its Ray worker dies.

  Otherwise a killed sweep would leave trials running, holding their locks,
  and the resumed sweep would find them "in use by another runner".
  """
  try:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
  except OSError:
    pass


def _run_command(argv: Sequence[str], cwd: str, log_path: str) -> int:
  """The body of a Ray task: the command in a fresh process, output to `log_path`."""
  os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path, "w", encoding="utf-8") as log:
    return subprocess.run([sys.executable, *argv], cwd=cwd, stdout=log, stderr=subprocess.STDOUT, check=False,
                          preexec_fn=_die_with_parent if sys.platform == "linux" else None).returncode


def import_ray() -> Any:
  """Ray, or an ImportError saying how to install it."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('--launcher=ray needs Ray: pip install -e ".[ray]"') from e
  return ray


def run_on_ray(jobs: Sequence[Job], *, address: str | None, num_cpus: float, num_gpus: float,
               resources: Mapping[str, float] | None, retries: int,
               progress: Callable[[str], None] = print) -> list[tuple[Job, str]]:
  """Runs every job as a Ray task; returns (job, why) for those that failed `retries + 1` times.

  `address`: an existing cluster ("auto", "ray://host:10001", ...); None starts
  a local Ray for the duration of the call (as many workers as CPUs).
  """
  ray = import_ray()
  if not jobs:
    return []
  started = not ray.is_initialized()
  if started:
    # The driver's modules (and its PYTHONPATH) reach the workers' processes.
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    with warnings.catch_warnings():  # Ray starts its processes with fork + exec: safe beside JAX's threads.
      warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
      ray.init(address=address, include_dashboard=False, log_to_driver=False,
               runtime_env={"env_vars": {"PYTHONPATH": path}})
  try:
    task = ray.remote(_run_command).options(
        num_cpus=num_cpus, num_gpus=num_gpus, resources=dict(resources or {}), max_retries=0)
    pending: dict[Any, tuple[Job, int, float]] = {}

    def submit(job: Job, attempt: int) -> None:
      pending[task.remote(job.argv, job.cwd, job.attempt_log(attempt))] = (job, attempt, time.monotonic())

    for job in jobs:
      submit(job, 0)
    failures, done = [], 0
    while pending:
      ready, _ = ray.wait(list(pending), num_returns=1)
      job, attempt, start = pending.pop(ready[0])
      try:
        rc = ray.get(ready[0])
        why = None if rc == 0 else f"exit {rc}; log {job.attempt_log(attempt)}"
      except ray.exceptions.RayError as e:  # The worker died (OOM, node lost, ...).
        why = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      if why is None:
        done += 1
        progress(f"{job.label}: done in {time.monotonic() - start:.0f}s ({done}/{len(jobs)})")
      elif attempt < retries:
        progress(f"{job.label}: failed ({why}); retry {attempt + 1} of {retries}, resuming")
        submit(job, attempt + 1)
      else:
        progress(f"{job.label}: failed ({why}); no retries left")
        failures.append((job, why))
    return failures
  finally:
    if started:
      ray.shutdown()
