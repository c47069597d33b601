#!/usr/bin/env python3
"""Score a published AlgoPerf leaderboard's raw logs with steplab's scorer.

    python tools/reproduce_algoperf_leaderboard.py \
        --logs_dir=.../previous_leaderboards/algoperf_v06/logs/external_tuning

`--logs_dir` is one ruleset's log directory of github:mlcommons/submissions_algorithms
(`{submission}/study_{s}/{workload}_{framework}/trial_{t}/`; only
eval_measurements.csv, meta_data_0.json and flags_0.json are read). Prints a
markdown table: submission, published score, steplab's exact score, steplab's
score on AlgoPerf's 100-point trapezoid grid, and their differences; then the
per-workload times, the trials left out, and three checks of where the two
scorers could part ways (ratios above 4, evals after the budget, AlgoPerf's
best-trial-by-eval-index choice).

Published scores default to the v0.6 external-tuning leaderboard (README of
submissions_algorithms, 2025-03-24): Distributed Shampoo 0.6244, NAdamW
baseline 0.4590. Its self-tuning table is commented out (no v0.6 self-tuning
score is published); pass --published= for logs without published numbers.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Mapping, Sequence

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, __file__.rsplit("/tools/", 1)[0])
from experiments import scoring  # pylint: disable=g-import-not-at-top

V06_EXTERNAL_TUNING = {"shampoo": 0.6244, "baseline": 0.4590}

_LOGS_DIR = flags.DEFINE_string("logs_dir", None, "One ruleset's AlgoPerf log directory (one folder per submission).")
_PUBLISHED = flags.DEFINE_list(
    "published", [f"{k}={v}" for k, v in V06_EXTERNAL_TUNING.items()],
    "Published scores as submission=score; empty for none.",
)
_WORKLOAD_TARGETS = flags.DEFINE_string(
    "workload_targets", None, "Optional AlgoPerf workload_targets.json (targets and base workloads)."
)


def parse_published(items: Sequence[str]) -> dict[str, float]:
  """{"name=0.5", ...} -> {name: 0.5}."""
  out = {}
  for item in items:
    name, sep, value = item.partition("=")
    try:
      out[name.strip()] = float(value)
    except ValueError:
      sep = ""
    if not sep or not name.strip():
      raise ValueError(f"--published entries must look like submission=0.1234, got {item!r}")
  return out


def _first_reach_index(record: scoring.TrialRecord) -> int | None:
  """Row index of the first eval reaching the target, in file order (AlgoPerf's np.argmax)."""
  values = record.evals.get(record.target_metric, np.empty(0))
  with np.errstate(invalid="ignore"):
    hits = values >= record.target_value if record.target_mode == "max" else values <= record.target_value
  return int(np.argmax(hits)) if hits.any() else None


def _listdir_rank(record: scoring.TrialRecord) -> int:
  """Position of the trial directory in os.listdir of its parent: AlgoPerf's row order."""
  parent, name = os.path.split(record.path)
  return os.listdir(parent).index(name)


def algoperf_pick_time(studies: scoring.Studies, ties: str = "listdir") -> float:
  """The workload time with AlgoPerf's choice of each study's best trial.

  AlgoPerf takes the trial that reaches the target at the smallest eval INDEX,
  not the fastest; among trials tied on that index, the first row of its
  DataFrame, i.e. the first in os.listdir order (filesystem-dependent).
  ties="trial" breaks ties by trial number instead, to show the dependence.
  """
  per_study = []
  for by_t in studies.values():
    reached = [r for r in by_t.values() if _first_reach_index(r) is not None]
    order = _listdir_rank if ties == "listdir" else (lambda r: r.trial)
    best = min(reached, key=lambda r: (_first_reach_index(r), order(r)), default=None)
    per_study.append(best.time_to_target if best else math.inf)
  return float(np.median(per_study))


def leaderboard(experiment: scoring.Experiment, published: Mapping[str, float]) -> dict[str, object]:
  """Times, scores (exact and AlgoPerf grid) and the checks, for printing and tests."""
  results = scoring.workload_results(experiment)
  times = {s: {w: r.time for w, r in by_w.items()} for s, by_w in results.items()}
  exact = scoring.benchmark_scores(times, "exact")
  grid = scoring.benchmark_scores(times, "algoperf_grid")
  rows = []
  for s in sorted(times, key=lambda s: -grid[s]):
    p = published.get(s)
    rows.append(dict(submission=s, published=p, exact=exact[s], grid=grid[s],
                     grid_minus_published=None if p is None else grid[s] - p, exact_minus_grid=exact[s] - grid[s]))
  over_four = [(s, w, t / min(times[x][w] for x in times)) for s in times for w, t in times[s].items()
               if math.isfinite(t) and t > scoring.R_MAX * min(times[x][w] for x in times)]
  records = [r for by_w in experiment.trials.values() for by_s in by_w.values() for by_t in by_s.values()
             for r in by_t.values()]
  after_budget = [r.path for r in records if np.any(r.evals.get(scoring.TIME_COLUMN, np.empty(0)) > r.budget)]
  picks = {}
  for ties in ("listdir", "trial"):
    picks[ties] = [(s, w, times[s][w], algoperf_pick_time(experiment.trials[s][w], ties))
                   for s in sorted(experiment.trials) for w in sorted(experiment.trials[s])]
    picks[ties] = [x for x in picks[ties] if x[2] != x[3]]
  return dict(rows=rows, times=times, over_four=over_four, after_budget=after_budget, picks=picks)


def _f(x: float | None, fmt: str = ".4f") -> str:
  return "-" if x is None else format(x, fmt)


def markdown(experiment: scoring.Experiment, board: Mapping[str, object]) -> str:
  """The report: scores table, per-workload times, left-out trials, checks."""
  lines = [
      f"{experiment.ruleset} tuning ruleset, {len(experiment.workloads)} workloads: {', '.join(experiment.workloads)}",
      "",
      "| submission | published | steplab exact | steplab AlgoPerf grid | grid - published | exact - grid |",
      "|---|---|---|---|---|---|",
  ]
  for r in board["rows"]:
    lines.append(f"| {r['submission']} | {_f(r['published'])} | {r['exact']:.4f} | {r['grid']:.4f} |"
                 f" {_f(r['grid_minus_published'], '+.5f')} | {r['exact_minus_grid']:+.4f} |")
  times = board["times"]
  lines += ["", "Time to target (s), median over studies of each study's fastest trial:", "",
            "| submission | " + " | ".join(experiment.workloads) + " |",
            "|---|" + "---|" * len(experiment.workloads)]
  for s in sorted(times):
    lines.append(f"| {s} | " + " | ".join(_f(times[s][w], ".1f") if math.isfinite(times[s][w]) else "inf"
                                          for w in experiment.workloads) + " |")
  lines += ["", f"Left out ({len(experiment.skipped)}):"] + [f"- {x}" for x in experiment.skipped]
  lines += [
      "",
      "Checks:",
      f"- times over {scoring.R_MAX:g}x the best (failures under both scorers): "
      + (", ".join(f"{s}/{w} ({r:.2f}x)" for s, w, r in board["over_four"]) or "none"),
      "- evals logged after the budget (steplab ignores them, AlgoPerf would not): "
      + (", ".join(board["after_budget"]) or "none"),
  ]
  for ties, how in (("listdir", "os.listdir order, as AlgoPerf's scorer"), ("trial", "trial number")):
    lines.append(f"- workload times that AlgoPerf's best-trial-by-eval-index choice changes (ties by {how}): "
                 + (", ".join(f"{s}/{w} {a:.1f}s -> {b:.1f}s" for s, w, a, b in board["picks"][ties]) or "none"))
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not _LOGS_DIR.value:
    raise app.UsageError("--logs_dir is required")
  try:
    published = parse_published(_PUBLISHED.value)
    experiment = scoring.load_experiment(_LOGS_DIR.value, _WORKLOAD_TARGETS.value)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  print(markdown(experiment, leaderboard(experiment, published)), end="")


if __name__ == "__main__":
  app.run(main)
