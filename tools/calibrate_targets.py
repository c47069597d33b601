#!/usr/bin/env python3
"""Set a workload's targets and budget from tuned AdamW runs of the runner itself.

AlgoPerf sets each target from tuned baselines; this does the same, small,
and through the same code path the benchmark uses (`trainer.run_trial` with the
registry's `adamw` submission: 5% linear warm-up, cosine decay to 0 at
`step_hint`, weight decay 1e-4, AlgoPerf's seeding):

1. Tune: for each learning rate in `--learning_rates` (default: the grid
   below), train seed 0 for the step budget (`max_steps`, the "steps"
   measure; the schedule ends at `step_hint`, 10% earlier) with the target switched off, evaluating every
   `eval_period_steps` steps, as the runner does. The best learning rate has
   the best best-so-far validation metric.
2. Repeat the best learning rate with seeds 1 .. `--seeds`-1 (default 10),
   and with `--verify_seeds` (default 10) more seeds 1000, 1001, ...
3. Validation target: the best-so-far validation metric that a fraction
   `--reach_fraction` (0.95) of ALL those seeds reach: with 20 seeds, the
   second worst seed's best. (A median target, AlgoPerf's choice, is missed by
   half the seeds of the very baseline that set it. Setting it from 10 seeds
   and checking 10 fresh ones showed why a pool is needed: on mnist1d_mlp the
   seeds' best accuracies spread over 0.717-0.756, and a target 9 of 10 seeds
   reached was reached by only 4 of 10 fresh seeds.) The tool prints how many
   of the first and of the second group reach it. Test target: the test metric
   at the evaluation where each seed first reached the validation target, the
   worst of those that reached it.
5. Wall-clock budget (for `--measure=wallclock` only): `--budget_factor` (2)
   times the slowest seed's submission time to the target (compilation
   included), rounded up to 5 s, at least 10 s.

The runner's clock makes the budget machine-dependent (a CPU core like CI's is
what the defaults are for); the targets are not. Every seed's time and steps
to the target are printed so the margins are visible.

Usage:
    python tools/calibrate_targets.py                       # every small workload
    python tools/calibrate_targets.py --workloads=logreg --seeds=3
    python tools/calibrate_targets.py --workloads=lm_transformer \\
        --options='{"data_dir": "/data/text"}' --learning_rates=3e-4,1e-3

Prints one block per workload, ready to paste into its `Targets`. The four
small workloads with the defaults (3 learning rates, 5 seeds) take about 15
minutes on one CPU core, most of it stdlib_lm's.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import sys
import tempfile
from typing import Sequence

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, __file__.rsplit("/tools/", 1)[0])
# pylint: disable=g-import-not-at-top
from experiments import logs
from experiments import submission as submission_lib
from experiments import trainer
from experiments import workloads

SMALL_WORKLOADS = ("mnist1d_mlp", "mnist1d_cnn", "logreg", "stdlib_lm")
LEARNING_RATES = {
    "mnist1d_mlp": (1e-2, 3e-2, 1e-1),
    "mnist1d_cnn": (1e-2, 3e-2, 1e-1),
    "logreg": (3e-3, 1e-2, 3e-2),
    "stdlib_lm": (1e-3, 3e-3, 1e-2),
}
DEFAULT_LEARNING_RATES = (3e-4, 1e-3, 3e-3)

_WORKLOADS = flags.DEFINE_list("workloads", list(SMALL_WORKLOADS), "Workloads to calibrate.")
_LRS = flags.DEFINE_list("learning_rates", None, "Peak learning rates (default: per workload).")
_SEEDS = flags.DEFINE_integer("seeds", 10, "Seeds of the best learning rate (seed 0 included).")
_REACH = flags.DEFINE_float("reach_fraction", 0.95, "Fraction of all seeds that must reach the target.")
_VERIFY_SEEDS = flags.DEFINE_integer("verify_seeds", 10, "More seeds (1000, 1001, ...) in the pool.")
_BUDGET_FACTOR = flags.DEFINE_float(
    "budget_factor", 2.0, "Budget = this x the slowest seed's time to the target.")
_OPTIONS = flags.DEFINE_string("options", "{}", "JSON keyword options for the workload.")

_MIN_BUDGET_SEC = 10.0


@dataclasses.dataclass(frozen=True)
class Curve:
  """One run's evaluations: steps, submission seconds and metric per split."""

  steps: np.ndarray
  seconds: np.ndarray
  validation: np.ndarray
  test: np.ndarray


