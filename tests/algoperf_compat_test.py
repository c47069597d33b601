"""AlgoPerf submission files run unchanged: API details a submission relies on.

The submissions here are written by the tests in AlgoPerf's style (they import
`algoperf.spec`, jit their own step with the hyperparameters as arguments,
pass `spec.ForwardPassMode`, may swap parameters in `prepare_for_eval`) and
record what the runner hands them, so each test checks one promise of
AlgoPerf's `submission_runner.py` against steplab's runner.
"""

from tests import test_util  # Device set-up first.

import json
import os
import subprocess
import sys
import textwrap
import types

from absl import app
from absl import flags
from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

from experiments import algoperf_compat
from experiments import logs
from experiments import run
from experiments import scoring
from experiments import submission as submission_lib
from experiments import trainer
from experiments import workloads
from experiments.algoperf_compat import spec
from experiments.workloads import base

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# An AlgoPerf-style submission (SGD with momentum), parameterised by the
# test through the constants at the top. It records what it is given in
# RECORD (a module global the test reads back).
PROBE_SUBMISSION = '''
"""A probe submission in AlgoPerf's style."""
import functools

import jax
import jax.numpy as jnp
import optax

from algoperf import jax_sharding_utils
from algoperf import spec

KNOWN_WORKLOADS = {known}
COMPLETE_AT_STEP = {complete_at}
SWAP_IN_PREPARE = {swap}
RECORD = []


def get_batch_size(workload_name):
  if workload_name in KNOWN_WORKLOADS:
    return KNOWN_WORKLOADS[workload_name]
  raise ValueError(f"Unsupported workload name: {{workload_name}}.")


def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
  del model_state, rng
  RECORD.append(("init", hyperparameters, workload.step_hint))
  lr = 0.1 if hyperparameters is None else hyperparameters.learning_rate
  opt = optax.sgd(lr, momentum=0.9)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape_tuple), workload.param_shapes)
  return (opt.init(zeros), jnp.zeros((), jnp.int32)), opt.update


@functools.partial(jax.jit, static_argnums=(0, 1))
def _step(workload, update_fn, opt_state, params, model_state, batch, rng, label_smoothing,
          dropout_rate):
  def loss_fn(p):
    logits, new_state = workload.model_fn(
        p, batch, model_state, spec.ForwardPassMode.TRAIN, rng, update_batch_norm=True,
        dropout_rate=dropout_rate)
    losses = workload.loss_fn(batch["targets"], logits, batch.get("weights"),
                              label_smoothing=label_smoothing)
    return losses["summed"] / losses["n_valid_examples"], new_state
  (loss, new_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = update_fn(grads, opt_state, params)
  return opt_state, optax.apply_updates(params, updates), new_state, loss


def update_params(workload, current_param_container, current_params_types, model_state,
                  hyperparameters, batch, loss_type, optimizer_state, eval_results, global_step,
                  rng, train_state=None):
  (opt_state, holding), update_fn = optimizer_state
  RECORD.append(("update", global_step, rng, int(holding), current_param_container,
                 current_params_types, loss_type, train_state))
  if COMPLETE_AT_STEP is not None and global_step == COMPLETE_AT_STEP:
    raise spec.TrainingCompleteError()
  if holding:  # prepare_for_eval handed out params + 1: undo it.
    current_param_container = jax.tree.map(lambda p: p - 1.0, current_param_container)
  smoothing = getattr(hyperparameters, "label_smoothing", 0.0)
  dropout = getattr(hyperparameters, "dropout_rate", 0.0)
  opt_state, params, model_state, loss = _step(
      workload, update_fn, opt_state, current_param_container, model_state, batch, rng,
      smoothing, dropout)
  if workload.metrics_logger is not None:
    workload.metrics_logger.append_scalar_metrics({{"probe_loss": loss}}, global_step)
  return ((opt_state, jnp.zeros((), jnp.int32)), update_fn), params, model_state


def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                     hyperparameters, loss_type, optimizer_state, eval_results, global_step, rng):
  RECORD.append(("prepare", global_step, rng))
  if not SWAP_IN_PREPARE:
    return optimizer_state, current_param_container, model_state
  (opt_state, _), update_fn = optimizer_state
  shifted = jax.tree.map(lambda p: p + 1.0, current_param_container)
  RECORD.append(("handed_out", shifted))
  return ((opt_state, jnp.ones((), jnp.int32)), update_fn), shifted, model_state


def data_selection(workload, input_queue, optimizer_state, current_param_container, model_state,
                   hyperparameters, global_step, rng):
  RECORD.append(("data", global_step, rng))
  return next(input_queue)
'''


