"""Scoring: a hand-computed benchmark, AlgoPerf's defects, and `score` end to end."""

from tests import test_util  # Sets up simulated CPU devices first.

import contextlib
import importlib.util
import csv
import io
import json
import math
import os
import re
import tempfile
from fractions import Fraction

from absl import app
from absl import flags
from absl.testing import absltest
from absl.testing import flagsaver
from absl.testing import parameterized
import numpy as np

from experiments import score as score_lib
from experiments import scoring

INF = math.inf

# Hand-computed example: 3 submissions x 3 workloads (seconds).
#   best per workload:  w1 100 (A), w2 150 (B), w3 500 (B)
#   ratios: A: 100/100 = 1, 300/150 = 2, inf (miss)
#           B: 200/100 = 2, 150/150 = 1, 500/500 = 1
#           C: 500/100 = 5 > 4 -> inf, 600/150 = 4, 1000/500 = 2
#   B_s = (1/3) int_1^4 rho_s = sum_w max(0, 4 - r_sw) / (3 * 3):
#           A: (3 + 2 + 0) / 9 = 5/9,  B: (2 + 3 + 3) / 9 = 8/9,  C: (0 + 0 + 2) / 9 = 2/9
TIMES = {
    "A": {"w1": 100.0, "w2": 300.0, "w3": INF},
    "B": {"w1": 200.0, "w2": 150.0, "w3": 500.0},
    "C": {"w1": 500.0, "w2": 600.0, "w3": 1000.0},
}
RATIOS = {
    "A": {"w1": 1.0, "w2": 2.0, "w3": INF},
    "B": {"w1": 2.0, "w2": 1.0, "w3": 1.0},
    "C": {"w1": INF, "w2": 4.0, "w3": 2.0},
}
TAUS = [1.0, 1.5, 2.0, 3.0, 3.999, 4.0]
RHO = {
    "A": [Fraction(1, 3), Fraction(1, 3), Fraction(2, 3), Fraction(2, 3), Fraction(2, 3), Fraction(2, 3)],
    "B": [Fraction(2, 3), Fraction(2, 3), Fraction(1), Fraction(1), Fraction(1), Fraction(1)],
    "C": [Fraction(0), Fraction(0), Fraction(1, 3), Fraction(1, 3), Fraction(1, 3), Fraction(2, 3)],
}
SCORES = {"A": Fraction(5, 9), "B": Fraction(8, 9), "C": Fraction(2, 9)}


