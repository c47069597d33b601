"""Scoring AlgoPerf's log layout: detection, targets, modes, scores, targets files, the leaderboard tool.

The logs are built here by `_write_trial` in AlgoPerf's layout
`{root}/{submission}/study_{s}/{workload}_jax/trial_{t}/` (trials from 1), with
the files AlgoPerf's submission_runner writes (meta_data_0.json with
`workload.*` keys, flags_0.json, hparams.json, eval_measurements.csv with its
`score` column) and, optionally, steplab's own meta_data.json next to them.
"""

import csv
import json
import math
import os
import re
import subprocess
import sys
from fractions import Fraction

from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from experiments import score as score_lib
from experiments import scoring

INF = math.inf
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (AlgoPerf target_metric_name, target, budget s, step_hint). "lm" logs
# validation/loss and validation/perplexity = exp(loss).
WORKLOADS = {
    "mnist": ("accuracy", 0.97, 600.0, 7813),
    "lm": ("perplexity", 5.0, 1000.0, 1200),
}


def _rows(workload, reach_at):
  """Two evals: a miss at half the time, then a hit at `reach_at` (or two misses)."""
  metric, target, budget, _ = WORKLOADS[workload]
  times = [reach_at / 2, reach_at] if reach_at else [budget / 2, 0.9 * budget]
  if metric == "accuracy":
    values = [{"validation/accuracy": v} for v in ([0.5, 0.98] if reach_at else [0.5, 0.6])]
  else:  # Perplexity 4.9 reaches 5.0; 6.0 does not.
    values = [{"validation/loss": math.log(p), "validation/perplexity": p}
              for p in ([6.0, 4.9] if reach_at else [6.0, 5.5])]
  return [dict(v, accumulated_submission_time=t, score=t, global_step=int(10 * t)) for t, v in zip(times, values)]


def _write_trial(root, submission, workload, study, trial, reach_at=None, *, ruleset="external",
                 meta=True, evals=True, steplab_meta=None, rows=None):
  """One trial in AlgoPerf's layout; it reaches the target at `reach_at` s."""
  metric, target, budget, step_hint = WORKLOADS[workload]
  path = os.path.join(root, submission, f"study_{study}", f"{workload}_jax", f"trial_{trial}")
  os.makedirs(path)
  if meta:
    with open(os.path.join(path, "meta_data_0.json"), "w") as f:
      json.dump({"workload.target_metric_name": metric, "workload.validation_target_value": target,
                 "workload.test_target_value": target, "workload.max_allowed_runtime_sec": budget,
                 "workload.step_hint": step_hint, "workload.eval_period_time_sec": 10, "rng_seed": 7}, f)
  with open(os.path.join(path, "flags_0.json"), "w") as f:
    json.dump({"tuning_ruleset": ruleset, "workload": workload, "framework": "jax"}, f)
  with open(os.path.join(path, "hparams.json"), "w") as f:
    json.dump({"learning_rate": 1e-3}, f)
  if evals:
    rows = _rows(workload, reach_at) if rows is None else rows
    columns = sorted({k for r in rows for k in r} | {"accumulated_eval_time", "preemption_count", "train/loss"})
    with open(os.path.join(path, "eval_measurements.csv"), "w", newline="") as f:
      writer = csv.DictWriter(f, columns, restval="", lineterminator="\n")
      writer.writeheader()
      for i, r in enumerate(rows):
        writer.writerow(dict(r, accumulated_eval_time=1.0 + i, preemption_count=0, **{"train/loss": 2.0 / (i + 1)}))
  if steplab_meta is not None:
    with open(os.path.join(path, "meta_data.json"), "w") as f:
      json.dump(steplab_meta, f)
  return path


def _steplab_meta(workload, status="complete", **overrides):
  metric, target, budget, _ = WORKLOADS[workload]
  meta = dict(target_metric=f"validation/{metric}", target_value=target,
              target_mode="max" if metric == "accuracy" else "min", max_allowed_runtime_sec=budget,
              tuning_ruleset="external", status=status)
  meta.update(overrides)
  return meta


