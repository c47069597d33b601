"""AlgoPerf scoring: time to target, per-workload times, profiles, scores.

The pipeline, for submissions s and workloads w:

  1. Trial time t = submission time of the first evaluation that reaches the
     validation target within the budget (inf on a miss), recomputed from
     `eval_measurements.csv`.
  2. Workload time t_{s,w} = median over studies of the fastest trial of
     each study (external tuning; self-tuning has one trial per study).
  3. Performance ratio r_{s,w} = t_{s,w} / min_s' t_{s',w}, set to inf when
     above R_MAX = 4; profile rho_s(tau) = |{w : r_{s,w} <= tau}| / |W|.
  4. Benchmark score B_s = 1/(R_MAX - 1) * integral_1^R_MAX rho_s(tau) dtau,
     in [0, 1]; plus the geometric-mean speedup over a baseline.

rho_s is a step function, so step 4 is integrated exactly by default.
AlgoPerf's scorer instead applies the trapezoid rule on 100 evenly spaced taus
in [1, 4] (`integration="algoperf_grid"` does the same, to compare numbers).

Everything here is a pure function of its arguments except
`load_experiment` (and the targets-file reader and writer), which read run
logs in either layout, told apart per submission directory:

  steplab:  {experiment_dir}/{submission}/{workload}/study_{s}/trial_{t}/
            meta_data.json (targets, budget, ruleset, status) and
            eval_measurements.csv.
  AlgoPerf: {experiment_dir}/{submission}/study_{s}/{workload}_{jax|pytorch}/
            trial_{t}/ (trials from 1) with meta_data_{preemption}.json
            (`workload.*` targets and budget), flags_{preemption}.json
            (`tuning_ruleset`) and eval_measurements.csv; a steplab
            meta_data.json in such a trial wins (status and targets).

`write_algoperf_workload_targets` goes the other way: it writes the
`workload_targets.json` that lets AlgoPerf's own scorer read a steplab
experiment written in AlgoPerf's layout.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
from typing import Any, Mapping, Sequence

from absl import logging
import numpy as np

R_MAX = 4.0  # Ratios above this count as failures; profiles live on [1, R_MAX].
TIME_COLUMN = "accumulated_submission_time"
STEP_COLUMN = "global_step"

Times = Mapping[str, Mapping[str, float]]  # submission -> workload -> seconds


# --- Trials --------------------------------------------------------------------


def _number(value: Any, what: str) -> float:
  """A CSV cell as float: blank (how the runner writes NaN/inf) is NaN."""
  if value is None or (isinstance(value, str) and not value.strip()):
    return math.nan
  try:
    return float(value)
  except (TypeError, ValueError):
    raise ValueError(f"{what}: {value!r} is not a number") from None


def time_to_target(
    eval_rows: Sequence[Mapping[str, Any]],
    target_metric: str,
    target_value: float,
    mode: str,
    budget: float,
) -> tuple[float, int | None]:
  """(submission time, global step) of the first eval reaching the target.

  The target is reached when metric >= target_value (mode "max") or <=
  (mode "min"); a missing or NaN metric (a diverged run) never reaches it.
  Only evaluations at submission time <= `budget` count. "First" is by
  submission time, not by row index, so rows need not be sorted.

  Returns:
    (time, step), or (inf, None) if no evaluation reached the target.
  """
  if mode not in ("max", "min"):
    raise ValueError(f'target mode must be "max" or "min", got {mode!r}')
  best: tuple[float, int] | None = None
  for i, row in enumerate(eval_rows):
    for column in (TIME_COLUMN, STEP_COLUMN):
      if column not in row:
        raise ValueError(f"eval row {i} has no {column!r} column; it has {sorted(row)}")
    if target_metric not in row:
      # A column first written later (e.g. after a resume) reads as blank.
      value = math.nan
    else:
      value = _number(row[target_metric], f"eval row {i}, {target_metric!r}")
    seconds = _number(row[TIME_COLUMN], f"eval row {i}, {TIME_COLUMN!r}")
    if math.isnan(seconds):
      raise ValueError(f"eval row {i}: {TIME_COLUMN!r} is blank")
    reached = value >= target_value if mode == "max" else value <= target_value
    if reached and seconds <= budget and (best is None or seconds < best[0]):
      best = (seconds, int(_number(row[STEP_COLUMN], f"eval row {i}, {STEP_COLUMN!r}")))
  return (math.inf, None) if best is None else best


def _check_time(t: Any, where: str) -> float:
  if not _is_real(t) or math.isnan(t) or t <= 0:
    raise ValueError(f"{where}: times must be positive seconds or inf, got {t!r}")
  return float(t)


def _is_real(x: Any) -> bool:
  return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def fastest_per_study(trial_times_by_study: Mapping[Any, Any]) -> dict[Any, tuple[Any, float]]:
  """study -> (trial, seconds) of the study's fastest trial (ties: first trial)."""
  if not trial_times_by_study:
    raise ValueError("no studies: expected {study: {trial: seconds}}")
  out = {}
  for study, trials in trial_times_by_study.items():
    if isinstance(trials, Mapping):
      items = list(trials.items())
    elif isinstance(trials, Sequence) and not isinstance(trials, str):
      items = list(enumerate(trials))
    else:
      raise ValueError(
          f"study {study!r}: expected a mapping trial -> seconds or a list of seconds, got"
          f" {type(trials).__name__} (pass {{study: {{trial: seconds}}}}, not {{trial: seconds}})"
      )
    if not items:
      raise ValueError(f"study {study!r} has no trials")
    timed = [(trial, _check_time(t, f"study {study!r} trial {trial!r}")) for trial, t in items]
    # Best by time, never by eval count or by key: see `workload_time`.
    out[study] = min(timed, key=lambda item: item[1])
  return out


