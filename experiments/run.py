"""Benchmark an optimizer or an AlgoPerf-style submission on a workload.

    python -m experiments.run                                   # the main job (below)
    python -m experiments.run --workload=logreg --optimizer=adamod --num_tuning_trials=4
    python -m experiments.run --workload=logreg --optimizer=adamw,radam,prodigy
    python -m experiments.run --submission_path=experiments/submissions/nadamw.py
    python -m experiments.run --optimizer=radam --hparams='{"learning_rate": 3e-3}'
    python -m experiments.run ... --resume_last_run             # after a kill
    python -m experiments.run ... --trial_shard=0/4             # every 4th trial (SLURM arrays, TPU VMs)
    python -m experiments.run ... --launcher=ray                # each trial a Ray task (pip install -e ".[ray]")
    python -m experiments.run --workload=logreg --optimizer=adamw --probe=lr_range
    python -m experiments.run ... --log_sharpness --log_grad_norms   # diagnostics in the logs
    python -m experiments.spmd --num_processes=2 --devices_per_process=2 -- ...  # one trial, 2 processes

For every study (`--num_studies`) it runs `--num_tuning_trials` trials, each at
one point of the search space (Halton quasi-random; external ruleset) or at
the submission's defaults with 1.5x the budget (self-tuning ruleset), writes
AlgoPerf's per-trial logs under
`{experiment_dir}/{submission}/{workload}/study_{s}/trial_{t}/`, and prints a
table of time- and steps-to-target. `--optimizer` may list several registry
optimizers: each runs in turn, then the whole experiment directory is scored
as `python -m experiments.score --experiment_dir=...` would, with the first
as the baseline (tables with confidence intervals, performance profile).

The main job (no flags) is such a run: the NAdamW baseline, RAdam,
schedule-free AdamW and Prodigy on mnist1d_mlp, 3 studies x 3 trials each, in
the learning-rate ranges of experiments/search_spaces/mnist1d_mlp/ (about
3.5 minutes on 2 cores).

With `--probe` it runs a step-size probe of a registry optimizer instead
(experiments/probes.py) and writes its results under
`{experiment_dir}/probes/{optimizer}/{workload}/`:

* `lr_range`: Smith's range test, `--probe_steps` steps (default 200) with the
  rate growing exponentially from `--probe_min_lr` to `--probe_max_lr`;
  `lr_range.json` (rates, losses, smoothed losses, suggested bounds) and
  `lr_range.png`.
* `sharpness`: the top Hessian eigenvalue lambda_1 at initialisation;
  `sharpness.json`.
* `max_lr`: the largest constant rate in [`--probe_min_lr`,
  `--probe_max_lr`] that reaches `--probe_threshold` (default the workload's
  validation target) within `--probe_steps` steps (default its step_hint),
  by `--probe_bisections` bisections on log10(lr); `max_lr.json`.

Faults. A run killed at any point (SIGKILL included) and rerun with
`--resume_last_run` ends with the uninterrupted run's trials: complete ones
are kept (after checking they belong to this experiment: seed, point,
submission, workload, ruleset, measure), an unfinished one continues from
its newest checkpoint whose sha256 checksums verify (a corrupt or incomplete
newer one is reported and moved to `bad_checkpoints/`), or restarts from
step 0 if it had none. Time to target survives a resume, and the resumed
trial's jitted functions are compiled outside the clock. One runner at a
time per trial: a second is refused, naming the first
(`{experiment_dir}/{submission}/.locks/{workload}.study_{s}.trial_{t}.lock`,
an flock that dies with its process). A full disk is one error line; rerun with `--resume_last_run`
once space is free. Every flag and every hyperparameter point (its
optimizer is built abstractly) is checked before any directory is created.

`--hparams` sets the optimizer's other hyperparameters (default the
registry's). `--log_sharpness` and `--log_grad_norms` add lambda_1 per
evaluation and per-step gradient norms to ordinary trials' logs.

Several processes, one trial (`--coordinator_address`, `--num_processes`,
`--process_id`, or `--distributed` where JAX detects them: TPU pod slices,
SLURM): every process runs this runner with the same flags and trains each
trial data-parallel over the global device set; process 0 alone prints,
locks, deletes and writes (experiments/distributed.py; experiments/spmd.py
starts such processes on one machine).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import math
import os
import re
import shutil
import socket
import time
from typing import Any, Mapping, Sequence

from absl import app
from absl import flags
from absl import logging
import jax

from experiments import checkpoints
from experiments import common_flags
from experiments import distributed
from experiments import logs
from experiments import probes
from experiments import sharding
from experiments import submission as submission_lib
from experiments import trainer
from experiments import tuning
from experiments import workloads
import optimizers

FLAGS = flags.FLAGS
_WORKLOAD = flags.DEFINE_string("workload", "mnist1d_mlp", "Workload name.")
# The main job: the AlgoPerf baseline and three challengers of the recent
# literature (a rectified, a schedule-free and a parameter-free Adam).
DEFAULT_OPTIMIZERS = ("nadamw", "radam", "schedule_free_adamw", "prodigy")
_OPTIMIZER = flags.DEFINE_list(
    "optimizer", list(DEFAULT_OPTIMIZERS),
    "Registry optimizer(s), comma-separated: each runs in turn, and with more than one the"
    " experiment directory is scored at the end with the first as the baseline (ignored with"
    " --submission_path; --probe takes one).")
_SUBMISSION_PATH = flags.DEFINE_string(
    "submission_path", None,
    "A submission module (.py file or dotted name); AlgoPerf submission files run unchanged.")
_SUBMISSION_NAME = flags.DEFINE_string(
    "submission_name", None,
    "Name in the logs (default: the registry name, the module's NAME, the file's stem, or its"
    " folder's name for AlgoPerf's submission.py).")
_LOG_LAYOUT = flags.DEFINE_enum(
    "log_layout", "steplab", ["steplab", "algoperf"],
    "steplab: {experiment_dir}/{submission}/{workload}/study_{s}/trial_{t}/ (t from 0);"
    " algoperf: AlgoPerf's {experiment_dir}/{submission}/study_{s}/{workload}_jax/trial_{t}/"
    " (t from 1) with meta_data_{p}.json and flags_{p}.json. Both are scored by experiments.score.")
_MEASURE = flags.DEFINE_enum(
    "measure", None, list(trainer.MEASURES),
    "What a trial's time is: 'steps' (cost-adjusted steps: steps x the submission's per-step cost"
    " relative to --cost_baseline, measured in isolation; does not move with machine load) or"
    " 'wallclock' (AlgoPerf's submission seconds). Default: the workload's (steps on the CPU"
    " workloads, wallclock on the accelerator ones).")
_COST_BASELINE = flags.DEFINE_string(
    "cost_baseline", trainer.COST_BASELINE,
    "Registry optimizer whose per-step cost the 'steps' measure divides by.")
_METRICS_LOGGER = flags.DEFINE_bool(
    "metrics_logger", True,
    "Attach workload.metrics_logger (AlgoPerf does): what a submission logs goes to"
    " measurements.csv. AlgoPerf's archived baselines index a scalar loss there (loss[0], from"
    " the pmap era) and fail with it, in AlgoPerf's runner too: run them with --nometrics_logger.")
_TUNING_RULESET = flags.DEFINE_enum("tuning_ruleset", "external", ["external", "self"], "AlgoPerf tuning ruleset.")
_SEARCH_SPACE = flags.DEFINE_string(
    "tuning_search_space", None,
    "JSON search space, or a directory of them named {submission}.json (one per --optimizer)."
    " Default for a registry optimizer: experiments/search_spaces/{workload}/{optimizer}.json"
    " where that exists (the main job's spaces, narrowed around each optimizer's tuned region"
    " on that workload), else the registry's; a submission file's own space otherwise.")
_NUM_TRIALS = flags.DEFINE_integer("num_tuning_trials", 3, "Trials per study (external ruleset).")
_NUM_STUDIES = flags.DEFINE_integer(
    "num_studies", 3, "Independent studies (the scorer's confidence intervals resample them).")
_RNG_SEED = flags.DEFINE_integer("rng_seed", 0, "Seed for search points, data and initialisation.")
_EXPERIMENT_DIR = common_flags.EXPERIMENT_DIR
_MAX_STEPS = flags.DEFINE_integer("max_global_steps", None, "Optional cap on steps per trial.")
_RESUME = flags.DEFINE_bool(
    "resume_last_run", False,
    "Continue the experiment with the same flags: complete trials are kept, an unfinished one resumes"
    " from its newest intact checkpoint (or restarts from step 0 if it has none). Trials logged with"
    " another seed, point, ruleset or measure are refused.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False,
    "Delete this submission's existing logs on this workload first, complete trials included.")
_TRIAL_SHARD = flags.DEFINE_string(
    "trial_shard", None,
    "i/n: run only the trials whose index in the experiment (submissions in --optimizer order, then"
    " studies, then trials) is i mod n, for any scheduler that fans out processes (SLURM job arrays,"
    " one per TPU VM). The n shards together give one unsharded run; score the directory when all"
    " are done. Shards of one experiment may run at once (each trial has its own lock).")
_LAUNCHER = flags.DEFINE_enum(
    "launcher", "local", ["local", "ray"],
    "local: run the trials one after another in this process. ray: each trial in its own process"
    " as a Ray task with its own resources (--ray_*), retried --trial_retries times, on a local Ray"
    ' started on demand or the cluster at --ray_address (pip install -e ".[ray]").')
_RAY_ADDRESS = flags.DEFINE_string(
    "ray_address", None, "--launcher=ray: an existing cluster ('auto', 'ray://head:10001'); default a local Ray.")
_RAY_CPUS = flags.DEFINE_float("ray_cpus_per_trial", 1.0, "--launcher=ray: CPUs each trial's task holds.")
_RAY_GPUS = flags.DEFINE_float("ray_gpus_per_trial", 0.0, "--launcher=ray: GPUs each trial's task holds.")
_RAY_RESOURCES = flags.DEFINE_string(
    "ray_resources_per_trial", None, """--launcher=ray: other Ray resources per trial, JSON (e.g. '{"TPU": 4}').""")
_TRIAL_RETRIES = flags.DEFINE_integer(
    "trial_retries", 2, "--launcher=ray: how often a failed trial is run again (resuming) before it is reported.")
_SAVE_CHECKPOINTS = flags.DEFINE_bool("save_checkpoints", True, "Checkpoint after every evaluation.")
_HPARAMS = flags.DEFINE_string("hparams", None, "JSON object: a single run at these hyperparameters.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "Data for workloads that read files.")
_EVAL_PERIOD = flags.DEFINE_float(
    "eval_period_time_sec", None,
    "Override the workload's evaluation period (submission seconds between evals; checkpoints follow evals).")
_LOG_SHARPNESS = flags.DEFINE_bool(
    "log_sharpness", False,
    "Log the training loss's top Hessian eigenvalue (sharpness/lambda_1) at every evaluation"
    " (on a fixed training batch; not counted as submission time).")
_LOG_GRAD_NORMS = flags.DEFINE_bool(
    "log_grad_norms", False,
    "Write every step's gradient norm to grad_norms.csv in the trial directory (recomputed"
    " outside the submission clock).")
_PROBE = flags.DEFINE_enum(
    "probe", "none", ["none", *probes.PROBES],
    "Run a step-size probe of --optimizer instead of the tuning loop (see experiments/probes.py).")
_PROBE_MIN_LR = flags.DEFINE_float("probe_min_lr", 1e-6, "lr_range / max_lr: the smallest learning rate.")
_PROBE_MAX_LR = flags.DEFINE_float("probe_max_lr", 10.0, "lr_range / max_lr: the largest learning rate.")
_PROBE_STEPS = flags.DEFINE_integer(
    "probe_steps", None,
    "lr_range: steps of the sweep (default 200); max_lr: step budget per trial (default the"
    " workload's step_hint).")
_PROBE_THRESHOLD = flags.DEFINE_float(
    "probe_threshold", None, "max_lr: the validation target metric to reach (default the workload's target).")
_PROBE_BISECTIONS = flags.DEFINE_integer("probe_bisections", 8, "max_lr: bisections on log10(lr).")

_STOP_AT_TARGET = flags.DEFINE_bool(
    "stop_at_target", True,
    "End a trial when it reaches the target (AlgoPerf). --nostop_at_target trains on to"
    " --max_global_steps or the budget, to compare schedules or optimizers at equal steps.")


_BUDGET_SCALE = flags.DEFINE_float(
    "budget_scale", 1.0,
    "Multiplies the workload's budget (either measure; on top of self-tuning's 1.5). For runs that"
    " train past the budget on purpose (equal-steps comparisons with --nostop_at_target and"
    " --max_global_steps); a benchmark to be scored keeps 1.")
_PIN_CPU_CORE = flags.DEFINE_bool(
    "pin_cpu_core", True,
    "Under --measure=steps on the CPU, run on one core (chosen among the allowed ones by process"
    " id). XLA then runs single-threaded, so the per-step cost ratio does not depend on how many"
    " cores other processes leave free (unpinned, Prodigy/AdamW measured 1.47 or 1.85 depending on"
    " load on 2 cores; pinned, 1.46 idle and 1.37 with a busy loop on the same core).")

_MESH = flags.DEFINE_string(
    "mesh", None,
    "How one trial's devices are laid out, e.g. data:2,fsdp:4 (8 devices; the product must be the"
    " device count): the batch is split over every device, large parameters and their optimizer"
    " state over the fsdp axis (experiments/sharding.py). Default data:<device count>, i.e."
    " data parallel with parameters and state replicated.")
_FSDP_MIN_SIZE = flags.DEFINE_integer(
    "fsdp_min_size", sharding.MIN_SHARDED_SIZE,
    "With an fsdp axis in --mesh: parameters (and their optimizer state) of fewer elements stay"
    " replicated.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None,
    "host:port of process 0's coordinator: one trial over several processes (jax.distributed)."
    f" Default ${distributed.COORDINATOR_ENV}.")
_NUM_PROCESSES = flags.DEFINE_integer(
    "num_processes", None, f"With --coordinator_address: how many processes. Default ${distributed.NUM_PROCESSES_ENV}.")
_PROCESS_ID = flags.DEFINE_integer(
    "process_id", None, f"With --coordinator_address: this process's index. Default ${distributed.PROCESS_ID_ENV}.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False,
    "Call jax.distributed.initialize() with nothing given: on a TPU pod slice (every worker runs"
    " the same command), SLURM or MPI, JAX detects the processes. Implied by --coordinator_address.")

_RUNNER_FLAGS = (
    _WORKLOAD, _OPTIMIZER, _SUBMISSION_PATH, _TUNING_RULESET, _SEARCH_SPACE, _NUM_TRIALS,
    _NUM_STUDIES, _RNG_SEED, _EXPERIMENT_DIR, _MAX_STEPS, _RESUME, _OVERWRITE,
    _SAVE_CHECKPOINTS, _HPARAMS, _DATA_DIR, _EVAL_PERIOD, _LOG_SHARPNESS, _LOG_GRAD_NORMS,
    _STOP_AT_TARGET, _SUBMISSION_NAME, _LOG_LAYOUT, _METRICS_LOGGER, _MEASURE, _COST_BASELINE,
    _PIN_CPU_CORE, _BUDGET_SCALE, _MESH, _FSDP_MIN_SIZE,
)

# Probe flags, with the probes that use them.
_PROBE_FLAGS = (
    (_PROBE_MIN_LR, ("lr_range", "max_lr")), (_PROBE_MAX_LR, ("lr_range", "max_lr")),
    (_PROBE_STEPS, ("lr_range", "max_lr")), (_PROBE_THRESHOLD, ("max_lr",)), (_PROBE_BISECTIONS, ("max_lr",)),
)
# Flags of the tuning loop that a probe does not use.
_TRIAL_ONLY_FLAGS = (
    _SUBMISSION_PATH, _TUNING_RULESET, _SEARCH_SPACE, _NUM_TRIALS, _NUM_STUDIES, _MAX_STEPS, _RESUME,
    _SAVE_CHECKPOINTS, _EVAL_PERIOD, _LOG_SHARPNESS, _LOG_GRAD_NORMS, _SUBMISSION_NAME, _LOG_LAYOUT,
    _METRICS_LOGGER, _MEASURE, _COST_BASELINE, _PIN_CPU_CORE, _BUDGET_SCALE, _MESH, _FSDP_MIN_SIZE,
)
PROBES_DIR = "probes"  # {experiment_dir}/probes/{optimizer}/{workload}/
# Per-workload search spaces, {workload}/{submission}.json, used by default.
WORKLOAD_SEARCH_SPACES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "search_spaces")
LR_RANGE_STEPS = 200


def _parse_json_flag(name: str, text: str) -> Any:
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise app.UsageError(f"--{name} is not valid JSON: {e}") from None


def _submissions() -> list[submission_lib.Submission]:
  """The submissions to run: --submission_path's, or one per --optimizer."""
  if _SUBMISSION_PATH.value:
    try:
      return [submission_lib.load_submission(_SUBMISSION_PATH.value, name=_SUBMISSION_NAME.value)]
    except ValueError as e:
      raise app.UsageError(str(e)) from None
  names = _OPTIMIZER.value
  if not names:
    raise app.UsageError("--optimizer is empty: name at least one registry optimizer.")
  unknown = [n for n in names if n not in optimizers.registry]
  if unknown:
    raise app.UsageError(
        f"unknown --optimizer {', '.join(map(repr, unknown))}; registered: {', '.join(sorted(optimizers.registry))}")
  if len(set(names)) < len(names):
    raise app.UsageError(f"--optimizer names an optimizer twice: {','.join(names)}")
  if _SUBMISSION_NAME.value and len(names) > 1:
    raise app.UsageError("--submission_name names one submission; --optimizer lists several.")
  subs = [submission_lib.registry_submission(n) for n in names]
  return [dataclasses.replace(subs[0], name=_SUBMISSION_NAME.value)] if _SUBMISSION_NAME.value else subs