class HandComputedTest(parameterized.TestCase):

  def test_ratios(self):
    self.assertEqual(scoring.performance_ratios(TIMES), RATIOS)

  def test_profiles(self):
    profiles = scoring.performance_profiles(TIMES, TAUS)
    for s, expected in RHO.items():
      np.testing.assert_allclose(profiles[s], [float(x) for x in expected], err_msg=s)

  @parameterized.named_parameters(
      ("jumps_only", None),
      ("jumps_and_grid", 301),
      ("integer_grid", [1.0, 2.0, 3.0, 4.0]),  # Holds every jump (1, 2, 4) here.
  )
  def test_score_is_exact(self, taus):
    if taus is None or isinstance(taus, int):
      taus = scoring.profile_taus(TIMES, num=taus or 0)
    scores = scoring.benchmark_score(scoring.performance_profiles(TIMES, taus), taus)
    for s, expected in SCORES.items():
      self.assertAlmostEqual(scores[s], float(expected), places=12, msg=s)
      self.assertAlmostEqual(scoring.benchmark_scores(TIMES)[s], float(expected), places=12, msg=s)

  def test_trapezoid_would_be_wrong(self):
    # Why the step-function sum: a trapezoid on [1, 2, 3, 4] gives A 11/18, not 10/18.
    taus = np.array([1.0, 2.0, 3.0, 4.0])
    rho = scoring.performance_profiles(TIMES, taus)["A"]
    self.assertAlmostEqual(np.trapezoid(rho, taus) / 3, 11 / 18)
    self.assertAlmostEqual(scoring.benchmark_score(rho, taus), 10 / 18)

  def test_all_fail_workload_counts_in_denominator(self):
    times = {s: dict(t, w4=INF) for s, t in TIMES.items()}
    self.assertEqual({s: r["w4"] for s, r in scoring.performance_ratios(times).items()},
                     {"A": INF, "B": INF, "C": INF})
    rho4 = {s: float(p[-1]) for s, p in scoring.performance_profiles(times, [1.0, 4.0]).items()}
    self.assertEqual(rho4, {"A": 2 / 4, "B": 3 / 4, "C": 2 / 4})
    # Scores scale by 3/4: A 5/12, B 8/12, C 2/12.
    expected = {"A": 5 / 12, "B": 8 / 12, "C": 2 / 12}
    for s, v in scoring.benchmark_scores(times).items():
      self.assertAlmostEqual(v, expected[s], places=12)

  def test_speedups_with_failure(self):
    budgets = {"w1": 1000.0, "w2": 1000.0, "w3": 2000.0}
    got = scoring.speedups(TIMES, "C", budgets)
    # A misses w3: it counts as 2000 + 1 s. (500/100 * 600/300 * 1000/2001)^(1/3).
    self.assertAlmostEqual(got["A"], (10000 / 2001) ** (1 / 3), places=12)
    self.assertAlmostEqual(got["B"], (500 / 200 * 600 / 150 * 1000 / 500) ** (1 / 3), places=12)
    self.assertAlmostEqual(got["C"], 1.0, places=12)
    # Two misses tie (ratio 1) whatever the budget.
    both_fail = {s: dict(t, w4=INF) for s, t in TIMES.items()}
    got = scoring.speedups(both_fail, "C", dict(budgets, w4=50.0))
    self.assertAlmostEqual(got["A"], (10000 / 2001) ** (1 / 4), places=12)

  def test_speedup_errors(self):
    with self.assertRaisesRegex(ValueError, r"unknown baseline 'D'; submissions are \['A', 'B', 'C'\]"):
      scoring.speedups(TIMES, "D", {})
    with self.assertRaisesRegex(ValueError, r"no budget for workload\(s\) \['w3'\]"):
      scoring.speedups(TIMES, "C", {"w1": 1.0, "w2": 1.0})

  def test_bad_times(self):
    with self.assertRaisesRegex(ValueError, r"'B' has no time for workload\(s\) \['w2'\]"):
      scoring.performance_ratios({"A": {"w1": 1.0, "w2": 2.0}, "B": {"w1": 1.0}})
    with self.assertRaisesRegex(ValueError, "positive seconds or inf"):
      scoring.performance_ratios({"A": {"w1": math.nan}})
    with self.assertRaisesRegex(ValueError, "contain 1.0 and reach 4.0"):
      scoring.benchmark_score([0.5, 1.0], [1.5, 4.0])


class WorkloadTimeTest(absltest.TestCase):

  def test_fastest_per_study_then_median(self):
    studies = {0: {0: 300.0, 1: 200.0, 2: INF}, 1: {0: INF, 1: INF}, 2: {0: 250.0, 1: 400.0}}
    # Fastest per study: 200, inf, 250 -> median 250.
    self.assertEqual(scoring.workload_time(studies), 250.0)
    self.assertEqual(scoring.workload_time({0: [100.0], 1: [300.0]}), 200.0)  # Mean of the middle two.
    self.assertEqual(scoring.workload_time({0: [100.0], 1: [INF]}), INF)
    self.assertEqual(scoring.workload_time({0: [120.0], 1: [80.0], 2: [100.0]}), 100.0)  # Self-tuning.

  def test_algoperf_defect_min_over_dict_keys(self):
    trials = {1: 500.0, 2: 100.0}  # trial id -> seconds.
    self.assertEqual(min(trials), 1)  # AlgoPerf's min(all_timings): a trial id, not a time.
    self.assertEqual(scoring.workload_time({0: trials}), 100.0)
    with self.assertRaisesRegex(ValueError, "expected a mapping trial -> seconds"):
      scoring.workload_time(trials)  # A flat {trial: seconds} is rejected, not misread.

  def test_algoperf_defect_best_by_eval_index(self):
    # Trial 0 reaches the target at its 4th eval (200 s); trial 1 at its 1st (300 s).
    frequent = [_row(50, 0.5), _row(100, 0.6), _row(150, 0.9), _row(200, 0.98)]
    rare = [_row(300, 0.98)]
    times = [scoring.time_to_target(rows, "validation/accuracy", 0.97, "max", 600.0)[0]
             for rows in (frequent, rare)]
    self.assertEqual(times, [200.0, 300.0])
    first_index = [next(i for i, r in enumerate(rows) if r["validation/accuracy"] >= 0.97)
                   for rows in (frequent, rare)]
    self.assertEqual(int(np.argmin(first_index)), 1)  # By eval index: the slower trial.
    self.assertEqual(scoring.workload_time({0: times}), 200.0)


