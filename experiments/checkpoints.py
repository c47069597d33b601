"""Orbax checkpoints of a trial: params, optimizer and model state, data
position, RNG and clock, plus a JSON record of what run they belong to.

Restoring checks both: the record must name the same workload, submission,
hyperparameters and seed, and the arrays must match the structure, shapes
and dtypes this run initialised. Anything else raises `CheckpointError`
saying what differs; a run is never silently restarted from scratch.

Every checkpoint carries the sha256 of each of its files
(`steplab_sha256.json` in the step directory, written after Orbax commits
the step). Restoring verifies them: a checkpoint whose files changed
(corruption) or that has no checksums (a kill between Orbax's commit and the
checksums) is skipped in favour of the newest intact one, said through
`warn`, and moved to `{trial_dir}/bad_checkpoints/`; with none intact it is
a `CheckpointError`. A step directory without checksums is not a checkpoint
(`has_checkpoint`), so a trial killed before its first checkpoint completed
restarts from its beginning.

Over several processes (`experiments.distributed`) every process saves and
restores through Orbax (which coordinates them); process 0 alone deletes,
writes the checksums (after Orbax's commit) and moves bad checkpoints aside,
each followed by a barrier before the others read.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
import signal
import time
from typing import Any, Callable, Mapping

import jax
import orbax.checkpoint as ocp

from experiments import distributed
from experiments import logs


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used for this run (corrupt or mismatched)."""


# Keys of the JSON record that must agree between the checkpoint and the run.
IDENTITY_KEYS = ("workload", "submission", "hyperparameters", "rng_seed")
CHECKSUMS = "steplab_sha256.json"  # In each step directory: {relative path: sha256}.
BAD_CHECKPOINTS = "bad_checkpoints"  # {trial_dir}/bad_checkpoints/: skipped checkpoints, kept for inspection.
ORBAX_TMP = "*.orbax-checkpoint-tmp*"  # Orbax's step directories being written.


FAULT_ENV = "STEPLAB_FAULT"


def fault_point(name: str, step: int | None = None) -> None:
  """Test hook: SIGKILLs this process at the named point if STEPLAB_FAULT asks.

  STEPLAB_FAULT=<point> kills at the first time the point is passed,
  <point>@<step> only at that step. Points: "before_first_checkpoint"
  (the trial's checkpoints/ exists, nothing saved yet), "before_checksums"
  (Orbax has committed a step, its checksums are not written yet),
  "after_final_checkpoint" (the last checkpoint is written, the final
  meta_data.json is not). Unset (always, outside tests), it does nothing.
  """
  wanted = os.environ.get(FAULT_ENV)
  if not wanted:
    return
  point, _, at = wanted.partition("@")
  if point == name and (not at or (step is not None and int(at) == step)):
    _die()


def _die() -> None:
  """What a fault point does (tests in one process patch it to raise)."""
  os.kill(os.getpid(), signal.SIGKILL)


def _digests(step_dir: str) -> dict[str, str]:
  """sha256 of every file under `step_dir` (but the checksum file), by relative path."""
  out = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      rel = os.path.relpath(path, step_dir)
      if rel == CHECKSUMS or name.startswith(".tmp-"):
        continue
      h = hashlib.sha256()
      with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
          h.update(chunk)
      out[rel] = h.hexdigest()
  return out


def verify(step_dir: str) -> str | None:
  """None if `step_dir`'s files match its checksums, else what is wrong."""
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return "has no checksums (its write was interrupted)"
  try:
    expected = logs.read_json(path)
  except ValueError as e:
    return f"has unreadable checksums ({e})"
  actual = _digests(step_dir)
  changed = sorted(k for k in expected if actual.get(k) != expected[k])
  extra = sorted(set(actual) - set(expected))
  if changed or extra:
    what = [f"{k} {'is missing' if k not in actual else 'differs'}" for k in changed]
    what += [f"{k} is unexpected" for k in extra]
    return "is corrupt: " + ", ".join(what[:5]) + (f" (and {len(what) - 5} more)" if len(what) > 5 else "")
  return None


def _step_dirs(directory: str) -> dict[int, str]:
  if not os.path.isdir(directory):
    return {}
  return {int(n): os.path.join(directory, n) for n in os.listdir(directory)
          if n.isdigit() and os.path.isdir(os.path.join(directory, n))}


def has_checkpoint(trial_dir: str) -> bool:
  """Whether `trial_dir` holds a completed checkpoint (one with checksums) to resume from."""
  steps = _step_dirs(os.path.join(trial_dir, "checkpoints"))
  return any(os.path.exists(os.path.join(d, CHECKSUMS)) for d in steps.values())


