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
  5. Uncertainty: `bootstrap_intervals` resamples each submission's studies
     and reruns steps 2-4 on all submissions together, for percentile
     intervals of times, scores and speedups and for which pairs of
     submissions are not distinguishable.

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
import io
import json
import math
import os
import re
from typing import Any, Mapping, Sequence
import zlib

from absl import logging
import numpy as np

from experiments import logs

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
    time_column: str = TIME_COLUMN,
) -> tuple[float, int | None]:
  """(time, global step) of the first eval reaching the target.

  Time is read from `time_column`: submission seconds by default, or
  "cost_adjusted_steps" for trials of the runner's "steps" measure.

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
    for column in (time_column, STEP_COLUMN):
      if column not in row:
        raise ValueError(f"eval row {i} has no {column!r} column; it has {sorted(row)}")
    if target_metric not in row:
      # A column first written later (e.g. after a resume) reads as blank.
      value = math.nan
    else:
      value = _number(row[target_metric], f"eval row {i}, {target_metric!r}")
    seconds = _number(row[time_column], f"eval row {i}, {time_column!r}")
    if math.isnan(seconds):
      raise ValueError(f"eval row {i}: {time_column!r} is blank")
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


# --- Uncertainty: a bootstrap over studies ---------------------------------------

TrialTimes = Mapping[str, Mapping[str, Mapping[Any, Any]]]  # submission -> workload -> study -> trial -> s


@dataclasses.dataclass(frozen=True)
class Interval:
  """A percentile bootstrap interval [low, high] around a point estimate.

  `basis` says what was resampled ("3 studies", "5 trials of 1 study",
  "2/4 times resampled") or, when `degenerate`, why nothing could be ("1 study",
  "no trials", "baseline"); the bounds of a degenerate interval are the
  estimate and carry no information.
  """

  estimate: float
  low: float
  high: float
  basis: str
  degenerate: bool = False

  def format(self, spec: str = ".1f") -> str:
    """"[low, high]" ("inf" for an infinite bound), or "n/a (basis)"."""
    if self.degenerate:
      return f"n/a ({self.basis})"
    return f"[{_format_bound(self.low, spec)}, {_format_bound(self.high, spec)}]"


def _format_bound(x: float, spec: str) -> str:
  return format(x, spec) if math.isfinite(x) else ("inf" if x > 0 else "-inf")


@dataclasses.dataclass(frozen=True)
class ScoreDifference:
  """B_first - B_second over the bootstrap replicates.

  `first` scored at least as high as `second` on the data. `first_ahead` is
  the share of replicates in which B_first > B_second. `distinguishable` is
  None when nothing was resampled, else whether the interval excludes 0.
  """

  first: str
  second: str
  interval: Interval
  first_ahead: float

  @property
  def distinguishable(self) -> bool | None:
    if self.interval.degenerate:
      return None
    return not self.interval.low <= 0.0 <= self.interval.high


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
  """What `bootstrap_intervals` computed.

  `times[s][w]`, `scores[s]` and `speedups[s]` (None without a baseline) are
  intervals around the point estimates `workload_time`, `benchmark_scores`
  and `speedups` give on the data. `differences` holds every pair of
  submissions, the higher-scoring first. `replicate_times[b, i, j]` is
  replicate b's time of `submissions[i]` on `workloads[j]` (for
  `profile_intervals`).
  """

  confidence: float
  num_samples: int
  seed: int
  integration: str
  paired: bool
  resample_trials: bool
  submissions: tuple[str, ...]
  workloads: tuple[str, ...]
  times: dict[str, dict[str, Interval]]
  scores: dict[str, Interval]
  speedups: dict[str, Interval] | None
  differences: tuple[ScoreDifference, ...]
  replicate_times: np.ndarray = dataclasses.field(repr=False, compare=False)

  def indistinguishable(self) -> list[ScoreDifference]:
    """The pairs whose score-difference interval contains 0."""
    return [d for d in self.differences if d.distinguishable is False]


def _percentile_bounds(samples: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
  """Percentile interval over axis 0, as order statistics (no interpolation).

  With B replicates sorted, low = x_(floor((B-1) a/2)) and high =
  x_(ceil((B-1)(1-a/2))), a = 1 - confidence: rounded outwards, so the
  interval holds at least `confidence` of the replicates. Interpolating
  (np.quantile's default) between a finite time and an infinite one (a miss)
  computes inf - inf = NaN; order statistics are exactly the replicates'
  values, inf included.
  """
  b = samples.shape[0]
  alpha = 1.0 - confidence
  ordered = np.sort(samples, axis=0)  # inf sorts last; no NaN ever enters.
  low = int(math.floor((b - 1) * alpha / 2 + 1e-9))
  high = int(math.ceil((b - 1) * (1 - alpha / 2) - 1e-9))
  return ordered[low], ordered[high]


def bootstrap_mean(values: Sequence[float], *, confidence: float = 0.95, num_samples: int = 2000,
                   seed: int = 0, name: str = "") -> Interval:
  """Percentile bootstrap interval of the mean of `values` (e.g. one metric over seeds).

  For a paired comparison pass the per-seed differences. With n values there
  are at most C(2n-1, n) distinct resamples (10 for n = 3): the interval is
  coarse and its coverage below nominal for small n; it says how much the
  seeds spread, not more. Degenerate (basis "1 value") for a single value.

  Raises:
    ValueError: no values, a non-finite one, or a confidence outside (0, 1).
  """
  if not 0 < confidence < 1:
    raise ValueError(f"confidence must be in (0, 1), got {confidence}")
  x = np.asarray([_number(v, f"value {i}") for i, v in enumerate(values)], dtype=np.float64)
  if x.size == 0:
    raise ValueError("bootstrap_mean needs at least one value")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"bootstrap_mean needs finite values, got {x.tolist()}")
  estimate = float(x.mean())
  if x.size == 1:
    return Interval(estimate, estimate, estimate, "1 value", degenerate=True)
  draws = _stream(seed, name).integers(0, x.size, size=(num_samples, x.size))
  low, high = _percentile_bounds(x[draws].mean(axis=1), confidence)
  return Interval(estimate, float(low), float(high), f"{x.size} values")


def _replicate_ratios(times: np.ndarray) -> np.ndarray:
  """`performance_ratios` on [..., submission, workload] arrays (inf above R_MAX)."""
  best = times.min(axis=-2, keepdims=True)
  finite = np.isfinite(times)  # A finite time implies a finite best: no inf/inf.
  with np.errstate(invalid="ignore", divide="ignore"):
    ratios = np.where(finite, times / np.where(finite, best, 1.0), np.inf)
  return np.where(ratios <= R_MAX, ratios, np.inf)


def _replicate_scores(times: np.ndarray, integration: str) -> np.ndarray:
  """`benchmark_scores` on [replicate, submission, workload] times -> [replicate, submission]."""
  ratios = _replicate_ratios(times)
  num_workloads = times.shape[-1]
  if integration == "exact":
    return np.where(np.isfinite(ratios), R_MAX - ratios, 0.0).sum(-1) / ((R_MAX - 1.0) * num_workloads)
  taus = algoperf_taus()
  out = np.empty(times.shape[:-1])
  for i in range(times.shape[1]):  # One submission at a time bounds the memory.
    rho = np.mean(ratios[:, i, :, None] <= taus, axis=1)  # [replicate, tau]
    out[:, i] = np.trapezoid(rho, taus, axis=-1) / (R_MAX - 1.0)
  return out


def _study_table(trial_times: TrialTimes) -> tuple[list[str], list[str], dict]:
  """Submissions, workloads and cell -> {study: (fastest, trial times)} (None: no trials)."""
  if not isinstance(trial_times, Mapping) or not trial_times:
    raise ValueError("no submissions: expected {submission: {workload: {study: {trial: seconds}}}}")
  for s, by_w in trial_times.items():
    if not isinstance(by_w, Mapping):
      raise ValueError(f"submission {s!r}: expected {{workload: {{study: {{trial: seconds}}}}}},"
                       f" got {type(by_w).__name__}")
  submissions = list(trial_times)
  workloads = sorted({w for by_w in trial_times.values() for w in by_w})
  if not workloads:
    raise ValueError("no workloads to score")
  cells = {}
  for s in submissions:
    for w in workloads:
      studies = trial_times[s].get(w)
      if studies is not None and not isinstance(studies, Mapping):
        raise ValueError(f"{s}/{w}: expected {{study: {{trial: seconds}}}}, got {type(studies).__name__}")
      if not studies:
        cells[s, w] = None  # Scored as a miss, as `workload_results` does.
        continue
      fastest = fastest_per_study(studies)  # Validates every time.
      cells[s, w] = {}
      for study, trials in studies.items():
        seconds = trials.values() if isinstance(trials, Mapping) else trials
        cells[s, w][study] = (fastest[study][1], np.asarray([float(t) for t in seconds]))
  return submissions, workloads, cells


def _stream(seed: int, *names: str) -> np.random.Generator:
  """A generator for one submission (or cell): stable across runs and processes.

  Seeded by (seed, crc32 of each name) rather than by drawing in order, so
  adding a submission or workload leaves the others' resamples unchanged.
  """
  return np.random.default_rng([seed] + [zlib.crc32(str(n).encode("utf-8")) for n in names])


def bootstrap_intervals(
    trial_times: TrialTimes,
    *,
    num_samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    integration: str = "exact",
    baseline: str | None = None,
    budgets: Mapping[str, float] | None = None,
    paired: bool = True,
    resample_trials: bool = False,
) -> BootstrapResult:
  """Bootstrap confidence intervals for workload times, scores and speedups.

  Replicate b draws, for every submission s, n_s of its n_s studies with
  replacement and recomputes, for all submissions jointly,

    t^b_{s,w} = median_{k in draw} min_trial t_{s,w,k,trial}   (a miss: inf)
    r^b_{s,w} = t^b_{s,w} / min_s' t^b_{s',w}  (inf above R_MAX)
    B^b_s     = 1/(R_MAX - 1) int_1^R_MAX rho^b_s(tau) dtau     (`integration`)

  and each interval is the percentile interval [q_{a/2}, q_{1-a/2}] of the B
  replicates, a = 1 - confidence.

  Why studies. A workload time is a statistic of the experiment's
  randomness: the hyperparameter points a study draws (its Halton shift) and
  its trials' seeds. What repeats independently is the study, one run of the
  tuning procedure (AlgoPerf runs several per submission to average over
  exactly this luck). The trials of a study are not independent draws: they
  are one shifted Halton sequence, spread to cover the space together. So the
  study is the unit resampled, and each replicate reruns the whole scoring
  pipeline on the drawn studies.

  Why jointly. A score is relative to the best time on each workload, which
  is uncertain too, so each replicate rescores all submissions from their
  replicate times; the difference B^b_first - B^b_second is taken within the
  same replicate. Two submissions are NOT distinguishable when its interval
  contains 0. Each pair is judged on its own (no correction for comparing
  many pairs).

  Why paired across workloads (`paired`). Study k of a submission is the
  same run of the procedure on every workload (steplab's trial points depend
  on (rng_seed, study), not on the workload; AlgoPerf's logs put all
  workloads of a study under study_k/). A replicate therefore draws one set
  of study labels per submission and uses it on all its workloads that share
  those labels: that keeps any correlation between a study's workloads (a
  lucky point set helps everywhere) and is still right when there is none.
  Workloads with other labels are resampled on their own. Submissions are
  independent experiments and are resampled independently; each draws from
  its own stream, seeded by (seed, its name), so adding a submission leaves
  the others' resamples unchanged.

  Why percentile intervals, as order statistics. A median of minima, a ratio
  to a minimum over submissions and a capped integral have no usable variance
  formula (the delta method fails at the min and the cap); the percentile
  interval needs none. Its bounds are replicate values rounded outwards
  (`_percentile_bounds`), so a replicate distribution holding misses gives an
  "inf" bound, never the NaN that interpolating inf - inf would. With 3
  studies a resampled median takes at most 3 values: intervals are coarse,
  and say how far the numbers could move with other studies, not more.

  One study. A (submission, workload) with one study has nothing to
  resample: it is held fixed in every replicate and its interval is
  degenerate (basis "1 study", shown "n/a (1 study)"), not a zero-width
  interval that would read as certainty. A score's interval reflects the
  times that vary, and is degenerate when none does. With `resample_trials`
  the trials of such a study are resampled instead (its time is then the
  minimum of the drawn trials): a bootstrap of a minimum is biased upwards
  (never below the observed time), so that interval shows how much the time
  hinges on its luckiest trial rather than a symmetric uncertainty. A
  self-tuning study has one trial, and nothing to resample either way.

  Args:
    trial_times: {submission: {workload: {study: {trial: seconds}}}}, a miss
      inf. A workload missing for a submission (or with no studies) is a miss
      in every replicate.
    num_samples: bootstrap replicates B (>= 1; 2000 puts the 2.5% quantile
      on the 50th replicate).
    confidence: coverage of the intervals, in (0, 1).
    seed: makes the resamples, and so the report, reproducible.
    integration: "exact" or "algoperf_grid", as in `benchmark_scores`.
    baseline: with `budgets`, also intervals for `speedups` over it.
    budgets: workload -> budget in seconds (a miss counts as budget + 1 s).
    paired: resample a submission's studies by label across its workloads.
    resample_trials: resample the trials of single-study cells.

  Raises:
    ValueError: malformed tables, bad times, or bad arguments.
  """
  if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
    raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
  if not _is_real(confidence) or not 0.0 < confidence < 1.0:
    raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
  if integration not in INTEGRATIONS:
    raise ValueError(f"integration must be one of {INTEGRATIONS}, got {integration!r}")
  submissions, workloads, cells = _study_table(trial_times)
  if baseline is not None:
    if baseline not in submissions:
      raise ValueError(f"unknown baseline {baseline!r}; submissions are {sorted(submissions)}")
    bad = [w for w in workloads if not (budgets and _is_real(budgets.get(w)) and 0 < budgets[w] < math.inf)]
    if bad:
      raise ValueError(f"speedups over {baseline!r} need a finite positive budget for workload(s) {bad}")

  num_samples = int(num_samples)
  reps = np.empty((num_samples, len(submissions), len(workloads)))
  basis: dict[tuple[str, str], tuple[str, bool]] = {}  # cell -> (basis, degenerate)
  for i, s in enumerate(submissions):
    multi = {w: cells[s, w] for w in workloads if cells[s, w] is not None and len(cells[s, w]) > 1}
    labels = [set(c) for c in multi.values()]
    shared = None
    if paired and len(multi) > 1 and all(l == labels[0] for l in labels):
      order = list(next(iter(multi.values())))
      shared = (order, _stream(seed, s).integers(0, len(order), size=(num_samples, len(order))))
    for j, w in enumerate(workloads):
      cell = cells[s, w]
      if cell is None:
        reps[:, i, j] = math.inf
        basis[s, w] = ("no trials", True)
      elif len(cell) > 1:
        if shared is not None and w in multi:
          order, draw = shared
        else:
          order = list(cell)
          draw = _stream(seed, s, w).integers(0, len(order), size=(num_samples, len(order)))
        fastest = np.asarray([cell[k][0] for k in order])
        reps[:, i, j] = np.median(fastest[draw], axis=1)
        basis[s, w] = (f"{len(order)} studies", False)
      else:
        (fastest, trials), = cell.values()
        if resample_trials and trials.size > 1:
          draw = _stream(seed, s, w).integers(0, trials.size, size=(num_samples, trials.size))
          reps[:, i, j] = trials[draw].min(axis=1)
          basis[s, w] = (f"{trials.size} trials of 1 study", False)
        else:
          reps[:, i, j] = fastest
          basis[s, w] = ("1 study, 1 trial" if resample_trials else "1 study", True)

  point_times = {
      s: {w: math.inf if cells[s, w] is None else workload_time({k: [v[0]] for k, v in cells[s, w].items()})
          for w in workloads}
      for s in submissions
  }

  def intervals(estimates, samples, what):  # samples: [replicate, n]; what(k) -> (basis, degenerate)
    low, high = _percentile_bounds(samples, confidence)
    out = []
    for k, estimate in enumerate(estimates):
      text, degenerate = what(k)
      lo, hi = (estimate, estimate) if degenerate else (float(low[k]), float(high[k]))
      out.append(Interval(float(estimate), lo, hi, text, degenerate))
    return out

  times = {}
  for i, s in enumerate(submissions):
    row = intervals([point_times[s][w] for w in workloads], reps[:, i, :], lambda j, s=s: basis[s, workloads[j]])
    times[s] = dict(zip(workloads, row))

  varying = sum(not d for _, d in basis.values())
  if varying:
    score_basis = (f"{varying}/{len(basis)} times resampled", False)
  elif all(text.startswith("1 study") for text, _ in basis.values() if text != "no trials"):
    score_basis = ("1 study", True)
  else:
    score_basis = ("nothing to resample", True)
  point_scores = benchmark_scores(point_times, integration)
  rep_scores = _replicate_scores(reps, integration)
  scores = dict(zip(submissions, intervals([point_scores[s] for s in submissions], rep_scores,
                                           lambda k: score_basis)))

  speedup_intervals = None
  if baseline is not None:
    point_speedups = speedups(point_times, baseline, budgets)
    caps = np.asarray([float(budgets[w]) + 1.0 for w in workloads])
    log_times = np.log(np.where(np.isfinite(reps), reps, caps))
    b = submissions.index(baseline)
    rep_speedups = np.exp(np.mean(log_times[:, b:b + 1, :] - log_times, axis=-1))

    def speedup_basis(k):
      if submissions[k] == baseline:
        return ("baseline", True)
      n = sum(not basis[x, w][1] for x in (baseline, submissions[k]) for w in workloads)
      return (f"{n}/{2 * len(workloads)} times resampled", False) if n else ("1 study", True)

    speedup_intervals = dict(zip(submissions, intervals([point_speedups[s] for s in submissions], rep_speedups,
                                                        speedup_basis)))

  ranked = sorted(range(len(submissions)), key=lambda k: (-point_scores[submissions[k]], submissions[k]))
  pairs = [(a, b) for n, a in enumerate(ranked) for b in ranked[n + 1:]]
  differences = ()
  if pairs:
    diffs = np.stack([rep_scores[:, a] - rep_scores[:, b] for a, b in pairs], axis=1)
    estimates = [point_scores[submissions[a]] - point_scores[submissions[b]] for a, b in pairs]
    diff_intervals = intervals(estimates, diffs, lambda k: score_basis)
    differences = tuple(
        ScoreDifference(submissions[a], submissions[b], iv, float(np.mean(diffs[:, k] > 0)))
        for k, ((a, b), iv) in enumerate(zip(pairs, diff_intervals))
    )
  return BootstrapResult(
      confidence=float(confidence), num_samples=num_samples, seed=int(seed), integration=integration,
      paired=paired, resample_trials=resample_trials, submissions=tuple(submissions),
      workloads=tuple(workloads), times=times, scores=scores, speedups=speedup_intervals,
      differences=differences, replicate_times=reps,
  )


def profile_intervals(result: BootstrapResult,
                      taus: Sequence[float] | np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Pointwise percentile band of each profile rho_s(tau) over the replicates.

  Pointwise: at each tau, the interval of rho^b_s(tau) (the band is not a
  simultaneous band for the whole curve). A submission whose score interval
  is degenerate gets low = high = its profile.

  Returns:
    {submission: (low, high)}, arrays over `taus`.
  """
  taus = np.asarray(taus, np.float64)
  if taus.ndim != 1 or not taus.size or not np.all(np.isfinite(taus)):
    raise ValueError(f"taus must be a non-empty 1-D array of finite numbers, got {taus!r}")
  ratios = _replicate_ratios(result.replicate_times)
  out = {}
  for i, s in enumerate(result.submissions):
    rho = np.mean(ratios[:, i, :, None] <= taus, axis=1)  # [replicate, tau]
    out[s] = _percentile_bounds(rho, result.confidence)
  return out


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
  raw = logs.read_json(path)
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
  # "wallclock" (time_to_target in submission seconds) or "steps" (in cost-adjusted steps).
  measure: str = "wallclock"

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
  return logs.read_json(os.path.join(path, numbered[0][1])) if numbered else None