def workload_time(trial_times_by_study: Mapping[Any, Any]) -> float:
  """Median over studies of each study's fastest trial time.

  t_w = median_study min_trial t_{study, trial}, a miss being inf. With an
  even number of studies the median is the mean of the middle two (inf if
  either is). Self-tuning runs one trial per study, so the min is that trial.

  Two AlgoPerf defects this does NOT copy:
    * Its tuning loop collects `all_timings` as a dict keyed by trial and
      scores `min(all_timings)`, the smallest KEY (a trial index), not the
      smallest time. We take the min over the values.
    * Its scoring picks a study's best trial as the one that reached the
      target at the smallest eval INDEX. Evals are spaced by submission time
      plus eval/compile overheads that differ between trials, so fewer evals
      does not mean less time: a trial reaching the target at its 2nd eval
      at 300 s loses to one reaching it at its 5th eval at 200 s. We compare
      the times themselves.

  Args:
    trial_times_by_study: {study: {trial: seconds}} (or {study: [seconds]}).
  """
  fastest = [t for _, t in fastest_per_study(trial_times_by_study).values()]
  return float(np.median(fastest))


# --- Profiles and scores -------------------------------------------------------


def _validated(times: Times) -> tuple[list[str], list[str]]:
  if not times:
    raise ValueError("no submissions to score")
  submissions = list(times)
  workloads = sorted({w for s in submissions for w in times[s]})
  if not workloads:
    raise ValueError("no workloads to score")
  for s in submissions:
    missing = [w for w in workloads if w not in times[s]]
    if missing:
      raise ValueError(f"submission {s!r} has no time for workload(s) {missing}; use inf for a miss")
    for w in workloads:
      _check_time(times[s][w], f"submission {s!r} workload {w!r}")
  return submissions, workloads


def performance_ratios(times: Times) -> dict[str, dict[str, float]]:
  """r_{s,w} = t_{s,w} / min_s' t_{s',w}, inf when above R_MAX or missed.

  A workload every submission missed has min = inf, and every ratio on it
  is inf (not inf/inf = NaN): everyone scores 0 on it.
  """
  submissions, workloads = _validated(times)
  ratios: dict[str, dict[str, float]] = {s: {} for s in submissions}
  for w in workloads:
    best = min(float(times[s][w]) for s in submissions)
    for s in submissions:
      t = float(times[s][w])
      r = t / best if math.isfinite(t) else math.inf
      ratios[s][w] = r if r <= R_MAX else math.inf
  return ratios


def profile_taus(times: Times, num: int = 0) -> np.ndarray:
  """Taus on which the profiles are exact: 1, R_MAX and every finite ratio.

  rho_s is a right-continuous step function that jumps only at the finite
  ratios, so sampled on these points (plus `num` evenly spaced ones, for
  plotting) `benchmark_score` integrates it exactly.
  """
  jumps = [r for rs in performance_ratios(times).values() for r in rs.values() if math.isfinite(r)]
  grid = np.linspace(1.0, R_MAX, num) if num else np.empty(0)
  return np.unique(np.concatenate([[1.0, R_MAX], np.asarray(jumps, np.float64), grid]))


def performance_profiles(times: Times, taus: Sequence[float] | np.ndarray) -> dict[str, np.ndarray]:
  """rho_s(tau) = |{w : r_{s,w} <= tau}| / |W| for each submission and tau.

  |W| counts every workload, including one that every submission missed:
  it stays in the denominator (an all-fail workload lowers all scores by the
  same 1/|W| instead of vanishing from the benchmark).

  Returns:
    {submission: array of rho at `taus`}.
  """
  taus = np.asarray(taus, np.float64)
  if taus.ndim != 1 or not taus.size or not np.all(np.isfinite(taus)):
    raise ValueError(f"taus must be a non-empty 1-D array of finite numbers, got {taus!r}")
  ratios = performance_ratios(times)
  out = {}
  for s, rs in ratios.items():
    r = np.asarray(list(rs.values()), np.float64)
    out[s] = np.mean(r[None, :] <= taus[:, None], axis=1)
  return out


ALGOPERF_NUM_TAUS = 100  # AlgoPerf's grid: np.linspace(1, R_MAX, 100), trapezoid rule.
INTEGRATIONS = ("exact", "algoperf_grid")


def algoperf_taus() -> np.ndarray:
  """The 100 evenly spaced taus in [1, R_MAX] on which AlgoPerf integrates."""
  return np.linspace(1.0, R_MAX, ALGOPERF_NUM_TAUS)


