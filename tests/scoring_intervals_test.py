"""Bootstrap intervals of `scoring.bootstrap_intervals` on hand-made trial tables.

The tables are {submission: {workload: {study: {trial: seconds}}}}. Known
answers come from the resampled median of 3 studies: with sorted fastest times
v1 < v2 < v3, the median of 3 draws with replacement is v1 with probability
7/27 (at least two draws of v1), v3 with 7/27 and v2 with 13/27, so every 95%
interval of such a time is exactly [v1, v3].
"""

import math
import time

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from experiments import scoring

INF = math.inf


def _studies(*fastest):
  """{study: {0: seconds}}: one trial per study (its fastest)."""
  return {k: {0: t} for k, t in enumerate(fastest)}


# A is faster on the point estimate (median 200 vs 250), but the resampled
# medians overlap: B is ahead when its median is below A's, with probability
# (7/27)(20/27) + (13/27)(7/27) = 231/729.
OVERLAPPING = {"A": {"w": _studies(100.0, 200.0, 300.0)}, "B": {"w": _studies(150.0, 250.0, 350.0)}}
B_AHEAD = 231 / 729

# B is over 4x slower than A in every replicate on both workloads: A scores 1, B 0.
FAR_APART = {
    "A": {"w1": _studies(90.0, 100.0, 110.0), "w2": _studies(9.0, 10.0, 11.0)},
    "B": {"w1": _studies(900.0, 1000.0, 1100.0), "w2": _studies(90.0, 100.0, 100.0)},
}

# scoring_test.py's hand-computed times (scores 5/9, 8/9, 2/9).
TIMES = {
    "A": {"w1": 100.0, "w2": 300.0, "w3": INF},
    "B": {"w1": 200.0, "w2": 150.0, "w3": 500.0},
    "C": {"w1": 500.0, "w2": 600.0, "w3": 1000.0},
}