def _steplab_settings(path: str) -> dict[str, Any]:
  """Targets, budget, ruleset and status from steplab's meta_data.json."""
  meta_path = os.path.join(path, "meta_data.json")
  meta = logs.read_json(meta_path)
  missing = [k for k in _META_KEYS if k not in meta]
  if missing:
    raise ValueError(f"{meta_path} lacks {missing}")
  # The runner's "steps" measure logs its budget and time column (cost-adjusted steps).
  return dict(metric=meta["target_metric"], value=float(meta["target_value"]), mode=meta["target_mode"],
              budget=float(meta.get("budget", meta["max_allowed_runtime_sec"])), ruleset=meta["tuning_ruleset"],
              status=meta["status"], meta=meta, source="meta_data.json",
              measure=meta.get("measure", "wallclock"), time_column=meta.get("time_column", TIME_COLUMN))


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
  # Only a different target makes the runner's logged result incomparable.
  overridden = (settings["metric"], settings["value"], settings["mode"]) != (target.metric, target.value, target.mode)
  return dict(settings, metric=target.metric, value=target.value, mode=target.mode, overridden=overridden)


def _read_evals(csv_path: str, time_column: str = TIME_COLUMN) -> tuple[list[dict[str, str]], list[str]] | None:
  """Rows and columns of an eval log; None for an empty file.

  Every writer of these logs (steplab's `logs.CsvLog`, AlgoPerf's pandas)
  writes whole lines, a header naming distinct columns and rows with one cell
  per column. A file that breaks that was cut (a copy or sync interrupted, a
  full disk) or damaged, and its last row may hold a cut number (0.732 read
  as 0.7) that moves the time to target without any other sign; so it is an
  error, never read around.

  Raises:
    ValueError: naming the file, for a log that ends inside a line, is not
      UTF-8 text, has a malformed header (blank or repeated column names, no
      global_step or time column), a row with too few or too many cells, or
      an unclosed quote.
  """

  def corrupt(why: str) -> ValueError:
    return ValueError(f"{csv_path} is truncated or corrupt: {why}. Scoring it would silently change the trial's"
                      " time to target; restore the file (or rerun the trial) before scoring.")

  try:
    with open(csv_path, newline="", encoding="utf-8") as f:
      text = f.read()
  except UnicodeDecodeError as e:
    raise corrupt(f"not UTF-8 text ({e})") from None
  if not text.strip():
    return None
  if not text.endswith(("\n", "\r")):
    last = text.splitlines()[-1]
    raise corrupt(f"it ends inside a line (no final line break), so its last line {last[-60:]!r} may be cut"
                  " short")
  try:
    lines = [r for r in csv.reader(io.StringIO(text), strict=True) if r]  # Blank lines carry nothing.
  except csv.Error as e:
    raise corrupt(f"unreadable as CSV ({e})") from None
  header, body = lines[0], lines[1:]
  if any(not c.strip() for c in header) or len(set(header)) != len(header):
    raise corrupt(f"its header {header} has blank or repeated column names")
  missing = [c for c in (STEP_COLUMN, time_column) if c not in header]
  if missing:
    raise corrupt(f"its header {header} lacks {missing}")
  for i, cells in enumerate(body):
    if len(cells) != len(header):
      raise corrupt(f"eval row {i} (line {i + 2}) has {len(cells)} cells, the header {len(header)} columns")
  return [dict(zip(header, cells)) for cells in body], header


