"""Benchmark an optimizer or an AlgoPerf-style submission on a workload.

    python -m experiments.run                                   # the default benchmark
    python -m experiments.run --workload=logreg --optimizer=adamod --num_tuning_trials=4
    python -m experiments.run --submission_path=experiments/submissions/nadamw.py
    python -m experiments.run --optimizer=radam --hparams='{"learning_rate": 3e-3}'
    python -m experiments.run ... --resume_last_run             # after a kill

For every study (`--num_studies`) it runs `--num_tuning_trials` trials, each at
one point of the search space (Halton quasi-random; external ruleset) or at
the submission's defaults with 1.5x the budget (self-tuning ruleset), writes
AlgoPerf's per-trial logs under
`{experiment_dir}/{submission}/{workload}/study_{s}/trial_{t}/`, and prints a
table of time- and steps-to-target. Score many runs with
`python -m experiments.score --experiment_dir=...`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Any, Sequence

from absl import app
from absl import flags
from absl import logging
import jax

from experiments import common_flags
from experiments import logs
from experiments import submission as submission_lib
from experiments import trainer
from experiments import tuning
from experiments import workloads
import optimizers

FLAGS = flags.FLAGS
_WORKLOAD = flags.DEFINE_string("workload", "mnist1d_mlp", "Workload name.")
_OPTIMIZER = flags.DEFINE_string("optimizer", "radam", "Registry optimizer (ignored with --submission_path).")
_SUBMISSION_PATH = flags.DEFINE_string("submission_path", None, "A submission module (.py file or dotted name).")
_TUNING_RULESET = flags.DEFINE_enum("tuning_ruleset", "external", ["external", "self"], "AlgoPerf tuning ruleset.")
_SEARCH_SPACE = flags.DEFINE_string("tuning_search_space", None, "JSON search space; default: the registry's / submission's.")
_NUM_TRIALS = flags.DEFINE_integer("num_tuning_trials", 4, "Trials per study (external ruleset).")
_NUM_STUDIES = flags.DEFINE_integer("num_studies", 1, "Independent studies.")
_RNG_SEED = flags.DEFINE_integer("rng_seed", 0, "Seed for search points, data and initialisation.")
_EXPERIMENT_DIR = common_flags.EXPERIMENT_DIR
_MAX_STEPS = flags.DEFINE_integer("max_global_steps", None, "Optional cap on steps per trial.")
_RESUME = flags.DEFINE_bool("resume_last_run", False, "Resume trials from their last checkpoint.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete existing logs of this experiment first.")
_SAVE_CHECKPOINTS = flags.DEFINE_bool("save_checkpoints", True, "Checkpoint after every evaluation.")
_HPARAMS = flags.DEFINE_string("hparams", None, "JSON object: a single run at these hyperparameters.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data for workloads that read files.")
_EVAL_PERIOD = flags.DEFINE_float(
    "eval_period_time_sec", None,
    "Override the workload's evaluation period (submission seconds between evals; checkpoints follow evals).")


_RUNNER_FLAGS = (
    _WORKLOAD, _OPTIMIZER, _SUBMISSION_PATH, _TUNING_RULESET, _SEARCH_SPACE, _NUM_TRIALS,
    _NUM_STUDIES, _RNG_SEED, _EXPERIMENT_DIR, _MAX_STEPS, _RESUME, _OVERWRITE,
    _SAVE_CHECKPOINTS, _HPARAMS, _DATA_DIR, _EVAL_PERIOD,
)


def _parse_json_flag(name: str, text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--{name} is not valid JSON: {e}") from None


def _submission() -> submission_lib.Submission:
  if _SUBMISSION_PATH.value:
    try:
      return submission_lib.load_submission(_SUBMISSION_PATH.value)
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  if _OPTIMIZER.value not in optimizers.registry:
    raise app.UsageError(
        f"unknown --optimizer {_OPTIMIZER.value!r}; registered: {', '.join(sorted(optimizers.registry))}"
    )
  return submission_lib.registry_submission(_OPTIMIZER.value)


def _points(sub: submission_lib.Submission, study: int) -> list[dict[str, Any]]:
  """The hyperparameter points of one study."""
  if _HPARAMS.value is not None:
    point = _parse_json_flag("hparams", _HPARAMS.value)
    if not isinstance(point, dict):
      raise app.UsageError("--hparams must be a JSON object of hyperparameters.")
    return [point]
  if _TUNING_RULESET.value == "self":
    return [{}]  # The submission's own defaults.
  if _SEARCH_SPACE.value:
    if not os.path.exists(_SEARCH_SPACE.value):
      raise app.UsageError(f"--tuning_search_space: no such file {_SEARCH_SPACE.value!r}")
    space_source = _SEARCH_SPACE.value
  else:
    space_source = dict(sub.search_space or {})
    if not space_source:
      raise app.UsageError(f"{sub.name} has no default search space; pass --tuning_search_space.")
  try:
    space = tuning.load_search_space(space_source)
    return tuning.trial_points(space, _NUM_TRIALS.value, study, _RNG_SEED.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  if os.environ.get("JAX_COORDINATOR_ADDRESS"):
    jax.distributed.initialize()  # Multi-host: reads the usual environment.
  try:
    workload = workloads.get_workload(
        _WORKLOAD.value, **({"data_dir": _DATA_DIR.value} if _DATA_DIR.value else {})
    )
  except (ValueError, TypeError) as e:
    raise app.UsageError(str(e)) from None
  if _EVAL_PERIOD.value is not None:
    if _EVAL_PERIOD.value <= 0:
      raise app.UsageError("--eval_period_time_sec must be positive.")
    workload.targets = dataclasses.replace(workload.targets, eval_period_time_sec=_EVAL_PERIOD.value)
  sub = _submission()
  root = os.path.join(_EXPERIMENT_DIR.value, sub.name, workload.name)
  if os.path.exists(root) and not (_RESUME.value or _OVERWRITE.value):
    raise app.UsageError(f"{root} exists: pass --resume_last_run to continue it or --overwrite to replace it.")
  if _OVERWRITE.value and os.path.exists(root):
    shutil.rmtree(root)
  budget = workload.targets.max_allowed_runtime_sec * (1.5 if _TUNING_RULESET.value == "self" else 1.0)
  print(
      f"{sub.name} on {workload.name} ({workload.num_params():,} params, {jax.device_count()} x"
      f" {jax.devices()[0].platform}): target {workload.targets.metric}"
      f" {'>=' if workload.targets.mode == 'max' else '<='} {workload.targets.validation},"
      f" budget {budget:.0f}s, {_TUNING_RULESET.value} ruleset", flush=True,
  )
  results = []
  for study in range(_NUM_STUDIES.value):
    for trial, point in enumerate(_points(sub, study)):
      trial_dir = os.path.join(root, f"study_{study}", f"trial_{trial}")
      record = dict(
          workload=workload.name, submission=sub.name, hyperparameters=point,
          rng_seed=_RNG_SEED.value + 1000 * study + trial, study=study, trial=trial,
          tuning_ruleset=_TUNING_RULESET.value,
      )
      meta_path = os.path.join(trial_dir, "meta_data.json")
      if _RESUME.value and os.path.exists(meta_path):
        meta = logs.read_json(meta_path)
        if meta.get("status") == "complete":
          print(f"study {study} trial {trial}: complete, skipped", flush=True)
          results.append((study, trial, point, meta.get("time_to_target_sec"), meta.get("steps_to_target"), meta.get("global_step")))
          continue
      resume = _RESUME.value and os.path.isdir(os.path.join(trial_dir, "checkpoints"))
      print(f"study {study} trial {trial}: {json.dumps(point)}", flush=True)
      logs_flags = {holder.name: holder.value for holder in _RUNNER_FLAGS}
      os.makedirs(trial_dir, exist_ok=True)
      logs.write_json(os.path.join(trial_dir, "flags.json"), logs_flags)
      result = trainer.run_trial(
          workload, sub, point, trial_dir=trial_dir, rng_seed=record["rng_seed"], record=record,
          max_global_steps=_MAX_STEPS.value, resume=resume, save_checkpoints=_SAVE_CHECKPOINTS.value,
          budget_sec=budget, progress=lambda m: print("  " + m, flush=True),
      )
      results.append((study, trial, point, result.time_to_target_sec if result.reached_target else None,
                      result.steps_to_target, result.global_step))

  print(f"\n| study | trial | time to target (s) | steps to target | steps | hyperparameters |")
  print("|---|---|---|---|---|---|")
  for study, trial, point, seconds, steps, total in results:
    shown = f"{seconds:.1f}" if seconds is not None else "not reached"
    print(f"| {study} | {trial} | {shown} | {steps if steps is not None else '-'} | {total} | {json.dumps(point)} |")
  logging.info("logs in %s", root)
  print(f"\nlogs: {root}; score with: python -m experiments.score --experiment_dir={_EXPERIMENT_DIR.value}")


if __name__ == "__main__":
  app.run(main)