def train(workload, lr: float, seed: int, workdir: str) -> Curve:
  """Runs the tuned-baseline trial for `step_hint` steps, target switched off."""
  tg = workload.targets
  unreachable = math.inf if tg.mode == "max" else -math.inf
  workload.targets = dataclasses.replace(
      tg, validation=unreachable, max_allowed_runtime_sec=math.inf)
  trial_dir = os.path.join(workdir, f"lr{lr:g}_seed{seed}")
  steps = tg.max_steps or tg.step_hint
  try:
    # The "steps" measure's evaluation cadence; the budget has slack so that
    # the noise of adamw's cost relative to itself cannot cut the run short.
    trainer.run_trial(
        workload, submission_lib.registry_submission("adamw"), {"learning_rate": lr},
        trial_dir=trial_dir, rng_seed=seed, record=dict(lr=lr, seed=seed),
        max_global_steps=steps, save_checkpoints=False, progress=lambda _: None,
        measure="steps", budget_steps=1.5 * steps,
    )
  finally:
    workload.targets = tg
  rows = logs.CsvLog.resume(os.path.join(trial_dir, "eval_measurements.csv")).rows
  column = lambda key: np.array([float(r[key]) for r in rows])
  return Curve(column("global_step"), column("accumulated_submission_time"),
               column(f"validation/{tg.metric}"), column(f"test/{tg.metric}"))


def best(values: np.ndarray, mode: str) -> float:
  return float(values.max() if mode == "max" else values.min())


def first_reach(curve: Curve, target: float, mode: str) -> int:
  """Index of the first evaluation whose validation metric meets `target`."""
  hit = curve.validation >= target if mode == "max" else curve.validation <= target
  return int(np.argmax(hit))


def calibrate(name: str, options: dict, workdir: str) -> None:
  workload = workloads.get_workload(name, **options)
  tg = workload.targets
  lrs = [float(x) for x in _LRS.value] if _LRS.value else LEARNING_RATES.get(
      name, DEFAULT_LEARNING_RATES)
  print(f"\n== {name}: {workload.num_params()} params, step_hint {tg.step_hint}, batch"
        f" {workload.default_batch_size}, metric {tg.metric} ({tg.mode}), eval every"
        f" {tg.eval_period_steps} steps", flush=True)
  runs: dict[tuple[float, int], Curve] = {}

  def run(lr: float, seed: int) -> None:
    runs[lr, seed] = curve = train(workload, lr, seed, workdir)
    print(f"  lr={lr:g} seed={seed}: best validation {best(curve.validation, tg.mode):.4f},"
          f" final {curve.validation[-1]:.4f}, {curve.seconds[-1]:.1f}s of submission time",
          flush=True)

  for lr in lrs:
    run(lr, 0)
  sign = 1 if tg.mode == "max" else -1
  best_lr = max(lrs, key=lambda lr: sign * best(runs[lr, 0].validation, tg.mode))
  for seed in range(1, _SEEDS.value):
    run(best_lr, seed)

  first = [runs[best_lr, s] for s in range(_SEEDS.value)]
  fresh = [train(workload, best_lr, 1000 + seed, workdir) for seed in range(_VERIFY_SEEDS.value)]
  curves = first + fresh
  bests = [best(c.validation, tg.mode) for c in curves]
  ranked = sorted(bests, key=lambda b: -sign * b)  # Best first.
  need = max(1, math.ceil(_REACH.value * len(bests)))
  validation = ranked[need - 1]  # `need` seeds reach it.
  reached = lambda c: bool(np.any(c.validation >= validation if tg.mode == "max" else c.validation <= validation))
  hits = [c for c in curves if reached(c)]
  reach = [first_reach(c, validation, tg.mode) for c in hits]
  tests = [float(c.test[i]) for c, i in zip(hits, reach)]
  test = min(tests) if tg.mode == "max" else max(tests)
  times = [float(c.seconds[i]) for c, i in zip(hits, reach)]
  steps = [int(c.steps[i]) for c, i in zip(hits, reach)]
  verified = sum(reached(c) for c in fresh)
  print(f"  target {validation:.4f}: reached by {sum(reached(c) for c in first)}/{len(first)} of seeds"
        f" 0..{len(first) - 1} and {verified}/{len(fresh)} of seeds 1000..{999 + len(fresh)}", flush=True)
  budget = max(_MIN_BUDGET_SEC, 5 * math.ceil(_BUDGET_FACTOR.value * max(times) / 5))
  print(f"  lr={best_lr:g}, seeds' best validation {np.round(bests, 4).tolist()}:"
        f" target {validation:.4f} reached at {np.round(times, 1).tolist()} s,"
        f" steps {steps}")
  print(f"  suggested: validation={validation:.4f} test={test:.4f}"
        f" max_allowed_runtime_sec={budget:g} step_hint={tg.step_hint}")
  print(f'  how_set="best validation {tg.metric} that {need} of {len(curves)} seeds of tuned AdamW'
        f' reach (registry adamw submission, lr in {{{", ".join(f"{x:g}" for x in lrs)}}},'
        f' best {best_lr:g}; {tg.max_steps or tg.step_hint} cost-adjusted steps, the step budget);'
        f' wall-clock budget {_BUDGET_FACTOR.value:g} x the slowest seed\'s {max(times):.1f} s;'
        f' tools/calibrate_targets.py, {datetime.date.today()}"', flush=True)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _SEEDS.value < 1:
    raise app.UsageError(f"--seeds must be at least 1, got {_SEEDS.value}")
  options = json.loads(_OPTIONS.value)
  with tempfile.TemporaryDirectory(prefix="calibrate_") as workdir:
    for name in _WORKLOADS.value:
      calibrate(name, options, workdir)


if __name__ == "__main__":
  app.run(main)