def _search_space_source(sub: submission_lib.Submission, workload_name: str) -> tuple[Any, str]:
  """(search space or its path, how it was chosen) for `sub` (module doc of the flag)."""
  given = _SEARCH_SPACE.value
  if given:
    if os.path.isdir(given):
      path = os.path.join(given, f"{sub.name}.json")
      if not os.path.exists(path):
        raise app.UsageError(f"--tuning_search_space={given} is a directory without {sub.name}.json")
      return path, path
    if not os.path.exists(given):
      raise app.UsageError(f"--tuning_search_space: no such file {given!r}")
    return given, given
  path = os.path.join(WORKLOAD_SEARCH_SPACES, workload_name, f"{sub.name}.json")
  if not _SUBMISSION_PATH.value and os.path.exists(path):  # A submission file brings its own.
    return path, path
  if not sub.search_space:
    raise app.UsageError(f"{sub.name} has no default search space; pass --tuning_search_space.")
  return sub.search_space, "the submission's own" if _SUBMISSION_PATH.value else "the registry's"


def _hparams_point() -> dict[str, Any] | None:
  """The --hparams point, or None without it."""
  if _HPARAMS.value is None:
    return None
  point = _parse_json_flag("hparams", _HPARAMS.value)
  if not isinstance(point, dict):
    raise app.UsageError("--hparams must be a JSON object of hyperparameters.")
  return point