def _record(path: str, ids: tuple[str, str, int, int], settings: Mapping[str, Any]) -> TrialRecord | str:
  """The trial's record from its eval log, or a string saying why it is skipped."""
  csv_path = os.path.join(path, "eval_measurements.csv")
  if not os.path.exists(csv_path):
    if settings["source"] == "meta_data.json":
      raise ValueError(f"{csv_path} is missing but {path}/meta_data.json says the trial is complete")
    return "no eval_measurements.csv (the run never evaluated, or crashed)"
  time_column = settings.get("time_column", TIME_COLUMN)
  evals_and_columns = _read_evals(csv_path, time_column)
  if evals_and_columns is None:
    if settings["source"] == "meta_data.json":
      # The runner writes the log whole, at least one row: an empty one was
      # emptied or cut. Skipping the trial would change its study's median.
      raise ValueError(f"{csv_path} is empty but {path}/meta_data.json says the trial is complete"
                       f"{_logged_result(settings['meta'])}; restore the file (or rerun the trial) before scoring.")
    return "eval_measurements.csv is empty"
  rows, columns = evals_and_columns
  try:
    seconds, steps = time_to_target(rows, settings["metric"], settings["value"], settings["mode"],
                                    settings["budget"], time_column)
  except ValueError as e:  # A non-numeric or blank time, step or target cell.
    raise ValueError(f"{csv_path} is corrupt: {e}") from None
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
      steps_to_target=steps, evals=evals, meta=meta, measure=settings.get("measure", "wallclock"),
  )