def benchmark_score(profile, taus, rule: str = "step"):
  """B = 1/(R_MAX - 1) * integral_1^R_MAX rho(tau) dtau, in [0, 1].

  rho is a step function, constant on [tau_i, tau_{i+1}) between its jumps,
  so the integral is the left Riemann sum sum_i rho(tau_i) (tau_{i+1} -
  tau_i) over [1, R_MAX] (rule "step"). That sum is EXACT when `taus`
  contain every jump (`profile_taus` gives such taus); on a coarse grid a
  trapezoid rule would smear each jump over a grid cell instead.
  Equivalently, B_s = sum_w max(0, R_MAX - r_{s,w}) / ((R_MAX - 1) |W|) (see
  `benchmark_scores`).

  Rule "trapezoid" is what AlgoPerf does (np.trapezoid over its taus, then
  divided by their range); on `algoperf_taus()` it reproduces AlgoPerf's
  numbers, jump smearing included.

  Args:
    profile: rho sampled at `taus` (one submission), or a dict of them.
    taus: increasing, containing 1.0 and reaching R_MAX.
    rule: "step" (exact on jump-containing taus) or "trapezoid".

  Returns:
    The score, or {submission: score} for a dict `profile`.
  """
  if rule not in ("step", "trapezoid"):
    raise ValueError(f'rule must be "step" or "trapezoid", got {rule!r}')
  if isinstance(profile, Mapping):
    return {s: benchmark_score(rho, taus, rule) for s, rho in profile.items()}
  taus = np.asarray(taus, np.float64)
  rho = np.asarray(profile, np.float64)
  if taus.ndim != 1 or rho.shape != taus.shape:
    raise ValueError(f"profile and taus must be 1-D of the same length, got {rho.shape} and {taus.shape}")
  if np.any(np.diff(taus) <= 0):
    raise ValueError("taus must be strictly increasing")
  if not np.any(taus == 1.0) or taus[-1] < R_MAX:
    raise ValueError(f"taus must contain 1.0 and reach {R_MAX}, got [{taus[0]}, {taus[-1]}]")
  if np.any((rho < 0) | (rho > 1)):
    raise ValueError("profile values must lie in [0, 1]")
  if rule == "trapezoid":
    inside = taus <= R_MAX
    return float(np.trapezoid(rho[inside], taus[inside]) / (R_MAX - 1.0))
  widths = np.diff(np.clip(taus, 1.0, R_MAX))
  return float(np.sum(rho[:-1] * widths) / (R_MAX - 1.0))


def benchmark_scores(times: Times, integration: str = "exact") -> dict[str, float]:
  """B_s for every submission.

  integration "exact": the closed form sum_w max(0, R_MAX - r_{s,w}) /
  ((R_MAX - 1) |W|). Each workload with ratio r <= R_MAX adds 1/|W| to rho on
  [r, R_MAX], i.e. (R_MAX - r)/|W| to the integral; summing gives this.

  integration "algoperf_grid": AlgoPerf's number, the trapezoid rule on
  `algoperf_taus()`. A ratio r strictly inside a grid cell of width h =
  3/99 puts the cell's rho jump at its midpoint instead of at r, an error of
  at most h/2 in the integral; so |grid - exact| <= n / (2 * 99 * |W|) <=
  1/198 for n finite ratios above 1 (a ratio of exactly 1 costs nothing).
  """
  if integration not in INTEGRATIONS:
    raise ValueError(f"integration must be one of {INTEGRATIONS}, got {integration!r}")
  if integration == "algoperf_grid":
    taus = algoperf_taus()
    return benchmark_score(performance_profiles(times, taus), taus, rule="trapezoid")
  return {
      s: sum(R_MAX - r for r in rs.values() if math.isfinite(r)) / ((R_MAX - 1.0) * len(rs))
      for s, rs in performance_ratios(times).items()
  }


def speedups(times: Times, baseline: str, budgets: Mapping[str, float]) -> dict[str, float]:
  """Geometric-mean speedup of each submission over `baseline`.

  speedup_s = exp(mean_w log(t_{baseline,w} / t_{s,w})), a miss counting as
  budget_w + 1 s (so a miss is slower than any hit, and two misses tie).
  Unlike the profile, ratios are not capped at R_MAX.
  """
  submissions, workloads = _validated(times)
  if baseline not in times:
    raise ValueError(f"unknown baseline {baseline!r}; submissions are {sorted(submissions)}")
  missing = [w for w in workloads if w not in budgets]
  if missing:
    raise ValueError(f"no budget for workload(s) {missing}")

  def capped(s, w):
    t = float(times[s][w])
    return t if math.isfinite(t) else float(budgets[w]) + 1.0

  return {
      s: float(np.exp(np.mean([math.log(capped(baseline, w) / capped(s, w)) for w in workloads])))
      for s in submissions
  }


# --- Metrics and targets files (AlgoPerf's scoring/workload_targets*.json) ----


# AlgoPerf logs no target mode: its scorer infers it from the metric name
# (MIN_EVAL_METRICS / MAX_EVAL_METRICS of scoring/performance_profile.py).
# "perplexity" is steplab's name for what AlgoPerf calls "ppl".
MINIMIZED_METRICS = ("loss", "ce_loss", "error_rate", "ctc_loss", "wer", "l1_loss", "ppl", "perplexity")
MAXIMIZED_METRICS = ("accuracy", "mean_average_precision", "ssim", "bleu")
_SPLITS = ("validation/", "train/", "test/")
_FRAMEWORK_DIR = re.compile(r"(.+)_(jax|pytorch)")
SELF_TUNING_BUDGET_FACTOR = 1.5  # AlgoPerf v0.6 (v0.5: 3); its runner applies it, its logs do not.