def _points(sub: submission_lib.Submission, workload_name: str, study: int) -> list[dict[str, Any] | None]:
  """The hyperparameter points of one study (None: self-tuning, as AlgoPerf)."""
  if _HPARAMS.value is not None:
    return [_hparams_point()]
  if _TUNING_RULESET.value == "self":
    return [None]  # The submission tunes itself; it gets hyperparameters=None.
  space_source, _ = _search_space_source(sub, workload_name)
  try:
    space = tuning.load_search_space(space_source)
    return tuning.trial_points(space, _NUM_TRIALS.value, study, _RNG_SEED.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class _Trial:
  """One trial of the experiment: where it lives and the record that identifies it."""

  sub: submission_lib.Submission
  study: int
  trial: int
  point: dict[str, Any] | None
  trial_dir: str
  record: dict[str, Any]  # workload, submission, hyperparameters, rng_seed, study, trial, tuning_ruleset.
  index: int = 0  # In the whole experiment (all submissions): what --trial_shard selects on.

  @property
  def meta_path(self) -> str:
    return os.path.join(self.trial_dir, "meta_data.json")

  def complete(self) -> bool:
    """Whether its meta_data.json says it finished."""
    return os.path.exists(self.meta_path) and logs.read_json(self.meta_path).get("status") == "complete"


def _shard() -> tuple[int, int] | None:
  """--trial_shard as (i, n), or None."""
  if _TRIAL_SHARD.value is None:
    return None
  match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", _TRIAL_SHARD.value)
  if not match or not int(match[1]) < int(match[2]):
    raise app.UsageError(f"--trial_shard must be i/n with 0 <= i < n, got {_TRIAL_SHARD.value!r}.")
  return int(match[1]), int(match[2])


def _plans(subs: Sequence[submission_lib.Submission], workload_name: str) -> tuple[dict[str, list[_Trial]], int]:
  """({submission: its trials}, the experiment's number of trials).

  The trials are numbered across the experiment and filtered by --trial_shard.
  """
  plans, index = {}, 0
  for sub in subs:
    plans[sub.name] = []
    for t in _plan(sub, workload_name):
      plans[sub.name].append(dataclasses.replace(t, index=index))
      index += 1
  shard = _shard()
  if shard is not None:
    plans = {name: [t for t in trials if t.index % shard[1] == shard[0]] for name, trials in plans.items()}
  return plans, index


def _plan(sub: submission_lib.Submission, workload_name: str) -> list[_Trial]:
  """Every trial of `sub` on the workload, study by study, in the order they run."""
  return [
      _Trial(sub, study, trial, point, _trial_dir(sub.name, workload_name, study, trial, _LOG_LAYOUT.value),
             dict(workload=workload_name, submission=sub.name, hyperparameters=point,
                  rng_seed=_RNG_SEED.value + 1000 * study + trial, study=study, trial=trial,
                  tuning_ruleset=_TUNING_RULESET.value))
      for study in range(_NUM_STUDIES.value)
      for trial, point in enumerate(_points(sub, workload_name, study))
  ]


def _check_probe_flags() -> None:
  """UsageError for probe flags without their probe, or trial flags with a probe."""
  probe = _PROBE.value
  for holder, users in _PROBE_FLAGS:
    if FLAGS[holder.name].present and probe not in users:
      raise app.UsageError(f"--{holder.name} applies to --probe={' or --probe='.join(users)}, not --probe={probe}.")
  if probe == "none":
    return
  given = [f"--{h.name}" for h in _TRIAL_ONLY_FLAGS if FLAGS[h.name].present]
  if given:
    raise app.UsageError(
        f"--probe={probe} probes a registry optimizer (--optimizer) instead of running trials;"
        f" {', '.join(given)} do not apply to it.")
  if not 0 < _PROBE_MIN_LR.value < _PROBE_MAX_LR.value:
    raise app.UsageError(
        f"need 0 < --probe_min_lr < --probe_max_lr, got {_PROBE_MIN_LR.value} and {_PROBE_MAX_LR.value}.")
  if _PROBE_STEPS.value is not None and _PROBE_STEPS.value < (2 if probe == "lr_range" else 1):
    raise app.UsageError(f"--probe_steps must be at least {2 if probe == 'lr_range' else 1} for --probe={probe}.")
  if _PROBE_BISECTIONS.value < 0:
    raise app.UsageError("--probe_bisections must be >= 0.")
  if _PROBE_THRESHOLD.value is not None and not math.isfinite(_PROBE_THRESHOLD.value):
    raise app.UsageError(f"--probe_threshold must be finite, got {_PROBE_THRESHOLD.value}.")


def _run_probe(workload: workloads.Workload) -> None:
  """Runs --probe on --optimizer and writes its results."""
  probe = _PROBE.value
  if len(_OPTIMIZER.value) != 1 or not FLAGS["optimizer"].present:
    raise app.UsageError(f"--probe={probe} probes one registry optimizer: pass --optimizer=NAME.")
  sub, = _submissions()
  optimizer = sub.name
  point = _hparams_point() or {}
  try:
    probes.optimizer_arguments(optimizer, point, probe=probe)
  except ValueError as e:
    raise app.UsageError(f"--hparams: {e}") from None
  directory = os.path.join(_EXPERIMENT_DIR.value, PROBES_DIR, optimizer, workload.name)
  existing = [os.path.join(directory, name) for name in probes.OUTPUT_FILES[probe]
              if os.path.exists(os.path.join(directory, name))]
  if existing and not _OVERWRITE.value:
    raise app.UsageError(f"{existing[0]} exists: pass --overwrite to replace it.")
  for path in existing:
    os.remove(path)
  os.makedirs(directory, exist_ok=True)
  try:
    batch_size, _ = trainer.batch_size_for(sub, workload)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  progress = lambda m: print("  " + m, flush=True)
  print(f"--probe={probe}: {optimizer} on {workload.name} ({workload.num_params():,} params,"
        f" batch {batch_size}), hyperparameters {json.dumps(point)}", flush=True)
  common = dict(rng_seed=_RNG_SEED.value, batch_size=batch_size)
  if probe == "lr_range":
    result = probes.lr_range_test(
        workload, optimizer, point, min_lr=_PROBE_MIN_LR.value, max_lr=_PROBE_MAX_LR.value,
        num_steps=_PROBE_STEPS.value or LR_RANGE_STEPS, progress=progress, **common)
    paths = probes.write_lr_range(result, directory)
    bounds = result.bounds
    if bounds is None:
      logging.warning("lr_range: the loss never fell; lower --probe_min_lr.")
      print(f"{len(result.lrs)} steps ({result.stop_reason}); the loss never fell: no bounds.")
    else:
      if result.stop_reason == "completed":
        logging.warning("lr_range: the loss did not diverge by --probe_max_lr=%g; the bounds may be low.",
                        _PROBE_MAX_LR.value)
      print(f"{len(result.lrs)} steps ({result.stop_reason}); smoothed loss lowest at lr {bounds.lr_at_min:.3g};"
            f" suggested base_lr {bounds.base_lr:.3g}, max_lr {bounds.max_lr:.3g} ({bounds.rule})")
  elif probe == "sharpness":
    result = probes.initial_sharpness(workload, point, **common)
    paths = [os.path.join(directory, probes.SHARPNESS_JSON)]
    logs.write_json(paths[0], dict(result, optimizer=optimizer, hyperparameters=point))
    print(f"lambda_1 at initialisation: {result['lambda_1']:.6g} ({result['num_iterations']} Hessian-vector"
          f" products, {'converged' if result['converged'] else 'NOT converged'});"
          f" 2 / lambda_1 = {result['gd_stability_lr']:.3g}")
  else:
    result = probes.max_lr_search(
        workload, optimizer, point, lr_low=_PROBE_MIN_LR.value, lr_high=_PROBE_MAX_LR.value,
        num_bisections=_PROBE_BISECTIONS.value, step_budget=_PROBE_STEPS.value,
        threshold=_PROBE_THRESHOLD.value, progress=progress, **common)
    paths = [os.path.join(directory, probes.MAX_LR_JSON)]
    logs.write_json(paths[0], result.as_dict())
    settings = result.settings
    goal = (f"{settings['metric']} {'>=' if settings['mode'] == 'max' else '<='} {settings['threshold']}"
            f" within {settings['step_budget']} steps")
    if result.lr_low is None:
      print(f"no learning rate down to {_PROBE_MIN_LR.value:g} reached {goal}.")
    elif result.lr_high is None:
      print(f"even --probe_max_lr={_PROBE_MAX_LR.value:g} reached {goal}: the maximal rate is higher.")
    else:
      print(f"maximal initial learning rate in [{result.lr_low:.4g}, {result.lr_high:.4g}) ({goal}).")
  print(f"wrote {', '.join(paths)}")


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  _check_probe_flags()
  # Before anything starts JAX's CPU client: its thread pool is sized by the affinity.
  workload_class = workloads.WORKLOADS.get(_WORKLOAD.value)
  default_measure = workload_class.targets.measure if workload_class is not None else None
  coordinator, num_processes, process_id = _distributed_flags()
  pinned = None
  if _PROBE.value == "none" and (_MEASURE.value or default_measure) == "steps" and _PIN_CPU_CORE.value:
    pinned = _pin_cpu_core(process_id if (num_processes or 1) > 1 else None, num_processes or 1, _shard())
  if coordinator or _DISTRIBUTED.value:
    distributed.initialize(coordinator, num_processes, process_id)
  if not distributed.is_primary():  # Process 0 speaks for all (errors still go to stderr).
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
      _main(workload_class, pinned)
  else:
    _main(workload_class, pinned)


def _distributed_flags() -> tuple[str | None, int | None, int | None]:
  """(coordinator address, process count, process index): the flags, else their environment variables."""
  def env_int(name):
    text = os.environ.get(name)
    try:
      return int(text) if text else None
    except ValueError:
      raise app.UsageError(f"${name}={text!r} is not an integer.") from None
  coordinator = _COORDINATOR.value or os.environ.get(distributed.COORDINATOR_ENV) or None
  num = _NUM_PROCESSES.value if _NUM_PROCESSES.value is not None else env_int(distributed.NUM_PROCESSES_ENV)
  index = _PROCESS_ID.value if _PROCESS_ID.value is not None else env_int(distributed.PROCESS_ID_ENV)
  if num is not None and num < 1 or index is not None and not 0 <= index < (num or 1):
    raise app.UsageError(f"need --num_processes >= 1 and 0 <= --process_id < it, got {num} and {index}.")
  return coordinator, num, index


def _main(workload_class, pinned: int | None) -> None:
  """main() after the device set-up (on processes other than 0, with stdout silenced)."""
  if distributed.is_multiprocess() and (_PROBE.value != "none" or _LAUNCHER.value != "local"):
    raise app.UsageError("several processes run one trial at a time (--launcher=local, no --probe).")
  try:
    workload = workloads.get_workload(
        _WORKLOAD.value, **({"data_dir": _DATA_DIR.value} if _DATA_DIR.value else {})
    )
  except (ValueError, TypeError) as e:
    raise app.UsageError(str(e)) from None
  if _EVAL_PERIOD.value is not None:
    if not (math.isfinite(_EVAL_PERIOD.value) and _EVAL_PERIOD.value > 0):
      raise app.UsageError(f"--eval_period_time_sec must be a positive number, got {_EVAL_PERIOD.value}.")
    workload.targets = dataclasses.replace(workload.targets, eval_period_time_sec=_EVAL_PERIOD.value)
  _check_experiment_dir(_EXPERIMENT_DIR.value)
  if _PROBE.value != "none":
    _run_probe(workload)
    return
  _check_counts()
  shard = _shard()
  if _TUNING_RULESET.value == "self" and _SEARCH_SPACE.value:
    raise app.UsageError("--tuning_search_space does not apply to --tuning_ruleset=self (AlgoPerf refuses it too).")
  subs = _submissions()
  if not _BUDGET_SCALE.value > 0:
    raise app.UsageError(f"--budget_scale must be positive, got {_BUDGET_SCALE.value}.")
  factor = 1.5 if _TUNING_RULESET.value == "self" else 1.0  # AlgoPerf's self-tuning budget.
  factor *= _BUDGET_SCALE.value
  measure = _MEASURE.value or workload.targets.measure
  budget_steps = None
  if measure == "steps":
    if workload.targets.max_steps is None:
      raise app.UsageError(f"--measure=steps: {workload.name} has no step budget; use --measure=wallclock.")
    if _COST_BASELINE.value not in optimizers.registry:
      raise app.UsageError(f"unknown --cost_baseline {_COST_BASELINE.value!r}; registered: "
                           f"{', '.join(sorted(optimizers.registry))}")
    budget_steps = workload.targets.max_steps * factor
    if _EVAL_PERIOD.value is not None:
      raise app.UsageError("--eval_period_time_sec applies to --measure=wallclock; under --measure=steps"
                           f" {workload.name} evaluates every {workload.targets.eval_period_steps} steps.")
  # One pre-flight pass: refuse before any trial runs (not after the first submission's) and
  # before --overwrite deletes anything.
  batch_sizes = {sub.name: _batch_size(sub, workload) for sub in subs}  # Before the search spaces, as AlgoPerf.
  mesh = _mesh(batch_sizes, workload)
  plans, total = _plans(subs, workload.name)
  for sub in subs:
    _preflight(sub, workload, measure, plans[sub.name])
  distributed.barrier("steplab_preflight")  # Every process checked the directories before any changes.
  if _LAUNCHER.value == "ray":
    _run_on_ray(subs, workload, plans, total, measure)
  else:
    locks = []
    try:
      if distributed.is_primary():  # Process 0 holds the locks for all.
        for sub in subs:  # Before --overwrite deletes anything.
          locks += [_lock(t) for t in plans[sub.name]]
      for sub in (s for s in subs if plans[s.name]):  # A shard may hold none of a submission's trials.
        if distributed.is_primary():
          _clear(sub, workload, plans[sub.name])
        distributed.barrier(f"steplab_clear_{sub.name}")
        try:
          _run_submission(sub, workload, plans[sub.name], batch_sizes[sub.name], measure, factor, budget_steps,
                          pinned, mesh)
        except Exception as e:  # pylint: disable=broad-except
          if _disk_full(e):
            raise SystemExit(
                f"error: no space left on the device of --experiment_dir={_EXPERIMENT_DIR.value} while"
                f" running {sub.name} on {workload.name} ({_disk_full(e)}). Free space, then rerun with"
                " --resume_last_run: trials resume from their last intact checkpoint.") from None
          raise
    finally:
      for fd in locks:
        os.close(fd)  # Releases the flock (so does the process's death).
  print(f"\nlogs: {_EXPERIMENT_DIR.value}", flush=True)
  baseline = f" --baseline={subs[0].name}" if len(subs) > 1 else ""
  if shard is not None:
    print(f"shard {shard[0]}/{shard[1]}: {sum(map(len, plans.values()))} trial(s). When every shard is done:"
          f" python -m experiments.score --experiment_dir={_EXPERIMENT_DIR.value}{baseline}", flush=True)
  elif len(subs) > 1 and distributed.is_primary():
    _score(subs[0].name)
  else:
    print(f"score with: python -m experiments.score --experiment_dir={_EXPERIMENT_DIR.value}")


def _clear(sub: submission_lib.Submission, workload: workloads.Workload, trials: list[_Trial]) -> None:
  """--overwrite: deletes the logs this run replaces (a shard's: only its own trials)."""
  if not _OVERWRITE.value:
    return
  paths = ([t.trial_dir for t in trials] if _shard() is not None
           else _workload_roots(sub.name, workload.name, _LOG_LAYOUT.value))
  for path in paths:
    if os.path.exists(path):
      shutil.rmtree(path)


# Flags of the sweep as a whole, not passed to a trial's own process under --launcher=ray.
_LAUNCH_ONLY_FLAGS = ("launcher", "ray_address", "ray_cpus_per_trial", "ray_gpus_per_trial",
                      "ray_resources_per_trial", "trial_retries", "trial_shard", "overwrite", "resume_last_run",
                      "experiment_dir")


def _run_on_ray(subs: Sequence[submission_lib.Submission], workload: workloads.Workload,
                plans: dict[str, list[_Trial]], total: int, measure: str) -> None:
  """--launcher=ray: each trial of `plans` as a Ray task running this runner on that trial alone."""
  from experiments import launcher  # pylint: disable=g-import-not-at-top  (Ray: an optional extra)
  resources = _parse_json_flag("ray_resources_per_trial", _RAY_RESOURCES.value) if _RAY_RESOURCES.value else None
  if not (_RAY_CPUS.value >= 0 and _RAY_GPUS.value >= 0 and _TRIAL_RETRIES.value >= 0):
    raise app.UsageError("--ray_cpus_per_trial, --ray_gpus_per_trial and --trial_retries must be >= 0.")
  try:
    launcher.import_ray()
  except ImportError as e:
    raise app.UsageError(str(e)) from None
  seen, passed = set(), []
  for name in FLAGS:
    holder = FLAGS[name]
    if id(holder) in seen or not holder.present or holder.name in _LAUNCH_ONLY_FLAGS:
      continue
    seen.add(id(holder))
    passed.append(holder.serialize())
  experiment_dir = os.path.abspath(_EXPERIMENT_DIR.value)
  jobs = []
  for sub in subs:
    _clear(sub, workload, plans[sub.name])
    for t in plans[sub.name]:
      if _RESUME.value and t.complete():
        print(f"{sub.name} study {t.study} trial {t.trial}: complete, skipped", flush=True)
        continue
      jobs.append(launcher.Job(
          label=f"{sub.name} study {t.study} trial {t.trial}",
          argv=("-m", "experiments.run", *passed, f"--experiment_dir={experiment_dir}",
                f"--trial_shard={t.index}/{total}", "--resume_last_run", "--launcher=local"),
          cwd=os.getcwd(), log_path=os.path.join(experiment_dir, sub.name, LAUNCHER_LOGS_DIR,
                                                 f"{workload.name}.study_{t.study}.trial_{t.trial}")))
  where = _RAY_ADDRESS.value or "a local Ray"
  print(f"\n{len(jobs)} trial(s) of {workload.name} as Ray tasks on {where} ({_RAY_CPUS.value:g} CPU"
        f"{f', {_RAY_GPUS.value:g} GPU' if _RAY_GPUS.value else ''}"
        f"{f', {resources}' if resources else ''} each; up to {_TRIAL_RETRIES.value} retries)", flush=True)
  failures = launcher.run_on_ray(
      jobs, address=_RAY_ADDRESS.value, num_cpus=_RAY_CPUS.value, num_gpus=_RAY_GPUS.value,
      resources=resources, retries=_TRIAL_RETRIES.value, progress=lambda m: print("  " + m, flush=True))
  for sub in (s for s in subs if plans[s.name]):
    _print_table(sub, workload, [_logged_row(t, measure) for t in plans[sub.name]], measure)
  if failures:
    raise SystemExit(
        f"error: {len(failures)} trial(s) failed after {_TRIAL_RETRIES.value} retries: "
        + "; ".join(f"{job.label} ({why})" for job, why in failures)
        + ". Fix the cause, then rerun with --resume_last_run: completed trials are kept.")


def _logged_row(t: _Trial, measure: str) -> tuple:
  """The table row of a trial from its meta_data.json (a missing or unfinished one: not reached)."""
  meta = logs.read_json(t.meta_path) if os.path.exists(t.meta_path) else {}
  seconds = meta.get("cost_adjusted_steps_to_target" if measure == "steps" else "time_to_target_sec")
  status = meta.get("status", "not run")
  total = meta.get("global_step") if status == "complete" else f"{status}"
  return (t.study, t.trial, t.point, seconds, meta.get("steps_to_target"), total)


def _print_table(sub: submission_lib.Submission, workload: workloads.Workload, results: list[tuple],
                 measure: str) -> None:
  unit = "cost-adjusted steps" if measure == "steps" else "s"
  print(f"\n{sub.name} on {workload.name}:\n")
  print(f"| study | trial | time to target ({unit}) | steps to target | steps | hyperparameters |")
  print("|---|---|---|---|---|---|")
  for study, trial, point, seconds, steps, total in results:
    shown = f"{seconds:.1f}" if seconds is not None else "not reached"
    print(f"| {study} | {trial} | {shown} | {steps if steps is not None else '-'} | {total} | {json.dumps(point)} |")


def _pin_cpu_core(process_id: int | None = None, num_processes: int = 1,
                  shard: tuple[int, int] | None = None) -> int | None:
  """Pins this process to one allowed CPU core before JAX starts its CPU client.

  With `shard` (--trial_shard=i/n) the core is the i-th allowed one (mod their number),
  so shards started side by side, and the trials of a Ray sweep (whose tasks
  start in index order), land on different cores; the processes of one trial
  over several processes (`process_id` of `num_processes`) likewise, by
  index (shard i's process p: index i * num_processes + p). Returns the core, or None
  where pinning does not apply: no
  sched_setaffinity, a non-CPU platform requested, or JAX's backends already
  started (e.g. the runner called in-process; their thread pool is sized).
  """
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
  platforms = os.environ.get("JAX_PLATFORMS", "") or jax.config.jax_platforms or ""
  if (not hasattr(os, "sched_setaffinity") or any(p not in ("", "cpu") for p in platforms.split(","))
      or xla_bridge.backends_are_initialized()):
    return None
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) > 1:  # Spread concurrent runs over the cores: shards (and Ray's trials) by index.
    if process_id is not None:
      index = (shard[0] if shard else 0) * num_processes + process_id
    else:
      index = shard[0] if shard else os.getpid()
    os.sched_setaffinity(0, {cores[index % len(cores)]})
  return sorted(os.sched_getaffinity(0))[0]