def _logged_key(meta: Mapping[str, Any]) -> str:
  return "cost_adjusted_steps_to_target" if meta.get("measure") == "steps" else "time_to_target_sec"


def _logged_reached(meta: Mapping[str, Any]) -> bool:
  """Whether the runner logged the target as reached (reached_target, else a logged time)."""
  reached = meta.get("reached_target")
  return meta.get(_logged_key(meta)) is not None if reached is None else bool(reached)


def _logged_result(meta: Mapping[str, Any]) -> str:
  """", reached_target true (time_to_target_sec 120.0, steps_to_target 1200)", for messages."""
  if not _logged_reached(meta):
    return ", reached_target false"
  return (f", reached_target true ({_logged_key(meta)} {meta.get(_logged_key(meta))},"
          f" steps_to_target {meta.get('steps_to_target')})")


def _check_logged_time(path: str, meta: Mapping[str, Any], seconds: float) -> None:
  """Checks the runner's logged result against the one recomputed from the eval log.

  The runner decides reached_target on the same evaluations it writes to
  eval_measurements.csv, with the same target and budget, so the two can only
  disagree on WHETHER the target was reached when the log lost or changed
  rows after the run (a cut at a line break leaves a well-formed file):
  that is an error. A different time alone (e.g. rounding) is logged and the
  CSV wins.

  Raises:
    ValueError: the eval log and meta_data.json disagree on whether the
      target was reached.
  """
  key = _logged_key(meta)
  reached = _logged_reached(meta)
  if reached != math.isfinite(seconds):
    csv_path = os.path.join(path, "eval_measurements.csv")
    found = f"reaches the target at {seconds}" if math.isfinite(seconds) else "never reaches the target"
    raise ValueError(
        f"{csv_path} {found}, but {os.path.join(path, 'meta_data.json')} says status"
        f" {meta.get('status')!r}{_logged_result(meta)}: the eval log lost or changed rows after the run"
        " (truncated, cut at a line break, or edited). Restore it (or rerun the trial) before scoring."
    )
  logged = meta.get(key)
  if reached and logged is not None and not math.isclose(float(logged), seconds, rel_tol=1e-6, abs_tol=1e-6):
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
  different time in steplab's meta_data.json is logged and the CSV wins, but
  a disagreement on whether the target was reached, or a truncated or
  corrupt eval log (`_read_evals`), is an error: such a log would silently
  change the score.

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
    ValueError: no trials at all; malformed logs (an eval log that is cut,
      corrupt, or empty or missing while steplab's meta_data.json says the
      trial is complete; one that disagrees with meta_data.json on whether
      the target was reached); a trial without a target;
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
    measures = sorted({r.measure for r in records if r.workload == w})
    if len(measures) > 1:
      raise ValueError(f"workload {w!r}: trials measured in different units {measures} (seconds vs"
                       " cost-adjusted steps) cannot be scored together; rerun with one --measure")
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


@dataclasses.dataclass(frozen=True)
class Reach:
  """How often one submission reached one workload's target (a study does when any of its trials does)."""

  studies_reached: int
  studies: int
  trials_reached: int
  trials: int

  def __str__(self) -> str:
    return f"{self.studies_reached}/{self.studies} studies, {self.trials_reached}/{self.trials} trials"


def reach(experiment: Experiment) -> dict[str, dict[str, Reach]]:
  """{submission: {workload: Reach}} over the complete trials of every pair."""
  out: dict[str, dict[str, Reach]] = {}
  for s in experiment.submissions:
    out[s] = {}
    for w in experiment.workloads:
      hit = [[math.isfinite(r.time_to_target) for r in by_t.values()]
             for by_t in (experiment.trials[s].get(w) or {}).values()]
      out[s][w] = Reach(sum(map(any, hit)), len(hit), sum(map(sum, hit)), sum(map(len, hit)))
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