def _row(seconds, metric, column="validation/accuracy"):
  return {"global_step": int(seconds * 10), "accumulated_submission_time": seconds, column: metric}


class TimeToTargetTest(absltest.TestCase):

  def test_first_reaching_eval(self):
    rows = [_row(10, 0.5), _row(20, 0.97), _row(30, 0.99)]
    self.assertEqual(scoring.time_to_target(rows, "validation/accuracy", 0.97, "max", 100.0), (20.0, 200))

  def test_min_mode_budget_and_blanks(self):
    rows = [_row(10, "", "validation/loss"), _row(20, "nan", "validation/loss"),
            _row(30, 2.5, "validation/loss"), _row(40, 1.5, "validation/loss")]
    self.assertEqual(scoring.time_to_target(rows, "validation/loss", 2.0, "min", 100.0), (40.0, 400))
    self.assertEqual(scoring.time_to_target(rows, "validation/loss", 2.0, "min", 39.0), (INF, None))
    self.assertEqual(scoring.time_to_target([], "validation/loss", 2.0, "min", 39.0), (INF, None))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "target mode must be"):
      scoring.time_to_target([], "m", 1.0, "up", 1.0)
    with self.assertRaisesRegex(ValueError, "no 'accumulated_submission_time' column"):
      scoring.time_to_target([{"global_step": 1, "m": 1.0}], "m", 1.0, "max", 1.0)


# --- Fake experiment directories -------------------------------------------------

WORKLOADS = {  # name -> (target metric, target, mode, budget)
    "mnist": ("validation/accuracy", 0.97, "max", 600.0),
    "lm": ("validation/loss", 2.0, "min", 1000.0),
}


