"""Scores an experiment directory: steplab's runs, AlgoPerf's logs, or both.

    python -m experiments.score --experiment_dir=DIR [--baseline=nadamw] [--output_dir=DIR/scores]
        [--workload_targets=FILE] [--integration=exact|algoperf_grid]
        [--write_workload_targets=FILE] [--confidence=0.95] [--bootstrap_samples=2000]
        [--bootstrap_seed=0] [--bootstrap_resample_trials]

Each submission directory of DIR is read in the layout it has (see
`experiments.scoring`): steplab's `{submission}/{workload}/study_{s}/trial_{t}/`
(as `experiments.run` writes it) or AlgoPerf's
`{submission}/study_{s}/{workload}_{jax|pytorch}/trial_{t}/` (AlgoPerf's
submission_runner, the published leaderboard logs, or `experiments.run
--log_layout=algoperf`).

--workload_targets    an AlgoPerf-format workload_targets.json: its targets
                      override the logged ones, its base_workloads (if any)
                      are the workloads that count.
--integration         "exact" (default): the profile's integral, exactly;
                      "algoperf_grid": AlgoPerf's trapezoid rule on 100 taus,
                      to reproduce AlgoPerf's numbers (they differ from the
                      exact ones in the third decimal).
--write_workload_targets  also writes the workload_targets.json with which
                      AlgoPerf's own scoring/score_submissions.py scores an
                      AlgoPerf-layout steplab experiment (outside DIR: that
                      scorer takes every entry of DIR for a submission, so
                      also pass --output_dir outside DIR before running it).
--confidence, --bootstrap_samples, --bootstrap_seed
                      percentile bootstrap intervals over studies (see
                      `scoring.bootstrap_intervals`): coverage, replicates
                      (0: no intervals) and seed (the same seed gives the
                      same report).
--bootstrap_resample_trials  where a submission ran one study on a workload,
                      resample its trials instead of reporting "n/a (1 study)".

Writes to the output directory:
  scores.md                 per submission: benchmark score, speedup over the
                            baseline, per workload time and steps to target
                            ("inf" / "-" for a miss); then the confidence
                            intervals of scores, speedups and times, and
                            which pairs of submissions the data cannot tell
                            apart; also printed.
  scores.csv                the same numbers at full precision (a miss: time
                            "inf", steps blank), with the intervals' bounds
                            (blank where degenerate) and what was resampled.
  score_differences.csv     per pair of submissions: score difference, its
                            interval, share of replicates the first is ahead,
                            whether they are distinguishable.
  performance_profile.png   rho_s(tau) for tau in [1, 4], with pointwise
                            bootstrap bands; the legend gives each score
                            and its interval.
  curves_{workload}.png     validation target metric and train loss against
                            submission time and against steps: each
                            submission's representative trial (fastest trial
                            of the median study) bold, its other trials faint.
Plots need matplotlib; without it they are skipped with a warning.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
import re
from typing import Sequence

from absl import app
from absl import flags
from absl import logging
import numpy as np

from experiments import common_flags
from experiments import scoring

FLAGS = flags.FLAGS
_EXPERIMENT_DIR = common_flags.EXPERIMENT_DIR
_BASELINE = flags.DEFINE_string(
    "baseline", "nadamw", "Submission the speedups are relative to; empty to skip speedups."
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where results go (default: {experiment_dir}/scores).")
_WORKLOAD_TARGETS = flags.DEFINE_string(
    "workload_targets", None,
    "AlgoPerf-format workload_targets.json: overrides the logged targets; its base_workloads are those that count.",
)
_INTEGRATION = flags.DEFINE_enum(
    "integration", "exact", list(scoring.INTEGRATIONS),
    "exact: the profile's exact integral; algoperf_grid: AlgoPerf's trapezoid rule on 100 taus in [1, 4].",
)
_WRITE_WORKLOAD_TARGETS = flags.DEFINE_string(
    "write_workload_targets", None,
    "Also write an AlgoPerf workload_targets.json for this experiment here (outside --experiment_dir).",
)
_CONFIDENCE = flags.DEFINE_float(
    "confidence", 0.95, "Coverage of the bootstrap confidence intervals, in (0, 1)."
)
_BOOTSTRAP_SAMPLES = flags.DEFINE_integer(
    "bootstrap_samples", 2000, "Bootstrap replicates (resamples of the studies); 0 reports no intervals."
)
_BOOTSTRAP_SEED = flags.DEFINE_integer(
    "bootstrap_seed", 0, "Seed of the bootstrap resamples: the same seed gives the same intervals."
)
_BOOTSTRAP_RESAMPLE_TRIALS = flags.DEFINE_boolean(
    "bootstrap_resample_trials", False,
    "Where a submission ran a single study on a workload, resample its trials (an interval that can only"
    " extend upwards) instead of reporting no interval.",
)


@dataclasses.dataclass(frozen=True)
class Scores:
  """Everything `score` computed; `files` are the paths written."""

  experiment: scoring.Experiment
  results: dict[str, dict[str, scoring.WorkloadResult]]
  taus: np.ndarray
  profiles: dict[str, np.ndarray]
  scores: dict[str, float]
  speedups: dict[str, float] | None
  markdown: str
  files: tuple[str, ...]
  intervals: scoring.BootstrapResult | None = None  # None with bootstrap_samples=0.


def _seconds(t: float) -> str:
  return f"{t:.1f}" if math.isfinite(t) else "inf"


def _unit(exp, workload: str) -> str:
  """The unit of a workload's times: seconds, or cost-adjusted steps (the runner's "steps" measure)."""
  return "cost-adjusted steps" if scoring.workload_info(exp)[workload].measure == "steps" else "s"


_INTEGRATION_TEXT = {
    "exact": "Score: exact integral of the profile over tau in [1, 4], divided by 3.",
    "algoperf_grid": "Score: AlgoPerf's trapezoid rule on 100 evenly spaced taus in [1, 4], divided by 3.",
}


def _percent(confidence: float) -> str:
  return f"{100 * confidence:g}%"


def _intervals_markdown(exp, scores, intervals: scoring.BootstrapResult) -> list[str]:
  """The intervals table, the pairwise score differences and the verdict."""
  pct = _percent(intervals.confidence)
  workloads = exp.workloads
  bases = [iv.basis for by_w in intervals.times.values() for iv in by_w.values() if not iv.degenerate]
  usual = max(set(bases), key=bases.count) if bases else None
  fixed = any(iv.degenerate for by_w in intervals.times.values() for iv in by_w.values())
  header = ["submission", "score", f"score {pct} CI"] + ([f"speedup {pct} CI"] if intervals.speedups else [])
  header += [f"{w} time {pct} CI ({_unit(exp, w)})" for w in workloads]
  how = ("the same draw on all its workloads" if intervals.paired else "each workload on its own")
  lines = [
      "",
      f"## {pct} confidence intervals",
      "",
      f"Percentile bootstrap over studies, {intervals.num_samples} replicates, seed {intervals.seed}:"
      f" each replicate redraws every submission's studies with replacement ({how}), recomputes each"
      " study's fastest trial and their median, then the ratios and scores of all submissions together."
      + (f" Times are resampled from {usual} unless the cell says otherwise." if usual else "")
      + (" \"n/a (1 study)\": a single study leaves nothing to resample; that time is held fixed, so"
         " scores' intervals reflect only the times resampled." if fixed else ""),
      "",
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
  ]
  for s in sorted(exp.submissions, key=lambda s: (-scores[s], s)):
    row = [s, f"{scores[s]:.4f}", intervals.scores[s].format(".4f")]
    if intervals.speedups:
      row.append(intervals.speedups[s].format(".3f"))
    for w in workloads:
      iv = intervals.times[s][w]
      text = iv.format(".1f")
      row.append(text if iv.degenerate or iv.basis == usual else f"{text} ({iv.basis})")
    lines.append("| " + " | ".join(row) + " |")
  if not intervals.differences:
    return lines
  lines += [
      "",
      f"Score differences, first minus second on the same replicates; distinguishable: the {pct}"
      " interval of the difference excludes 0.",
      "",
      f"| first | second | difference | {pct} CI | first ahead in | distinguishable |",
      "|---|---|---|---|---|---|",
  ]
  for d in intervals.differences:
    verdict = {None: "n/a", True: "yes", False: "no"}[d.distinguishable]
    ahead = "n/a" if d.interval.degenerate else f"{100 * d.first_ahead:.1f}% of replicates"
    lines.append(f"| {d.first} | {d.second} | {d.interval.estimate:+.4f} | {d.interval.format('.4f')} | {ahead}"
                 f" | {verdict} |")
  same = intervals.indistinguishable()
  lines.append("")
  if intervals.differences[0].distinguishable is None:
    lines.append("Whether any pair is distinguishable cannot be told: every time comes from a single study"
                 " (run more studies, or pass --bootstrap_resample_trials).")
  elif same:
    lines.append(f"Not distinguishable at {pct}: " + "; ".join(f"{d.first} vs {d.second}" for d in same) + "."
                 " Each pair is judged on its own: among many pairs, a few distinguishable verdicts can be"
                 " chance.")
  else:
    lines.append(f"Every pair is distinguishable at {pct} (each pair judged on its own).")
  return lines


def _markdown(exp, results, scores, speedups, baseline, integration="exact", intervals=None) -> str:
  workloads = exp.workloads
  info = scoring.workload_info(exp)
  header = ["submission", "score"] + ([f"speedup vs {baseline}"] if speedups else [])
  for w in workloads:
    header += [f"{w} time ({_unit(exp, w)})", f"{w} steps"]
  lines = [
      f"# Scores: {exp.directory}",
      "",
      f"{exp.ruleset} tuning ruleset; {len(exp.submissions)} submission(s) x {len(workloads)} workload(s).",
      "Targets: " + "; ".join(
          f"{w} {info[w].target_metric} {'>=' if info[w].target_mode == 'max' else '<='}"
          f" {info[w].target_value:g} within {info[w].budget:g}"
          f"{'s' if info[w].measure != 'steps' else ' cost-adjusted steps'}" for w in workloads),
      _INTEGRATION_TEXT[integration],
      "",
      "| " + " | ".join(header) + " |",
      "|" + "---|" * len(header),
  ]
  for s in sorted(exp.submissions, key=lambda s: (-scores[s], s)):
    row = [s, f"{scores[s]:.4f}"] + ([f"{speedups[s]:.3f}x"] if speedups else [])
    for w in workloads:
      r = results[s][w]
      row += [_seconds(r.time), "-" if r.steps is None or not math.isfinite(r.time) else str(r.steps)]
    lines.append("| " + " | ".join(row) + " |")
  if intervals is not None:
    lines += _intervals_markdown(exp, scores, intervals)
  reached = scoring.reach(exp)
  lines += ["", "How often the target was reached (a study reaches it when any of its trials does):", "",
            "| submission | " + " | ".join(workloads) + " |", "|---|" + "---|" * len(workloads)]
  lines += [f"| {s} | " + " | ".join(str(reached[s][w]) for w in workloads) + " |" for s in sorted(exp.submissions)]
  if exp.skipped:
    lines += ["", f"Skipped ({len(exp.skipped)}, not scored):"] + [f"- {x}" for x in exp.skipped]
  return "\n".join(lines) + "\n"


def _bound(x: float) -> str:
  return repr(x) if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _ci_cells(interval: scoring.Interval | None) -> list[str]:
  """[low, high, basis]: bounds blank where degenerate, basis "n/a (why)" then."""
  if interval is None:
    return ["", "", ""]
  if interval.degenerate:
    return ["", "", interval.format()]
  return [_bound(interval.low), _bound(interval.high), interval.basis]


def _csv(exp, results, scores, speedups, intervals=None) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  ci = intervals is not None
  header = ["submission", "score"] + (["score_ci_low", "score_ci_high", "score_ci_basis"] if ci else [])
  header += ["speedup"] + (["speedup_ci_low", "speedup_ci_high", "speedup_ci_basis"] if ci else [])
  for w in exp.workloads:
    header += [f"{w}/time_to_target_sec"]
    header += [f"{w}/time_ci_low_sec", f"{w}/time_ci_high_sec", f"{w}/time_ci_basis"] if ci else []
    header += [f"{w}/steps_to_target"]
  header += ["ci_confidence"] if ci else []
  writer.writerow(header)
  for s in exp.submissions:
    row = [s, repr(scores[s])] + (_ci_cells(intervals.scores[s]) if ci else [])
    row += [repr(speedups[s]) if speedups else ""]
    row += _ci_cells(intervals.speedups[s] if intervals.speedups else None) if ci else []
    for w in exp.workloads:
      r = results[s][w]
      row += [repr(r.time) if math.isfinite(r.time) else "inf"]
      row += _ci_cells(intervals.times[s][w]) if ci else []
      row += [r.steps if r.steps is not None and math.isfinite(r.time) else ""]
    row += [repr(intervals.confidence)] if ci else []
    writer.writerow(row)
  return out.getvalue()


def _differences_csv(intervals: scoring.BootstrapResult) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  writer.writerow(["first", "second", "score_difference", "ci_low", "ci_high", "ci_basis", "first_ahead",
                   "distinguishable", "ci_confidence"])
  for d in intervals.differences:
    verdict = {None: "", True: "yes", False: "no"}[d.distinguishable]
    writer.writerow([d.first, d.second, repr(d.interval.estimate)] + _ci_cells(d.interval)
                    + ["" if d.interval.degenerate else repr(d.first_ahead), verdict, repr(intervals.confidence)])
  return out.getvalue()


def _plot(exp, results, taus, profiles, output_dir, scores=None, intervals=None) -> list[str]:
  """Writes the PNGs; returns their paths ([] without matplotlib)."""
  try:
    from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top
  except ImportError:
    logging.warning("matplotlib is not installed: no plots (pip install matplotlib).")
    return []
  # Figure without pyplot renders with the Agg canvas: no display, no global state.
  paths = []
  fig = Figure(figsize=(6, 4))
  ax = fig.add_subplot()
  bands = scoring.profile_intervals(intervals, taus) if intervals is not None else {}
  title = "Performance profiles"
  for i, s in enumerate(exp.submissions):
    label = s
    if intervals is not None:
      label = f"{s}: {scores[s]:.3f} {intervals.scores[s].format('.3f')}"
      if not intervals.scores[s].degenerate:
        # Where the replicate profiles lie, tau by tau (pointwise, not a band for the whole curve).
        low, high = bands[s]
        ax.fill_between(taus, low, high, step="post", color=f"C{i}", alpha=0.2, lw=0)
    ax.step(taus, profiles[s], where="post", label=label, color=f"C{i}")
  if intervals is not None:
    title += f"\nbands: pointwise {_percent(intervals.confidence)} bootstrap intervals; legend: score [CI]"
  ax.set(xlim=(1, scoring.R_MAX), ylim=(-0.02, 1.02), xlabel="tau (time ratio to the best)",
         ylabel="rho (fraction of workloads)", title=title)
  ax.legend(loc="lower right")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  paths.append(os.path.join(output_dir, "performance_profile.png"))
  fig.savefig(paths[-1], dpi=100)

  info = scoring.workload_info(exp)
  for w in exp.workloads:
    metric = info[w].target_metric
    fig = Figure(figsize=(11, 7))
    axes = fig.subplots(2, 2)
    for i, s in enumerate(exp.submissions):
      color = f"C{i}"
      best = results[s][w].trial
      for by_t in exp.trials[s].get(w, {}).values():
        for rec in by_t.values():
          chosen = rec is best
          # Markers: a trial that stops at its first eval is a single point.
          style = dict(color=color, alpha=1.0 if chosen else 0.2, lw=1.8 if chosen else 0.8,
                       marker="o", ms=3 if chosen else 2, label=s if chosen else None)
          for row, column in enumerate((metric, "train/loss")):
            if column not in rec.evals:
              continue
            for col, x in enumerate((scoring.TIME_COLUMN, scoring.STEP_COLUMN)):
              axes[row, col].plot(rec.evals[x], rec.evals[column], **style)
    for col, xlabel in enumerate(("submission time (s)", "step")):
      axes[0, col].axhline(info[w].target_value, color="k", ls="--", lw=0.8, label="target")
      axes[0, col].set(ylabel=metric, xlabel=xlabel)
      axes[1, col].set(ylabel="train/loss", xlabel=xlabel, yscale="log")
      for row in range(2):
        axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend()
    fig.suptitle(f"{w}: bold = fastest trial of the median study")
    fig.tight_layout()
    paths.append(os.path.join(output_dir, f"curves_{re.sub(r'[^A-Za-z0-9_.-]', '_', w)}.png"))
    fig.savefig(paths[-1], dpi=100)
  return paths


def score(experiment_dir: str, baseline: str | None = "nadamw", output_dir: str | None = None,
          plots: bool = True, workload_targets: str | None = None, integration: str = "exact",
          missing_baseline_ok: bool = False, confidence: float = 0.95, bootstrap_samples: int = 2000,
          bootstrap_seed: int = 0, resample_trials: bool = False) -> Scores:
  """Scores `experiment_dir` and writes the report files to `output_dir`.

  Args:
    experiment_dir: the runner's experiment directory.
    baseline: submission for the speedup column; None or "" skips it.
    output_dir: defaults to {experiment_dir}/scores.
    plots: whether to write the PNGs.
    workload_targets: an AlgoPerf-format targets file (see the module doc).
    integration: "exact" or "algoperf_grid" (see the module doc).
    missing_baseline_ok: a `baseline` not in the experiment skips speedups
      with a warning instead of raising (for the default baseline).
    confidence: coverage of the bootstrap intervals (`scoring.bootstrap_intervals`).
    bootstrap_samples: bootstrap replicates; 0 computes no intervals.
    bootstrap_seed: seed of the resamples (same seed, same report).
    resample_trials: resample the trials of a single study (see
      `scoring.bootstrap_intervals`).

  Raises:
    ValueError: an unknown baseline (listing the submissions), or bad logs.
  """
  if integration not in scoring.INTEGRATIONS:
    raise ValueError(f"integration must be one of {scoring.INTEGRATIONS}, got {integration!r}")
  if isinstance(bootstrap_samples, bool) or not isinstance(bootstrap_samples, int) or bootstrap_samples < 0:
    raise ValueError(f"bootstrap_samples must be a non-negative integer (0: no intervals), got {bootstrap_samples!r}")
  exp = scoring.load_experiment(experiment_dir, workload_targets)
  if baseline and baseline not in exp.submissions and missing_baseline_ok:
    logging.warning("no %r submission in %s: speedups skipped (pass --baseline=NAME to compare with one of %s).",
                    baseline, experiment_dir, ", ".join(exp.submissions))
    baseline = None
  if baseline and baseline not in exp.submissions:
    raise ValueError(
        f"unknown baseline {baseline!r}; submissions in {experiment_dir}: {', '.join(exp.submissions)}"
        " (pass --baseline=NAME, or --baseline= to skip speedups)"
    )
  results = scoring.workload_results(exp)
  times = {s: {w: r.time for w, r in by_w.items()} for s, by_w in results.items()}
  taus = scoring.profile_taus(times, num=301)
  profiles = scoring.performance_profiles(times, taus)
  scores = scoring.benchmark_scores(times, integration)
  budgets = {w: r.budget for w, r in scoring.workload_info(exp).items()}
  unbudgeted = sorted(w for w, b in budgets.items() if not math.isfinite(b))
  if baseline and unbudgeted:
    logging.warning("no budget logged for %s: no speedups (a miss counts as budget + 1 s).", unbudgeted)
  speedups = scoring.speedups(times, baseline, budgets) if baseline and not unbudgeted else None
  intervals = None
  if bootstrap_samples:
    trial_times = {s: {w: {st: {t: r.time_to_target for t, r in by_t.items()} for st, by_t in studies.items()}
                       for w, studies in by_w.items()} for s, by_w in exp.trials.items()}
    intervals = scoring.bootstrap_intervals(
        trial_times, num_samples=bootstrap_samples, confidence=confidence, seed=bootstrap_seed,
        integration=integration, baseline=baseline if speedups else None, budgets=budgets,
        resample_trials=resample_trials)

  output_dir = output_dir or os.path.join(experiment_dir, "scores")
  os.makedirs(output_dir, exist_ok=True)
  markdown = _markdown(exp, results, scores, speedups, baseline, integration, intervals)
  files = []
  outputs = [("scores.md", markdown), ("scores.csv", _csv(exp, results, scores, speedups, intervals))]
  if intervals is not None and intervals.differences:
    outputs.append(("score_differences.csv", _differences_csv(intervals)))
  for name, text in outputs:
    files.append(os.path.join(output_dir, name))
    with open(files[-1], "w", encoding="utf-8") as f:
      f.write(text)
  if plots:
    files += _plot(exp, results, taus, profiles, output_dir, scores, intervals)
  return Scores(exp, results, taus, profiles, scores, speedups, markdown, tuple(files), intervals)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _EXPERIMENT_DIR.value:
    raise app.UsageError("--experiment_dir is required")
  try:
    # The default baseline may simply not be in this experiment: skip speedups,
    # with a note; a baseline the user named must exist.
    result = score(_EXPERIMENT_DIR.value, _BASELINE.value, _OUTPUT_DIR.value,
                   workload_targets=_WORKLOAD_TARGETS.value, integration=_INTEGRATION.value,
                   missing_baseline_ok=(not FLAGS["baseline"].present
                                        and _BASELINE.value == FLAGS["baseline"].default),
                   confidence=_CONFIDENCE.value, bootstrap_samples=_BOOTSTRAP_SAMPLES.value,
                   bootstrap_seed=_BOOTSTRAP_SEED.value, resample_trials=_BOOTSTRAP_RESAMPLE_TRIALS.value)
    files = list(result.files)
    if _WRITE_WORKLOAD_TARGETS.value:
      scoring.write_algoperf_workload_targets(result.experiment, _WRITE_WORKLOAD_TARGETS.value)
      files.append(_WRITE_WORKLOAD_TARGETS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(result.markdown)
  print("wrote " + ", ".join(files))


if __name__ == "__main__":
  app.run(main)
