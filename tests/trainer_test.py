"""The trial loop: AlgoPerf's clock, the submission API, logs, checkpoints, resume."""

from tests import test_util  # Device set-up first.

import dataclasses
import os
from typing import NamedTuple

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import checkpoints
from experiments import logs
from experiments import schedule_config
from experiments import submission as submission_lib
from experiments import trainer
from experiments.workloads import base
import optimizers


U32 = 2.0**-24  # float32 unit roundoff.


class FakeTime:
  """A clock that moves only when told: 1 s per training step, 90 s per eval."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class TinyWorkload(base.Workload):
  """Two Gaussian blobs, a linear classifier; time is simulated."""

  name = "tiny"
  loss_type = "softmax_cross_entropy"
  default_batch_size = 16

  def __init__(self, clock: FakeTime, target=0.9, fail_at_step=None, eval_seconds=90.0,
               step_seconds=1.0, eval_period=5.0, budget=1000.0, features=2):
    self.clock, self.fail_at_step = clock, fail_at_step
    self.eval_seconds, self.step_seconds = eval_seconds, step_seconds
    self.targets = base.Targets(
        metric="accuracy", mode="max", validation=target, test=target,
        max_allowed_runtime_sec=budget, eval_period_time_sec=eval_period, step_hint=100,
        how_set="fixed for tests",
    )
    rng = np.random.default_rng(0)
    self.x = np.concatenate([rng.normal(-1, 1, (64, 2)), rng.normal(1, 1, (64, 2))]).astype(np.float32)
    if features > 2:  # Noise features: a kernel large enough to be FSDP-sharded (sharding.MIN_SHARDED_SIZE).
      self.x = np.concatenate([self.x, rng.normal(0, 0.1, (128, features - 2)).astype(np.float32)], 1)
    self.y = np.concatenate([np.zeros(64), np.ones(64)]).astype(np.int32)
    self.model = nn.Dense(2)

  def train_batch(self, seed, step, batch_size):
    if self.fail_at_step is not None and step == self.fail_at_step:
      raise KeyboardInterrupt(f"simulated kill at step {step}")
    self.clock.now += self.step_seconds  # "Spent" in data selection + update.
    idx = np.random.default_rng([seed, step]).integers(0, len(self.x), batch_size)
    return {"inputs": self.x[idx], "targets": self.y[idx]}

  def eval_batches(self, split, batch_size):
    yield {"inputs": self.x, "targets": self.y, "weights": np.ones(len(self.x), np.float32)}

  def init_model_fn(self, rng):
    return self.model.init(rng, self.x[:1]), None

  def model_fn(self, params, batch, model_state, mode, rng, update_batch_norm):
    return self.model.apply(params, batch["inputs"]), model_state

  def loss_fn(self, label_batch, logits_batch, mask_batch=None, label_smoothing=0.0):
    per_example = optax.softmax_cross_entropy_with_integer_labels(logits_batch, label_batch)
    weights = jnp.ones_like(per_example) if mask_batch is None else mask_batch
    return {"summed": jnp.sum(per_example * weights), "n_valid_examples": jnp.sum(weights),
            "per_example": per_example}

  def eval_model(self, params, model_state, rng, split):
    self.clock.now += self.eval_seconds / 3  # Three splits per evaluation.
    logits, _ = self.model_fn(params, {"inputs": self.x}, model_state, "eval", rng, False)
    loss = self.loss_fn(self.y, logits)
    return {"loss": float(loss["summed"] / loss["n_valid_examples"]),
            "accuracy": float(jnp.mean(jnp.argmax(logits, -1) == self.y))}




def _run(tmp, workload, clock, **kwargs):
  sub = submission_lib.registry_submission("adamw", batch_sizes={"tiny": 16})
  point = {"learning_rate": 0.05}
  record = dict(workload="tiny", submission="adamw", hyperparameters=point, rng_seed=0)
  return trainer.run_trial(
      workload, sub, point, trial_dir=tmp, rng_seed=0, record=record, time_fn=clock,
      progress=lambda m: None, **kwargs,
  )


def _final_params(tmp):
  ckpt = checkpoints.TrialCheckpointer(tmp)
  step = ckpt.latest_step()
  ckpt.close()
  return step


class ClockTest(absltest.TestCase):

  def test_eval_time_is_excluded_and_evals_follow_the_period(self):
    clock = FakeTime()
    tmp = test_util.tempdir(self)
    workload = TinyWorkload(clock, target=2.0)  # Unreachable: runs to the cap.
    result = _run(tmp, workload, clock, max_global_steps=12, save_checkpoints=False)
    rows = logs.CsvLog.resume(os.path.join(tmp, "eval_measurements.csv")).rows
    # 1 s per step, evals every >= 5 s of submission time: steps 5, 10, then the cap at 12.
    self.assertEqual([r["global_step"] for r in rows], [5, 10, 12])
    self.assertEqual([r["accumulated_submission_time"] for r in rows], [5.0, 10.0, 12.0])
    self.assertEqual(rows[-1]["accumulated_eval_time"], 270.0)
    self.assertEqual(result.clock["submission"], 12.0)
    self.assertFalse(result.reached_target)

  def test_checkpoint_time_is_excluded(self):
    clock = FakeTime()
    tmp = test_util.tempdir(self)
    result = _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=10)
    self.assertEqual(result.clock["submission"], 10.0)
    self.assertEqual(_final_params(tmp), 10)

  def test_stops_at_target_with_steps_and_time_to_target(self):
    clock = FakeTime()
    tmp = test_util.tempdir(self)
    result = _run(tmp, TinyWorkload(clock, target=0.8), clock, max_global_steps=500)
    self.assertTrue(result.reached_target)
    self.assertEqual(result.global_step, result.steps_to_target)
    self.assertEqual(result.time_to_target_sec, float(result.steps_to_target))
    meta = logs.read_json(os.path.join(tmp, "meta_data.json"))
    self.assertEqual(meta["status"], "complete")
    self.assertEqual(meta["steps_to_target"], result.steps_to_target)
    self.assertTrue(meta["reached_target"])
    for name in ("hparams.json", "meta_data.json", "measurements.csv", "eval_measurements.csv"):
      self.assertTrue(os.path.exists(os.path.join(tmp, name)), name)

  def test_without_stop_at_target_trains_on_and_still_records_the_target(self):
    clock = FakeTime()
    stopped = _run(test_util.tempdir(self), TinyWorkload(clock, target=0.8), clock, max_global_steps=500,
                   save_checkpoints=False)
    clock = FakeTime()
    result = _run(test_util.tempdir(self), TinyWorkload(clock, target=0.8), clock, max_global_steps=500,
                  save_checkpoints=False, stop_at_target=False)
    self.assertLess(stopped.global_step, 500)
    self.assertEqual(result.global_step, 500)
    self.assertEqual(result.steps_to_target, stopped.steps_to_target)

  def test_never_evaluates_past_the_budget(self):
    clock = FakeTime()
    tmp = test_util.tempdir(self)
    workload = TinyWorkload(clock, target=2.0, budget=12.5, eval_period=5.0)
    result = _run(tmp, workload, clock, save_checkpoints=False)
    rows = logs.CsvLog.resume(os.path.join(tmp, "eval_measurements.csv")).rows
    self.assertTrue(all(r["accumulated_submission_time"] <= 12.5 for r in rows))
    self.assertEqual(result.global_step, 13)


class _Recording(TinyWorkload):
  """Keeps the start, the batches and the evaluated parameters (float64 copies)."""

  def train_batch(self, seed, step, batch_size):
    batch = super().train_batch(seed, step, batch_size)
    self.batches = getattr(self, "batches", []) + [batch]
    return batch

  def init_model_fn(self, rng):
    params, state = super().init_model_fn(rng)
    if not any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves(params)):
      self.start = jax.tree.map(lambda a: np.asarray(a, np.float64), params)["params"]
    return params, state

  def eval_model(self, params, model_state, rng, split):
    self.params = jax.tree.map(lambda a: np.asarray(a, np.float64), jax.device_get(params))
    return super().eval_model(params, model_state, rng, split)


class _ShardingSpy:
  """Wraps a submission's update_params: records each device's shard shape of every large array it is given."""

  def __init__(self, sub):
    self.seen = []
    def update_params(workload, params, *args, **kwargs):
      opt_state = args[5][0]
      big = lambda tree: [leaf.sharding.shard_shape(leaf.shape) for leaf in jax.tree.leaves(tree) if leaf.size >= 2**14]
      self.seen.append((big(params), big(opt_state)))
      return sub.update_params(workload, params, *args, **kwargs)
    self.submission = dataclasses.replace(sub, update_params=update_params)


FSDP = {"data": 2, "fsdp": 4}


class MultiDeviceTest(parameterized.TestCase):

  @parameterized.named_parameters(("data_parallel", 8, None), ("fsdp", 8, FSDP))
  def test_one_step_on_a_mesh_matches_one_device(self, devices, mesh):
    """One AdamW step on 8 devices (data parallel or data x fsdp) vs on 1, bounded from the roundings."""
    self.assertGreaterEqual(jax.device_count(), devices, "needs simulated CPU devices")
    F = 8192  # Features: the 8192 x 2 kernel is sharded 4 ways under FSDP (sharding.MIN_SHARDED_SIZE).
    runs = {}
    sub = submission_lib.registry_submission("adamw", batch_sizes={"tiny": 16})
    point = {"learning_rate": 0.05, "schedule": "constant", "warmup_factor": 0.0}  # Step 1 moves.
    for n, m in ((1, None), (devices, mesh)):  # One AdamW step from the same start.
      clock = FakeTime()
      runs[n] = _Recording(clock, target=2.0, features=F)
      record = dict(workload="tiny", submission="adamw", hyperparameters=point, rng_seed=0)
      trainer.run_trial(runs[n], sub, point, trial_dir=test_util.tempdir(self), rng_seed=0,
                        record=record, time_fn=clock, progress=lambda m: None,
                        max_global_steps=1, save_checkpoints=False, devices=jax.devices()[:n], mesh=m)
    batch = runs[1].batches[0]
    np.testing.assert_array_equal(runs[devices].batches[0]["inputs"], batch["inputs"])
    start = runs[1].start
    jax.tree.map(np.testing.assert_array_equal, runs[devices].start, start)
    # The batch-mean gradient (loss: sum / B, B = 16) in float64: per example, x_i (p_i - y_i) / B.
    x, y = np.asarray(batch["inputs"], np.float64), batch["targets"]
    B = len(y)
    logits = x @ start["kernel"] + start["bias"]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    d = (p / p.sum(-1, keepdims=True) - np.eye(2)[y]) / B
    per_example = {"kernel": x[:, :, None] * d[:, None, :], "bias": d}
    # Each side's per-example d_i = (softmax - one-hot) / B: its logits are an (F + 1)-term sum in
    # some order (FSDP splits it over the kernel's shards), within (F + 1) u sum |x_ij k_jc| + |b_c|
    # of exact; 2-class softmax moves by at most half the largest logit error; exp and the
    # normalisation add 8 u (p <= 1). Dividing by B, per-device counts or the device count: powers
    # of 2, exact.
    logit_err = (F + 1) * U32 * (np.abs(x) @ np.abs(start["kernel"]) + np.abs(start["bias"])).max(-1)
    d_err = (8 * U32 + 0.5 * logit_err) / B
    # Devices only change the order of the B-term sum: 2 (B - 1) u sum_i |g_i| between two
    # orders; each side's terms are off by |x_i| d_err_i, and by a rounding u |g_i| of the product.
    lr, eps, wd = 0.05, 1e-8, 1e-4  # The constant rate; adamw's defaults.
    for k, g_i in per_example.items():
      g = g_i.sum(0)
      scale = np.abs(g_i).sum(0)
      term_err = (np.abs(x).T @ d_err)[:, None] if k == "kernel" else d_err.sum()
      dg = 2 * (B - 1) * U32 * scale + 2 * (term_err + U32 * scale)
      # AdamW's first step: bias-corrected m / sqrt(v) = g / (|g| + eps), derivative
      # eps / (|g| + eps)^2 (at |g| - dg at worst); its ~8 roundings (moments, corrections,
      # sqrt, + eps, divide, decay, lr) per side are 8 u lr (1 + wd |p0|); the new parameter's
      # rounding u |p1| per side.
      p0, p1 = start[k], runs[1].params["params"][k]
      bound = (lr * eps * dg / (np.maximum(np.abs(g) - dg, 0) + eps)**2
               + 2 * 8 * U32 * lr * (1 + wd * np.abs(p0)) + 2 * U32 * np.abs(p1))
      self.assertTrue(np.all(p1 != p0))  # The step moved every parameter.
      self.assertGreater(np.mean(bound < 1e-3 * lr), 0.95)  # The bound binds: |g| >> dg nearly everywhere.
      np.testing.assert_array_less(np.abs(runs[devices].params["params"][k] - p1), bound)

  def test_fsdp_keeps_parameters_and_state_sharded_and_resumes(self):
    """On data:2,fsdp:4 the kernel and its moments stay split 4 ways every step, across a resume."""
    def run(directory, **kwargs):
      clock = FakeTime()
      spy = _ShardingSpy(submission_lib.registry_submission("adamw", batch_sizes={"tiny": 16}))
      point = {"learning_rate": 0.05}
      record = dict(workload="tiny", submission="adamw", hyperparameters=point, rng_seed=0)
      result = trainer.run_trial(
          _Recording(clock, target=2.0, features=8192, fail_at_step=kwargs.pop("fail_at_step", None)),
          spy.submission, point, trial_dir=directory, rng_seed=0, record=record, time_fn=clock,
          progress=lambda m: None, max_global_steps=13, devices=jax.devices()[:8], mesh=FSDP, **kwargs)
      return result, spy.seen

    fsdp = (2048, 2)  # Each device's part of the 8192 x 2 kernel (and of its moments).
    straight, seen = run(test_util.tempdir(self))
    self.assertLen(seen, 13)
    for params_specs, state_specs in seen:  # Every step: the kernel, AdamW's mu and nu.
      self.assertEqual((params_specs, state_specs), ([fsdp], [fsdp, fsdp]))
    killed_dir = test_util.tempdir(self)
    with self.assertRaises(KeyboardInterrupt):  # After the step-5 and step-10 checkpoints.
      run(killed_dir, fail_at_step=11)
    resumed, seen = run(killed_dir, resume=True)
    self.assertEqual(logs.read_json(os.path.join(killed_dir, "meta_data.json"))["mesh"], "data:2,fsdp:4")
    for params_specs, state_specs in seen:  # Restored sharded, not replicated.
      self.assertEqual((params_specs, state_specs), ([fsdp], [fsdp, fsdp]))
    self.assertEqual(resumed.final_metrics, straight.final_metrics)  # Same mesh: bitwise.

  def test_batch_must_divide_over_devices(self):
    clock = FakeTime()
    sub = submission_lib.registry_submission("adamw", batch_sizes={"tiny": 12})
    with self.assertRaisesRegex(ValueError, "not divisible by the 8 devices"):
      trainer.run_trial(TinyWorkload(clock), sub, {}, trial_dir=test_util.tempdir(self), rng_seed=0,
                        record={}, time_fn=clock, devices=jax.devices()[:8])


class ResumeTest(absltest.TestCase):

  def test_resume_after_kill_gives_the_same_trajectory(self):
    straight_dir = test_util.tempdir(self)
    clock = FakeTime()
    straight = _run(straight_dir, TinyWorkload(clock, target=2.0), clock, max_global_steps=23)

    killed_dir = test_util.tempdir(self)
    clock = FakeTime()
    with self.assertRaises(KeyboardInterrupt):  # Dies mid-way, after the step-15 checkpoint.
      _run(killed_dir, TinyWorkload(clock, target=2.0, fail_at_step=17), clock, max_global_steps=23)
    clock = FakeTime()
    resumed = _run(killed_dir, TinyWorkload(clock, target=2.0), clock, max_global_steps=23, resume=True)

    self.assertEqual(resumed.global_step, straight.global_step)
    self.assertEqual(resumed.final_metrics, straight.final_metrics)
    self.assertEqual(resumed.clock["submission"], straight.clock["submission"])
    # total_duration is wall time since the process started the trial (AlgoPerf's column): not replayed.
    rows = lambda d: [{k: v for k, v in r.items() if k != "total_duration"}
                      for r in logs.CsvLog.resume(os.path.join(d, "eval_measurements.csv")).rows]
    self.assertEqual(rows(killed_dir), rows(straight_dir))

  def test_time_to_target_survives_a_resume_without_stop_at_target(self):
    clock = FakeTime()
    straight = _run(test_util.tempdir(self), TinyWorkload(clock, target=0.8), clock, max_global_steps=60,
                    stop_at_target=False)
    self.assertTrue(straight.reached_target)
    self.assertLess(straight.steps_to_target + 8, 60)
    killed_dir = test_util.tempdir(self)
    clock = FakeTime()
    with self.assertRaises(KeyboardInterrupt):  # After the target and a later checkpoint.
      _run(killed_dir, TinyWorkload(clock, target=0.8, fail_at_step=straight.steps_to_target + 8), clock,
           max_global_steps=60, stop_at_target=False)
    clock = FakeTime()
    resumed = _run(killed_dir, TinyWorkload(clock, target=0.8), clock, max_global_steps=60, resume=True,
                   stop_at_target=False)
    self.assertEqual(resumed.global_step, 60)
    self.assertEqual(resumed.steps_to_target, straight.steps_to_target)
    self.assertEqual(resumed.time_to_target_sec, straight.time_to_target_sec)
    meta = logs.read_json(os.path.join(killed_dir, "meta_data.json"))
    self.assertEqual(meta["steps_to_target"], straight.steps_to_target)

  def test_resume_does_not_charge_compilation_again(self):
    def compiling(clock):
      """adamw whose first update (per process: per submission object) costs 50 s, as jit's compilation."""
      sub = submission_lib.registry_submission("adamw", batch_sizes={"tiny": 16})
      compiled = []

      def update_params(*args, **kwargs):
        if not compiled:
          compiled.append(True)
          clock.now += 50.0
        return sub.update_params(*args, **kwargs)
      return dataclasses.replace(sub, update_params=update_params)

    def trial(tmp, clock, workload, resume=False):
      point = {"learning_rate": 0.05}
      return trainer.run_trial(
          workload, compiling(clock), point, trial_dir=tmp, rng_seed=0, time_fn=clock, resume=resume,
          record=dict(workload="tiny", submission="adamw", hyperparameters=point, rng_seed=0),
          progress=lambda m: None, max_global_steps=23, budget_sec=10_000)

    clock = FakeTime()
    straight = trial(test_util.tempdir(self), clock, TinyWorkload(clock, target=2.0))
    self.assertEqual(straight.clock["submission"], 23 + 50)  # Compiled once.
    killed_dir = test_util.tempdir(self)
    clock = FakeTime()
    with self.assertRaises(KeyboardInterrupt):
      trial(killed_dir, clock, TinyWorkload(clock, target=2.0, fail_at_step=17))
    clock = FakeTime()
    resumed = trial(killed_dir, clock, TinyWorkload(clock, target=2.0), resume=True)
    self.assertEqual(resumed.final_metrics, straight.final_metrics)
    self.assertEqual(resumed.clock["submission"], straight.clock["submission"])  # Not 23 + 2 x 50.

  def test_random_bytes_in_every_checkpoint_are_an_error(self):
    tmp = test_util.tempdir(self)
    clock = FakeTime()
    _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=12)
    for step in os.listdir(os.path.join(tmp, "checkpoints")):
      state = os.path.join(tmp, "checkpoints", step, "state")
      files = [os.path.join(r, n) for r, _, ns in os.walk(state) for n in ns if os.path.basename(r) == "d"]
      path = max(files, key=os.path.getsize)
      with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        f.write(np.random.default_rng(1).bytes(16))
    clock = FakeTime()
    with self.assertRaisesRegex(checkpoints.CheckpointError, "no intact checkpoint.*is corrupt: state/"):
      _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=20, resume=True)

  def _resume_with(self, tmp, clock, sub, point, submission_name):
    return trainer.run_trial(
        TinyWorkload(clock), sub, point, trial_dir=tmp, rng_seed=0,
        record=dict(workload="tiny", submission=submission_name, hyperparameters=point, rng_seed=0),
        time_fn=clock, resume=True, progress=lambda m: None,
    )

  def test_checkpoint_of_another_run_is_an_error(self):
    tmp = test_util.tempdir(self)
    clock = FakeTime()
    _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=5)
    for name, point, differing in (("adamw", {"learning_rate": 0.1}, "hyperparameters"),
                                   ("radam", {"learning_rate": 0.05}, "submission")):
      sub = submission_lib.registry_submission(name, batch_sizes={"tiny": 16})
      with self.assertRaisesRegex(checkpoints.CheckpointError, f"belongs to another run.*{differing}"):
        self._resume_with(tmp, clock, sub, point, name)

  def test_checkpoint_with_a_different_state_layout_is_an_error(self):
    tmp = test_util.tempdir(self)
    clock = FakeTime()
    _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=5)
    # Same identity, different optimizer state (AMSBound keeps a third moment).
    import optimizers  # pylint: disable=g-import-not-at-top
    sub = submission_lib.optimizer_submission("adamw", optimizers.amsbound, batch_sizes={"tiny": 16})
    with self.assertRaisesRegex(checkpoints.CheckpointError, "does not match this run's state|different state"):
      self._resume_with(tmp, clock, sub, {"learning_rate": 0.05}, "adamw")

  def test_corrupt_checkpoint_is_an_error(self):
    tmp = test_util.tempdir(self)
    clock = FakeTime()
    _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=5)
    for root, _, files in os.walk(os.path.join(tmp, "checkpoints")):
      for name in files:
        with open(os.path.join(root, name), "wb") as f:
          f.write(b"garbage")
    with self.assertRaises(checkpoints.CheckpointError):
      _run(tmp, TinyWorkload(clock, target=2.0), clock, max_global_steps=10, resume=True)

  def test_resume_without_checkpoint_is_an_error(self):
    tmp = test_util.tempdir(self)
    clock = FakeTime()
    with self.assertRaisesRegex(checkpoints.CheckpointError, "no checkpoint"):
      _run(tmp, TinyWorkload(clock), clock, max_global_steps=5, resume=True)