def _run_submission(sub: submission_lib.Submission, workload: workloads.Workload, plan: list[_Trial],
                    batch: tuple[int, str], measure: str, factor: float, budget_steps: float | None,
                    pinned: int | None, mesh: dict[str, int] | None) -> list[tuple]:
  """Runs every study and trial of one submission; prints and returns their table rows."""
  batch_size, batch_name = batch
  layout = _LOG_LAYOUT.value
  budget = workload.targets.max_allowed_runtime_sec * factor
  cost_baseline = submission_lib.registry_submission(_COST_BASELINE.value) if measure == "steps" else None
  budget_text = (f"{budget_steps:.0f} cost-adjusted steps (relative to {_COST_BASELINE.value})"
                 if measure == "steps" else f"{budget:.0f}s")
  space_text = ""
  if _TUNING_RULESET.value == "external" and _HPARAMS.value is None:
    space_text = f", search space {_search_space_source(sub, workload.name)[1]}"
  print(
      f"\n{sub.name} on {workload.name} ({workload.num_params():,} params, {jax.device_count()} x"
      f" {jax.devices()[0].platform}{'' if pinned is None else f', pinned to core {pinned}'}"
      f"{'' if mesh is None else ', mesh ' + sharding.mesh_text(mesh)}): target"
      f" {workload.targets.metric} {'>=' if workload.targets.mode == 'max' else '<='}"
      f" {workload.targets.validation}, budget {budget_text}, {_TUNING_RULESET.value} ruleset{space_text},"
      f" batch size {batch_size}"
      + ("" if batch_name == workload.name else f" (the submission's size for {batch_name!r})"), flush=True,
  )
  count = len(_points(sub, workload.name, 0))  # A list-form space gives every study the same points.
  if count < _NUM_TRIALS.value and _TUNING_RULESET.value == "external" and _HPARAMS.value is None:
    print(f"the search space lists {count} points: running {count} trials per study, not"
          f" --num_tuning_trials={_NUM_TRIALS.value} (as AlgoPerf)", flush=True)
  results = []
  for t in plan:
    study, trial, point, trial_dir, record = t.study, t.trial, t.point, t.trial_dir, t.record
    # A complete trial's identity was checked before any trial ran.
    complete = bool(_RESUME.value and t.complete())
    resume = _RESUME.value and checkpoints.has_checkpoint(trial_dir)
    restart = _RESUME.value and not resume and os.path.exists(trial_dir)
    preemption = _preemption_count(trial_dir, resume)
    # Read before process 0 writes this trial's files: its view for every process (no-op in one).
    complete, resume, restart, preemption = distributed.broadcast([complete, resume, restart, preemption])
    if complete:
      print(f"study {study} trial {trial}: complete, skipped", flush=True)
      results.append(_logged_row(t, measure))
      continue
    print(f"study {study} trial {trial}: {json.dumps(point)}", flush=True)
    if restart:
      print("  no completed checkpoint (killed before its first one completed): restarting this trial from step 0",
            flush=True)
    os.makedirs(trial_dir, exist_ok=True)
    preemption_count = _write_run_files(trial_dir, workload, record, layout, preemption)
    result = trainer.run_trial(
        workload, sub, point, trial_dir=trial_dir, rng_seed=record["rng_seed"], record=record,
        max_global_steps=_MAX_STEPS.value, resume=resume, save_checkpoints=_SAVE_CHECKPOINTS.value,
        budget_sec=budget, progress=lambda m: print("  " + m, flush=True),
        log_sharpness=_LOG_SHARPNESS.value, log_grad_norms=_LOG_GRAD_NORMS.value,
        stop_at_target=_STOP_AT_TARGET.value, tuning_ruleset=_TUNING_RULESET.value,
        preemption_count=preemption_count, metrics_logger=_METRICS_LOGGER.value,
        measure=measure, budget_steps=budget_steps, cost_baseline=cost_baseline, mesh=mesh,
        fsdp_min_size=_FSDP_MIN_SIZE.value,
    )
    results.append((study, trial, point, result.score_time if result.reached_target else None,
                    result.steps_to_target, result.global_step))

  _print_table(sub, workload, results, measure)
  return results


