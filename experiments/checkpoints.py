"""Orbax checkpoints of a trial: params, optimizer and model state, data
position, RNG and clock, plus a JSON record of what run they belong to.

Restoring checks both: the record must name the same workload, submission,
hyperparameters and seed, and the arrays must match the structure, shapes
and dtypes this run initialised. Anything else raises `CheckpointError`
saying what differs; a run is never silently restarted from scratch.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint that cannot be used for this run (corrupt or mismatched)."""


# Keys of the JSON record that must agree between the checkpoint and the run.
IDENTITY_KEYS = ("workload", "submission", "hyperparameters", "rng_seed")


class TrialCheckpointer:
  """Saves and restores one trial's state under `{trial_dir}/checkpoints`."""

  def __init__(self, trial_dir: str, max_to_keep: int = 2):
    self.directory = os.path.join(os.path.abspath(trial_dir), "checkpoints")
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
    step = self._manager.latest_step()
    if step is None:
      raise CheckpointError(f"no checkpoint in {self.directory} to resume from.")
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