def metric_mode(metric: str) -> str:
  """"min" or "max" for a metric name such as "validation/wer" or "bleu".

  AlgoPerf's rule, except that the whole name (after an optional split
  prefix) must match: AlgoPerf matches substrings, which would take any
  column containing "loss" for a loss.

  Raises:
    ValueError: a metric in neither list (a wrong mode would silently score
      the wrong end of the curve).
  """
  name = metric
  for prefix in _SPLITS:
    if name.startswith(prefix):
      name = name[len(prefix):]
      break
  if name in MINIMIZED_METRICS:
    return "min"
  if name in MAXIMIZED_METRICS:
    return "max"
  raise ValueError(
      f"unknown target metric {metric!r}: AlgoPerf's rule knows the minimised metrics"
      f" {', '.join(MINIMIZED_METRICS)} and the maximised {', '.join(MAXIMIZED_METRICS)};"
      " give the trial a steplab meta_data.json with an explicit target_mode"
  )


@dataclasses.dataclass(frozen=True)
class Target:
  """A validation target: `metric` is the eval column, e.g. "validation/bleu"."""

  metric: str
  value: float
  mode: str
  step_hint: int | None = None


@dataclasses.dataclass(frozen=True)
class WorkloadTargets:
  """A targets file: per-workload targets, and which workloads count.

  `base_workloads` None means every workload in the experiment counts.
  """

  path: str
  targets: Mapping[str, Target]
  base_workloads: tuple[str, ...] | None = None


def read_workload_targets(path: str) -> WorkloadTargets:
  """Reads AlgoPerf's `{"workloads": {name: {target_metric_name, validation_target_value, step_hint}}}`.

  `base_workloads`, when present, decides which workloads count (and so the
  |W| of the profile), as in AlgoPerf's scorer. AlgoPerf's held-out variant
  rule (v0.5) is not applied: a warning says so.

  Raises:
    ValueError: a missing or malformed file, an unknown metric, or a base
      workload without an entry.
  """
  raw = _read_json(path)
  workloads = raw.get("workloads")
  if not isinstance(workloads, Mapping) or not workloads:
    raise ValueError(f"{path}: expected {{\"workloads\": {{name: {{target_metric_name, validation_target_value,"
                     f" step_hint}}}}}}, got keys {sorted(raw)}")
  targets = {}
  for name, spec in workloads.items():
    if not isinstance(spec, Mapping) or not {"target_metric_name", "validation_target_value"} <= set(spec):
      raise ValueError(f"{path}: workload {name!r} needs target_metric_name and validation_target_value, got {spec!r}")
    metric = f"validation/{spec['target_metric_name']}"
    step_hint = spec.get("step_hint")
    targets[name] = Target(metric, float(spec["validation_target_value"]), metric_mode(metric),
                           None if step_hint is None else int(step_hint))
  base = raw.get("base_workloads")
  if base is not None:
    base = tuple(base)
    missing = [w for w in base if w not in targets]
    if missing:
      raise ValueError(f"{path}: base_workloads {missing} have no entry in \"workloads\"")
  if raw.get("held_out_workloads"):
    logging.warning("%s lists held-out workloads %s: AlgoPerf's held-out variant rule is not applied,"
                    " they are ignored.", path, raw["held_out_workloads"])
  return WorkloadTargets(path, targets, base)


def algoperf_target(metric: str, value: float, mode: str) -> tuple[str, float]:
  """(target_metric_name, validation_target_value) for AlgoPerf's scorer.

  AlgoPerf reads the column `validation/{target_metric_name}` and infers the
  mode from the name. Steplab's "perplexity" is written as "loss" with value
  ln(target): steplab logs validation/loss as the mean cross-entropy and
  perplexity = exp(loss), so loss <= ln(target) exactly when perplexity <=
  target, on a column AlgoPerf's scorer finds (steplab has no
  validation/ppl column).

  Raises:
    ValueError: a metric AlgoPerf does not know, or a mode that contradicts
      AlgoPerf's rule for the metric (its scorer would read the wrong end).
  """
  name = metric.split("/", 1)[1] if metric.startswith(_SPLITS) else metric
  if name == "perplexity":
    if mode != "min" or not value > 0:
      raise ValueError(f"perplexity target must be positive with mode 'min', got {value!r} ({mode!r})")
    return "loss", math.log(value)
  if metric_mode(name) != mode:
    raise ValueError(f"metric {name!r} has mode {mode!r}, but AlgoPerf's scorer takes it as {metric_mode(name)!r}")
  return name, float(value)


# --- Experiment logs -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrialRecord:
  """One trial's result, recomputed from its eval log.

  `time_to_target` is inf and `steps_to_target` None on a miss; `evals` maps
  each eval_measurements.csv column to a float array (blank cells NaN).
  """

  submission: str
  workload: str
  study: int
  trial: int
  path: str
  ruleset: str
  target_metric: str
  target_value: float
  target_mode: str
  budget: float
  time_to_target: float
  steps_to_target: int | None
  evals: Mapping[str, np.ndarray]
  meta: Mapping[str, Any]

  @property
  def reached(self) -> bool:
    return math.isfinite(self.time_to_target)