def write_probe(directory: str, known=None, complete_at=None, swap=False) -> str:
  """Writes `{directory}/probe_submission/submission.py`, returns its path."""
  folder = os.path.join(directory, "probe_submission")
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, "submission.py")
  with open(path, "w") as f:
    f.write(PROBE_SUBMISSION.format(known=repr(known or {"mnist": 16}), complete_at=complete_at,
                                    swap=swap))
  return path


def run_probe(test, sub, point, **kwargs):
  """A logreg trial; wall-clock measure, so no step-cost probe adds update_params calls."""
  workload = workloads.get_workload("logreg")
  directory = test_util.tempdir(test)
  kwargs.setdefault("measure", "wallclock")
  result = trainer.run_trial(
      workload, sub, point, trial_dir=directory, rng_seed=3, record={}, save_checkpoints=False,
      progress=lambda m: None, **kwargs)
  return result, directory


def module_of(sub: submission_lib.Submission) -> types.ModuleType:
  return sys.modules[sub.update_params.__module__]


class InstallTest(absltest.TestCase):

  def test_provides_algoperf_when_none_is_installed(self):
    self.assertIs(algoperf_compat.install(), spec)
    import algoperf.jax_sharding_utils  # pylint: disable=g-import-not-at-top
    import algoperf.spec  # pylint: disable=g-import-not-at-top
    self.assertIs(algoperf.spec, spec)
    self.assertEqual(algoperf.jax_sharding_utils.get_batch_dim_sharding().spec, jax.sharding.PartitionSpec("batch"))
    self.assertIs(algoperf_compat.install(), spec)  # Idempotent.

  def test_never_shadows_a_real_installation(self):
    fake = test_util.tempdir(self)
    os.makedirs(os.path.join(fake, "algoperf"))
    with open(os.path.join(fake, "algoperf", "__init__.py"), "w") as f:
      f.write("")
    with open(os.path.join(fake, "algoperf", "spec.py"), "w") as f:
      f.write("import enum\nREAL = True\nclass ParameterType(enum.Enum):\n  WEIGHT = 0\n  BIAS = 1\n")
    code = textwrap.dedent("""
        import enum
        from experiments import algoperf_compat
        from experiments.algoperf_compat import spec as ours
        s = algoperf_compat.install()
        assert getattr(s, "REAL", False), s
        types_tree = {"w": ours.ParameterType.WEIGHT, "b": ours.ParameterType.BIAS}
        converted = algoperf_compat.to_spec_enums(types_tree, s)
        assert converted["b"] is s.ParameterType.BIAS, converted
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([fake, ROOT, os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    self.assertEqual(out.returncode, 0, out.stderr)
    self.assertIn("ok", out.stdout)


class WorkloadApiTest(absltest.TestCase):

  def test_attributes_submissions_read(self):
    w = workloads.get_workload("logreg")
    self.assertEqual(w.step_hint, w.targets.step_hint)
    self.assertEqual(w.target_metric_name, "loss")
    self.assertEqual(w.validation_target_value, w.targets.validation)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape_tuple), w.param_shapes)
    params, _ = w.init_model_fn(jax.random.PRNGKey(0))
    self.assertEqual(jax.tree.map(jnp.shape, zeros), jax.tree.map(jnp.shape, params))
    self.assertIsNone(w.metrics_logger)
    self.assertIs(w.loss_type, spec.LossType.SOFTMAX_CROSS_ENTROPY)
    self.assertTrue(w.has_reached_validation_target({"validation/loss": 0.0}))
    self.assertFalse(w.has_reached_validation_target({"validation/loss": 9.0}))

  def test_forward_pass_mode(self):
    self.assertTrue(base.is_train_mode(spec.ForwardPassMode.TRAIN))
    self.assertFalse(base.is_train_mode(spec.ForwardPassMode.EVAL))
    foreign = __import__("enum").Enum("ForwardPassMode", "TRAIN EVAL")  # A real AlgoPerf's enum.
    self.assertTrue(base.is_train_mode(foreign.TRAIN))
    for bad in ("training", 0, None, spec.LossType.SOFTMAX_CROSS_ENTROPY):
      with self.assertRaisesRegex(ValueError, "ForwardPassMode"):
        base.is_train_mode(bad)

  def test_train_mode_draws_dropout_and_eval_mode_does_not(self):
    from experiments.workloads import transformer  # pylint: disable=g-import-not-at-top
    model = transformer.TransformerLM(context_length=8, model_dim=16, num_layers=1, num_heads=2, mlp_dim=32)
    tokens = np.arange(8, dtype=np.int32)[None] % 7
    params = model.init(jax.random.PRNGKey(0), tokens)
    rngs = {"dropout": jax.random.PRNGKey(1)}
    clean = model.apply(params, tokens)

    @jax.jit
    def traced(rate, key):  # AlgoPerf submissions pass the rate into jit.
      return model.apply(params, tokens, deterministic=False, dropout_rate=rate, rngs={"dropout": key})

    # A traced rate of 0 keeps every element: the same compiled program gives the same output
    # bit for bit whatever the dropout key (exact, unlike a comparison with the eval pass, a
    # differently fused program); a rate of 0.5 depends on the key and moves the output.
    other = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(traced(0.0, rngs["dropout"]), traced(0.0, other))
    scale = float(jnp.abs(clean).max())
    self.assertGreater(float(jnp.abs(traced(0.5, rngs["dropout"]) - traced(0.5, other)).max()), 0.1 * scale)
    self.assertGreater(float(jnp.abs(traced(0.5, rngs["dropout"]) - clean).max()), 0.1 * scale)
    x = jnp.linspace(-1.0, 1.0, 64).reshape(8, 8)
    dropout = jax.jit(lambda rate: transformer.Dropout().apply({}, x, rate, False, rngs=rngs))
    np.testing.assert_array_equal(dropout(0.0), x)
    kept = dropout(0.25)
    # keep = 1 - 0.25 = 0.75 exactly; jitted, x / keep may become x * (1 / keep): 2 roundings
    # against 1, so 2k u = 4 u relative for k = 2.
    np.testing.assert_allclose(kept[kept != 0], (x / 0.75)[kept != 0], rtol=4 * 2.0**-24, atol=0)
    self.assertGreater(int((kept == 0).sum()), 0)

  def test_label_smoothing_may_be_traced(self):
    w = workloads.get_workload("logreg")
    params, _ = w.init_model_fn(None)
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(0), p.shape), params)
    batch = w.train_batch(0, 0, 16)

    def loss(smoothing):
      logits, _ = w.model_fn(params, batch, None, spec.ForwardPassMode.TRAIN, None, False)
      return w.loss_fn(batch["targets"], logits, None, smoothing)["summed"]

    eager = float(loss(0.2))
    # Eager and jit fuse differently; bound their float32 difference (u = 2^-24) from the data.
    # Logits: a 64-term dot plus bias, (n + 1) u of sum |x w| + |b| per side; the loss moves by at
    # most 2 max|dz| per example (|dL/dz_c| = |p_c - t_c| sums to <= 2). Log-softmax over C = 10
    # classes: (C + 6) u of |lse| + max|z| per side; the sum of B = 16 non-negative losses in
    # another order: 2 (B - 1) u of their sum.
    u, x = 2.0**-24, np.asarray(batch["inputs"], np.float64)
    kernel, bias = (np.asarray(params[k], np.float64) for k in ("kernel", "bias"))
    z = x @ kernel + bias
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    dz = 2 * 65 * u * (np.abs(x) @ np.abs(kernel) + np.abs(bias)).max(1)
    bound = (2 * dz + 2 * 16 * u * (np.abs(lse) + np.abs(z).max(1))).sum() + 2 * 15 * u * abs(eager)
    self.assertLess(abs(float(jax.jit(loss)(0.2)) - eager), bound)
    self.assertGreater(abs(eager - float(loss(0.0))), 10 * bound)  # Smoothing matters.

  def test_hyperparameters_are_a_namedtuple_pytree_or_none(self):
    h = submission_lib.make_hyperparameters({"learning_rate": 0.1, "beta1": 0.9})
    self.assertEqual(h.learning_rate, 0.1)
    self.assertEqual(h._asdict(), {"learning_rate": 0.1, "beta1": 0.9})
    self.assertEqual(jax.tree.leaves(h), [0.1, 0.9])
    self.assertIsNone(submission_lib.make_hyperparameters(None))
    with self.assertRaisesRegex(ValueError, "identifiers"):
      submission_lib.make_hyperparameters({"learning rate": 0.1})


class RunnerContractTest(absltest.TestCase):

  def test_what_a_submission_is_handed(self):
    path = write_probe(test_util.tempdir(self))
    sub = submission_lib.load_submission(path)
    self.assertEqual(sub.name, "probe_submission")  # Named by its folder, not "submission".
    _, directory = run_probe(self, sub, {"learning_rate": 0.05, "label_smoothing": 0.1}, max_global_steps=6)
    record = module_of(sub).RECORD
    init = record[0]
    self.assertEqual(init[0], "init")
    self.assertEqual(type(init[1]).__name__, "Hyperparameters")  # A namedtuple, as AlgoPerf.
    self.assertEqual(init[2], workloads.get_workload("logreg").step_hint)
    updates = [r for r in record if r[0] == "update"]
    self.assertEqual([u[1] for u in updates], list(range(6)))
    steps_rngs = {}
    for kind, step, rng, *_ in (r for r in record if r[0] in ("data", "update", "prepare")):
      self.assertEqual(rng.dtype, jnp.uint32)  # Raw keys, as AlgoPerf's PRNGKey.
      steps_rngs.setdefault(step, {})[kind] = tuple(np.asarray(rng))
    self.assertLen(set(steps_rngs[0].values()), 2)  # Data selection and update keys differ.
    first_update = updates[0]
    types_tree, loss_type, train_state = first_update[5], first_update[6], first_update[7]
    self.assertEqual(jax.tree.leaves(types_tree), [spec.ParameterType.BIAS, spec.ParameterType.WEIGHT])
    self.assertIs(loss_type, spec.LossType.SOFTMAX_CROSS_ENTROPY)
    self.assertIsInstance(train_state, types.MappingProxyType)  # Read-only.
    self.assertIn("accumulated_submission_time", train_state)
    # What the submission logged through workload.metrics_logger.
    rows = logs.CsvLog.resume(os.path.join(directory, "measurements.csv")).rows
    self.assertEqual([r["global_step"] for r in rows if r.get("probe_loss") is not None], list(range(6)))

  def test_batch_size_falls_back_to_the_algoperf_base_workload(self):
    sub = submission_lib.load_submission(write_probe(test_util.tempdir(self), known={"mnist": 24}))
    self.assertEqual(trainer.batch_size_for(sub, workloads.get_workload("logreg")), (24, "mnist"))
    unknown = submission_lib.load_submission(write_probe(test_util.tempdir(self), known={"wmt": 8}))
    with self.assertRaisesRegex(ValueError, "knows none of.*logreg.*mnist"):
      trainer.batch_size_for(unknown, workloads.get_workload("logreg"))

  def test_self_tuning_gets_none(self):
    sub = submission_lib.load_submission(write_probe(test_util.tempdir(self)))
    run_probe(self, sub, None, max_global_steps=2, tuning_ruleset="self")
    self.assertIsNone(module_of(sub).RECORD[0][1])

  def test_training_complete_error_ends_with_one_last_eval(self):
    sub = submission_lib.load_submission(write_probe(test_util.tempdir(self), complete_at=4))
    result, directory = run_probe(self, sub, {"learning_rate": 0.05}, max_global_steps=50)
    self.assertEqual(result.global_step, 5)  # The raising step counts, as AlgoPerf.
    rows = logs.CsvLog.resume(os.path.join(directory, "eval_measurements.csv")).rows
    self.assertEqual(rows[-1]["global_step"], 5)

  def test_training_continues_from_what_prepare_for_eval_returns(self):
    sub = submission_lib.load_submission(write_probe(test_util.tempdir(self), swap=True))
    workload = workloads.get_workload("logreg")
    workload.targets = workload.targets.__class__(**{**workload.targets.__dict__, "eval_period_time_sec": 0.0})
    directory = test_util.tempdir(self)
    trainer.run_trial(workload, sub, {"learning_rate": 0.05}, trial_dir=directory, rng_seed=0,
                      record={}, max_global_steps=4, save_checkpoints=False, progress=lambda m: None,
                      measure="wallclock")
    record = module_of(sub).RECORD
    handed_out = [r[1] for r in record if r[0] == "handed_out"]
    updates = [r for r in record if r[0] == "update"]
    self.assertLen(handed_out, 4)  # An evaluation after every step.
    for given, next_update in zip(handed_out[:-1], updates[1:]):
      self.assertEqual(next_update[3], 1)  # The flag prepare_for_eval set.
      for a, b in zip(jax.tree.leaves(given), jax.tree.leaves(next_update[4])):
        np.testing.assert_array_equal(a, b)  # Exactly the params it handed out.


class RegistryAdapterTest(absltest.TestCase):

  def test_schedule_free_hands_out_x_and_trains_from_y(self):
    workload = workloads.get_workload("logreg")
    sub = submission_lib.registry_submission("schedule_free_adamw")
    params, model_state = workload.init_model_fn(None)
    hparams = submission_lib.make_hyperparameters({"learning_rate": 0.1})
    state = sub.init_optimizer_state(workload, params, model_state, hparams, jax.random.PRNGKey(0))
    batch = workload.train_batch(0, 0, 16)
    args = (workload.model_params_types, model_state, hparams)
    def steps(state, p, n):
      for i in range(n):
        state, p, _ = sub.update_params(workload, p, *args, workload.train_batch(0, i, 16),
                                        workload.loss_type, state, [], i, jax.random.PRNGKey(i))
      return state, p

    state, y = steps(state, params, 2)  # x = y after one step (x_1 = z_1); they part after two.
    state, x, _ = sub.prepare_for_eval(workload, y, *args, workload.loss_type, state, [], 2,
                                       jax.random.PRNGKey(9))
    self.assertGreater(float(jnp.abs(x["kernel"] - y["kernel"]).max()), 0.0)
    self.assertIs(submission_lib.training_params(state, x), y)  # Diagnostics take gradients at y.
    # The next update from the runner's x trains from y: the same as never evaluating.
    swapped, after_eval, _ = sub.update_params(workload, x, *args, batch, workload.loss_type, state, [],
                                               2, jax.random.PRNGKey(3))
    plain_state = sub.init_optimizer_state(workload, params, model_state, hparams, jax.random.PRNGKey(0))
    plain_state, y_plain = steps(plain_state, params, 2)
    _, no_eval, _ = sub.update_params(workload, y_plain, *args, batch, workload.loss_type, plain_state,
                                      [], 2, jax.random.PRNGKey(3))
    for a, b in zip(jax.tree.leaves(after_eval), jax.tree.leaves(no_eval)):
      np.testing.assert_array_equal(a, b)
    self.assertIs(submission_lib.training_params(swapped, after_eval), after_eval)


class CommandLineTest(absltest.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  def _run(self, *argv):
    FLAGS(["run", "--workload=logreg", "--max_global_steps=3", "--save_checkpoints=false", *argv])
    run.main(["run"])

  def test_list_search_space_shorter_than_the_trials_is_truncated(self):
    directory = test_util.tempdir(self)
    space = os.path.join(directory, "space.json")
    with open(space, "w") as f:
      json.dump([{"learning_rate": 0.1}, {"learning_rate": 0.2}], f)
    path = write_probe(directory)
    self._run(f"--experiment_dir={directory}/runs", f"--submission_path={path}",
              f"--tuning_search_space={space}", "--num_tuning_trials=3")
    trials = os.listdir(os.path.join(directory, "runs", "probe_submission", "logreg", "study_0"))
    self.assertEqual(sorted(trials), ["trial_0", "trial_1"])

  def test_search_space_beside_the_submission_is_the_default(self):
    directory = test_util.tempdir(self)
    path = write_probe(directory)
    with open(os.path.join(os.path.dirname(path), "tuning_search_space.json"), "w") as f:
      json.dump([{"learning_rate": 0.1}], f)  # AlgoPerf's layout: beside submission.py.
    self._run(f"--experiment_dir={directory}/runs", f"--submission_path={path}")
    hparams = logs.read_json(os.path.join(directory, "runs", "probe_submission", "logreg", "study_0",
                                          "trial_0", "hparams.json"))
    self.assertEqual(hparams, {"learning_rate": 0.1})

  def test_algoperf_names_for_registry_optimizers(self):
    # The shape of AlgoPerf's nadamw/adamw tuning_search_space.json.
    directory = test_util.tempdir(self)
    space = os.path.join(directory, "space.json")
    with open(space, "w") as f:
      json.dump({"learning_rate": {"min": 1e-3, "max": 1e-2, "scaling": "log"},
                 "one_minus_beta1": {"min": 2e-2, "max": 0.5, "scaling": "log"},
                 "beta2": {"feasible_points": [0.999]}, "warmup_factor": {"feasible_points": [0.05]},
                 "weight_decay": {"min": 5e-3, "max": 1.0, "scaling": "log"},
                 "label_smoothing": {"feasible_points": [0.1, 0.2]},
                 "dropout_rate": {"feasible_points": [0.0, 0.1]}}, f)
    for optimizer in ("adamw", "nadamw"):
      self._run(f"--experiment_dir={directory}/runs", f"--optimizer={optimizer}",
                f"--tuning_search_space={space}", "--num_tuning_trials=2")
      FLAGS.unparse_flags()
    self.assertLen(os.listdir(os.path.join(directory, "runs", "nadamw", "logreg", "study_0")), 2)

  def test_algoperf_layout_is_written_and_scored(self):
    directory = test_util.tempdir(self)
    self._run(f"--experiment_dir={directory}", "--optimizer=schedule_free_adamw", "--log_layout=algoperf",
              "--num_tuning_trials=2", "--submission_name=sf")
    trial = os.path.join(directory, "sf", "study_0", "logreg_jax", "trial_1")
    meta = logs.read_json(os.path.join(trial, "meta_data_0.json"))
    w = workloads.get_workload("logreg")
    self.assertEqual(meta["workload.validation_target_value"], w.targets.validation)
    self.assertEqual(meta["workload.target_metric_name"], "loss")
    self.assertEqual(meta["workload.max_allowed_runtime_sec"], w.targets.max_allowed_runtime_sec)
    self.assertTrue(os.path.exists(os.path.join(trial, "flags_0.json")))
    rows = logs.CsvLog.resume(os.path.join(trial, "eval_measurements.csv")).rows
    self.assertTrue(all(r["score"] == r["accumulated_submission_time"] for r in rows))
    experiment = scoring.load_experiment(directory)
    self.assertEqual(sorted(experiment.trials["sf"]["logreg"][0]), [1, 2])

  def test_submission_that_knows_no_name_is_a_usage_error(self):
    directory = test_util.tempdir(self)
    path = write_probe(directory, known={"wmt": 8})
    with self.assertRaisesRegex(app.UsageError, "knows none of"):
      self._run(f"--experiment_dir={directory}/runs", f"--submission_path={path}")


if __name__ == "__main__":
  absltest.main()