def _score(baseline: str) -> None:
  """Scores the experiment directory (as experiments.score does) and says how to go on."""
  from experiments import score as score_lib  # pylint: disable=g-import-not-at-top  (its flags: only when used)
  directory = _EXPERIMENT_DIR.value
  print(f"\nscoring {directory} (every submission in it; speedups against {baseline}):\n", flush=True)
  try:
    result = score_lib.score(directory, baseline)
  except ValueError as e:
    logging.error("scoring %s failed: %s", directory, e)
    print(f"scoring failed: {e}")
    return
  print(result.markdown)
  print("wrote " + ", ".join(result.files))
  print(f"\nrescore (e.g. another baseline or confidence): python -m experiments.score"
        f" --experiment_dir={directory} --baseline={baseline}")


def _check_counts() -> None:
  """UsageError for counts that would run nothing, or something else than asked."""
  for holder in (_NUM_TRIALS, _NUM_STUDIES):
    if holder.value < 1:
      raise app.UsageError(f"--{holder.name} must be at least 1, got {holder.value}.")
  if _MAX_STEPS.value is not None and _MAX_STEPS.value < 1:
    raise app.UsageError(f"--max_global_steps must be at least 1 (or unset), got {_MAX_STEPS.value}.")


def _check_experiment_dir(directory: str) -> None:
  """UsageError unless `directory` is, or can be made, a writable directory (creates nothing)."""
  if not directory:
    raise app.UsageError("--experiment_dir is empty.")
  path = os.path.abspath(directory)
  if os.path.exists(path) and not os.path.isdir(path):
    raise app.UsageError(f"--experiment_dir={directory} exists and is not a directory.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise app.UsageError(f"--experiment_dir={directory}: {existing} is not a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise app.UsageError(f"--experiment_dir={directory}: {existing} is not writable.")


# meta_data.json keys that say which experiment a trial belongs to.
TRIAL_IDENTITY_KEYS = ("workload", "submission", "hyperparameters", "rng_seed", "tuning_ruleset", "measure")


def _check_identity(meta_path: str, meta: dict[str, Any], expected: dict[str, Any]) -> None:
  differing = [k for k in TRIAL_IDENTITY_KEYS if k in meta and k in expected
               and json.dumps(meta[k], sort_keys=True) != json.dumps(logs._jsonable(expected[k]), sort_keys=True)]  # pylint: disable=protected-access
  if differing:
    details = "; ".join(f"{k}: logged {meta[k]!r}, now {expected[k]!r}" for k in differing)
    raise app.UsageError(
        f"{meta_path} belongs to another experiment ({details}): --resume_last_run continues the same"
        " flags (--rng_seed, search space, --hparams, --tuning_ruleset, --measure). Use another"
        " --experiment_dir, or --overwrite to replace it.")


def _mesh(batch_sizes: Mapping[str, tuple[int, str]], workload: workloads.Workload) -> dict[str, int] | None:
  """--mesh as axis sizes (None: the default), or a UsageError if it does not fit the devices or batches."""
  if _FSDP_MIN_SIZE.value < 1:
    raise app.UsageError(f"--fsdp_min_size must be at least 1, got {_FSDP_MIN_SIZE.value}.")
  if not _MESH.value:
    return None
  try:
    sizes = sharding.parse_mesh(_MESH.value)
    for name, (batch_size, _) in batch_sizes.items():
      sharding.trial_mesh(batch_size, sizes, what=f"{name} on {workload.name}")
  except ValueError as e:
    raise app.UsageError(f"--mesh: {e}") from None
  return sizes


def _batch_size(sub: submission_lib.Submission, workload: workloads.Workload) -> tuple[int, str]:
  """The submission's batch size for the workload, or a UsageError quoting its answers."""
  try:
    return trainer.batch_size_for(sub, workload)
  except ValueError as e:
    raise app.UsageError(str(e)) from None


def _preflight(sub: submission_lib.Submission, workload: workloads.Workload, measure: str,
               plan: list[_Trial]) -> None:
  """UsageError for anything that would stop `sub`'s trials.

  An existing directory without --resume_last_run/--overwrite, a point the
  submission refuses (its optimizer state built abstractly with
  jax.eval_shape: no arrays), or an existing trial of another experiment.
  Runs before any directory is created.
  """
  mine = ([t.trial_dir for t in plan] if _shard() is not None
          else _workload_roots(sub.name, workload.name, _LOG_LAYOUT.value))
  existing = [r for r in mine if os.path.exists(r)]
  if existing and not (_RESUME.value or _OVERWRITE.value):
    raise app.UsageError(
        f"{existing[0]} exists: pass --resume_last_run to continue it or --overwrite to replace it.")
  rng = jax.random.PRNGKey(0)
  try:
    abstract = jax.eval_shape(workload.init_model_fn, rng)
  except Exception:  # pylint: disable=broad-except  (not traceable: the trial itself will say)
    abstract = None
  for t in plan:
    source = "--hparams" if _HPARAMS.value is not None else f"study {t.study} trial {t.trial}'s point"
    try:
      hparams = submission_lib.make_hyperparameters(t.point)
      if abstract is not None:
        jax.eval_shape(lambda p, s: sub.init_optimizer_state(workload, p, s, hparams, rng)[0],  # pylint: disable=cell-var-from-loop
                       *abstract)
    except ValueError as e:
      raise app.UsageError(f"{source} {json.dumps(t.point)} for {sub.name}: {e}") from None
    except Exception:  # pylint: disable=broad-except  (e.g. not traceable: the trial itself will say)
      pass
    if _RESUME.value and os.path.exists(t.meta_path):
      try:
        meta = logs.read_json(t.meta_path)
      except ValueError as e:
        raise app.UsageError(str(e)) from None
      _check_identity(t.meta_path, meta, dict(t.record, measure=measure))


LOCKS_DIR = ".locks"  # {experiment_dir}/{submission}/.locks/{workload}.study_{s}.trial_{t}.lock
# --launcher=ray: {experiment_dir}/{submission}/.launcher_logs/{workload}.study_{s}.trial_{t}.attempt_{a}.log
LAUNCHER_LOGS_DIR = ".launcher_logs"


def lock_path(experiment_dir: str, submission: str, workload: str, study: int, trial: int) -> str:
  """The lock of one trial (outside the trial's logs, which --overwrite deletes)."""
  return os.path.join(experiment_dir, submission, LOCKS_DIR, f"{workload}.study_{study}.trial_{trial}.lock")


def _lock(t: _Trial) -> int:
  """Takes one trial's lock; returns its fd.

  One runner per trial: shards of one experiment run side by side, and a
  second runner on the same trials is refused. fcntl.flock: released when the
  fd closes or the process dies, so a killed runner never leaves a stale
  lock. UsageError naming the holder if taken.
  """
  path = lock_path(_EXPERIMENT_DIR.value, t.sub.name, t.record["workload"], t.study, t.trial)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
      os.close(fd)
      raise
    holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    raise app.UsageError(
        f"{t.sub.name} on {t.record['workload']} study {t.study} trial {t.trial} in {_EXPERIMENT_DIR.value} is in"
        f" use by another runner ({holder}; lock {path}). Wait for it to finish, or stop it.") from None
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since"
                f" {time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n".encode(), 0)
  return fd