# study -> trial (from 1) -> time to target (None: a miss).
EXPERIMENT = {
    "nadamw": {"mnist": [[100, None, 300], [120, 90]],  # fastest 100, 90 -> median 95
               "lm": [[400, 500], [500, None]]},  # 400, 500 -> 450
    "sfadam": {"mnist": [[50, 80], [70, None, 60]],  # 50, 60 -> 55
               "lm": [[None, None], [900, None]]},  # inf, 900 -> inf
}
TIMES = {"nadamw": {"mnist": 95.0, "lm": 450.0}, "sfadam": {"mnist": 55.0, "lm": INF}}
# Ratios: mnist nadamw 95/55 = 19/11, sfadam 1; lm nadamw 1, sfadam inf.
# B = sum_w max(0, 4 - r) / (3 * 2): nadamw (4 - 19/11 + 3) / 6 = 29/33; sfadam 3/6.
SCORES = {"nadamw": Fraction(29, 33), "sfadam": Fraction(1, 2)}


def _write_experiment(root):
  for sub, by_w in EXPERIMENT.items():
    for w, studies in by_w.items():
      for study, trials in enumerate(studies):
        for trial, reach_at in enumerate(trials, start=1):
          _write_trial(root, sub, w, study, trial, reach_at)
  # A crashed trial (no eval log): skipped, as AlgoPerf's scorer skips it.
  return _write_trial(root, "nadamw", "mnist", 0, 4, evals=False)


def _times(exp):
  return {s: {w: r.time for w, r in by_w.items()} for s, by_w in scoring.workload_results(exp).items()}


def setUpModule():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # pytest does not parse absl flags.


class MetricModeTest(parameterized.TestCase):

  @parameterized.parameters(
      ("validation/loss", "min"), ("ce_loss", "min"), ("validation/error_rate", "min"), ("ctc_loss", "min"),
      ("validation/wer", "min"), ("l1_loss", "min"), ("ppl", "min"), ("validation/perplexity", "min"),
      ("validation/accuracy", "max"), ("mean_average_precision", "max"), ("validation/ssim", "max"),
      ("bleu", "max"),
  )
  def test_algoperf_rule(self, metric, mode):
    self.assertEqual(scoring.metric_mode(metric), mode)

  @parameterized.parameters("validation/f1", "loss_scale", "validation/")
  def test_unknown_metric(self, metric):
    with self.assertRaisesRegex(ValueError, f"unknown target metric '{metric}'.*target_mode"):
      scoring.metric_mode(metric)


class AlgoperfLayoutTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_detect_layout(self):
    _write_trial(self.root, "a", "mnist", 0, 1, 100)
    steplab_trial = os.path.join(self.root, "b", "mnist", "study_0", "trial_0")
    os.makedirs(steplab_trial)
    os.makedirs(os.path.join(self.root, "scores"))
    self.assertEqual(scoring.detect_layout(os.path.join(self.root, "a")), "algoperf")
    self.assertEqual(scoring.detect_layout(os.path.join(self.root, "b")), "steplab")
    self.assertIsNone(scoring.detect_layout(os.path.join(self.root, "scores")))
    os.makedirs(os.path.join(self.root, "a", "mnist", "study_0"))
    with self.assertRaisesRegex(ValueError, "mixes layouts"):
      scoring.detect_layout(os.path.join(self.root, "a"))

  def test_targets_from_meta_data_and_scores(self):
    crashed = _write_experiment(self.root)
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      exp = scoring.load_experiment(self.root)
    self.assertIn("no eval_measurements.csv", "\n".join(logs.output))
    self.assertEqual(exp.skipped, (f"{crashed}: no eval_measurements.csv (the run never evaluated, or crashed)",))
    self.assertEqual(exp.layouts, {"nadamw": "algoperf", "sfadam": "algoperf"})
    self.assertEqual((exp.submissions, exp.workloads, exp.ruleset), (["nadamw", "sfadam"], ["lm", "mnist"], "external"))
    lm = exp.trials["nadamw"]["lm"][0][1]
    self.assertEqual((lm.target_metric, lm.target_value, lm.target_mode, lm.budget),
                     ("validation/perplexity", 5.0, "min", 1000.0))
    self.assertEqual((lm.study, lm.trial, lm.steps_to_target), (0, 1, 4000))
    self.assertEqual(_times(exp), TIMES)
    for integration in ("exact", "algoperf_grid"):
      got = scoring.benchmark_scores(_times(exp), integration)
      places = 12 if integration == "exact" else 2
      for s, expected in SCORES.items():
        self.assertAlmostEqual(got[s], float(expected), places=places, msg=(integration, s))

  def test_self_tuning_budget_is_one_and_a_half(self):
    # mnist's budget is 600 s: an eval at 700 s counts under self-tuning (900 s) only.
    late = [dict(_rows("mnist", 700)[1])]
    roots = {}
    for ruleset, expected in (("self", 700.0), ("external", INF)):
      root = roots[ruleset] = self.create_tempdir().full_path
      for study in range(2):
        _write_trial(root, "x", "mnist", study, 1, ruleset=ruleset, rows=late)
      exp = scoring.load_experiment(root)
      self.assertEqual(exp.ruleset, ruleset)
      self.assertEqual(exp.trials["x"]["mnist"][0][1].budget, 900.0 if ruleset == "self" else 600.0)
      self.assertEqual(_times(exp)["x"]["mnist"], expected)
    _write_trial(roots["self"], "x", "mnist", 0, 2, 100, ruleset="self")
    with self.assertRaisesRegex(ValueError, "runs one trial per study, found 2"):
      scoring.load_experiment(roots["self"])
    _write_trial(roots["external"], "y", "mnist", 0, 1, 100, ruleset="self")
    with self.assertRaisesRegex(ValueError, r"mixed tuning rulesets.*'self': \['y'\]"):
      scoring.load_experiment(roots["external"])

  def test_steplab_meta_data_wins(self):
    # steplab's runner writes its meta_data.json into AlgoPerf-layout trials too.
    _write_trial(self.root, "x", "mnist", 0, 1, 100, steplab_meta=_steplab_meta("mnist", target_value=0.99))
    running = _write_trial(self.root, "x", "mnist", 0, 2, 10, steplab_meta=_steplab_meta("mnist", "running"))
    exp = scoring.load_experiment(self.root)
    self.assertEqual(exp.skipped, (f"{running}: status 'running' (not complete)",))
    self.assertEqual(exp.trials["x"]["mnist"][0][1].target_value, 0.99)
    self.assertEqual(_times(exp)["x"]["mnist"], INF)  # 0.98 misses steplab's 0.99.

  def test_targets_file_supplies_and_overrides(self):
    for trial in (1, 2):
      _write_trial(self.root, "x", "mnist", 0, trial, 100 * trial, meta=False)
    _write_trial(self.root, "x", "lm", 0, 1, 400)
    with self.assertRaisesRegex(ValueError, "no validation target for workload 'mnist'.*no workload_targets"):
      scoring.load_experiment(self.root)
    path = os.path.join(self.create_tempdir().full_path, "targets.json")
    with open(path, "w") as f:
      json.dump({"workloads": {"mnist": {"target_metric_name": "accuracy", "validation_target_value": 0.95,
                                         "step_hint": 10},
                               "lm": {"target_metric_name": "loss", "validation_target_value": math.log(4.0),
                                      "step_hint": 10}}}, f)
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      exp = scoring.load_experiment(self.root, path)
    self.assertIn("using the targets file", "\n".join(logs.output))
    self.assertEqual(_times(exp)["x"], {"mnist": 100.0, "lm": INF})  # loss ln 4.9 misses ln 4.
    lm = exp.trials["x"]["lm"][0][1]
    self.assertEqual((lm.target_metric, lm.target_mode), ("validation/loss", "min"))
    with self.subTest("base_workloads"):
      with open(path) as f:
        content = json.load(f)
      content["base_workloads"] = ["mnist"]
      with open(path, "w") as f:
        json.dump(content, f)
      exp = scoring.load_experiment(self.root, path)
      self.assertEqual(exp.workloads, ["mnist"])
      self.assertIn("x/lm is not among the base_workloads", "\n".join(exp.skipped))
      content["base_workloads"] = ["mnist", "lm", "wmt"]
      content["workloads"]["wmt"] = {"target_metric_name": "bleu", "validation_target_value": 30.0, "step_hint": 1}
      with open(path, "w") as f:
        json.dump(content, f)
      with self.assertRaisesRegex(ValueError, r"base workload\(s\) \['wmt'\].*no complete trial"):
        scoring.load_experiment(self.root, path)

  def test_bad_targets_files(self):
    path = os.path.join(self.root, "t.json")
    for content, error in (({"targets": {}}, "expected"),
                           ({"workloads": {"w": {"target_metric_name": "f1", "validation_target_value": 1}}},
                            "unknown target metric 'validation/f1'"),
                           ({"workloads": {"w": {"target_metric_name": "loss"}}}, "needs target_metric_name and"),
                           ({"base_workloads": ["v"], "workloads": {"w": {"target_metric_name": "loss",
                                                                         "validation_target_value": 1}}},
                            r"base_workloads \['v'\] have no entry")):
      with open(path, "w") as f:
        json.dump(content, f)
      with self.assertRaisesRegex(ValueError, error):
        scoring.read_workload_targets(path)

  def test_cut_eval_log_fails_naming_the_file(self):
    # AlgoPerf's logs carry no status: a cut last row is still an error, not a miss.
    path = _write_trial(self.root, "x", "mnist", 0, 1, 100)
    csv_path = os.path.join(path, "eval_measurements.csv")
    with open(csv_path) as f:
      text = f.read()
    with open(csv_path, "w") as f:
      f.write(text[:-4])
    with self.assertRaisesRegex(ValueError, re.escape(csv_path) + " is truncated or corrupt: it ends inside a line"):
      scoring.load_experiment(self.root)

  def test_empty_eval_log_with_a_steplab_meta_fails(self):
    # A steplab meta_data.json saying complete: an empty log is damage, not a skip.
    empty = _write_trial(self.root, "x", "mnist", 0, 1, evals=False, steplab_meta=_steplab_meta("mnist"))
    open(os.path.join(empty, "eval_measurements.csv"), "w").close()
    with self.assertRaisesRegex(ValueError, re.escape(os.path.join(empty, "eval_measurements.csv"))
                                + " is empty but .*meta_data.json says the trial is complete"):
      scoring.load_experiment(self.root)

  def test_robust_to_odd_directories(self):
    _write_trial(self.root, "x", "mnist", 0, 1, 100)
    os.makedirs(os.path.join(self.root, "x", "study_0", "notes"))
    empty = _write_trial(self.root, "x", "mnist", 0, 2, evals=False)
    open(os.path.join(empty, "eval_measurements.csv"), "w").close()
    exp = scoring.load_experiment(self.root)
    self.assertEqual(len(exp.skipped), 2)
    self.assertIn(f"{empty}: eval_measurements.csv is empty", exp.skipped)
    self.assertIn(f"{os.path.join(self.root, 'x', 'study_0', 'notes')}: not a {{workload}}_{{jax|pytorch}} directory",
                  exp.skipped)
    self.assertEqual(_times(exp)["x"]["mnist"], 100.0)
    os.makedirs(os.path.join(self.root, "x", "study_0", "mnist_pytorch"))
    with self.assertRaisesRegex(ValueError, "holds mnist_jax and mnist_pytorch"):
      scoring.load_experiment(self.root)