Studies = Mapping[int, Mapping[int, TrialRecord]]  # study -> trial -> record


@dataclasses.dataclass(frozen=True)
class Experiment:
  """All complete trials: trials[submission][workload][study][trial].

  `skipped` lists the trial directories left out, each with the reason
  (incomplete, no eval log, not a base workload of the targets file, ...).
  `layouts` says how each submission directory was read: "steplab" or
  "algoperf" (see the module docstring).
  """

  directory: str
  ruleset: str
  trials: Mapping[str, Mapping[str, Studies]]
  skipped: tuple[str, ...] = ()
  layouts: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @property
  def submissions(self) -> list[str]:
    return sorted(self.trials)

  @property
  def workloads(self) -> list[str]:
    return sorted({w for by_w in self.trials.values() for w in by_w})


_META_KEYS = ("target_metric", "target_value", "target_mode", "max_allowed_runtime_sec", "tuning_ruleset", "status")


def _numbered(directory: str, prefix: str) -> list[tuple[int, str]]:
  pattern = re.compile(rf"{prefix}_(\d+)")
  found = []
  for name in os.listdir(directory):
    m = pattern.fullmatch(name)
    if m and os.path.isdir(os.path.join(directory, name)):
      found.append((int(m.group(1)), os.path.join(directory, name)))
  return sorted(found)


def _subdirs(directory: str) -> list[str]:
  return sorted(n for n in os.listdir(directory) if os.path.isdir(os.path.join(directory, n)) and not n.startswith("."))


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except FileNotFoundError:
    raise ValueError(f"{path} does not exist") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON: {e}") from None


def detect_layout(submission_dir: str) -> str | None:
  """"algoperf" (study_k/ right below), "steplab" (study_k/ below a workload dir) or None.

  Decided per submission directory, so a steplab run can be scored next to
  AlgoPerf's published logs. None (e.g. a `scores/` output folder) is ignored.
  """
  children = _subdirs(submission_dir)
  algoperf = any(re.fullmatch(r"study_\d+", c) for c in children)
  steplab = any(_numbered(os.path.join(submission_dir, c), "study") for c in children
                if not re.fullmatch(r"study_\d+", c))
  if algoperf and steplab:
    raise ValueError(
        f"{submission_dir} mixes layouts: study_k/ directly below it (AlgoPerf's) and below"
        " workload directories (steplab's); keep one layout per submission directory"
    )
  return "algoperf" if algoperf else "steplab" if steplab else None


def _trial_dirs(submission_dir: str, layout: str) -> tuple[list[tuple[str, int, int, str]], list[str]]:
  """[(workload, study, trial, path)] and the directories passed over, with why."""
  found, passed = [], []
  if layout == "steplab":
    for workload in _subdirs(submission_dir):
      for study, study_dir in _numbered(os.path.join(submission_dir, workload), "study"):
        found += [(workload, study, t, d) for t, d in _numbered(study_dir, "trial")]
    return found, passed
  for study, study_dir in _numbered(submission_dir, "study"):
    seen = {}
    for name in _subdirs(study_dir):
      m = _FRAMEWORK_DIR.fullmatch(name)
      if not m:
        passed.append(f"{os.path.join(study_dir, name)}: not a {{workload}}_{{jax|pytorch}} directory")
        continue
      workload = m.group(1)
      if workload in seen:
        raise ValueError(
            f"{study_dir} holds {seen[workload]} and {name}: one framework per workload and submission"
            " (move one into its own submission directory)"
        )
      seen[workload] = name
      found += [(workload, study, t, d) for t, d in _numbered(os.path.join(study_dir, name), "trial")]
  return found, passed


def _lowest_numbered_json(path: str, stem: str) -> dict[str, Any] | None:
  """`{stem}_{i}.json` with the lowest i (AlgoPerf writes one per preemption), or None."""
  numbered = sorted((int(m.group(1)), n) for n in os.listdir(path)
                    if (m := re.fullmatch(rf"{stem}_(\d+)\.json", n)))
  return _read_json(os.path.join(path, numbered[0][1])) if numbered else None


def _steplab_settings(path: str) -> dict[str, Any]:
  """Targets, budget, ruleset and status from steplab's meta_data.json."""
  meta_path = os.path.join(path, "meta_data.json")
  meta = _read_json(meta_path)
  missing = [k for k in _META_KEYS if k not in meta]
  if missing:
    raise ValueError(f"{meta_path} lacks {missing}")
  return dict(metric=meta["target_metric"], value=float(meta["target_value"]), mode=meta["target_mode"],
              budget=float(meta["max_allowed_runtime_sec"]), ruleset=meta["tuning_ruleset"],
              status=meta["status"], meta=meta, source="meta_data.json")