def _disk_full(error: BaseException) -> str | None:
  """The ENOSPC message in `error` or its causes (Orbax wraps them), or None."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
      return f"{error.strerror or 'No space left on device'}" + (f" writing {error.filename}" if error.filename else "")
    text = str(error)
    if "No space left on device" in text or "ENOSPC" in text:  # Tensorstore's, inside Orbax's errors.
      where = re.search(r'local file "([^"]+)"', text)
      return "No space left on device" + (f" writing {where.group(1)}" if where else "")
    for sub in getattr(error, "exceptions", ()) or ():  # ExceptionGroup (asyncio).
      found = _disk_full(sub)
      if found:
        return found
    error = error.__cause__ or error.__context__
  return None


def _workload_roots(submission: str, workload: str, layout: str) -> list[str]:
  """The directories holding this (submission, workload)'s trials."""
  base = os.path.join(_EXPERIMENT_DIR.value, submission)
  if layout == "steplab":
    return [os.path.join(base, workload)]
  return [os.path.join(base, f"study_{s}", f"{workload}_{ALGOPERF_FRAMEWORK}") for s in range(_NUM_STUDIES.value)]


def _trial_dir(submission: str, workload: str, study: int, trial: int, layout: str) -> str:
  """steplab: .../{workload}/study_{s}/trial_{t}; AlgoPerf: .../study_{s}/{workload}_jax/trial_{t+1}."""
  if layout == "steplab":
    return os.path.join(_EXPERIMENT_DIR.value, submission, workload, f"study_{study}", f"trial_{trial}")
  return os.path.join(_workload_roots(submission, workload, layout)[study], f"trial_{trial + 1}")


