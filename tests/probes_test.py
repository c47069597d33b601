"""Step-size probes: power iteration, LR range test, max-LR bisection, runner and trainer wiring."""

from tests import test_util  # Device set-up first.

import csv
import json
import math
import os

from absl import app
from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
from jax.flatten_util import ravel_pytree
import jax.numpy as jnp
import numpy as np
import optax

from experiments import logs
from experiments import probes
from experiments import run
from experiments import submission as submission_lib
from experiments import trainer
from experiments.workloads import _common
from experiments.workloads import base

FLAGS = flags.FLAGS


class Blobs(base.Workload):
  """Three Gaussian blobs in 4-D and a one-hidden-layer tanh MLP (67 parameters).

  Its own fake clock: `now` advances 1 s per training batch drawn, nothing else.
  """

  name = "blobs"
  loss_type = "softmax_cross_entropy"
  default_batch_size = 32

  def __init__(self, fail_at_step=None, target=0.0):
    self.fail_at_step, self.now = fail_at_step, 0.0
    self.targets = base.Targets(
        metric="loss", mode="min", validation=target, test=target, max_allowed_runtime_sec=1e6,
        eval_period_time_sec=5.0, step_hint=40, how_set="fixed for tests")
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 2, (3, 4))
    self.y = np.repeat(np.arange(3), 40).astype(np.int32)
    self.x = (centres[self.y] + rng.normal(0, 1, (120, 4))).astype(np.float32)
    self.model = nn.Sequential([nn.Dense(8), nn.tanh, nn.Dense(3)])

  def train_batch(self, seed, step, batch_size):
    if self.fail_at_step is not None and step == self.fail_at_step:
      raise KeyboardInterrupt(f"simulated kill at step {step}")
    self.now += 1.0
    idx = _common.epoch_indices(seed, step, batch_size, len(self.y))
    return {"inputs": self.x[idx], "targets": self.y[idx]}

  def eval_batches(self, split, batch_size):
    yield from _common.padded_batches({"inputs": self.x, "targets": self.y}, batch_size)

  def init_model_fn(self, rng):
    return self.model.init(rng, self.x[:1])["params"], None

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm):
    return self.model.apply({"params": params}, batch["inputs"]), model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    return _common.softmax_cross_entropy(label_batch, logits_batch, mask_batch, label_smoothing)

  def eval_model(self, params, model_state, rng, split):
    logits, _ = self.model_fn(params, {"inputs": self.x}, model_state, "eval", rng, False)
    loss = self.loss_fn(self.y, logits)
    return {"loss": float(loss["summed"] / loss["n_valid_examples"]),
            "accuracy": float(jnp.mean(jnp.argmax(logits, -1) == self.y))}