class GridIntegrationTest(absltest.TestCase):

  def test_grid_vs_exact(self):
    times = {"a": {"w1": 100.0, "w2": 320.0}, "b": {"w1": 160.0, "w2": 200.0}}
    # Ratios: a 1, 1.6; b 1.6, 1. Exact: (3 + 2.4) / 6 each.
    exact = scoring.benchmark_scores(times)
    self.assertAlmostEqual(exact["a"], 5.4 / 6, places=12)
    taus = np.linspace(1.0, 4.0, 100)
    rho = np.where(taus >= 1.6, 1.0, 0.5)  # Both profiles.
    grid = scoring.benchmark_scores(times, "algoperf_grid")
    self.assertAlmostEqual(grid["a"], np.trapezoid(rho, taus) / 3, places=12)
    # 1.6 lies inside a cell of width 3/99 (not at its middle): off by less than half a cell / (3 * |W|).
    self.assertNotAlmostEqual(grid["a"], exact["a"], places=4)
    self.assertLessEqual(abs(grid["a"] - exact["a"]), 1 / (2 * 99 * 2))
    profiles = scoring.performance_profiles(times, scoring.algoperf_taus())
    self.assertEqual(scoring.benchmark_score(profiles, scoring.algoperf_taus(), rule="trapezoid"), grid)
    with self.assertRaisesRegex(ValueError, "integration must be one of"):
      scoring.benchmark_scores(times, "simpson")
    with self.assertRaisesRegex(ValueError, 'rule must be "step" or "trapezoid"'):
      scoring.benchmark_score(rho, taus, rule="simpson")

  def test_score_cli_integration(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    out = self.create_tempdir().full_path
    grid = score_lib.score(root, "nadamw", out, plots=False, integration="algoperf_grid")
    exact = score_lib.score(root, "nadamw", out, plots=False)
    self.assertIn("AlgoPerf's trapezoid rule", grid.markdown)
    self.assertIn("exact integral", exact.markdown)
    self.assertAlmostEqual(exact.scores["nadamw"], 29 / 33, places=12)
    self.assertAlmostEqual(grid.scores["nadamw"], 29 / 33, places=2)
    self.assertIn("no eval_measurements.csv", exact.markdown)


class WriteTargetsTest(absltest.TestCase):

  def test_round_trip(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    exp = scoring.load_experiment(root)
    path = os.path.join(self.create_tempdir().full_path, "workload_targets.json")
    written = scoring.write_algoperf_workload_targets(exp, path)
    with open(path) as f:
      self.assertEqual(json.load(f), written)
    self.assertEqual(written["base_workloads"], ["lm", "mnist"])
    self.assertEqual(written["held_out_workloads"], [])
    self.assertEqual(written["workloads"]["mnist"],
                     {"target_metric_name": "accuracy", "validation_target_value": 0.97, "step_hint": 7813})
    lm = written["workloads"]["lm"]
    self.assertEqual((lm["target_metric_name"], lm["step_hint"]), ("loss", 1200))
    self.assertAlmostEqual(lm["validation_target_value"], math.log(5.0), places=15)
    # Scored through the file (validation/loss <= ln 5): the same times.
    self.assertEqual(_times(scoring.load_experiment(root, path)), TIMES)
    with self.assertRaisesRegex(ValueError, "inside the experiment directory"):
      scoring.write_algoperf_workload_targets(exp, os.path.join(root, "workload_targets.json"))

  def test_algoperf_target(self):
    self.assertEqual(scoring.algoperf_target("validation/accuracy", 0.9, "max"), ("accuracy", 0.9))
    self.assertEqual(scoring.algoperf_target("validation/perplexity", math.e, "min"), ("loss", 1.0))
    with self.assertRaisesRegex(ValueError, "AlgoPerf's scorer takes it as 'min'"):
      scoring.algoperf_target("validation/loss", 1.0, "max")
    with self.assertRaisesRegex(ValueError, "unknown target metric"):
      scoring.algoperf_target("validation/f1", 1.0, "max")
    with self.assertRaisesRegex(ValueError, "perplexity target must be positive"):
      scoring.algoperf_target("validation/perplexity", 0.0, "min")


def _run_tool(*args):
  """The tool's printed report (run as a script: it defines absl flags of its own)."""
  result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "reproduce_algoperf_leaderboard.py"), *args],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
  if result.returncode:
    raise AssertionError(f"{args} failed:\n{result.stderr[-3000:]}")
  return result.stdout


