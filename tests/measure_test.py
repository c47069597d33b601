"""The "steps" measure: coherent budgets, a load-independent step cost, and the trainer's use of it."""

from tests import test_util  # Device set-up first.

import dataclasses
import math
import os
from unittest import mock

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

from experiments import logs
from experiments import step_cost
from experiments import submission as submission_lib
from experiments import trainer
from experiments import workloads
from experiments.workloads import base
import optimizers
from tests.trainer_test import FakeTime
from tests.trainer_test import TinyWorkload


class _LoadedClock:
  """A fake clock whose "machine load" changes between rounds of the probe.

  Every timed step reads the clock twice (start, end); a round is one step of
  the submission then one of the baseline, four reads. `loads[r]` scales
  round r (both sides alike, as load does); `burst` = (round, factor) hits
  only the submission's step of one round.
  """

  def __init__(self, loads, burst):
    self.now, self.reads, self.load = 0.0, 0, 1.0
    self._loads, self._burst = loads, burst

  def __call__(self):
    self.reads += 1
    run = self.reads // 2  # Runs started so far (this read starts run `run` when even).
    block, side = divmod(run, 2)
    self.load = self._loads[block % len(self._loads)]
    if (block, side) == (self._burst[0], 0):
      self.load *= self._burst[1]
    return self.now


def _fake_submission(name, cost, clock):
  def update_params(workload, params, types, model_state, hparams, batch, loss_type, state, results,
                    step, rng):
    clock.now += cost * clock.load
    return state, params, model_state

  return submission_lib.Submission(
      name=name, get_batch_size=lambda _: 1, init_optimizer_state=lambda *a: ((), None),
      update_params=update_params, data_selection=lambda *a: None)


class StepCostTest(absltest.TestCase):

  def test_relative_cost_ignores_load_that_slows_both(self):
    # Steps of 2 ms against 1 ms, under load that varies 1x..5x from round to
    # round and a burst that slows only the submission's step of one round: the
    # ratio of the low quantiles of the step times is 2 (to the fake clock's rounding).
    clock = _LoadedClock(loads=[1.0, 3.0, 1.0, 5.0, 2.0, 1.5, 4.0], burst=(40, 7.0))
    workload = TinyWorkload(FakeTime())
    cost = step_cost.measure(
        _fake_submission("sub", 2e-3, clock), _fake_submission("base", 1e-3, clock), workload,
        {"w": jnp.zeros(2)}, None, None, None, batch=None, rng=None, params_types=None,
        loss_type=None, time_fn=clock)
    self.assertAlmostEqual(cost.relative, 2.0, places=9)
    self.assertIsNone(workload.metrics_logger)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "probe_seconds"):
      step_cost.measure(None, None, None, None, None, None, None, None, None, None, None, probe_seconds=0)


class TrainerStepsMeasureTest(absltest.TestCase):

  def _run(self, step_seconds, relative=1.25):
    clock = FakeTime()
    workload = TinyWorkload(clock, target=0.8, step_seconds=step_seconds)
    fixed = step_cost.StepCost(relative=relative, seconds=1.0, baseline_seconds=1.0,
                               compile_seconds=0.0, baseline_compile_seconds=0.0)
    tmp = test_util.tempdir(self)
    with mock.patch.object(step_cost, "measure", return_value=fixed):
      result = trainer.run_trial(
          workload, submission_lib.registry_submission("adamw", batch_sizes={"tiny": 16}),
          {"learning_rate": 0.05}, trial_dir=tmp, rng_seed=0, record={}, time_fn=clock,
          save_checkpoints=False, progress=lambda m: None, measure="steps", budget_steps=500.0,
          stop_at_target=False)
    return result, tmp

  def test_measure_does_not_move_with_step_time_and_respects_the_budget(self):
    fast, fast_dir = self._run(step_seconds=1.0)
    slow, _ = self._run(step_seconds=7.0)  # A loaded machine: every step 7x slower.
    self.assertEqual(fast.global_step, 400)  # The largest n with n x 1.25 <= 500.
    self.assertTrue(fast.reached_target)
    self.assertEqual(fast.cost_adjusted_steps_to_target, 1.25 * fast.steps_to_target)
    self.assertEqual(fast.score_time, fast.cost_adjusted_steps_to_target)
    self.assertEqual((slow.global_step, slow.steps_to_target, slow.score_time),
                     (fast.global_step, fast.steps_to_target, fast.score_time))
    self.assertNotEqual(slow.time_to_target_sec, fast.time_to_target_sec)  # Wall clock does move.
    rows = logs.CsvLog.resume(os.path.join(fast_dir, "eval_measurements.csv")).rows
    self.assertEqual([r["global_step"] for r in rows], list(range(10, 401, 10)))  # budget // 50 apart.
    self.assertEqual(rows[-1]["cost_adjusted_steps"], 500.0)
    meta = logs.read_json(os.path.join(fast_dir, "meta_data.json"))
    self.assertEqual((meta["measure"], meta["time_column"], meta["budget"]), ("steps", "cost_adjusted_steps", 500.0))


class BudgetCoherenceTest(absltest.TestCase):

  def test_targets_refuse_an_incoherent_step_budget(self):
    good = dict(metric="loss", mode="min", validation=1.0, test=1.0, max_allowed_runtime_sec=1.0,
                eval_period_time_sec=1.0, step_hint=100, how_set="test", measure="steps")
    self.assertEqual(base.Targets(**good, max_steps=110).eval_period_steps, 2)
    for bad in (None, 99, 111):
      with self.assertRaisesRegex(ValueError, "max_steps"):
        base.Targets(**good, max_steps=bad)
    with self.assertRaisesRegex(ValueError, "measure"):
      base.Targets(**dict(good, measure="minutes"), max_steps=100)

  def test_every_registry_schedule_spans_every_cpu_budget(self):
    # A registry optimizer on AlgoPerf's schedule decays to its final value at
    # step_hint; step-measured budgets end at most 10% later. Entries without
    # that schedule (sets_own_schedule: DoG, schedule-free, ...) set their
    # own step size at a constant rate: there is no schedule to end early.
    cpu = [w for w in workloads.WORKLOADS if workloads.WORKLOADS[w].targets.measure == "steps"]
    self.assertCountEqual(
        cpu, ["mnist1d_mlp", "mnist1d_cnn", "logreg", "stdlib_lm", *workloads.VARIANTS])
    for name in cpu:
      tg = workloads.WORKLOADS[name].targets
      self.assertLessEqual(1 - tg.step_hint / tg.max_steps, base.MAX_FINAL_FRACTION, name)
      self.assertGreaterEqual(tg.max_steps // tg.eval_period_steps, 20, name)
      for opt, spec in optimizers.registry.items():
        if spec.sets_own_schedule:
          continue
        point = {**spec.defaults, "warmup_factor": submission_lib.REGISTRY_WARMUP_FACTOR}
        lr, _ = submission_lib._schedule(point, tg.step_hint, {})  # pylint: disable=protected-access
        self.assertGreater(float(lr(tg.step_hint - 1)), 0.0, (name, opt))
        self.assertEqual(float(lr(tg.step_hint)), 0.0, (name, opt))


if __name__ == "__main__":
  absltest.main()
