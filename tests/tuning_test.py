"""Search spaces and Halton trial points: known values, ranges, errors."""

from tests import test_util  # Sets up simulated CPU devices first.

import json
import math
import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from experiments import tuning

SPACE = {
    "learning_rate": {"min": 1e-4, "max": 1e-1, "scaling": "log"},
    "b1": {"min": 0.8, "max": 0.99, "scaling": "linear"},
    "warmup": {"feasible_points": [0.02, 0.05, 0.1]},
}


class HaltonTest(parameterized.TestCase):

  def test_known_values(self):
    points = tuning.halton(9, 3)
    np.testing.assert_allclose(points[:, 0], [0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8, 1/16], atol=1e-15)
    np.testing.assert_allclose(points[:, 1], [0, 1/3, 2/3, 1/9, 4/9, 7/9, 2/9, 5/9, 8/9], atol=1e-15)
    np.testing.assert_allclose(points[:, 2], [0, 1/5, 2/5, 3/5, 4/5, 1/25, 6/25, 11/25, 16/25], atol=1e-15)

  def test_shift_is_deterministic_and_in_range(self):
    a, b = tuning.halton(64, 4, seed=7), tuning.halton(64, 4, seed=7)
    np.testing.assert_array_equal(a, b)
    self.assertTrue(np.all((a >= 0) & (a < 1)))
    self.assertFalse(np.allclose(a, tuning.halton(64, 4, seed=8)))
    # A shift modulo 1 moves every point by the same offset.
    diff = np.mod(a - tuning.halton(64, 4), 1.0)
    np.testing.assert_allclose(diff, np.broadcast_to(diff[0], diff.shape), atol=1e-12)

  @parameterized.parameters((-1, 2), (3, 0), (2.5, 1))
  def test_bad_sizes(self, n, dim):
    with self.assertRaises(ValueError):
      tuning.halton(n, dim)