class SubmissionTest(absltest.TestCase):

  def test_registry_submission_end_to_end_evaluates_at_eval_params(self):
    clock = FakeTime()
    tmp = test_util.tempdir(self)
    result = _run(tmp, TinyWorkload(clock, target=0.8), clock, max_global_steps=300, save_checkpoints=False)
    self.assertTrue(result.reached_target)

  def test_submission_receives_the_parameter_types(self):
    clock, seen = FakeTime(), []
    sub = submission_lib.registry_submission("adamw", batch_sizes={"tiny": 16})

    def update_params(workload, params, params_types, *args):
      seen.append(params_types)
      return sub.update_params(workload, params, params_types, *args)

    trainer.run_trial(
        TinyWorkload(clock), dataclasses.replace(sub, update_params=update_params),
        {"learning_rate": 0.05}, trial_dir=test_util.tempdir(self), rng_seed=0, record={},
        max_global_steps=2, save_checkpoints=False, time_fn=clock, progress=lambda m: None,
    )
    expected = {"params": {"kernel": base.ParameterType.WEIGHT, "bias": base.ParameterType.BIAS}}
    self.assertEqual(seen, [expected, expected])

  def test_an_optimizers_estimated_d_is_logged(self):

    class CountingState(NamedTuple):
      count: jax.Array

      def estimated_d(self):  # Marks the state as a d estimate (optimizers.estimated_d).
        return 0.5 * self.count

    counting = optax.GradientTransformation(
        lambda params: CountingState(jnp.zeros([], jnp.int32)),
        lambda updates, state, params=None: (updates, CountingState(state.count + 1)),
    )
    clock = FakeTime()
    sub = submission_lib.optimizer_submission(
        "counting", lambda learning_rate: optax.chain(optax.sgd(learning_rate), counting),
        batch_sizes={"tiny": 16})
    tmp = test_util.tempdir(self)
    trainer.run_trial(
        TinyWorkload(clock, eval_period=3.0), sub, {"learning_rate": 0.05}, trial_dir=tmp,
        rng_seed=0, record={}, max_global_steps=7, save_checkpoints=False, time_fn=clock,
        progress=lambda m: None,
    )
    for name in ("eval_measurements.csv", "measurements.csv"):
      rows = logs.CsvLog.resume(os.path.join(tmp, name)).rows
      self.assertEqual([(r["global_step"], r["optimizer/d"]) for r in rows],
                       [(3, 1.5), (6, 3.0), (7, 3.5)], name)

  def test_optimizers_that_need_the_loss_get_it(self):
    # induced_metric_log raises without `value=`; the registry adapter passes
    # the batch loss for entries with needs_value.
    self.assertTrue(optimizers.registry["induced_metric_log"].needs_value)
    clock = FakeTime()
    sub = submission_lib.registry_submission("induced_metric_log", batch_sizes={"tiny": 16})
    tmp = test_util.tempdir(self)
    trainer.run_trial(
        TinyWorkload(clock, eval_period=3.0), sub, {"learning_rate": 0.05}, trial_dir=tmp,
        rng_seed=0, record={}, max_global_steps=4, save_checkpoints=False, time_fn=clock,
        progress=lambda m: None,
    )
    rows = logs.CsvLog.resume(os.path.join(tmp, "eval_measurements.csv")).rows
    self.assertEqual(rows[-1]["global_step"], 4)
    self.assertTrue(np.isfinite(float(rows[-1]["train/loss"])))

  def test_registry_schedule_is_warmup_cosine_unless_the_method_sets_its_own(self):
    workload = TinyWorkload(FakeTime())
    params, _ = workload.init_model_fn(jax.random.key(0))
    batch = workload.train_batch(0, 0, 16)
    first_step = {}
    for name in ("adamw", "dog"):
      sub = submission_lib.registry_submission(name, batch_sizes={"tiny": 16})
      hparams = submission_lib.make_hyperparameters({})
      state = sub.init_optimizer_state(workload, params, None, hparams, jax.random.key(1))
      _, new_params, _ = sub.update_params(
          workload, params, None, None, hparams, batch, workload.loss_type, state, [], 0,
          jax.random.key(2))
      first_step[name] = max(float(jnp.abs(a - b).max()) for a, b in
                             zip(jax.tree.leaves(new_params), jax.tree.leaves(params)))
    self.assertEqual(first_step["adamw"], 0.0)  # Warmup from 0.
    self.assertGreater(first_step["dog"], 0.0)  # Constant rate: DoG's own step size.

  def test_load_submission_checks_the_api(self):
    path = os.path.join(test_util.tempdir(self), "partial.py")
    with open(path, "w") as f:
      f.write("def get_batch_size(name):\n  return 8\n")
    with self.assertRaisesRegex(ValueError, "lacks.*init_optimizer_state"):
      submission_lib.load_submission(path)
    with self.assertRaisesRegex(ValueError, "no such file"):
      submission_lib.load_submission("/nonexistent/sub.py")

  def test_submission_files_implement_the_api(self):
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "submissions")
    for name in ("nadamw.py", "steplab_radam.py"):
      sub = submission_lib.load_submission(os.path.join(root, name))
      self.assertTrue(sub.search_space)
      clock = FakeTime()
      point = {"learning_rate": 0.05, "one_minus_b1": 0.1, "weight_decay": 1e-4}
      tmp = test_util.tempdir(self)
      result = trainer.run_trial(
          TinyWorkload(clock, target=2.0), dataclasses.replace(sub, get_batch_size=lambda _: 16),
          point, trial_dir=tmp, rng_seed=0, record={"submission": sub.name},
          max_global_steps=300, save_checkpoints=False, time_fn=clock, progress=lambda m: None,
      )
      # It trains: the loss falls well below its start (whether an arbitrary
      # accuracy is reached within step_hint depends on the initial draw).
      losses = [r["validation/loss"] for r in logs.CsvLog.resume(os.path.join(tmp, "eval_measurements.csv")).rows]
      self.assertEqual(result.global_step, 300, name)
      self.assertLess(losses[-1], 0.75 * losses[0], name)

  def test_warmup_factor_builds_a_schedule_and_unknown_names_fail(self):
    import optimizers  # pylint: disable=g-import-not-at-top
    opt = submission_lib.build_optimizer(optimizers.radam, {"learning_rate": 1e-3, "warmup_factor": 0.1}, 100)
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update({"w": jnp.ones(3)}, opt.init(params), params)
    np.testing.assert_array_equal(updates["w"], 0.0)  # Warmup starts at zero.
    with self.assertRaisesRegex(ValueError, "not arguments of radam"):
      submission_lib.build_optimizer(optimizers.radam, {"beta_one": 0.9}, 100)
    with self.assertRaisesRegex(ValueError, "not arguments of adamw"):  # optax.nadamw is a partial.
      submission_lib.build_optimizer(optax.nadamw, {"beta_one": 0.9}, 100)

  def test_schedule_peak_args_take_the_peak(self):
    # AdaBound under warmup + cosine: its bounds refer to the peak, the registry's schedule_peak_args.
    import optimizers  # pylint: disable=g-import-not-at-top
    self.assertEqual(optimizers.registry["adabound"].schedule_peak_args, ("base_learning_rate",))
    point = {"learning_rate": 0.01, "warmup_factor": 0.1, "final_lr": 0.1}
    built = submission_lib.build_optimizer(optimizers.adabound, point, 100)
    by_hand = optimizers.adabound(optax.warmup_cosine_decay_schedule(0.0, 0.01, 10, 100), final_lr=0.1,
                                  base_learning_rate=0.01)
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}
    a, b = built.init(params), by_hand.init(params)
    for k in range(12):  # Through the warmup.
      g = {"w": jnp.sin(params["w"] + k)}
      (ua, a), (ub, b) = built.update(g, a, params), by_hand.update(g, b, params)
      np.testing.assert_array_equal(ua["w"], ub["w"])

  def _sgd_learning_rates(self, point, step_hint, steps, context=()):
    """The learning rates an SGD built from `point` applies over `steps` steps."""
    factory = lambda learning_rate: optax.sgd(learning_rate)
    opt = submission_lib.build_optimizer(factory, point, step_hint, schedule_context=context)
    params = {"w": jnp.zeros(())}
    state, rates = opt.init(params), []
    for _ in range(steps):
      updates, state = opt.update({"w": jnp.ones(())}, state, params)
      rates.append(-float(updates["w"]))
    return np.asarray(rates)

  def test_named_schedules_follow_the_step_hint_factor_and_their_options(self):
    import optimizers  # pylint: disable=g-import-not-at-top
    point = {"learning_rate": 0.1, "schedule": "wsd", "step_hint_factor": 0.5, "warmup_factor": 0.1,
             "schedule_decay_fraction": 0.4, "schedule_decay_shape": "1-sqrt"}
    expected = optimizers.warmup_stable_decay_schedule(
        0.1, total_steps=50, warmup_steps=5, decay_fraction=0.4, decay_shape="1-sqrt")
    # Exact: SGD evaluates the same schedule eagerly, op by op as here, times a gradient of 1.
    np.testing.assert_array_equal(self._sgd_learning_rates(point, 100, 60), [expected(t) for t in range(60)])
    # The default schedule is AlgoPerf's warmup + cosine, as before.
    rates = self._sgd_learning_rates({"learning_rate": 0.1, "warmup_factor": 0.05}, 100, 101)
    reference = optax.warmup_cosine_decay_schedule(0.0, 0.1, warmup_steps=5, decay_steps=100)
    np.testing.assert_array_equal(rates, [reference(t) for t in range(101)])  # Exact, as above.
    # The power schedule takes its batch size and tokens from the runner.
    rates = self._sgd_learning_rates({"learning_rate": 0.02, "schedule": "power"}, 100, 3,
                                     context={"batch_size": 16, "tokens_per_step": 1024})
    expected = optimizers.power_schedule(batch_size=16, tokens_per_step=1024, total_steps=100, max_value=0.02)
    np.testing.assert_array_equal(rates, [expected(t) for t in range(3)])  # Exact, as above.

  def test_refined_schedule_from_a_logged_grad_norms_file(self):
    path = os.path.join(test_util.tempdir(self), "grad_norms.csv")
    with open(path, "w") as f:
      f.write("step,grad_norm\n" + "".join(f"{t},{1.0 + 0.1 * t}\n" for t in range(20)))
    point = {"learning_rate": 0.1, "schedule": "refined", "schedule_grad_norms_path": path}
    expected = schedule_config.refined_schedule_from_file(path, 0.1, total_steps=20)
    # Exact: the same file, so the same table, looked up eagerly on both sides.
    np.testing.assert_array_equal(self._sgd_learning_rates(point, 20, 20), [expected(t) for t in range(20)])

  def test_one_cycle_can_cycle_b1(self):
    import optimizers  # pylint: disable=g-import-not-at-top
    point = {"learning_rate": 0.1, "schedule": "one_cycle", "schedule_cycle_momentum": True}
    opt = submission_lib.build_optimizer(optimizers.radam, point, 20)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    momentum = optimizers.one_cycle_momentum_schedule(20)
    for t in range(4):
      _, state = opt.update({"w": jnp.ones(3)}, state, params)
      # inject_hyperparams records the value the latest update used.
      # Exact: the eager update evaluates the same schedule op by op, as here.
      np.testing.assert_array_equal(state.hyperparams["b1"], momentum(t))
    with self.assertRaisesRegex(ValueError, "has no b1"):
      submission_lib.build_optimizer(lambda learning_rate: optax.sgd(learning_rate), point, 20)

  def test_bad_schedules_fail_clearly(self):
    import optimizers  # pylint: disable=g-import-not-at-top
    with self.assertRaisesRegex(ValueError, "wsd"):  # The valid names are listed.
      submission_lib.build_optimizer(optimizers.radam, {"learning_rate": 0.1, "schedule": "linear_cosine"}, 100)
    with self.assertRaisesRegex(ValueError, "decay_shape"):
      submission_lib.build_optimizer(
          optimizers.radam, {"learning_rate": 0.1, "schedule": "d2z", "schedule_decay_shape": "cosine"}, 100)
    with self.assertRaisesRegex(ValueError, "needs schedule 'one_cycle'"):
      submission_lib.build_optimizer(
          optimizers.radam, {"learning_rate": 0.1, "schedule": "wsd", "schedule_cycle_momentum": True}, 100)
    with self.assertRaisesRegex(ValueError, "needs a learning_rate"):
      submission_lib.build_optimizer(optimizers.dog, {"schedule": "wsd"}, 100)


if __name__ == "__main__":
  absltest.main()