def _algoperf_settings(path: str) -> dict[str, Any]:
  """Targets, budget and ruleset from AlgoPerf's meta_data_0.json and flags_0.json.

  AlgoPerf logs the workload's budget; its runner gives self-tuning 1.5x that,
  and so does this. A trial with an eval log is complete (AlgoPerf has no
  status). Missing targets stay None, for a targets file to supply.
  """
  meta = _lowest_numbered_json(path, "meta_data") or {}
  flags = _lowest_numbered_json(path, "flags")
  if flags is None or "tuning_ruleset" not in flags:
    logging.warning("%s: no flags_*.json with tuning_ruleset; assuming AlgoPerf's default 'external'.", path)
    ruleset = "external"
  else:
    ruleset = flags["tuning_ruleset"]
  if ruleset not in ("external", "self"):
    raise ValueError(f"{path}: tuning_ruleset {ruleset!r} is neither 'external' nor 'self'")
  name = meta.get("workload.target_metric_name")
  metric = None if name is None else f"validation/{name}"
  value = meta.get("workload.validation_target_value")
  budget = meta.get("workload.max_allowed_runtime_sec")
  if budget is None:
    logging.warning("%s: no workload.max_allowed_runtime_sec; every logged eval counts.", path)
    budget = math.inf
  budget = float(budget) * (SELF_TUNING_BUDGET_FACTOR if ruleset == "self" else 1.0)
  return dict(metric=metric, value=None if value is None else float(value),
              mode=None if metric is None else metric_mode(metric), budget=budget, ruleset=ruleset,
              status="complete", meta=meta, source="meta_data_*.json")


def _apply_targets(settings: dict[str, Any], targets: WorkloadTargets | None, workload: str,
                   path: str) -> dict[str, Any]:
  """The settings with the targets file's target for `workload`, if it has one.

  The file wins (it is what AlgoPerf's scorer uses); a disagreement with the
  trial's own meta data is logged.
  """
  target = targets.targets.get(workload) if targets else None
  if target is None:
    if settings["metric"] is None or settings["value"] is None:
      raise ValueError(
          f"{path}: no validation target for workload {workload!r}: its {settings['source']} has none and "
          + (f"{targets.path} has no entry for it" if targets else "no workload_targets file was given")
      )
    return settings
  if settings["metric"] is not None and (settings["metric"], settings["value"]) != (target.metric, target.value):
    logging.warning("%s: %s says %s %s, %s says %s %s; using the targets file.", path, settings["source"],
                    settings["metric"], settings["value"], targets.path, target.metric, target.value)
  return dict(settings, metric=target.metric, value=target.value, mode=target.mode, overridden=True)


def _read_evals(csv_path: str) -> tuple[list[dict[str, str]], list[str]] | None:
  """Rows and columns of an eval log; None for an empty file."""
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    if reader.fieldnames is None:
      return None
    return rows, list(reader.fieldnames)


def _record(path: str, ids: tuple[str, str, int, int], settings: Mapping[str, Any]) -> TrialRecord | str:
  """The trial's record from its eval log, or a string saying why it is skipped."""
  csv_path = os.path.join(path, "eval_measurements.csv")
  if not os.path.exists(csv_path):
    if settings["source"] == "meta_data.json":
      raise ValueError(f"{csv_path} is missing but {path}/meta_data.json says the trial is complete")
    return "no eval_measurements.csv (the run never evaluated, or crashed)"
  evals_and_columns = _read_evals(csv_path)
  if evals_and_columns is None:
    return "eval_measurements.csv is empty"
  rows, columns = evals_and_columns
  seconds, steps = time_to_target(rows, settings["metric"], settings["value"], settings["mode"], settings["budget"])
  meta = settings["meta"]
  if "time_to_target_sec" in meta and not settings.get("overridden"):
    _check_logged_time(path, meta, seconds)
  evals = {}
  for c in columns:
    try:
      evals[c] = np.array([_number(r.get(c), c) for r in rows], np.float64)
    except ValueError:
      continue  # A non-numeric column is not a curve.
  if "score" in evals and not np.allclose(evals["score"], evals.get(TIME_COLUMN, evals["score"]), equal_nan=True):
    logging.warning("%s: AlgoPerf's 'score' column differs from %r; steplab scores by %r.",
                    csv_path, TIME_COLUMN, TIME_COLUMN)
  submission, workload, study, trial = ids
  return TrialRecord(
      submission=submission, workload=workload, study=study, trial=trial, path=path,
      ruleset=settings["ruleset"], target_metric=settings["metric"], target_value=settings["value"],
      target_mode=settings["mode"], budget=settings["budget"], time_to_target=seconds,
      steps_to_target=steps, evals=evals, meta=meta,
  )


def _check_logged_time(path: str, meta: Mapping[str, Any], seconds: float) -> None:
  """Warns when the runner's logged time to target disagrees with the eval log."""
  logged = meta.get("time_to_target_sec")
  logged = math.inf if logged is None or meta.get("reached_target") is False else float(logged)
  if (math.isfinite(logged) != math.isfinite(seconds)) or (
      math.isfinite(seconds) and not math.isclose(logged, seconds, rel_tol=1e-6, abs_tol=1e-6)
  ):
    logging.warning(
        "%s: meta_data.json says time to target %s, eval_measurements.csv gives %s; using the CSV.",
        path, logged, seconds,
    )


def _read_trial(path: str, layout: str, ids: tuple[str, str, int, int],
                targets: WorkloadTargets | None) -> TrialRecord | str | None:
  """The trial's record, a reason to skip it, or None if it is not a trial yet.

  A steplab meta_data.json decides wherever it exists (status, targets); an
  AlgoPerf-layout trial without one reads AlgoPerf's files. A steplab-layout
  directory without meta_data.json is a trial still being created.
  """
  if os.path.exists(os.path.join(path, "meta_data.json")):
    settings = _steplab_settings(path)
  elif layout == "steplab":
    return None
  else:
    settings = _algoperf_settings(path)
  if settings["status"] != "complete":
    return f"status {settings['status']!r} (not complete)"
  return _record(path, ids, _apply_targets(settings, targets, ids[1], path))