ALGOPERF_FRAMEWORK = "jax"
# The workload attributes AlgoPerf's meta_data_{p}.json records as `workload.<name>`.
_ALGOPERF_WORKLOAD_FIELDS = (
    "target_metric_name", "validation_target_value", "test_target_value", "max_allowed_runtime_sec",
    "eval_period_time_sec", "step_hint", "name", "default_batch_size",
)


def _preemption_count(trial_dir: str, resume: bool) -> int:
  """How often the trial was resumed, this time included (0 for a fresh start)."""
  meta_path = os.path.join(trial_dir, "meta_data.json")
  if resume and os.path.exists(meta_path):
    return int(logs.read_json(meta_path).get("preemption_count", 0)) + 1
  return 0


def _write_run_files(trial_dir: str, workload: workloads.Workload, record: dict[str, Any], layout: str,
                     preemption: int) -> int:
  """The run's flags (and AlgoPerf's meta data); returns the preemption count.

  AlgoPerf numbers meta_data_{p}.json / flags_{p}.json by how often the trial
  was resumed (`preemption`, from `_preemption_count`); so does the AlgoPerf layout here.
  """
  run_flags = {holder.name: holder.value for holder in _RUNNER_FLAGS}
  if layout == "steplab":
    logs.write_json(os.path.join(trial_dir, "flags.json"), run_flags)
    return preemption
  meta = {f"workload.{name}": getattr(workload, name) for name in _ALGOPERF_WORKLOAD_FIELDS}
  meta.update({"workload.target_mode": workload.targets.mode, "rng_seed": record["rng_seed"],
               "framework": ALGOPERF_FRAMEWORK, "jax_version": jax.__version__,
               "platform": jax.devices()[0].platform, "device_count": jax.device_count()})
  logs.write_json(os.path.join(trial_dir, f"meta_data_{preemption}.json"), meta)
  logs.write_json(os.path.join(trial_dir, f"flags_{preemption}.json"),
                  dict(run_flags, framework=ALGOPERF_FRAMEWORK, workload=workload.name))
  return preemption


if __name__ == "__main__":
  app.run(main)