def _write_trial(root, submission, workload, study, trial, reach_at=None, *, status="complete",
                 rows=None, ruleset="external", meta=None):
  """A trial directory in the runner's layout; reaches the target at `reach_at` s."""
  metric, target, mode, budget = WORKLOADS[workload]
  hit, miss = (0.98, 0.5) if mode == "max" else (1.9, 5.0)
  if rows is None:
    times = [reach_at / 2, reach_at] if reach_at else [budget / 2, 0.9 * budget]
    values = [miss, hit] if reach_at else [miss, miss]
    rows = [{metric: v, "accumulated_submission_time": t, "global_step": int(10 * t)}
            for t, v in zip(times, values)]
  path = os.path.join(root, submission, workload, f"study_{study}", f"trial_{trial}")
  os.makedirs(path)
  columns = ["global_step", "accumulated_submission_time", "accumulated_eval_time",
             "accumulated_logging_time", "train/loss", metric]
  with open(os.path.join(path, "eval_measurements.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, columns, restval="", lineterminator="\n")
    writer.writeheader()
    for i, r in enumerate(rows):
      writer.writerow(dict(r, **{"accumulated_eval_time": 1.0 + i, "accumulated_logging_time": 0.1,
                                 "train/loss": 2.0 / (i + 1)}))
  steps = int(10 * reach_at) if reach_at else None
  record = dict(submission=submission, workload=workload, study=study, trial=trial,
                target_metric=metric, target_value=target, target_mode=mode,
                max_allowed_runtime_sec=budget, tuning_ruleset=ruleset, status=status,
                reached_target=reach_at is not None, time_to_target_sec=reach_at, steps_to_target=steps)
  record.update(meta or {})
  with open(os.path.join(path, "meta_data.json"), "w") as f:
    json.dump(record, f)


# study -> trial times to target (None: miss).
EXPERIMENT = {
    "nadamw": {"mnist": [[100, None], [120, 90], [None, None]],  # fastest 100, 90, inf -> 100
               "lm": [[400], [500], [450]]},  # -> 450
    "sfadam": {"mnist": [[50, 80], [60], [None]],  # fastest 50, 60, inf -> 60 (+ a running trial)
               "lm": [[None], [None], [900]]},  # fastest inf, inf, 900 -> inf
}
# Ratios: mnist nadamw 100/60 = 5/3, sfadam 1; lm nadamw 1, sfadam inf.
# Scores: nadamw ((4 - 5/3) + 3) / 6 = 8/9; sfadam (3 + 0) / 6 = 1/2.
# Speedup of sfadam over nadamw: sqrt(100/60 * 450/(1000 + 1)) = sqrt(750/1001).


def _write_experiment(root):
  for sub, by_w in EXPERIMENT.items():
    for w, studies in by_w.items():
      for study, trials in enumerate(studies):
        for trial, reach_at in enumerate(trials):
          _write_trial(root, sub, w, study, trial, reach_at)
  # Fast but unfinished: skipped, else sfadam's mnist median would become 50.
  _write_trial(root, "sfadam", "mnist", 2, 1, 10, status="running")


def setUpModule():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()  # pytest does not parse absl flags.


class ExperimentTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path

  def test_load_and_results(self):
    _write_experiment(self.root)
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      exp = scoring.load_experiment(self.root)
    self.assertIn("status 'running'", "\n".join(logs.output))
    self.assertLen(exp.skipped, 1)
    self.assertEqual((exp.submissions, exp.workloads, exp.ruleset), (["nadamw", "sfadam"], ["lm", "mnist"], "external"))
    results = scoring.workload_results(exp)
    got = {s: {w: (r.time, r.steps) for w, r in by_w.items()} for s, by_w in results.items()}
    self.assertEqual(got, {"nadamw": {"mnist": (100.0, 1000), "lm": (450.0, 4500)},
                           "sfadam": {"mnist": (60.0, 600), "lm": (INF, None)}})
    self.assertEqual((results["nadamw"]["mnist"].trial.study, results["nadamw"]["mnist"].trial.trial), (0, 0))
    self.assertEqual(results["nadamw"]["lm"].trial.study, 2)
    np.testing.assert_allclose(results["nadamw"]["lm"].trial.evals["validation/loss"], [5.0, 1.9])

  def test_best_trial_by_time_not_eval_index(self):
    frequent = [_row(t, v) for t, v in ((50, 0.5), (100, 0.6), (150, 0.9), (200, 0.98))]
    _write_trial(self.root, "x", "mnist", 0, 0, 200, rows=frequent)
    _write_trial(self.root, "x", "mnist", 0, 1, 300, rows=[_row(300, 0.98)])
    result = scoring.workload_results(scoring.load_experiment(self.root))["x"]["mnist"]
    self.assertEqual((result.time, result.steps, result.trial.trial), (200.0, 2000, 0))

  def test_csv_wins_over_meta(self):
    _write_trial(self.root, "x", "mnist", 0, 0, 100, meta={"time_to_target_sec": 90.0})
    with self.assertLogs(logger="absl", level="WARNING") as logs:
      exp = scoring.load_experiment(self.root)
    self.assertIn("using the CSV", "\n".join(logs.output))
    self.assertEqual(exp.trials["x"]["mnist"][0][0].time_to_target, 100.0)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "does not exist"):
      scoring.load_experiment(os.path.join(self.root, "nope"))
    with self.assertRaisesRegex(ValueError, "no trials under"):
      scoring.load_experiment(self.root)
    _write_trial(self.root, "x", "mnist", 0, 0, status="running")
    with self.assertRaisesRegex(ValueError, "no complete trials"):
      scoring.load_experiment(self.root)
    _write_trial(self.root, "y", "mnist", 0, 0, 100)
    _write_trial(self.root, "z", "mnist", 0, 0, 100, ruleset="self")
    with self.assertRaisesRegex(ValueError, r"mixed tuning rulesets.*'self': \['z'\]"):
      scoring.load_experiment(self.root)

  def test_self_tuning_one_trial_per_study(self):
    _write_trial(self.root, "z", "mnist", 0, 0, 100, ruleset="self")
    _write_trial(self.root, "z", "mnist", 0, 1, 100, ruleset="self")
    with self.assertRaisesRegex(ValueError, "z/mnist study 0: the self-tuning ruleset runs one trial"):
      scoring.load_experiment(self.root)


def _csv_path(root, submission="x", workload="mnist", study=0, trial=0):
  return os.path.join(root, submission, workload, f"study_{study}", f"trial_{trial}", "eval_measurements.csv")


def _rewrite(path, edit):
  with open(path, newline="") as f:
    text = f.read()
  with open(path, "w", newline="") as f:
    f.write(edit(text))


class CorruptEvalLogTest(parameterized.TestCase):
  """A cut or damaged eval log of a complete trial fails, naming the file; it never moves a score.

  The trial reaches mnist's 0.97 at its last eval (0.98 at 100 s); the
  metric is the last column, so a cut inside the last row can leave every
  cell present and a number that reads as a miss.
  """

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    _write_trial(self.root, "x", "mnist", 0, 0, 100)
    self.csv = _csv_path(self.root)

  def _assert_fails(self, edit, message):
    _rewrite(self.csv, edit)
    with self.assertRaisesRegex(ValueError, re.escape(self.csv) + ".*" + message):
      scoring.load_experiment(self.root)

  @parameterized.named_parameters(
      # 0.98 written as "0.9": every cell present, a miss when read.
      ("cut_inside_reaching_number", lambda t: t[:-2], r"ends inside a line.*'1000,100,2\.0,0\.1,1\.0,0\.9'"),
      ("cut_inside_last_row", lambda t: t[:t.rindex("\n", 0, -1) + 6], "ends inside a line"),
      ("cut_inside_header", lambda t: t[:25], "ends inside a line"),
      ("short_row_with_line_break", lambda t: t[:t.rindex("\n", 0, -1) + 6] + "\n",
       r"eval row 1 \(line 3\) has 2 cells, the header 6 columns"),
      ("extra_cells", lambda t: t[:-1] + ",7\n", "eval row 1 .* has 7 cells"),
      ("header_lacks_time_column", lambda t: t.replace("accumulated_submission_time", "accumulated_sub", 1),
       r"lacks \['accumulated_submission_time'\]"),
      ("repeated_column", lambda t: t.replace("train/loss", "global_step", 1), "blank or repeated column names"),
      ("unclosed_quote", lambda t: t[:-5] + '"0.98\n', "unreadable as CSV"),
      ("non_numeric_target_cell", lambda t: t[:-5] + "0.9x8\n", r"'0\.9x8' is not a number"),
      ("non_numeric_time_cell", lambda t: t.replace(",100,", ",1OO,", 1), r"'1OO' is not a number"),
  )
  def test_fails_naming_the_file(self, edit, message):
    self._assert_fails(edit, message)

  def test_not_utf8(self):
    with open(self.csv, "ab") as f:
      f.write(b"\xff\n")
    with self.assertRaisesRegex(ValueError, re.escape(self.csv) + " is truncated or corrupt: not UTF-8"):
      scoring.load_experiment(self.root)

  def test_cut_at_a_line_break_disagrees_with_meta(self):
    # Well formed, but the reaching row is gone: meta_data.json says reached.
    self._assert_fails(lambda t: t[:t.rindex("\n", 0, -1) + 1],
                       r"never reaches the target, but .*meta_data\.json says status 'complete', reached_target"
                       r" true \(time_to_target_sec 100, steps_to_target 1000\)")

  def test_reaching_log_with_a_missing_meta_disagrees_too(self):
    path = os.path.dirname(self.csv)
    with open(os.path.join(path, "meta_data.json")) as f:
      meta = json.load(f)
    with open(os.path.join(path, "meta_data.json"), "w") as f:
      json.dump(dict(meta, reached_target=False, time_to_target_sec=None, steps_to_target=None), f)
    with self.assertRaisesRegex(ValueError, re.escape(self.csv) + " reaches the target at 100.0, but .*"
                                "reached_target false"):
      scoring.load_experiment(self.root)

  @parameterized.named_parameters(("reached", 100), ("missed", None))
  def test_empty_log_of_a_complete_trial(self, reach_at):
    root = self.create_tempdir().full_path
    _write_trial(root, "x", "mnist", 0, 0, reach_at)
    open(_csv_path(root), "w").close()
    with self.assertRaisesRegex(ValueError, re.escape(_csv_path(root)) + " is empty but .*meta_data.json says the"
                                " trial is complete, reached_target " + ("true" if reach_at else "false")):
      scoring.load_experiment(root)

  def test_steps_measure_checks_its_own_key(self):
    # measure "steps": times are cost-adjusted steps, checked against cost_adjusted_steps_to_target.
    root = self.create_tempdir().full_path
    _write_trial(root, "x", "mnist", 0, 0, 100, meta=dict(measure="steps", time_column="cost_adjusted_steps",
                                                         budget=5000, cost_adjusted_steps_to_target=1000.0))
    _rewrite(_csv_path(root), lambda t: t.replace("accumulated_logging_time", "cost_adjusted_steps")
             .replace(",0.1,", ",500,", 1).replace(",0.1,", ",1000,", 1))
    self.assertEqual(scoring.load_experiment(root).trials["x"]["mnist"][0][0].time_to_target, 1000.0)
    _rewrite(_csv_path(root), lambda t: t[:t.rindex("\n", 0, -1) + 1])
    with self.assertRaisesRegex(ValueError, "never reaches the target.*reached_target true"
                                r" \(cost_adjusted_steps_to_target 1000\.0, steps_to_target 1000\)"):
      scoring.load_experiment(root)

  def test_intact_logs_still_score(self):
    # Blank lines and a CRLF file are whole; a blank metric (a diverged eval) is a miss, not damage.
    _rewrite(self.csv, lambda t: t.replace("\n", "\r\n") + "\r\n")
    self.assertEqual(scoring.load_experiment(self.root).trials["x"]["mnist"][0][0].time_to_target, 100.0)
    root = self.create_tempdir().full_path
    _write_trial(root, "x", "mnist", 0, 0, rows=[_row(50, ""), _row(100, 0.5)])
    self.assertEqual(scoring.load_experiment(root).trials["x"]["mnist"][0][0].time_to_target, INF)

  def test_score_fails_instead_of_scoring_zero(self):
    # adamw alone reaches the target (score 1); a cut last row used to score it 0 with rc 0.
    root = self.create_tempdir().full_path
    _write_trial(root, "adamw", "mnist", 0, 0, 100)
    _write_trial(root, "sgd", "mnist", 0, 0)
    self.assertEqual(score_lib.score(root, "", plots=False).scores["adamw"], 1.0)
    _rewrite(_csv_path(root, "adamw"), lambda t: t[:-3])
    with flagsaver.flagsaver(experiment_dir=root, baseline="adamw", output_dir=os.path.join(root, "out")):
      with self.assertRaisesRegex(app.UsageError, re.escape(_csv_path(root, "adamw")) + " is truncated or corrupt"):
        score_lib.main(["score"])
    self.assertFalse(os.path.exists(os.path.join(root, "out", "scores.md")))


class ScoreMainTest(absltest.TestCase):

  def test_end_to_end(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    out = io.StringIO()
    with flagsaver.flagsaver(experiment_dir=root, baseline="nadamw", output_dir=None), \
        contextlib.redirect_stdout(out):
      score_lib.main(["score"])
    scores_dir = os.path.join(root, "scores")
    speedup = math.sqrt(750 / 1001)
    self.assertIn("| submission | score | speedup vs nadamw | lm time (s) | lm steps | mnist time (s) | mnist steps |",
                  out.getvalue())
    with open(os.path.join(scores_dir, "scores.md")) as f:
      markdown = f.read()
    self.assertIn("| nadamw | 0.8889 | 1.000x | 450.0 | 4500 | 100.0 | 1000 |", markdown)
    self.assertIn(f"| sfadam | 0.5000 | {speedup:.3f}x | inf | - | 60.0 | 600 |", markdown)
    self.assertIn("status 'running'", markdown)
    # Reach per (submission, workload), over complete trials only (the running one is skipped).
    self.assertIn("| submission | lm | mnist |", markdown)
    self.assertIn("| nadamw | 3/3 studies, 3/3 trials | 2/3 studies, 3/6 trials |", markdown)
    self.assertIn("| sfadam | 1/3 studies, 1/3 trials | 2/3 studies, 3/4 trials |", markdown)
    with open(os.path.join(scores_dir, "scores.csv")) as f:
      rows = {r["submission"]: r for r in csv.DictReader(f)}
    self.assertAlmostEqual(float(rows["nadamw"]["score"]), 8 / 9, places=12)
    self.assertAlmostEqual(float(rows["sfadam"]["score"]), 1 / 2, places=12)
    self.assertAlmostEqual(float(rows["sfadam"]["speedup"]), speedup, places=12)
    self.assertEqual((rows["sfadam"]["lm/time_to_target_sec"], rows["sfadam"]["lm/steps_to_target"]), ("inf", ""))
    self.assertEqual(float(rows["sfadam"]["mnist/time_to_target_sec"]), 60.0)
    if importlib.util.find_spec("matplotlib") is None:
      self.skipTest("matplotlib is not installed: no plots to check")
    for name in ("performance_profile.png", "curves_mnist.png", "curves_lm.png"):
      path = os.path.join(scores_dir, name)
      self.assertTrue(os.path.exists(path), name)
      with open(path, "rb") as f:
        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", name)

  def test_unknown_baseline(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    with self.assertRaisesRegex(ValueError, "unknown baseline 'adam'; submissions in .*: nadamw, sfadam"):
      score_lib.score(root, "adam", plots=False)
    with flagsaver.flagsaver(experiment_dir=root, baseline="adam"):
      with self.assertRaisesRegex(Exception, "unknown baseline 'adam'"):
        score_lib.main(["score"])
    result = score_lib.score(root, "", plots=False)  # No baseline: no speedups.
    self.assertIsNone(result.speedups)
    self.assertNotIn("speedup", result.markdown)

  def test_default_baseline_missing_skips_speedups_with_a_note(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)  # Has nadamw: rename it away.
    os.rename(os.path.join(root, "nadamw"), os.path.join(root, "adamw"))
    with flagsaver.flagsaver(experiment_dir=root, output_dir=os.path.join(root, "out")):
      with self.assertLogs(level="WARNING") as logged:
        score_lib.main(["score"])  # The runner's suggested command: no error.
    self.assertIn("speedups skipped", "".join(logged.output))
    with open(os.path.join(root, "out", "scores.md")) as f:
      self.assertNotIn("speedup vs", f.read())


class ScoreIntervalsTest(absltest.TestCase):
  """The bootstrap intervals in `score`'s tables and plot (see scoring_intervals_test.py)."""

  def test_intervals_in_tables_and_plot(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    out = os.path.join(root, "out")
    result = score_lib.score(root, "nadamw", out)
    markdown = result.markdown
    self.assertIn("## 95% confidence intervals", markdown)
    self.assertNotIn('"n/a (1 study)"', markdown)  # Every time has 3 studies: no note.
    self.assertIn("2000 replicates, seed 0", markdown)
    self.assertIn("| submission | score | score 95% CI | speedup 95% CI | lm time 95% CI (s) | mnist time 95% CI (s) |",
                  markdown)
    # Medians of 3 resampled studies: each end value has probability 7/27, so the
    # 95% interval runs from the fastest to the slowest study (a miss: inf).
    self.assertRegex(markdown, r"\| nadamw \| 0\.8889 \| \[0\.\d{4}, 1\.0000\] \| n/a \(baseline\) \|"
                               r" \[400\.0, 500\.0\] \| \[90\.0, inf\] \|")
    self.assertRegex(markdown, r"\| sfadam \| 0\.5000 \| \[0\.\d{4}, 0\.5000\] \| \[[\d.]+, [\d.]+\] \|"
                               r" \[900\.0, inf\] \| \[50\.0, inf\] \|")
    self.assertRegex(markdown, r"\| nadamw \| sfadam \| \+0\.3889 \| \[-?0\.\d{4}, 0\.\d{4}\] \|"
                               r" [\d.]+% of replicates \| no \|")
    self.assertIn("Not distinguishable at 95%: nadamw vs sfadam.", markdown)
    with open(os.path.join(out, "scores.md")) as f:
      self.assertEqual(f.read(), markdown)
    self.assertEqual(score_lib.score(root, "nadamw", out, plots=False).markdown, markdown)  # Same seed.

    with open(os.path.join(out, "scores.csv")) as f:
      rows = {r["submission"]: r for r in csv.DictReader(f)}
    nadamw, sfadam = rows["nadamw"], rows["sfadam"]
    self.assertEqual((nadamw["lm/time_ci_low_sec"], nadamw["lm/time_ci_high_sec"], nadamw["lm/time_ci_basis"]),
                     ("400.0", "500.0", "3 studies"))
    self.assertEqual((sfadam["mnist/time_ci_low_sec"], sfadam["mnist/time_ci_high_sec"]), ("50.0", "inf"))
    self.assertEqual((nadamw["speedup_ci_low"], nadamw["speedup_ci_basis"]), ("", "n/a (baseline)"))
    self.assertLessEqual(float(sfadam["score_ci_low"]), 0.5)
    self.assertEqual(float(sfadam["ci_confidence"]), 0.95)
    with open(os.path.join(out, "score_differences.csv")) as f:
      (pair,) = list(csv.DictReader(f))
    self.assertEqual((pair["first"], pair["second"], pair["distinguishable"]), ("nadamw", "sfadam", "no"))
    self.assertAlmostEqual(float(pair["score_difference"]), 8 / 9 - 1 / 2, places=12)
    self.assertIsNotNone(result.intervals)
    if importlib.util.find_spec("matplotlib") is None:
      self.skipTest("matplotlib is not installed: no plots to check")
    path = os.path.join(out, "performance_profile.png")
    self.assertIn(path, result.files)
    with open(path, "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  def test_single_study_reported_as_degenerate(self):
    root = self.create_tempdir().full_path
    for sub, reach_at in (("nadamw", 100), ("sfadam", 80)):
      _write_trial(root, sub, "mnist", 0, 0, reach_at)
      _write_trial(root, sub, "mnist", 0, 1, reach_at + 50)
    result = score_lib.score(root, "nadamw", plots=False)
    self.assertIn("| sfadam | 1.0000 | n/a (1 study) | n/a (1 study) | n/a (1 study) |", result.markdown)
    self.assertIn("| sfadam | nadamw | +0.0833 | n/a (1 study) | n/a | n/a |", result.markdown)
    self.assertIn("Whether any pair is distinguishable cannot be told: every time comes from a single study",
                  result.markdown)
    self.assertIn('"n/a (1 study)": a single study leaves nothing to resample', result.markdown)
    resampled = score_lib.score(root, "nadamw", plots=False, resample_trials=True)
    self.assertIn("| sfadam | 1.0000 | [", resampled.markdown)
    self.assertIn("Times are resampled from 2 trials of 1 study", resampled.markdown)

  def test_flags_and_no_intervals(self):
    root = self.create_tempdir().full_path
    _write_experiment(root)
    out = io.StringIO()
    with flagsaver.flagsaver(experiment_dir=root, baseline="nadamw", confidence=0.9, bootstrap_samples=500,
                             bootstrap_seed=7), contextlib.redirect_stdout(out):
      score_lib.main(["score"])
    self.assertIn("## 90% confidence intervals", out.getvalue())
    self.assertIn("500 replicates, seed 7", out.getvalue())
    result = score_lib.score(root, "nadamw", os.path.join(root, "none"), plots=False, bootstrap_samples=0)
    self.assertIsNone(result.intervals)
    self.assertNotIn("confidence intervals", result.markdown)
    self.assertFalse(os.path.exists(os.path.join(root, "none", "score_differences.csv")))
    with open(os.path.join(root, "none", "scores.csv")) as f:
      self.assertNotIn("ci_", f.readline())
    with self.assertRaisesRegex(ValueError, "bootstrap_samples must be a non-negative integer"):
      score_lib.score(root, "nadamw", plots=False, bootstrap_samples=-1)
    with flagsaver.flagsaver(experiment_dir=root, baseline="nadamw", confidence=1.5):
      with self.assertRaisesRegex(Exception, "confidence must lie strictly between 0 and 1"):
        score_lib.main(["score"])


if __name__ == "__main__":
  absltest.main()
