#!/usr/bin/env python3
"""Suggest a workload's targets and budget from real AdamW runs.

AlgoPerf sets each target from tuned baselines; this does the same, small:

1. For each learning rate in `--learning_rates` (default: the workload's
   grid below), train `optax.adamw` (linear warm-up over the first 5% of the
   steps, then cosine decay to 0, weight decay 1e-4) for `step_hint` steps at
   the workload's default batch size, seed 0, through the workload interface
   (`init_model_fn`, `train_batch`, `model_fn`, `loss_fn`, `eval_model`) in a
   plain jitted loop; evaluate validation and test `--num_evals` times, evenly.
2. The best learning rate is the one with the best final best-so-far
   validation metric; it is rerun with seeds 1 .. `--seeds`-1.
3. Targets: the median over seeds of the best learning rate's best
   validation metric (test metric likewise, separately), loosened by
   `--slack` (5%) of the remaining error or loss: accuracy a -> 1 - 1.05 (1 - a),
   loss l -> 1.05 l, perplexity p -> p^1.05 (5% more loss). The slack covers
   seed noise, so that every tuned-baseline seed, not half of them, reaches
   the target within its `step_hint` steps; the tool prints where each does.
4. Budget: the loop's measured seconds per step (data + update, synchronised
   every step, compile excluded) times `step_hint / 0.75`, rounded up to 5 s,
   at least 30 s: a baseline at that speed reaches the target by 75% of the
   budget (earlier where the 30 s floor applies); evaluation period: a tenth
   of the budget, within [5, 15] s.

Usage:
    python tools/calibrate_targets.py                       # every small workload
    python tools/calibrate_targets.py --workloads=logreg --seeds=3
    python tools/calibrate_targets.py --workloads=lm_transformer \\
        --options='{"data_dir": "/data/text"}' --learning_rates=3e-4,1e-3

Prints one block per workload, ready to paste into its `Targets`. The four
small workloads with the defaults (3 learning rates, 2 seeds) take about 6
minutes on one CPU core, 4.5 of them stdlib_lm's.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
import time
from typing import Sequence

from absl import app
from absl import flags
import jax
import numpy as np
import optax

sys.path.insert(0, __file__.rsplit("/tools/", 1)[0])
from experiments import workloads  # pylint: disable=g-import-not-at-top

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
_SEEDS = flags.DEFINE_integer("seeds", 2, "Seeds for the best learning rate.")
_STEPS = flags.DEFINE_integer("steps", None, "Steps per run (default: the workload's step_hint).")
_NUM_EVALS = flags.DEFINE_integer("num_evals", 20, "Evaluations per run, evenly spaced.")
_SLACK = flags.DEFINE_float("slack", 0.05, "Relative loosening of the error or loss.")
_OPTIONS = flags.DEFINE_string("options", "{}", "JSON keyword options for the workload.")

_BUDGET_FRACTION = 0.75  # Of the budget, the time step_hint steps take.


def train(workload, lr: float, seed: int, steps: int, num_evals: int):
  """Returns (eval steps, {split: [metric]}, seconds per step)."""
  schedule = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 20), steps, 0.0)
  optimizer = optax.adamw(schedule, weight_decay=1e-4)
  params, model_state = workload.init_model_fn(jax.random.key(seed))
  opt_state = optimizer.init(params)

  @jax.jit
  def step(params, model_state, opt_state, batch, rng):
    def loss(params):
      logits, new_state = workload.model_fn(params, batch, model_state, "train", rng, True)
      out = workload.loss_fn(batch["targets"], logits)
      return out["summed"] / out["n_valid_examples"], new_state

    grads, model_state = jax.grad(loss, has_aux=True)(params)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), model_state, opt_state

  metric = workload.targets.metric
  eval_steps = sorted({round(steps * (i + 1) / num_evals) for i in range(num_evals)})
  curves = {"validation": [], "test": []}
  rng = jax.random.key(seed + 10_000)
  train_time, timed_steps = 0.0, 0
  for t in range(steps):
    start = time.perf_counter()
    batch = workload.train_batch(seed, t, workload.default_batch_size)
    params, model_state, opt_state = jax.block_until_ready(
        step(params, model_state, opt_state, batch, jax.random.fold_in(rng, t))
    )
    if t:  # Step 0 compiles.
      train_time += time.perf_counter() - start
      timed_steps += 1
    if t + 1 in eval_steps:
      for split in curves:
        curves[split].append(workload.eval_model(params, model_state, None, split)[metric])
  return eval_steps, curves, train_time / max(timed_steps, 1)


def best_so_far(values: Sequence[float], mode: str) -> np.ndarray:
  accumulate = np.maximum.accumulate if mode == "max" else np.minimum.accumulate
  return accumulate(np.asarray(values))


def calibrate(name: str, options: dict) -> None:
  workload = workloads.get_workload(name, **options)
  tg = workload.targets
  steps = _STEPS.value or tg.step_hint
  lrs = [float(x) for x in _LRS.value] if _LRS.value else LEARNING_RATES.get(
      name, DEFAULT_LEARNING_RATES)
  print(f"\n== {name}: {workload.num_params()} params, {steps} steps, batch"
        f" {workload.default_batch_size}, metric {tg.metric} ({tg.mode})", flush=True)
  runs = {}  # (lr, seed) -> (eval_steps, curves, sec/step)

  def run(lr, seed):
    start = time.perf_counter()
    runs[lr, seed] = train(workload, lr, seed, steps, _NUM_EVALS.value)
    _, curves, sec = runs[lr, seed]
    best = best_so_far(curves["validation"], tg.mode)
    print(f"  lr={lr:g} seed={seed}: best val {best[-1]:.4f}, final val"
          f" {curves['validation'][-1]:.4f}, {sec * 1e3:.2f} ms/step,"
          f" {time.perf_counter() - start:.0f}s", flush=True)

  for lr in lrs:
    run(lr, 0)
  sign = 1 if tg.mode == "max" else -1
  best_lr = max(lrs, key=lambda lr: sign * best_so_far(runs[lr, 0][1]["validation"], tg.mode)[-1])
  for seed in range(1, _SEEDS.value):
    run(best_lr, seed)

  eval_steps = np.asarray(runs[best_lr, 0][0])
  suggested = {}
  for split in ("validation", "test"):
    curves = [best_so_far(runs[best_lr, s][1][split], tg.mode) for s in range(_SEEDS.value)]
    median = np.median(curves, axis=0)
    suggested[split] = loosen(float(median[-1]), tg.metric, tg.mode)
    reached = [reach_fraction(c, eval_steps, suggested[split], tg.mode, steps) for c in curves]
    print(f"  {split}: median best-so-far of lr={best_lr:g} at steps"
          f" {dict(zip(eval_steps[3::4].tolist(), np.round(median[3::4], 4).tolist()))};"
          f" target {suggested[split]:.4f} reached at {reached} of step_hint by the seeds")
  sec = float(np.median([runs[best_lr, s][2] for s in range(_SEEDS.value)]))
  budget = max(30.0, 5 * math.ceil(sec * steps / _BUDGET_FRACTION / 5))
  period = float(min(15.0, max(5.0, round(budget / 10))))
  print(f"  suggested: validation={suggested['validation']:.4f}"
        f" test={suggested['test']:.4f} max_allowed_runtime_sec={budget:g}"
        f" eval_period_time_sec={period:g} step_hint={steps}")
  print(f'  how_set="median over {_SEEDS.value} seeds of tuned AdamW (lr in'
        f' {{{", ".join(f"{x:g}" for x in lrs)}}}, best {best_lr:g}; {steps} steps) best'
        f' {tg.metric}, loosened {_SLACK.value:.0%}; budget {sec * 1e3:.1f} ms/step x step_hint /'
        f' {_BUDGET_FRACTION}; tools/calibrate_targets.py, {datetime.date.today()}"')


def loosen(value: float, metric: str, mode: str) -> float:
  """`value` made easier by `--slack` of its error (accuracy) or loss."""
  slack = 1 + _SLACK.value
  if metric == "perplexity":
    return value**slack
  if mode == "max":  # Accuracy-like, at most 1.
    return 1 - slack * (1 - value)
  return slack * value


def reach_fraction(curve, eval_steps, target, mode, steps) -> float | None:
  """First evaluation (as a fraction of `steps`) where `curve` meets `target`."""
  hit = curve >= target if mode == "max" else curve <= target
  return round(float(eval_steps[np.argmax(hit)]) / steps, 2) if hit.any() else None


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  options = json.loads(_OPTIONS.value)
  for name in _WORKLOADS.value:
    calibrate(name, options)


if __name__ == "__main__":
  app.run(main)
