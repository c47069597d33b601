"""Scores an experiment directory: steplab's runs, AlgoPerf's logs, or both.

    python -m experiments.score --experiment_dir=DIR [--baseline=nadamw] [--output_dir=DIR/scores]
        [--workload_targets=FILE] [--integration=exact|algoperf_grid]
        [--write_workload_targets=FILE]

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

Writes to the output directory:
  scores.md                 per submission: benchmark score, speedup over the
                            baseline, per workload time and steps to target
                            ("inf" / "-" for a miss); also printed.
  scores.csv                the same numbers at full precision (a miss: time
                            "inf", steps blank).
  performance_profile.png   rho_s(tau) for tau in [1, 4].
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


def _seconds(t: float) -> str:
  return f"{t:.1f}" if math.isfinite(t) else "inf"


_INTEGRATION_TEXT = {
    "exact": "Score: exact integral of the profile over tau in [1, 4], divided by 3.",
    "algoperf_grid": "Score: AlgoPerf's trapezoid rule on 100 evenly spaced taus in [1, 4], divided by 3.",
}


def _markdown(exp, results, scores, speedups, baseline, integration="exact") -> str:
  workloads = exp.workloads
  info = scoring.workload_info(exp)
  header = ["submission", "score"] + ([f"speedup vs {baseline}"] if speedups else [])
  for w in workloads:
    header += [f"{w} time (s)", f"{w} steps"]
  lines = [
      f"# Scores: {exp.directory}",
      "",
      f"{exp.ruleset} tuning ruleset; {len(exp.submissions)} submission(s) x {len(workloads)} workload(s).",
      "Targets: " + "; ".join(
          f"{w} {info[w].target_metric} {'>=' if info[w].target_mode == 'max' else '<='}"
          f" {info[w].target_value:g} within {info[w].budget:g}s" for w in workloads),
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
  if exp.skipped:
    lines += ["", f"Skipped ({len(exp.skipped)}, not scored):"] + [f"- {x}" for x in exp.skipped]
  return "\n".join(lines) + "\n"


def _csv(exp, results, scores, speedups) -> str:
  out = io.StringIO()
  writer = csv.writer(out, lineterminator="\n")
  header = ["submission", "score", "speedup"]
  for w in exp.workloads:
    header += [f"{w}/time_to_target_sec", f"{w}/steps_to_target"]
  writer.writerow(header)
  for s in exp.submissions:
    row = [s, repr(scores[s]), repr(speedups[s]) if speedups else ""]
    for w in exp.workloads:
      r = results[s][w]
      row += [repr(r.time) if math.isfinite(r.time) else "inf",
              r.steps if r.steps is not None and math.isfinite(r.time) else ""]
    writer.writerow(row)
  return out.getvalue()


def _plot(exp, results, taus, profiles, output_dir) -> list[str]:
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
  for s in exp.submissions:
    ax.step(taus, profiles[s], where="post", label=s)
  ax.set(xlim=(1, scoring.R_MAX), ylim=(-0.02, 1.02), xlabel="tau (time ratio to the best)",
         ylabel="rho (fraction of workloads)", title="Performance profiles")
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
          missing_baseline_ok: bool = False) -> Scores:
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

  Raises:
    ValueError: an unknown baseline (listing the submissions), or bad logs.
  """
  if integration not in scoring.INTEGRATIONS:
    raise ValueError(f"integration must be one of {scoring.INTEGRATIONS}, got {integration!r}")
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

  output_dir = output_dir or os.path.join(experiment_dir, "scores")
  os.makedirs(output_dir, exist_ok=True)
  markdown = _markdown(exp, results, scores, speedups, baseline, integration)
  files = []
  for name, text in (("scores.md", markdown), ("scores.csv", _csv(exp, results, scores, speedups))):
    files.append(os.path.join(output_dir, name))
    with open(files[-1], "w", encoding="utf-8") as f:
      f.write(text)
  if plots:
    files += _plot(exp, results, taus, profiles, output_dir)
  return Scores(exp, results, taus, profiles, scores, speedups, markdown, tuple(files))


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
                                        and _BASELINE.value == FLAGS["baseline"].default))
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
