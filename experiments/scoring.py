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

Everything here is a pure function of its arguments except
`load_experiment`, which reads the run logs
`{experiment_dir}/{submission}/{workload}/study_{s}/trial_{t}/`.
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


def benchmark_score(profile, taus):
  """B = 1/(R_MAX - 1) * integral_1^R_MAX rho(tau) dtau, in [0, 1].

  rho is a step function, constant on [tau_i, tau_{i+1}) between its jumps,
  so the integral is the left Riemann sum sum_i rho(tau_i) (tau_{i+1} -
  tau_i) over [1, R_MAX]. That sum is EXACT when `taus` contain every jump
  (`profile_taus` gives such taus); on a coarse grid a trapezoid rule would
  smear each jump over a grid cell instead. Equivalently, B_s =
  sum_w max(0, R_MAX - r_{s,w}) / ((R_MAX - 1) |W|) (see `benchmark_scores`).

  Args:
    profile: rho sampled at `taus` (one submission), or a dict of them.
    taus: increasing, containing 1.0 and reaching R_MAX.

  Returns:
    The score, or {submission: score} for a dict `profile`.
  """
  if isinstance(profile, Mapping):
    return {s: benchmark_score(rho, taus) for s, rho in profile.items()}
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
  widths = np.diff(np.clip(taus, 1.0, R_MAX))
  return float(np.sum(rho[:-1] * widths) / (R_MAX - 1.0))


def benchmark_scores(times: Times) -> dict[str, float]:
  """B_s in closed form: sum_w max(0, R_MAX - r_{s,w}) / ((R_MAX - 1) |W|).

  Each workload with ratio r <= R_MAX adds 1/|W| to rho on [r, R_MAX], i.e.
  (R_MAX - r)/|W| to the integral; summing gives this formula.
  """
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

  `skipped` lists the trial directories left out, each with the reason.
  """

  directory: str
  ruleset: str
  trials: Mapping[str, Mapping[str, Studies]]
  skipped: tuple[str, ...] = ()

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


def _read_trial(path: str, submission: str, workload: str, study: int, trial: int) -> TrialRecord | str:
  """The trial's record, or a string saying why it is skipped."""
  meta_path = os.path.join(path, "meta_data.json")
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{meta_path} is not valid JSON: {e}") from None
  missing = [k for k in _META_KEYS if k not in meta]
  if missing:
    raise ValueError(f"{meta_path} lacks {missing}")
  if meta["status"] != "complete":
    return f"status {meta['status']!r}"
  csv_path = os.path.join(path, "eval_measurements.csv")
  if not os.path.exists(csv_path):
    raise ValueError(f"{csv_path} is missing but {meta_path} says the trial is complete")
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    rows = list(reader)
    columns = list(reader.fieldnames or [])
  budget = float(meta["max_allowed_runtime_sec"])
  seconds, steps = time_to_target(
      rows, meta["target_metric"], float(meta["target_value"]), meta["target_mode"], budget
  )
  logged = meta.get("time_to_target_sec")
  logged = math.inf if logged is None or meta.get("reached_target") is False else float(logged)
  if (math.isfinite(logged) != math.isfinite(seconds)) or (
      math.isfinite(seconds) and not math.isclose(logged, seconds, rel_tol=1e-6, abs_tol=1e-6)
  ):
    logging.warning(
        "%s: meta_data.json says time to target %s, eval_measurements.csv gives %s; using the CSV.",
        path, logged, seconds,
    )
  evals = {}
  for c in columns:
    try:
      evals[c] = np.array([_number(r.get(c), c) for r in rows], np.float64)
    except ValueError:
      continue  # A non-numeric column is not a curve.
  return TrialRecord(
      submission=submission, workload=workload, study=study, trial=trial, path=path,
      ruleset=meta["tuning_ruleset"], target_metric=meta["target_metric"],
      target_value=float(meta["target_value"]), target_mode=meta["target_mode"], budget=budget,
      time_to_target=seconds, steps_to_target=steps, evals=evals, meta=meta,
  )


def load_experiment(experiment_dir: str) -> Experiment:
  """Reads every trial under `{experiment_dir}/{submission}/{workload}/study_{s}/trial_{t}/`.

  Submission and workload names come from the directory names (so a renamed
  copy of a run scores as its own submission). Times are recomputed from
  eval_measurements.csv; a disagreement with meta_data.json is logged and the
  CSV wins.

  Trials whose status is not "complete" (still running, or interrupted and
  awaiting a resume) are SKIPPED with a warning and listed in
  `Experiment.skipped`, not counted as misses: they have no final result yet.
  A (submission, workload) left with no trials at all is then scored as a
  miss by `workload_results`.

  Raises:
    ValueError: no trials at all; malformed logs; tuning rulesets or budgets
      that differ within the experiment (their times are not comparable); a
      self-tuning study with more than one trial.
  """
  if not os.path.isdir(experiment_dir):
    raise ValueError(f"experiment directory {experiment_dir!r} does not exist")
  trials: dict[str, dict[str, dict[int, dict[int, TrialRecord]]]] = {}
  skipped = []
  found_any = False
  for submission in _subdirs(experiment_dir):
    for workload in _subdirs(os.path.join(experiment_dir, submission)):
      for study, study_dir in _numbered(os.path.join(experiment_dir, submission, workload), "study"):
        for trial, trial_dir in _numbered(study_dir, "trial"):
          if not os.path.exists(os.path.join(trial_dir, "meta_data.json")):
            continue
          found_any = True
          record = _read_trial(trial_dir, submission, workload, study, trial)
          if isinstance(record, str):
            logging.warning("skipping %s: %s (not complete)", trial_dir, record)
            skipped.append(f"{trial_dir}: {record}")
            continue
          trials.setdefault(submission, {}).setdefault(workload, {}).setdefault(study, {})[trial] = record
  if not found_any:
    raise ValueError(
        f"no trials under {experiment_dir!r}: expected"
        " {submission}/{workload}/study_{s}/trial_{t}/meta_data.json"
    )
  if not trials:
    raise ValueError(f"no complete trials under {experiment_dir!r}; skipped: {skipped}")
  records = [r for by_w in trials.values() for by_s in by_w.values() for by_t in by_s.values() for r in by_t.values()]
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
  if rulesets == ["self"]:
    for s, by_w in trials.items():
      for w, by_s in by_w.items():
        for study, by_t in by_s.items():
          if len(by_t) > 1:
            raise ValueError(
                f"{s}/{w} study {study}: the self-tuning ruleset runs one trial per study, found {len(by_t)}"
            )
  return Experiment(experiment_dir, rulesets[0], trials, tuple(skipped))


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