class SamplePointsTest(parameterized.TestCase):

  def test_unshifted_mapping(self):
    # Sorted dims: b1 (base 2), learning_rate (base 3), warmup (base 5).
    p = tuning.sample_points(SPACE, 3, seed=None)
    self.assertEqual(p[0], {"b1": 0.8, "learning_rate": 1e-4, "warmup": 0.02})
    self.assertAlmostEqual(p[1]["b1"], 0.8 + 0.19 / 2)
    self.assertAlmostEqual(p[1]["learning_rate"], 1e-3)  # 1/3 of the way in log space.
    self.assertEqual(p[1]["warmup"], 0.02)  # floor(1/5 * 3) = 0.
    self.assertAlmostEqual(p[2]["learning_rate"], 1e-2)
    self.assertEqual(p[2]["warmup"], 0.05)  # floor(2/5 * 3) = 1.

  def test_ranges(self):
    points = tuning.sample_points(SPACE, 200, seed=3)
    lr = np.array([p["learning_rate"] for p in points])
    b1 = np.array([p["b1"] for p in points])
    self.assertTrue(np.all((lr >= 1e-4) & (lr <= 1e-1)))
    self.assertTrue(np.all((b1 >= 0.8) & (b1 <= 0.99)))
    self.assertEqual({p["warmup"] for p in points}, {0.02, 0.05, 0.1})
    # Log scaling: about half the points below the geometric midpoint.
    self.assertAlmostEqual(np.mean(lr < math.sqrt(1e-4 * 1e-1)), 0.5, delta=0.05)

  def test_trial_points_reproducible_and_differ_by_study(self):
    a = tuning.trial_points(SPACE, 5, study=0, rng_seed=1)
    self.assertEqual(a, tuning.trial_points(SPACE, 5, study=0, rng_seed=1))
    self.assertNotEqual(a, tuning.trial_points(SPACE, 5, study=1, rng_seed=1))
    self.assertNotEqual(a, tuning.trial_points(SPACE, 5, study=0, rng_seed=2))
    self.assertLen({p["learning_rate"] for p in a}, 5)

  def test_list_form(self):
    points = [{"learning_rate": 1e-3, "b1": 0.9}, {"learning_rate": 3e-3, "b1": 0.95}]
    self.assertEqual(tuning.trial_points(points, 2, study=0, rng_seed=0), points)
    self.assertEqual(tuning.trial_points(points, 1, study=4, rng_seed=9), points[:1])
    # Fewer points than trials: truncated with a warning, as AlgoPerf does.
    with self.assertLogs(level="WARNING") as logged:
      self.assertEqual(tuning.sample_points(points, 3, seed=0), points)
    self.assertIn("lists only 2 points", "".join(logged.output))

  def test_load_from_file(self):
    with tempfile.TemporaryDirectory() as tmp:
      path = os.path.join(tmp, "space.json")
      with open(path, "w") as f:
        json.dump(SPACE, f)
      space = tuning.load_search_space(path)
      self.assertEqual(list(space.dims), ["b1", "learning_rate", "warmup"])
      self.assertEqual(space.dims["learning_rate"], tuning.Range(1e-4, 1e-1, "log"))
      with open(path, "w") as f:
        f.write("{not json")
      with self.assertRaisesRegex(ValueError, "not valid JSON"):
        tuning.load_search_space(path)
      with self.assertRaisesRegex(ValueError, "does not exist"):
        tuning.load_search_space(os.path.join(tmp, "missing.json"))

  @parameterized.named_parameters(
      ("unknown_key", {"lr": {"min": 0.1, "max": 1.0, "scaling": "log", "step": 2}}, r'"lr": unknown key'),
      ("min_ge_max", {"lr": {"min": 1.0, "max": 1.0, "scaling": "linear"}}, r'"lr": "min" \(1.0\) must be less'),
      ("log_nonpositive", {"lr": {"min": 0.0, "max": 1.0, "scaling": "log"}}, r'"lr": log scaling needs "min" > 0'),
      ("bad_scaling", {"lr": {"min": 0.1, "max": 1.0, "scaling": "exp"}}, r'"lr": "scaling" must be'),
      ("missing_key", {"lr": {"min": 0.1, "max": 1.0}}, r'"lr": missing key'),
      ("string_bound", {"lr": {"min": "0.1", "max": 1.0, "scaling": "log"}}, r'"lr": "min" must be a finite number'),
      ("bool_bound", {"lr": {"min": 0, "max": True, "scaling": "linear"}}, r'"lr": "max" must be a finite number'),
      ("empty_feasible", {"wd": {"feasible_points": []}}, r'"wd": "feasible_points" is empty'),
      ("feasible_not_list", {"wd": {"feasible_points": 0.1}}, r'"wd": "feasible_points" must be a list'),
      ("feasible_mixed", {"wd": {"feasible_points": [1], "min": 0}}, r'"wd": "feasible_points" cannot be combined'),
      ("spec_not_object", {"wd": 0.1}, r'"wd": expected an object'),
      ("empty_space", {}, "search space is empty"),
      ("empty_list", [], "list of points is empty"),
      ("point_not_object", [{"lr": 1}, 3], "point 1: expected an object"),
      ("points_differ", [{"lr": 1}, {"lr": 2, "wd": 0}], r"point 1: has hyperparameters \['lr', 'wd'\]"),
      ("not_a_space", 3.0, "must be an object of hyperparameters or a list"),
  )
  def test_bad_input(self, space, message):
    with self.assertRaisesRegex(ValueError, message):
      tuning.load_search_space(space)

  @parameterized.parameters((-1, 0), (0, -2))
  def test_bad_seeds(self, study, rng_seed):
    with self.assertRaisesRegex(ValueError, "non-negative"):
      tuning.trial_points(SPACE, 2, study, rng_seed)


if __name__ == "__main__":
  absltest.main()