def _rotation(n, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
  return q


def _quadratic(eigenvalues):
  """loss(params, a) = x^T a x / 2 over tree params x = (3-vector, 2x2 matrix)."""
  q = _rotation(len(eigenvalues))
  matrix = jnp.asarray(q @ np.diag(eigenvalues) @ q.T, jnp.float32)

  def loss(params, a):
    x = jnp.concatenate([params["a"], params["b"]["c"].ravel()]).astype(jnp.float32)
    return 0.5 * x @ a @ x

  return loss, {"a": jnp.ones(3), "b": {"c": jnp.ones((2, 2))}}, matrix


class PowerIterationTest(absltest.TestCase):

  def test_recovers_the_top_eigenvalue_of_a_quadratic_over_a_tree(self):
    loss, params, matrix = _quadratic([5.0, 3.0, 1.0, 0.5, -1.0, 0.1, 2.0])
    result = probes.top_hessian_eigenvalue(loss, params, matrix, num_iterations=100, tol=1e-7,
                                           rng=jax.random.key(1))
    self.assertAlmostEqual(result.lambda_1, 5.0, delta=5e-5)
    self.assertTrue(result.converged)
    self.assertLen(result.estimates, result.num_iterations)
    self.assertEqual(result.shift, 0.0)
    # The default tolerance stops early, close to the value.
    quick = probes.top_hessian_eigenvalue(loss, params, matrix)
    self.assertLess(quick.num_iterations, 20)
    self.assertAlmostEqual(quick.lambda_1, 5.0, delta=0.05)

  def test_a_negative_dominant_eigenvalue_is_shifted_away(self):
    loss, params, matrix = _quadratic([-6.0, 2.0, 1.0, 0.5, -1.0, 0.1, 1.5])
    result = probes.top_hessian_eigenvalue(loss, params, matrix, num_iterations=400, tol=1e-8)
    self.assertAlmostEqual(result.shift, -6.0, delta=1e-4)
    self.assertAlmostEqual(result.lambda_1, 2.0, delta=1e-3)

  def test_bfloat16_params_keep_their_dtype(self):
    loss, params, matrix = _quadratic([4.0, 1.0, 0.5, 0.2, 0.1, 0.0, -0.5])
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    result = probes.top_hessian_eigenvalue(loss, params, matrix, num_iterations=60, tol=1e-4)
    self.assertAlmostEqual(result.lambda_1, 4.0, delta=0.1)

  def test_matches_the_dense_hessian_of_a_small_mlp(self):
    workload = Blobs()
    params, _ = workload.init_model_fn(jax.random.key(0))
    batch = workload.train_batch(0, 0, 32)
    data = (batch, None, jax.random.key(0))
    loss = probes.hessian_loss(workload)
    flat, unravel = ravel_pytree(params)
    hessian = jax.jit(jax.hessian(lambda v: loss(unravel(v), data)))(flat)
    expected = np.linalg.eigvalsh(np.asarray(hessian, np.float64))[-1]
    result = probes.top_hessian_eigenvalue(loss, params, data, num_iterations=300, tol=1e-7)
    self.assertAlmostEqual(result.lambda_1, expected, delta=2e-3 * abs(expected))

  def test_bad_arguments_fail_clearly(self):
    loss, params, matrix = _quadratic([1.0] * 7)
    with self.assertRaisesRegex(ValueError, "num_iterations"):
      probes.top_hessian_eigenvalue(loss, params, matrix, num_iterations=0)
    with self.assertRaisesRegex(ValueError, "tol"):
      probes.top_hessian_eigenvalue(loss, params, matrix, tol=-1.0)


class LrRangeTest(absltest.TestCase):

  def test_rates_are_exactly_exponential_and_applied(self):
    result = probes.lr_range_test(Blobs(), "adamw", min_lr=1e-4, max_lr=1e-1, num_steps=30,
                                  progress=lambda m: None)
    self.assertEqual(result.stop_reason, "completed")
    expected = 1e-4 * 1e3 ** (np.arange(30) / 29)
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-12)
    np.testing.assert_allclose(np.diff(np.log(result.lrs)), math.log(1e3) / 29, rtol=1e-9)
    np.testing.assert_allclose(result.smoothed, probes.smoothed_losses(result.losses, 0.98), rtol=1e-12)
    self.assertLess(result.smoothed[-1], result.smoothed[0])  # It trains.
    # The optimizer applies the rate it is given.
    training = probes.ProbeTraining(Blobs(), "adamw")
    training.step(0.0123)
    self.assertEqual(float(training.opt_state.hyperparams["learning_rate"]), np.float32(0.0123))

  def test_stops_early_when_training_diverges(self):
    result = probes.lr_range_test(Blobs(), "sgdp", min_lr=1e-2, max_lr=1e8, num_steps=200,
                                  progress=lambda m: None)
    self.assertIn(result.stop_reason, ("diverged", "non-finite loss"))
    self.assertLess(len(result.lrs), 200)
    last = result.smoothed[-1]
    self.assertTrue(not math.isfinite(result.losses[-1]) or last > 4 * min(result.smoothed))
    self.assertTrue(all(s <= 4 * min(result.smoothed[: i + 1]) for i, s in enumerate(result.smoothed[:-1])))

  def test_sweep_stops_at_the_first_step_past_the_divergence_factor(self):
    lrs = probes.exponential_learning_rates(1e-4, 1e2, 120)
    curve = lambda lr: 2.0 - min(lr, 0.1) * 10 + (max(lr - 0.1, 0.0) * 40) ** 2
    smoothed = probes.smoothed_losses([curve(lr) for lr in lrs])
    best = np.minimum.accumulate(smoothed)
    first = int(np.argmax(smoothed > 4 * best))
    result = probes.lr_range_sweep(curve, 1e-4, 1e2, 120, progress=lambda m: None)
    self.assertEqual(result.stop_reason, "diverged")
    self.assertLen(result.lrs, first + 1)
    nan_after = lambda lr: math.nan if lr > 0.05 else 1.0 - lr
    result = probes.lr_range_sweep(nan_after, 1e-4, 1e2, 120, progress=lambda m: None)
    self.assertEqual(result.stop_reason, "non-finite loss")
    self.assertGreater(result.lrs[-1], 0.05)
    self.assertLessEqual(result.lrs[-2], 0.05)

  def test_suggested_bounds_follow_the_documented_rule(self):
    lrs = np.geomspace(1e-5, 1.0, 101)  # log10(lr) in steps of 0.05: 1e-2 is point 60.
    smoothed = (np.log10(lrs) + 2.0) ** 2
    bounds = probes.suggest_bounds(lrs, smoothed)
    self.assertAlmostEqual(bounds.lr_at_min, 1e-2, delta=1e-12)
    self.assertAlmostEqual(bounds.max_lr, bounds.lr_at_min / probes.MIN_LOSS_DIVISOR, delta=1e-15)
    self.assertAlmostEqual(bounds.base_lr, bounds.max_lr / probes.BASE_DIVISOR, delta=1e-15)
    self.assertEqual((bounds.max_lr, bounds.base_lr), (1e-3, 2.5e-4))
    self.assertLess(bounds.steepest_lr, bounds.lr_at_min)
    self.assertIn("/ 10", bounds.rule)
    custom = probes.suggest_bounds(lrs, smoothed, min_loss_divisor=1.0, base_divisor=3.0)
    self.assertAlmostEqual(custom.max_lr, 1e-2, delta=1e-12)
    self.assertAlmostEqual(custom.base_lr, 1e-2 / 3, delta=1e-12)
    self.assertIsNone(probes.suggest_bounds(lrs, np.linspace(1.0, 2.0, 101)))  # Never fell.
    with_nan = np.where(lrs > 0.5, np.nan, smoothed)
    self.assertAlmostEqual(probes.suggest_bounds(lrs, with_nan).lr_at_min, 1e-2, delta=1e-12)

  def test_bad_arguments_fail_clearly(self):
    with self.assertRaisesRegex(ValueError, "min_lr < max_lr"):
      probes.exponential_learning_rates(1.0, 0.1, 10)
    with self.assertRaisesRegex(ValueError, "num_steps"):
      probes.exponential_learning_rates(0.1, 1.0, 1)
    with self.assertRaisesRegex(ValueError, "smoothing"):
      probes.lr_range_sweep(lambda lr: 1.0, 0.1, 1.0, 10, smoothing=1.0)
    with self.assertRaisesRegex(ValueError, "divergence_factor"):
      probes.lr_range_sweep(lambda lr: 1.0, 0.1, 1.0, 10, divergence_factor=1.0)
    with self.assertRaisesRegex(ValueError, "unknown optimizer 'adamx'"):
      probes.ProbeTraining(Blobs(), "adamx")
    with self.assertRaisesRegex(ValueError, "unknown hyperparameter 'beta_one'"):
      probes.ProbeTraining(Blobs(), "adamw", {"beta_one": 0.9})

  def test_writes_json_and_png(self):
    directory = test_util.tempdir(self)
    result = probes.lr_range_sweep(lambda lr: 1.0 / (1.0 + 10 * lr) + lr ** 2, 1e-3, 10.0, 50,
                                   progress=lambda m: None)
    paths = probes.write_lr_range(result, directory)
    self.assertEqual([os.path.basename(p) for p in paths], ["lr_range.json", "lr_range.png"])
    with open(paths[0]) as f:
      record = json.load(f)
    self.assertEqual(record["num_steps"], len(record["lrs"]))
    self.assertEqual(record["bounds"]["max_lr"], result.bounds.max_lr)
    with open(paths[1], "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


class MaxLrTest(absltest.TestCase):

  def _oracle(self, critical):
    return lambda lr: probes.MaxLrTrial(lr, lr <= critical, 1.0 if lr <= critical else 0.0, 10)

  def test_bisection_brackets_a_monotone_oracle(self):
    result = probes.bisect_max_lr(self._oracle(0.037), 1e-4, 10.0, 8, progress=lambda m: None)
    self.assertLessEqual(result.lr_low, 0.037)
    self.assertGreater(result.lr_high, 0.037)
    self.assertAlmostEqual(math.log10(result.lr_high / result.lr_low), 5 / 2 ** 8, delta=1e-9)
    self.assertLen(result.trials, 10)
    self.assertEqual([t.learning_rate for t in result.trials[:2]], [1e-4, 10.0])
    self.assertAlmostEqual(result.trials[2].learning_rate, math.sqrt(1e-4 * 10.0), delta=1e-12)
    # The bracket is the largest success and the smallest failure.
    self.assertEqual(result.lr_low, max(t.learning_rate for t in result.trials if t.reached))
    self.assertEqual(result.lr_high, min(t.learning_rate for t in result.trials if not t.reached))

  def test_out_of_range_oracles(self):
    low = probes.bisect_max_lr(self._oracle(1e-9), 1e-4, 10.0, 8, progress=lambda m: None)
    self.assertEqual((low.lr_low, low.lr_high, len(low.trials)), (None, 1e-4, 1))
    high = probes.bisect_max_lr(self._oracle(1e9), 1e-4, 10.0, 8, progress=lambda m: None)
    self.assertEqual((high.lr_low, high.lr_high, len(high.trials)), (10.0, None, 2))
    with self.assertRaisesRegex(ValueError, "lr_low < lr_high"):
      probes.bisect_max_lr(self._oracle(1.0), 1.0, 0.1, 8)
    with self.assertRaisesRegex(ValueError, "num_bisections"):
      probes.bisect_max_lr(self._oracle(1.0), 0.1, 1.0, -1)

  def test_end_to_end_on_a_tiny_workload(self):
    result = probes.max_lr_search(Blobs(), "adamw", lr_low=0.1, lr_high=1e4, num_bisections=3,
                                  step_budget=30, threshold=0.5, progress=lambda m: None)
    self.assertLen(result.trials, 5)
    reached = [t.learning_rate for t in result.trials if t.reached]
    missed = [t.learning_rate for t in result.trials if not t.reached]
    self.assertEqual((result.lr_low, result.lr_high), (max(reached), min(missed)))
    self.assertLess(result.lr_low, result.lr_high)
    self.assertEqual(result.settings["metric"], "validation/loss")
    for trial in result.trials:
      self.assertLessEqual(trial.steps, 30)
      self.assertEqual(trial.reached, trial.best_metric <= 0.5)
    json.dumps(result.as_dict())


def _grad_norm_rows(trial_dir):
  with open(os.path.join(trial_dir, trainer.GRAD_NORMS_CSV), newline="") as f:
    return list(csv.reader(f))


class TrainerDiagnosticsTest(absltest.TestCase):

  # One workload object for every run: the jitted steps are cached per workload.
  _workload = Blobs()

  def _run(self, trial_dir, fail_at_step=None, **kwargs):
    """23 steps of SGDP on Blobs, evaluating every 5 s (5 steps) of fake time."""
    workload = self._workload
    workload.fail_at_step, workload.now = fail_at_step, 0.0
    sub = submission_lib.registry_submission("sgdp", batch_sizes={"blobs": 32})
    point = {"learning_rate": 0.1}
    record = dict(workload="blobs", submission="sgdp", hyperparameters=point, rng_seed=0)
    return trainer.run_trial(workload, sub, point, trial_dir=trial_dir, rng_seed=0, record=record,
                             time_fn=lambda: workload.now, progress=lambda m: None, max_global_steps=23,
                             **kwargs)

  def test_grad_norms_are_the_optimizers_gradient_and_survive_resume(self):
    plain_dir, straight_dir, killed_dir = (test_util.tempdir(self) for _ in range(3))
    plain = self._run(plain_dir, save_checkpoints=False)
    straight = self._run(straight_dir, log_grad_norms=True, log_sharpness=True, save_checkpoints=False)
    # The diagnostics change neither the trajectory nor the submission clock.
    self.assertEqual(dict(straight.final_metrics, **{probes.SHARPNESS_METRIC: 0}),
                     dict(plain.final_metrics, **{probes.SHARPNESS_METRIC: 0}))
    self.assertEqual(straight.clock["submission"], plain.clock["submission"])
    rows = _grad_norm_rows(straight_dir)
    self.assertEqual(rows[0], ["step", "grad_norm"])
    self.assertEqual([int(r[0]) for r in rows[1:]], list(range(23)))
    # Step 0's norm is that of the gradient at initialisation on batch 0.
    workload = Blobs()
    _, _, model_rng, step_rng = trainer.algoperf_rngs(0)
    params, _ = workload.init_model_fn(model_rng)
    loss = probes.training_loss(workload)
    update_rng = trainer.step_rngs(step_rng, 0)[1]  # The key update_params gets at step 0.
    grads, _ = jax.grad(loss, has_aux=True)(params, None, workload.train_batch(0, 0, 32), update_rng)
    self.assertAlmostEqual(float(rows[1][1]), float(optax.tree.norm(grads)), delta=1e-6)

    with self.assertRaises(KeyboardInterrupt):  # After the step-15 checkpoint.
      self._run(killed_dir, fail_at_step=17, log_grad_norms=True)
    self.assertLen(_grad_norm_rows(killed_dir), 1 + 15)
    self._run(killed_dir, log_grad_norms=True, resume=True)
    self.assertEqual(_grad_norm_rows(killed_dir), rows)

  def test_sharpness_is_logged_with_every_evaluation(self):
    trial_dir = test_util.tempdir(self)
    self._run(trial_dir, log_sharpness=True, save_checkpoints=False)
    for name in ("eval_measurements.csv", "measurements.csv"):
      rows = logs.CsvLog.resume(os.path.join(trial_dir, name)).rows
      self.assertEqual([r["global_step"] for r in rows], [5, 10, 15, 20, 23], name)
      self.assertTrue(all(r[probes.SHARPNESS_METRIC] > 0 for r in rows), name)


def _read_json(path):
  with open(path) as f:
    return json.load(f)


class RunnerTest(parameterized.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  def _main(self, directory, *argv):
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw", *argv])
    run.main(["run"])
    return os.path.join(directory, "probes", "adamw", "logreg")

  def test_lr_range_probe(self):
    directory = test_util.tempdir(self)
    out = self._main(directory, "--probe=lr_range", "--probe_steps=40", "--probe_min_lr=1e-4",
                     "--probe_max_lr=1e3", '--hparams={"one_minus_b1": 0.1}')
    record = _read_json(os.path.join(out, "lr_range.json"))
    self.assertLessEqual(len(record["lrs"]), 40)
    self.assertEqual(record["lrs"][0], 1e-4)
    self.assertEqual(record["settings"]["hyperparameters"], {"one_minus_b1": 0.1})
    self.assertTrue(os.path.exists(os.path.join(out, "lr_range.png")))
    self.assertFalse(os.path.exists(os.path.join(directory, "adamw")))  # No trials.
    with self.assertRaisesRegex(app.UsageError, "lr_range.json exists.*--overwrite"):
      self._main(directory, "--probe=lr_range", "--probe_steps=40")
    FLAGS.unparse_flags()
    self._main(directory, "--probe=lr_range", "--probe_steps=5", "--overwrite")
    self.assertLen(_read_json(os.path.join(out, "lr_range.json"))["lrs"], 5)

  def test_sharpness_probe(self):
    out = self._main(test_util.tempdir(self), "--probe=sharpness")
    record = _read_json(os.path.join(out, "sharpness.json"))
    self.assertGreater(record["lambda_1"], 0)
    self.assertAlmostEqual(record["gd_stability_lr"], 2 / record["lambda_1"])
    self.assertEqual(record["num_iterations"], len(record["estimates"]))

  def test_max_lr_probe(self):
    out = self._main(test_util.tempdir(self), "--probe=max_lr", "--probe_steps=20", "--probe_bisections=2",
                     "--probe_threshold=1.0", "--probe_min_lr=1e-5", "--probe_max_lr=1.0")
    record = _read_json(os.path.join(out, "max_lr.json"))
    self.assertEqual(record["settings"]["threshold"], 1.0)
    self.assertEqual(record["settings"]["metric"], "validation/loss")
    self.assertBetween(len(record["trials"]), 1, 4)
    self.assertEqual(record["max_lr"], record["lr_low"])

  def test_log_sharpness_and_grad_norms_in_trial_logs(self):
    directory = test_util.tempdir(self)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw",
           '--hparams={"learning_rate": 0.01}', "--max_global_steps=12", "--save_checkpoints=false",
           "--log_sharpness", "--log_grad_norms"])
    run.main(["run"])
    trial_dir = os.path.join(directory, "adamw", "logreg", "study_0", "trial_0")
    for name in ("eval_measurements.csv", "measurements.csv"):
      rows = logs.CsvLog.resume(os.path.join(trial_dir, name)).rows
      self.assertTrue(rows and all(r[probes.SHARPNESS_METRIC] > 0 for r in rows), name)
    rows = _grad_norm_rows(trial_dir)
    self.assertEqual(rows[0], ["step", "grad_norm"])
    self.assertEqual([int(r[0]) for r in rows[1:]], list(range(12)))
    self.assertTrue(all(float(r[1]) > 0 for r in rows[1:]))
    self.assertTrue(_read_json(os.path.join(trial_dir, "flags.json"))["log_grad_norms"])

  @parameterized.named_parameters(
      ("probe_flag_without_probe", ["--probe_threshold=0.5"], "--probe_threshold applies to --probe=max_lr"),
      ("threshold_with_lr_range", ["--probe=lr_range", "--probe_threshold=0.5"], "not --probe=lr_range"),
      ("steps_with_sharpness", ["--probe=sharpness", "--probe_steps=10"], "not --probe=sharpness"),
      ("submission", ["--probe=lr_range", "--submission_path=experiments/submissions/nadamw.py"],
       "--submission_path do not apply"),
      ("trial_flags", ["--probe=max_lr", "--log_sharpness", "--num_studies=2"],
       "--num_studies, --log_sharpness do not apply"),
      ("inverted_range", ["--probe=lr_range", "--probe_min_lr=1", "--probe_max_lr=0.1"],
       "0 < --probe_min_lr < --probe_max_lr"),
      ("one_step", ["--probe=lr_range", "--probe_steps=1"], "at least 2"),
      ("negative_bisections", ["--probe=max_lr", "--probe_bisections=-1"], "--probe_bisections must be"),
      ("nan_threshold", ["--probe=max_lr", "--probe_threshold=nan"], "--probe_threshold must be finite"),
      ("unknown_hparam", ["--probe=sharpness", '--hparams={"beta_one": 0.9}'], "--hparams.*beta_one"),
      ("unknown_optimizer", ["--probe=sharpness", "--optimizer=adamx"], "unknown --optimizer 'adamx'"),
  )
  def test_bad_combinations(self, argv, message):
    directory = test_util.tempdir(self)
    with self.assertRaisesRegex(app.UsageError, message):
      self._main(directory, *argv)
    self.assertFalse(os.path.exists(os.path.join(directory, "probes")))


if __name__ == "__main__":
  absltest.main()