def load_experiment(experiment_dir: str, workload_targets: str | WorkloadTargets | None = None) -> Experiment:
  """Reads every trial of an experiment directory, in either layout.

  Submission and workload names come from the directory names (so a renamed
  copy of a run scores as its own submission; AlgoPerf's `wmt_jax` is
  workload `wmt`). Each submission directory's layout is detected
  (`detect_layout`). Times are recomputed from eval_measurements.csv; a
  disagreement with steplab's meta_data.json is logged and the CSV wins.

  Skipped, with a warning, and listed in `Experiment.skipped` (not counted as
  misses): trials whose status is not "complete" (still running, or
  interrupted and awaiting a resume), AlgoPerf-layout trials without an eval
  log (AlgoPerf's scorer skips them too), and workloads outside the targets
  file's `base_workloads`. A (submission, workload) left with no trials at
  all is then scored as a miss by `workload_results`.

  Args:
    experiment_dir: holds one directory per submission.
    workload_targets: an AlgoPerf-format targets file (path or
      `read_workload_targets` result). Its targets override the logged ones;
      its `base_workloads`, if any, are the workloads that count.

  Raises:
    ValueError: no trials at all; malformed logs; a trial without a target;
      tuning rulesets, budgets or targets that differ within the experiment
      (their times are not comparable); a self-tuning study with more than
      one trial; a base workload without any trial.
  """
  if not os.path.isdir(experiment_dir):
    raise ValueError(f"experiment directory {experiment_dir!r} does not exist")
  if isinstance(workload_targets, str):
    workload_targets = read_workload_targets(workload_targets)
  base = workload_targets.base_workloads if workload_targets else None
  trials: dict[str, dict[str, dict[int, dict[int, TrialRecord]]]] = {}
  skipped, layouts, excluded = [], {}, {}
  found_any = False
  for submission in _subdirs(experiment_dir):
    submission_dir = os.path.join(experiment_dir, submission)
    layout = detect_layout(submission_dir)
    if layout is None:
      continue
    layouts[submission] = layout
    found, passed = _trial_dirs(submission_dir, layout)
    skipped += passed
    for workload, study, trial, trial_dir in found:
      if base is not None and workload not in base:
        excluded.setdefault((submission, workload), trial_dir)
        continue
      record = _read_trial(trial_dir, layout, (submission, workload, study, trial), workload_targets)
      if record is None:
        continue
      found_any = True
      if isinstance(record, str):
        logging.warning("skipping %s: %s", trial_dir, record)
        skipped.append(f"{trial_dir}: {record}")
        continue
      trials.setdefault(submission, {}).setdefault(workload, {}).setdefault(study, {})[trial] = record
  for (submission, workload), trial_dir in sorted(excluded.items()):
    skipped.append(f"{os.path.dirname(os.path.dirname(trial_dir))}: {submission}/{workload} is not among the"
                   f" base_workloads of {workload_targets.path}")
  if not found_any:
    raise ValueError(
        f"no trials under {experiment_dir!r}: expected steplab's"
        " {submission}/{workload}/study_{s}/trial_{t}/meta_data.json or AlgoPerf's"
        " {submission}/study_{s}/{workload}_{framework}/trial_{t}/"
    )
  if not trials:
    raise ValueError(f"no complete trials under {experiment_dir!r}; skipped: {skipped}")
  _check_comparable(trials, base, workload_targets)
  records = _records(trials)
  return Experiment(experiment_dir, records[0].ruleset, trials, tuple(skipped), layouts)


def _records(trials) -> list[TrialRecord]:
  return [r for by_w in trials.values() for by_s in by_w.values() for by_t in by_s.values() for r in by_t.values()]


def _check_comparable(trials, base, workload_targets) -> None:
  """Raises ValueError unless all trials can be scored against each other."""
  records = _records(trials)
  rulesets = sorted({r.ruleset for r in records})
  if len(rulesets) > 1:
    by_ruleset = {k: sorted({r.submission for r in records if r.ruleset == k}) for k in rulesets}
    raise ValueError(f"mixed tuning rulesets in one experiment (scores are per ruleset): {by_ruleset}")
  for w in {r.workload for r in records}:
    budgets = sorted({r.budget for r in records if r.workload == w})
    if len(budgets) > 1:
      raise ValueError(f"workload {w!r}: trials have different budgets {budgets}")
    targets = {(r.target_metric, r.target_value, r.target_mode) for r in records if r.workload == w}
    if len(targets) > 1:
      raise ValueError(f"workload {w!r}: trials have different targets {sorted(targets)}")
  if base is not None:
    missing = sorted(set(base) - {r.workload for r in records})
    if missing:
      raise ValueError(
          f"base workload(s) {missing} of {workload_targets.path} have no complete trial in any submission;"
          " every base workload counts in the profile's denominator (AlgoPerf's scorer fails on them"
          " too): drop them from base_workloads"
      )
  if rulesets == ["self"]:
    for s, by_w in trials.items():
      for w, by_s in by_w.items():
        for study, by_t in by_s.items():
          if len(by_t) > 1:
            raise ValueError(
                f"{s}/{w} study {study}: the self-tuning ruleset runs one trial per study, found {len(by_t)}"
            )