def remove_leftovers(trial_dir: str) -> list[str]:
  """Deletes what killed writers left: Orbax's temporary step directories, logs' .tmp- files.

  Call only while holding the experiment's lock (no other writer). Returns the paths removed.
  """
  removed = glob.glob(os.path.join(trial_dir, "checkpoints", ORBAX_TMP))
  removed += glob.glob(os.path.join(trial_dir, ".tmp-*"))
  for path in removed:
    if os.path.isdir(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      try:
        os.unlink(path)
      except FileNotFoundError:
        pass
  return removed


class _QuietDiskFull(logging.Filter):
  """Drops Orbax's per-thread tracebacks of a full disk: the runner reports it once."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not ("orbax" in record.pathname and "No space left on device" in record.getMessage())


logging.getLogger("absl").addFilter(_QuietDiskFull())


class TrialCheckpointer:
  """Saves and restores one trial's state under `{trial_dir}/checkpoints`."""

  def __init__(self, trial_dir: str, max_to_keep: int = 2, fresh: bool = False,
               warn: Callable[[str], None] | None = None):
    """`fresh`: delete what `{trial_dir}/checkpoints` holds first (a trial starting from step 0)."""
    self.trial_dir = os.path.abspath(trial_dir)
    self.directory = os.path.join(self.trial_dir, "checkpoints")
    self._warn = warn or (lambda m: None)
    if distributed.is_primary():
      remove_leftovers(self.trial_dir)
      if fresh and os.path.isdir(self.directory):
        shutil.rmtree(self.directory)
    distributed.barrier("steplab_checkpointer_init")
    # Synchronous saves: the runner excludes checkpoint time from the clock,
    # and a finished save is on disk before training continues. Orbax writes
    # into a temporary directory and renames it, so a kill mid-save leaves
    # the previous checkpoint intact.
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, enable_async_checkpointing=False, create=True
        ),
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, record: Mapping[str, Any]) -> None:
    self._manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(dict(record))
        ),
    )
    self._manager.wait_until_finished()
    step_dir = os.path.join(self.directory, str(step))
    fault_point("before_checksums", step)
    # After Orbax's commit: a checkpoint without this file is incomplete.
    if distributed.is_primary():
      logs.write_json(os.path.join(step_dir, CHECKSUMS), _digests(step_dir))
    distributed.barrier(f"steplab_checksums_{step}")

  def restore(self, like_state: Any, expected: Mapping[str, Any]) -> tuple[int, Any, dict[str, Any]]:
    """Restores the latest checkpoint into the structure of `like_state`.

    Args:
      like_state: a state tree of this run (arrays or ShapeDtypeStructs,
        with the shardings to restore into).
      expected: this run's record; its IDENTITY_KEYS must match.

    Returns:
      (step, state, record).

    Raises:
      CheckpointError: no checkpoint, a corrupt one, or one from another run.
    """
    step_dirs = _step_dirs(self.directory)
    problems = {}
    step = None
    for candidate in sorted(step_dirs, reverse=True):
      problem = verify(step_dirs[candidate])
      if problem is None:
        step = candidate
        break
      problems[candidate] = problem
    if step is None:
      corrupt = {s: p for s, p in problems.items() if not p.startswith("has no checksums")}
      if corrupt:
        raise CheckpointError(
            f"no intact checkpoint in {self.directory} to resume from: "
            + "; ".join(f"step {s} {p}" for s, p in sorted(corrupt.items()))
            + ". Restart the trial (--overwrite, or delete its directory).")
      raise CheckpointError(f"no checkpoint in {self.directory} to resume from.")
    if problems:  # Newer than the intact one: set aside, so training redoes those steps.
      distributed.barrier("steplab_checkpoints_verified")  # Every process has read them.
      if distributed.is_primary():
        bad_root = os.path.join(self.trial_dir, BAD_CHECKPOINTS)
        os.makedirs(bad_root, exist_ok=True)
        for bad, problem in sorted(problems.items()):
          target = os.path.join(bad_root, f"{bad}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
          shutil.move(step_dirs[bad], target)
          self._warn(f"checkpoint {step_dirs[bad]} {problem}; moved to {target}, resuming from step {step}")
      distributed.barrier("steplab_bad_checkpoints_moved")
      self._manager.reload()
    where = os.path.join(self.directory, str(step))
    try:
      record = self._manager.restore(step, args=ocp.args.Composite(record=ocp.args.JsonRestore()))[
          "record"
      ]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(f"checkpoint {where} is corrupt: cannot read its record ({e}).") from e
    differing = [k for k in IDENTITY_KEYS if record.get(k) != expected.get(k)]
    if differing:
      details = "; ".join(f"{k}: checkpoint {record.get(k)!r} vs run {expected.get(k)!r}" for k in differing)
      raise CheckpointError(
          f"checkpoint {where} belongs to another run ({details}). Use a new"
          " --experiment_dir, or --overwrite to start again."
      )
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like_state)
    try:
      restored = self._manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
      )["state"]
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointError(
          f"checkpoint {where} does not match this run's state (or is corrupt): {e}"
      ) from e
    _check_same_layout(where, abstract, restored)
    return step, restored, record

  def close(self) -> None:
    self._manager.close()


def _check_same_layout(where: str, abstract: Any, restored: Any) -> None:
  if jax.tree.structure(abstract) != jax.tree.structure(restored):
    raise CheckpointError(f"checkpoint {where} has a different state structure.")
  for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(restored)):
    if (a.shape, a.dtype) != (b.shape, b.dtype):
      raise CheckpointError(
          f"checkpoint {where} holds {b.shape} {b.dtype} where this run has {a.shape} {a.dtype}."
      )
