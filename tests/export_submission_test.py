"""experiments.export_submission: AlgoPerf submission folders for registry optimizers.

An exported folder must follow AlgoPerf's API to the letter (so it can be
submitted as it is) and run in steplab's runner through the path AlgoPerf
submissions take (`--submission_path`, `--tuning_search_space`).
"""

from tests import test_util  # Device set-up first.

import dataclasses
import inspect
import json
import os
import subprocess
import sys

from absl import app
from absl import flags
from absl.testing import absltest
from absl.testing import parameterized
import jax
import numpy as np
import yaml

from experiments import algoperf_compat
from experiments import export_submission
from experiments import run
from experiments import submission as submission_lib
from experiments import trainer
from experiments import tuning
from experiments import workloads
import optimizers

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# AlgoPerf's parameter names, copied from algoperf/spec.py
# (mlcommons/algorithmic-efficiency main, commit 2c90454f): a submission must
# use exactly these.
ALGOPERF_PARAMETERS = {
    "get_batch_size": ["workload_name"],
    "init_optimizer_state": ["workload", "model_params", "model_state", "hyperparameters", "rng"],
    "update_params": [
        "workload", "current_param_container", "current_params_types", "model_state",
        "hyperparameters", "batch", "loss_type", "optimizer_state", "eval_results", "global_step",
        "rng", "train_state",
    ],
    "prepare_for_eval": [
        "workload", "current_param_container", "current_params_types", "model_state",
        "hyperparameters", "loss_type", "optimizer_state", "eval_results", "global_step", "rng",
    ],
    "data_selection": [
        "workload", "input_queue", "optimizer_state", "current_param_container", "model_state",
        "hyperparameters", "global_step", "rng",
    ],
}
EXPORTED = ("radam", "schedule_free_adamw", "dog")


def _export(test, name, **kwargs):
  folder = os.path.join(test_util.tempdir(test), name)
  export_submission.export(name, folder, **kwargs)
  return folder


def _load(folder):
  return submission_lib.load_submission(os.path.join(folder, "submission.py"))


class FolderTest(parameterized.TestCase):

  @parameterized.parameters(*EXPORTED)
  def test_files_and_search_space(self, name):
    folder = _export(self, name)
    self.assertCountEqual(os.listdir(folder), export_submission.FILES)
    with open(os.path.join(folder, "__init__.py")) as f:
      self.assertEqual(f.read(), "")
    with open(os.path.join(folder, "tuning_search_space.json")) as f:
      space = json.load(f)
    spec = optimizers.registry[name]
    for key, dim in spec.search_space.items():
      self.assertEqual(space[key], dict(dim))
    if not spec.sets_own_schedule:  # The adapter's default, made explicit.
      self.assertEqual(space["warmup_factor"], {"feasible_points": [submission_lib.REGISTRY_WARMUP_FACTOR]})
    else:  # A warmup_factor would switch a schedule on for DoG and schedule-free.
      self.assertNotIn("warmup_factor", space)
    tuning.load_search_space(os.path.join(folder, "tuning_search_space.json"))  # steplab reads it.
    with open(os.path.join(folder, "submission_info.yml")) as f:
      info = yaml.safe_load(f)
    self.assertEqual(info["submission_folder"], f"submissions/external_tuning/{name}")
    self.assertEqual((info["ruleset"], info["framework"]), ("external", "JAX"))
    self.assertIn("version", info)
    with open(os.path.join(folder, "requirements.txt")) as f:
      self.assertEqual([l for l in f.read().splitlines() if not l.startswith("#")],
                       [f"steplab=={export_submission.steplab_version().split()[0]}"])
    with open(os.path.join(folder, "submission.py")) as f:
      text = f.read()
    self.assertIn(spec.paper, " ".join(text.split()))
    self.assertIn("from algoperf import spec", text)
    self.assertIn(f"registry_submission(OPTIMIZER, batch_sizes=BATCH_SIZES)", text)

  def test_self_tuning_info_and_requirement(self):
    folder = _export(self, "radam", ruleset="self", authors="A. Author",
                     steplab_requirement="steplab @ git+https://example.org/steplab@abc")
    with open(os.path.join(folder, "submission_info.yml")) as f:
      info = yaml.safe_load(f)
    self.assertEqual((info["ruleset"], info["authors"]), ("self-tuning", "A. Author"))
    self.assertEqual(info["submission_folder"], "submissions/self_tuning/radam")
    with open(os.path.join(folder, "requirements.txt")) as f:
      self.assertEqual(f.read().splitlines()[-1], "steplab @ git+https://example.org/steplab@abc")

  @parameterized.parameters(*EXPORTED)
  def test_functions_have_algoperf_signatures(self, name):
    folder = _export(self, name)
    sub = _load(folder)
    self.assertEqual(sub.name, name)  # The folder's name, as AlgoPerf's logs use it.
    spec = algoperf_compat.install()
    for function, expected in ALGOPERF_PARAMETERS.items():
      parameters = inspect.signature(getattr(sub, function)).parameters
      self.assertEqual(list(parameters), expected, function)
      if function != "get_batch_size":
        self.assertIs(parameters["rng"].annotation, spec.RandomState, function)
    self.assertIsNone(inspect.signature(sub.update_params).parameters["train_state"].default)
    self.assertIs(inspect.signature(sub.init_optimizer_state).return_annotation, spec.OptimizerState)
    self.assertTrue(sub.needs_train_state)

  def test_batch_sizes(self):
    sub = _load(_export(self, "radam"))
    self.assertEqual(sub.get_batch_size("mnist"), 16)  # AlgoPerf's table.
    self.assertEqual(sub.get_batch_size("finewebedu_lm"), 64)
    self.assertEqual(sub.get_batch_size("criteo1tb"), 262_144)
    self.assertEqual(sub.get_batch_size("logreg"), workloads.WORKLOADS["logreg"].default_batch_size)
    with self.assertRaisesRegex(ValueError, "criteo1tb_layernorm"):
      sub.get_batch_size("criteo1tb_layernorm")  # AlgoPerf then asks for 'criteo1tb'.