@dataclasses.dataclass(frozen=True)
class WorkloadResult:
  """A submission's result on a workload.

  `time` is `workload_time` over the studies. `trial` is the representative
  trial: the fastest trial of the median study (the lower middle one for an
  even number of studies), None if the submission has no trials there;
  `steps` is its steps to target.
  """

  time: float
  steps: int | None
  trial: TrialRecord | None


def _closeness(record: TrialRecord) -> float:
  """Best target-metric value seen, signed so larger is better (for misses)."""
  values = record.evals.get(record.target_metric, np.empty(0))
  values = values[np.isfinite(values)]
  if not values.size:
    return -math.inf
  return float(values.max() if record.target_mode == "max" else -values.min())


def representative_trial(studies: Studies) -> TrialRecord:
  """The fastest trial of the median study (misses: closest to the target)."""

  def best(by_t):
    return min(by_t.values(), key=lambda r: (r.time_to_target, -_closeness(r), r.trial))

  ranked = sorted((best(by_t) for by_t in studies.values()),
                  key=lambda r: (r.time_to_target, -_closeness(r), r.study))
  return ranked[(len(ranked) - 1) // 2]


def workload_results(experiment: Experiment) -> dict[str, dict[str, WorkloadResult]]:
  """{submission: {workload: WorkloadResult}} over every pair in the experiment.

  A submission with no complete trial on a workload others ran gets inf
  (a miss), with a warning.
  """
  out: dict[str, dict[str, WorkloadResult]] = {}
  for s in experiment.submissions:
    out[s] = {}
    for w in experiment.workloads:
      studies = experiment.trials[s].get(w)
      if not studies:
        logging.warning("%s has no complete trial on %s: scored as a miss.", s, w)
        out[s][w] = WorkloadResult(math.inf, None, None)
        continue
      seconds = workload_time({st: {t: r.time_to_target for t, r in by_t.items()} for st, by_t in studies.items()})
      trial = representative_trial(studies)
      out[s][w] = WorkloadResult(seconds, trial.steps_to_target, trial)
  return out


def workload_info(experiment: Experiment) -> dict[str, TrialRecord]:
  """One trial record per workload, for its budget and target (they agree)."""
  info = {}
  for by_w in experiment.trials.values():
    for w, studies in by_w.items():
      for by_t in studies.values():
        for r in by_t.values():
          info.setdefault(w, r)
  return info


# --- AlgoPerf's scorer on a steplab experiment ----------------------------------


def _step_hint(workload: str, record: TrialRecord) -> int:
  """The workload's step hint: from the trial's meta data, else steplab's registry.

  AlgoPerf's scorer only prints it (in its per-submission summary), so an
  unknown one is written as 0 with a warning rather than failing.
  """
  algoperf_meta = _lowest_numbered_json(record.path, "meta_data") or {}
  for meta in (record.meta, algoperf_meta):
    for key in ("workload.step_hint", "step_hint"):
      if meta.get(key) is not None:
        return int(meta[key])
  from experiments import workloads  # pylint: disable=g-import-not-at-top (imports JAX)
  if workload in workloads.WORKLOADS:
    return int(workloads.WORKLOADS[workload].targets.step_hint)
  logging.warning("no step_hint for workload %r; writing 0 (AlgoPerf's scorer only prints it).", workload)
  return 0


def algoperf_workload_targets(experiment: Experiment, benchmark_version: str = "steplab") -> dict[str, Any]:
  """AlgoPerf's `workload_targets.json` content for the experiment's workloads.

  Every workload of the experiment is a base workload (AlgoPerf's scorer
  counts exactly its base workloads, and fails on one without logs); targets
  go through `algoperf_target` (perplexity becomes loss <= ln(target)).
  """
  workloads = {}
  for w, record in sorted(workload_info(experiment).items()):
    name, value = algoperf_target(record.target_metric, record.target_value, record.target_mode)
    workloads[w] = dict(target_metric_name=name, validation_target_value=value, step_hint=_step_hint(w, record))
  return {
      "_comment": (f"Written by steplab (experiments.score --write_workload_targets) for {experiment.directory}."
                   " Steplab's perplexity targets appear as loss <= ln(target)."),
      "benchmark_version": benchmark_version,
      "base_workloads": sorted(workloads),
      "held_out_workloads": [],
      "workloads": workloads,
  }


def write_algoperf_workload_targets(experiment: Experiment, path: str) -> dict[str, Any]:
  """Writes `algoperf_workload_targets(experiment)` to `path`; returns it.

  Raises:
    ValueError: `path` inside the experiment directory. AlgoPerf's
      score_submissions.py takes every entry of --submission_directory for a
      submission directory and fails on a file there.
  """
  root = os.path.realpath(experiment.directory)
  if os.path.commonpath([root, os.path.realpath(path)]) == root:
    raise ValueError(
        f"{path} is inside the experiment directory {experiment.directory}: AlgoPerf's scorer would take it"
        " for a submission; write the targets file elsewhere"
    )
  content = algoperf_workload_targets(experiment)
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    json.dump(content, f, indent=2)
    f.write("\n")
  return content