class LeaderboardToolTest(absltest.TestCase):

  def test_table(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    text = _run_tool(f"--logs_dir={root}", "--published=nadamw=0.8800")
    self.assertIn("| submission | published | steplab exact | steplab AlgoPerf grid | grid - published | exact - grid |",
                  text)
    grid = scoring.benchmark_scores(TIMES, "algoperf_grid")
    self.assertIn(f"| nadamw | 0.8800 | {29 / 33:.4f} | {grid['nadamw']:.4f} | {grid['nadamw'] - 0.88:+.5f} |"
                  f" {29 / 33 - grid['nadamw']:+.4f} |", text)
    self.assertIn("| sfadam | - | 0.5000 | 0.5000 | - | +0.0000 |", text)
    self.assertIn("| nadamw | 450.0 | 95.0 |", text)
    self.assertIn("times over 4x the best (failures under both scorers): none", text)
    self.assertIn("no eval_measurements.csv", text)
    with self.assertRaisesRegex(AssertionError, "submission=0.1234"):
      _run_tool(f"--logs_dir={root}", "--published=nadamw")

  def test_algoperf_best_trial_by_eval_index(self):
    root = self.create_tempdir().full_path
    # Trial 1 reaches the target at its 3rd eval (150 s), trial 2 at its 2nd (200 s).
    frequent = [dict(_rows("mnist", 100)[0], accumulated_submission_time=t, score=t) for t in (50, 100)]
    frequent.append(dict(_rows("mnist", 150)[1]))
    _write_trial(root, "x", "mnist", 0, 1, rows=frequent)
    _write_trial(root, "x", "mnist", 0, 2, 200)
    self.assertEqual(_times(scoring.load_experiment(root))["x"]["mnist"], 150.0)
    text = _run_tool(f"--logs_dir={root}", "--published=")
    self.assertIn("(ties by trial number): x/mnist 150.0s -> 200.0s", text)


if __name__ == "__main__":
  absltest.main()