class RunnerTest(parameterized.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  @parameterized.parameters(*EXPORTED)
  def test_runs_in_steplab_under_both_rulesets(self, name):
    folder = _export(self, name)
    experiment_dir = test_util.tempdir(self)
    common = ["run", "--workload=logreg", f"--submission_path={folder}/submission.py",
              f"--experiment_dir={experiment_dir}", "--max_global_steps=4", "--save_checkpoints=false"]
    FLAGS(common + [f"--tuning_search_space={folder}/tuning_search_space.json", "--num_tuning_trials=2"])
    run.main(["run"])
    with open(os.path.join(folder, "tuning_search_space.json")) as f:
      space = json.load(f)
    external = []
    for trial in range(2):
      trial_dir = os.path.join(experiment_dir, name, "logreg", "study_0", f"trial_{trial}")
      with open(os.path.join(trial_dir, "meta_data.json")) as f:
        meta = json.load(f)
      self.assertEqual((meta["status"], meta["global_step"]), ("complete", 4))
      self.assertEqual(set(meta["hyperparameters"]), set(space))
      self.assertTrue(np.isfinite(meta["final_metrics"]["validation/loss"]))
      external.append(meta["hyperparameters"])
    self.assertNotEqual(external[0], external[1])
    FLAGS.unparse_flags()
    FLAGS(common + ["--tuning_ruleset=self", "--overwrite"])
    run.main(["run"])
    with open(os.path.join(experiment_dir, name, "logreg", "study_0", "trial_0", "meta_data.json")) as f:
      meta = json.load(f)
    self.assertIsNone(meta["hyperparameters"])  # Self-tuning: the registry defaults.
    self.assertEqual((meta["status"], meta["global_step"]), ("complete", 4))
    self.assertTrue(np.isfinite(meta["final_metrics"]["validation/loss"]))

  def test_schedule_free_evaluates_at_x_and_trains_on_from_y(self):
    sub = _load(_export(self, "schedule_free_adamw"))
    point = {"learning_rate": 0.01}

    def trajectory(eval_period):
      """(params update_params got, params it returned, prepare_for_eval's (in, out))."""
      calls = dict(update_in=[], update_out=[], prepared=[])

      def update_params(workload, params, *args, **kwargs):
        calls["update_in"].append(params)
        result = sub.update_params(workload, params, *args, **kwargs)
        calls["update_out"].append(result[1])
        return result

      def prepare_for_eval(workload, params, *args):
        result = sub.prepare_for_eval(workload, params, *args)
        calls["prepared"].append((len(calls["update_out"]), params, result[1]))
        return result

      workload = workloads.get_workload("logreg")
      workload.targets = dataclasses.replace(workload.targets, eval_period_time_sec=eval_period)
      trainer.run_trial(
          workload, dataclasses.replace(sub, update_params=update_params, prepare_for_eval=prepare_for_eval),
          point, trial_dir=test_util.tempdir(self), rng_seed=0, record={}, max_global_steps=4,
          save_checkpoints=False, budget_sec=1e9, stop_at_target=False, progress=lambda m: None,
          measure="wallclock")
      return calls

    every_step, at_end = trajectory(0.0), trajectory(1e9)
    self.assertLen(every_step["prepared"], 4)
    self.assertLen(at_end["prepared"], 1)  # At the step cap only.
    leaves = lambda tree: [np.asarray(x) for x in jax.tree.leaves(tree)]
    for step, given, evaluated in every_step["prepared"]:
      # Evaluated at x, which differs from the training point y after the
      # first step (x_1 = z_1 = y_1) ...
      if step > 1:
        self.assertFalse(all(np.array_equal(a, b) for a, b in zip(leaves(given), leaves(evaluated))), step)
      if step < 4:  # ... the runner continues from x, as AlgoPerf's does ...
        for a, b in zip(leaves(every_step["update_in"][step]), leaves(evaluated)):
          np.testing.assert_array_equal(a, b)
    # ... and the adapter trains on from y: evaluations leave the trajectory unchanged.
    for step, (ours, theirs) in enumerate(zip(every_step["update_out"], at_end["update_out"])):
      for a, b in zip(leaves(ours), leaves(theirs)):
        np.testing.assert_array_equal(a, b, err_msg=f"step {step}")


class CommandTest(absltest.TestCase):

  def test_bad_inputs(self):
    directory = test_util.tempdir(self)
    with self.assertRaisesRegex(app.UsageError, "unknown --optimizer 'adamx'.*radam"):
      export_submission.export_command("adamx", os.path.join(directory, "adamx"), out=lambda m: None)
    with self.assertRaisesRegex(app.UsageError, "--output_dir is required"):
      export_submission.export_command("radam", None, out=lambda m: None)
    with self.assertRaisesRegex(app.UsageError, "exactly one of --optimizer=NAME and --all"):
      export_submission.export_command("radam", directory, export_all=True, out=lambda m: None)
    with self.assertRaisesRegex(app.UsageError, "exactly one of"):
      export_submission.export_command(None, directory, out=lambda m: None)
    with self.assertRaisesRegex(app.UsageError, "'my-radam' is not a Python identifier"):
      export_submission.export_command("radam", os.path.join(directory, "my-radam"), out=lambda m: None)
    with self.assertRaisesRegex(ValueError, "unknown ruleset"):
      export_submission.export("radam", os.path.join(directory, "radam"), ruleset="selftuning")
    with open(os.path.join(directory, "notes.txt"), "w") as f:
      f.write("mine")
    with self.assertRaisesRegex(app.UsageError, "not empty: pass --overwrite"):
      export_submission.export_command("radam", directory, out=lambda m: None)

  def test_overwrite_replaces_the_files_and_keeps_others(self):
    parent = test_util.tempdir(self)
    folder = os.path.join(parent, "radam")
    export_submission.export("radam", folder)
    with open(os.path.join(folder, "notes.txt"), "w") as f:
      f.write("mine")
    with self.assertRaisesRegex(ValueError, "--overwrite"):
      export_submission.export("dog", folder)
    export_submission.export("dog", folder, overwrite=True)
    self.assertTrue(os.path.exists(os.path.join(folder, "notes.txt")))
    with open(os.path.join(folder, "submission.py")) as f:
      self.assertIn('OPTIMIZER = "dog"', f.read())

  def test_all_exports_every_optimizer(self):
    directory = test_util.tempdir(self)
    printed = []
    folders = export_submission.export_command(None, directory, export_all=True, out=printed.append)
    self.assertEqual(sorted(os.listdir(directory)), sorted(optimizers.registry))
    self.assertLen(folders, len(optimizers.registry))
    for name in optimizers.registry:
      sub = _load(os.path.join(directory, name))
      self.assertEqual(sub.get_batch_size("mnist"), 16)
    self.assertIn("python -m experiments.run --workload=logreg --submission_path=", printed[-1])
    with self.assertRaisesRegex(app.UsageError, "not empty"):  # Checked before writing anything.
      export_submission.export_command(None, directory, export_all=True, out=printed.append)

  def test_command_line(self):
    directory = test_util.tempdir(self)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    command = [sys.executable, "-m", "experiments.export_submission", "--optimizer=dog"]
    done = subprocess.run(command + [f"--output_dir={directory}/dog"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    self.assertEqual(done.returncode, 0, done.stderr)
    self.assertIn(f"{directory}/dog/submission.py", done.stdout)
    self.assertIn(f"--tuning_search_space={directory}/dog/tuning_search_space.json", done.stdout)
    again = subprocess.run(command + [f"--output_dir={directory}/dog"], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    self.assertNotEqual(again.returncode, 0)
    self.assertIn("--overwrite", again.stderr)


if __name__ == "__main__":
  absltest.main()