class IntervalTest(parameterized.TestCase):

  def test_identical_studies_give_a_zero_width_interval_not_a_degenerate_one(self):
    table = {"A": {"w": _studies(100.0, 100.0, 100.0)}, "B": {"w": _studies(200.0, 200.0, 200.0)}}
    result = scoring.bootstrap_intervals(table, num_samples=200)
    a = result.times["A"]["w"]
    self.assertEqual((a.estimate, a.low, a.high, a.basis, a.degenerate), (100.0, 100.0, 100.0, "3 studies", False))
    self.assertEqual(a.format(), "[100.0, 100.0]")  # Estimated, so reported as such.
    # B's ratio is 2 in every replicate: score (4 - 2)/3.
    self.assertEqual((result.scores["B"].low, result.scores["B"].high), (2 / 3, 2 / 3))
    (diff,) = result.differences
    self.assertEqual((diff.first, diff.second, diff.first_ahead, diff.distinguishable), ("A", "B", 1.0, True))
    self.assertAlmostEqual(diff.interval.low, 1 / 3, places=12)

  def test_known_median_intervals_and_overlap(self):
    result = scoring.bootstrap_intervals(OVERLAPPING)
    self.assertEqual(result.times["A"]["w"].format(), "[100.0, 300.0]")
    self.assertEqual(result.times["B"]["w"].format(), "[150.0, 350.0]")
    (diff,) = result.differences
    self.assertEqual((diff.first, diff.second), ("A", "B"))
    self.assertAlmostEqual(diff.interval.estimate, 1.0 - (4 - 250 / 200) / 3, places=12)
    self.assertLess(diff.interval.low, 0.0)
    self.assertGreater(diff.interval.high, 0.0)
    self.assertIs(diff.distinguishable, False)
    self.assertEqual(result.indistinguishable(), [diff])
    # 2000 replicates: the share's standard error is about 0.01.
    self.assertAlmostEqual(diff.first_ahead, 1 - B_AHEAD, delta=0.05)

  def test_far_apart_is_distinguishable(self):
    result = scoring.bootstrap_intervals(FAR_APART)
    self.assertEqual({s: (iv.low, iv.high) for s, iv in result.scores.items()}, {"A": (1.0, 1.0), "B": (0.0, 0.0)})
    (diff,) = result.differences
    self.assertEqual((diff.distinguishable, diff.first_ahead), (True, 1.0))
    self.assertEqual(result.indistinguishable(), [])
    band = scoring.profile_intervals(result, [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(band["A"][0], [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(band["B"][1], [0.0, 0.0, 0.0])

  def test_misses_give_inf_bounds_never_nan(self):
    table = {
        "A": {"w1": _studies(100.0, INF, INF), "w2": _studies(INF, INF, INF)},
        "B": {"w1": _studies(300.0, 200.0, 250.0), "w2": _studies(INF, INF, INF)},
    }
    result = scoring.bootstrap_intervals(table, baseline="B", budgets={"w1": 1000.0, "w2": 1000.0})
    a1, a2 = result.times["A"]["w1"], result.times["A"]["w2"]
    self.assertEqual((a1.estimate, a1.low, a1.high), (INF, 100.0, INF))  # Median 100 with prob. 7/27.
    self.assertEqual(a1.format(), "[100.0, inf]")
    self.assertEqual((a2.low, a2.high, a2.degenerate, a2.format()), (INF, INF, False, "[inf, inf]"))
    values = [x for iv in [*result.scores.values(), *result.speedups.values(), a1, a2]
              for x in (iv.estimate, iv.low, iv.high)]
    values += [x for d in result.differences for x in (d.interval.low, d.interval.high)]
    self.assertFalse(any(math.isnan(x) for x in values), values)
    self.assertFalse(np.isnan(result.replicate_times).any())
    # w2, missed by all, scores 0 for everyone: B's score is at most 1/2.
    self.assertEqual(result.scores["B"].high, 0.5)

  def test_percentile_bounds_are_outward_order_statistics(self):
    samples = np.arange(2000.0)[:, None]
    low, high = scoring._percentile_bounds(samples, 0.95)
    self.assertEqual((low[0], high[0]), (49.0, 1950.0))  # 1902 of 2000 replicates inside.
    low, high = scoring._percentile_bounds(np.array([[1.0], [2.0], [INF], [INF]]), 0.5)
    self.assertEqual((low[0], high[0]), (1.0, INF))

  def test_reproducible_with_the_seed(self):
    first = scoring.bootstrap_intervals(OVERLAPPING, seed=3)
    again = scoring.bootstrap_intervals(OVERLAPPING, seed=3)
    self.assertEqual(first, again)
    np.testing.assert_array_equal(first.replicate_times, again.replicate_times)
    other = scoring.bootstrap_intervals(OVERLAPPING, seed=4)
    self.assertFalse(np.array_equal(first.replicate_times, other.replicate_times))
    # A submission's resamples do not depend on which other submissions are scored.
    more = scoring.bootstrap_intervals(dict(OVERLAPPING, C={"w": _studies(1.0, 2.0)}), seed=3)
    np.testing.assert_array_equal(more.replicate_times[:, :2], first.replicate_times)

  def test_single_study_is_degenerate(self):
    table = {"A": {"w": {0: {0: 100.0, 1: 200.0}}}, "B": {"w": {0: {0: 150.0}}}}
    result = scoring.bootstrap_intervals(table)
    for s in "AB":
      self.assertEqual(result.times[s]["w"].format(), "n/a (1 study)")
    self.assertEqual(result.times["A"]["w"].estimate, 100.0)
    self.assertTrue(result.scores["A"].degenerate)
    self.assertEqual(result.scores["A"].format(".4f"), "n/a (1 study)")
    self.assertIsNone(result.differences[0].distinguishable)
    self.assertEqual(result.indistinguishable(), [])

  def test_resample_trials_of_a_single_study(self):
    table = {"A": {"w": {0: {0: 100.0, 1: 200.0}}}, "B": {"w": {0: {0: 150.0}}}}
    result = scoring.bootstrap_intervals(table, resample_trials=True)
    a = result.times["A"]["w"]
    # min of two draws from {100, 200}: 200 with probability 1/4. Never below the observed 100.
    self.assertEqual((a.low, a.high, a.basis, a.degenerate), (100.0, 200.0, "2 trials of 1 study", False))
    self.assertEqual(result.times["B"]["w"].format(), "n/a (1 study, 1 trial)")  # Self-tuning-like.
    self.assertEqual(result.scores["A"].basis, "1/2 times resampled")

  def test_mixed_study_counts_and_missing_cells(self):
    table = {"A": {"w1": _studies(100.0, 200.0, 300.0), "w2": _studies(50.0)}, "B": {"w1": _studies(150.0)}}
    result = scoring.bootstrap_intervals(table, num_samples=100)
    self.assertEqual(result.times["A"]["w2"].format(), "n/a (1 study)")
    b2 = result.times["B"]["w2"]
    self.assertEqual((b2.estimate, b2.format()), (INF, "n/a (no trials)"))
    self.assertEqual(result.scores["B"].basis, "1/4 times resampled")
    self.assertFalse(result.scores["B"].degenerate)

  def test_paired_studies_share_one_draw_across_workloads(self):
    table = {"A": {"w1": _studies(100.0, 200.0, 300.0), "w2": _studies(10.0, 20.0, 30.0)}}
    paired = scoring.bootstrap_intervals(table, num_samples=500).replicate_times[:, 0]
    np.testing.assert_array_equal(paired[:, 0], 10 * paired[:, 1])
    unpaired = scoring.bootstrap_intervals(table, num_samples=500, paired=False).replicate_times[:, 0]
    self.assertFalse(np.array_equal(unpaired[:, 0], 10 * unpaired[:, 1]))
    # Different study labels per workload: resampled independently, no error.
    table["A"]["w2"] = {5: {0: 10.0}, 6: {0: 20.0}, 7: {0: 30.0}}
    scoring.bootstrap_intervals(table, num_samples=10)

  @parameterized.parameters("exact", "algoperf_grid")
  def test_estimates_and_replicates_agree_with_the_point_scorer(self, integration):
    # Two identical studies per cell: every replicate is the data itself.
    table = {s: {w: _studies(t, t) for w, t in by_w.items()} for s, by_w in TIMES.items()}
    budgets = {"w1": 1000.0, "w2": 1000.0, "w3": 2000.0}
    result = scoring.bootstrap_intervals(table, num_samples=50, integration=integration, baseline="C", budgets=budgets)
    scores = scoring.benchmark_scores(TIMES, integration)
    speedups = scoring.speedups(TIMES, "C", budgets)
    for s in TIMES:
      self.assertEqual({w: iv.estimate for w, iv in result.times[s].items()}, TIMES[s])
      self.assertEqual(result.scores[s].estimate, scores[s])
      self.assertAlmostEqual(result.scores[s].low, scores[s], places=12)
      self.assertAlmostEqual(result.scores[s].high, scores[s], places=12)
      self.assertAlmostEqual(result.speedups[s].low, speedups[s], places=12)
    self.assertEqual(result.speedups["C"].format(), "n/a (baseline)")
    self.assertEqual([(d.first, d.second) for d in result.differences], [("B", "A"), ("B", "C"), ("A", "C")])

  def test_fast(self):
    rng = np.random.default_rng(0)
    table = {f"s{i}": {f"w{j}": {k: dict(enumerate(rng.uniform(100, 400, 5))) for k in range(5)}
                       for j in range(8)} for i in range(4)}
    start = time.perf_counter()
    result = scoring.bootstrap_intervals(table, baseline="s0", budgets={f"w{j}": 1000.0 for j in range(8)})
    scoring.profile_intervals(result, np.linspace(1, 4, 301))
    self.assertLess(time.perf_counter() - start, 2.0)  # About 0.1 s on one core.

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "num_samples must be a positive integer, got 0"):
      scoring.bootstrap_intervals(OVERLAPPING, num_samples=0)
    with self.assertRaisesRegex(ValueError, "num_samples must be a positive integer, got True"):
      scoring.bootstrap_intervals(OVERLAPPING, num_samples=True)
    with self.assertRaisesRegex(ValueError, "confidence must lie strictly between 0 and 1"):
      scoring.bootstrap_intervals(OVERLAPPING, confidence=95)
    with self.assertRaisesRegex(ValueError, "seed must be a non-negative integer"):
      scoring.bootstrap_intervals(OVERLAPPING, seed=-1)
    with self.assertRaisesRegex(ValueError, "integration must be one of"):
      scoring.bootstrap_intervals(OVERLAPPING, integration="simpson")
    with self.assertRaisesRegex(ValueError, r"unknown baseline 'C'; submissions are \['A', 'B'\]"):
      scoring.bootstrap_intervals(OVERLAPPING, baseline="C", budgets={"w": 1.0})
    with self.assertRaisesRegex(ValueError, r"finite positive budget for workload\(s\) \['w'\]"):
      scoring.bootstrap_intervals(OVERLAPPING, baseline="A", budgets={"w": INF})
    with self.assertRaisesRegex(ValueError, "no submissions"):
      scoring.bootstrap_intervals({})
    with self.assertRaisesRegex(ValueError, "submission 'A': expected"):
      scoring.bootstrap_intervals({"A": [1.0]})
    with self.assertRaisesRegex(ValueError, "A/w: expected {study: {trial: seconds}}"):
      scoring.bootstrap_intervals({"A": {"w": [1.0]}})
    with self.assertRaisesRegex(ValueError, "positive seconds or inf"):
      scoring.bootstrap_intervals({"A": {"w": {0: {0: math.nan}}}})
    with self.assertRaisesRegex(ValueError, "taus must be a non-empty 1-D array"):
      scoring.profile_intervals(scoring.bootstrap_intervals(OVERLAPPING, num_samples=5), [])


class BootstrapMeanTest(absltest.TestCase):
  """`scoring.bootstrap_mean`: the interval of a mean over seeds."""

  def test_two_values_cover_their_range_exactly(self):
    # Resampling (a, b) gives means a, (a+b)/2, b with probabilities 1/4, 1/2, 1/4:
    # a 95% percentile interval is exactly [a, b].
    interval = scoring.bootstrap_mean([1.0, 3.0], num_samples=4000)
    self.assertEqual((interval.estimate, interval.low, interval.high), (2.0, 1.0, 3.0))
    self.assertEqual(interval.basis, "2 values")

  def test_narrower_with_lower_confidence_and_reproducible(self):
    values = [4.0, 5.0, 5.5, 6.0, 9.0]
    wide = scoring.bootstrap_mean(values, confidence=0.95, seed=3)
    narrow = scoring.bootstrap_mean(values, confidence=0.5, seed=3)
    self.assertLessEqual(wide.low, narrow.low)
    self.assertGreaterEqual(wide.high, narrow.high)
    self.assertLess(wide.low, np.mean(values))
    self.assertGreater(wide.high, np.mean(values))
    self.assertEqual(wide, scoring.bootstrap_mean(values, confidence=0.95, seed=3))

  def test_one_value_is_degenerate(self):
    interval = scoring.bootstrap_mean([2.5])
    self.assertTrue(interval.degenerate)
    self.assertEqual(interval.format(), "n/a (1 value)")

  def test_bad_input(self):
    for values, message in (([], "at least one"), ([1.0, INF], "finite"), ([1.0, "x"], "not a number")):
      with self.assertRaisesRegex(ValueError, message):
        scoring.bootstrap_mean(values)
    with self.assertRaisesRegex(ValueError, "confidence"):
      scoring.bootstrap_mean([1.0, 2.0], confidence=1.0)


if __name__ == "__main__":
  absltest.main()
