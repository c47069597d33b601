"""The runner's command line: bad input, and SIGKILL followed by --resume_last_run."""

from tests import test_util  # Device set-up first.

import json
import os
import signal
import subprocess
import sys
import time

from absl import app
from absl import flags
from absl.testing import absltest
from absl.testing import parameterized

from experiments import checkpoints
from experiments import run
from experiments import submission as submission_lib
from experiments import tuning
from experiments import workloads
import optimizers

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




class BadInputTest(parameterized.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  @parameterized.named_parameters(
      ("unknown_workload", ["--workload=mnist2d"], "mnist2d.*mnist1d_mlp"),
      ("unknown_optimizer", ["--optimizer=adamx"], "unknown --optimizer 'adamx'.*radam"),
      ("malformed_hparams", ["--hparams={lr: 1}"], "--hparams is not valid JSON"),
      ("hparams_not_object", ["--hparams=[1, 2]"], "must be a JSON object"),
      ("missing_space", ["--tuning_search_space=/nonexistent.json"], "no such file"),
      ("missing_submission", ["--submission_path=/nonexistent/sub.py"], "no such file"),
      ("repeated_optimizer", ["--optimizer=adamw,radam,adamw"], "names an optimizer twice"),
      ("empty_optimizer", ["--optimizer="], "--optimizer is empty"),
      ("probe_of_the_default_list", ["--probe=sharpness"], "probes one registry optimizer"),
      ("name_for_several", ["--optimizer=adamw,radam", "--submission_name=x"], "names one submission"),
      ("bad_budget_scale", ["--budget_scale=0"], "--budget_scale must be positive"),
      ("zero_steps", ["--max_global_steps=0"], "--max_global_steps must be at least 1"),
      ("negative_steps", ["--max_global_steps=-3"], "--max_global_steps must be at least 1"),
      ("no_trials", ["--num_tuning_trials=0"], "--num_tuning_trials must be at least 1"),
      ("negative_studies", ["--num_studies=-1"], "--num_studies must be at least 1"),
      ("nan_eval_period", ["--measure=wallclock", "--eval_period_time_sec=nan"],
       "--eval_period_time_sec must be a positive number, got nan"),
      ("inf_eval_period", ["--measure=wallclock", "--eval_period_time_sec=inf"],
       "--eval_period_time_sec must be a positive number"),
      ("negative_learning_rate", ['--hparams={"learning_rate": -0.1}', "--optimizer=adamw"],
       r"--hparams \{\"learning_rate\": -0.1\} for adamw: .*learning_rate"),
      ("unknown_hyperparameter", ['--hparams={"bogus": 1}', "--optimizer=adamw"],
       "--hparams .*'bogus'.* not arguments of adamw"),
      ("mesh_axis", ["--mesh=model:8"], "--mesh: mesh 'model:8': unknown axis 'model'"),
      ("mesh_devices", ["--mesh=data:2,fsdp:2"], "--mesh: mesh data:2,fsdp:2 needs 4 devices, there are 8"),
      ("fsdp_min_size", ["--fsdp_min_size=0"], "--fsdp_min_size must be at least 1"),
      ("mesh_with_probe", ["--probe=sharpness", "--optimizer=adamw", "--mesh=data:8"], "--mesh"),
  )
  def test_clear_errors(self, argv, message):
    FLAGS(["run", f"--experiment_dir={test_util.tempdir(self)}", "--workload=logreg"] + argv)
    with self.assertRaisesRegex(app.UsageError, message):
      run.main(["run"])

  def test_bad_hparams_create_nothing_and_the_corrected_rerun_runs(self):
    directory = os.path.join(test_util.tempdir(self), "exp")
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw",
           '--hparams={"learning_rate": -0.1}', "--num_studies=1", "--max_global_steps=2"])
    with self.assertRaisesRegex(app.UsageError, "learning_rate"):
      run.main(["run"])
    self.assertFalse(os.path.exists(directory))
    FLAGS.unparse_flags()
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw",
           '--hparams={"learning_rate": 0.1}', "--num_studies=1", "--max_global_steps=2",
           "--save_checkpoints=false"])
    run.main(["run"])
    self.assertEqual(_meta(directory)["global_step"], 2)

  def test_mesh_flag_reaches_the_trial(self):
    directory = os.path.join(test_util.tempdir(self), "exp")
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw", "--hparams={}",
           "--num_studies=1", "--max_global_steps=2", "--save_checkpoints=false", "--mesh=data:2,fsdp:4"])
    run.main(["run"])
    self.assertEqual((_meta(directory)["mesh"], _meta(directory)["num_devices"]), ("data:2,fsdp:4", 8))

  def test_experiment_dir_that_is_a_file(self):
    path = os.path.join(test_util.tempdir(self), "file")
    open(path, "w").close()
    for directory, message, extra in ((path, "exists and is not a directory", []),
                                      (os.path.join(path, "sub"), "is not a directory", []),
                                      (path, "exists and is not a directory", ["--probe=sharpness"])):
      FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw", *extra])
      with self.assertRaisesRegex(app.UsageError, f"--experiment_dir={directory}.*{message}"):
        run.main(["run"])
      FLAGS.unparse_flags()

  def test_unwritable_experiment_dir(self):
    if os.geteuid() == 0:
      self.skipTest("root writes anywhere")
    parent = test_util.tempdir(self)
    os.chmod(parent, 0o500)
    self.addCleanup(os.chmod, parent, 0o700)
    FLAGS(["run", f"--experiment_dir={parent}/exp", "--workload=logreg", "--optimizer=adamw"])
    with self.assertRaisesRegex(app.UsageError, "is not writable"):
      run.main(["run"])

  def test_resume_of_another_experiment_is_refused(self):
    directory = test_util.tempdir(self)
    base = ["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw",
            "--num_studies=1", "--num_tuning_trials=1", "--max_global_steps=2", "--save_checkpoints=false"]
    FLAGS(base)
    run.main(["run"])
    before = _meta(directory)
    for extra, differing in ((["--rng_seed=1"], "rng_seed"),
                             (['--hparams={"learning_rate": 0.5}'], "hyperparameters"),
                             (["--tuning_ruleset=self"], "hyperparameters"),
                             (["--measure=wallclock"], "measure")):
      FLAGS.unparse_flags()
      FLAGS(base + ["--resume_last_run"] + extra)
      with self.assertRaisesRegex(app.UsageError, f"belongs to another experiment .*{differing}"):
        run.main(["run"])
    self.assertEqual(_meta(directory), before)
    FLAGS.unparse_flags()
    FLAGS(base + ["--resume_last_run"])
    run.main(["run"])  # The same flags: skipped as complete.
    self.assertEqual(_meta(directory), before)

  def test_existing_experiment_needs_resume_or_overwrite(self):
    directory = test_util.tempdir(self)
    os.makedirs(os.path.join(directory, "radam", "logreg"))
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg"])
    with self.assertRaisesRegex(app.UsageError, "--resume_last_run.*--overwrite"):
      run.main(["run"])

  def test_bad_search_space_names_the_problem(self):
    directory = test_util.tempdir(self)
    space = os.path.join(directory, "space.json")
    with open(space, "w") as f:
      json.dump({"learning_rate": {"min": 1.0, "max": 0.1, "scaling": "log"}}, f)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", f"--tuning_search_space={space}"])
    with self.assertRaisesRegex(app.UsageError, "learning_rate"):
      run.main(["run"])


  def test_search_space_directory_needs_every_optimizer(self):
    directory = test_util.tempdir(self)
    spaces = os.path.join(directory, "spaces")
    os.makedirs(spaces)
    with open(os.path.join(spaces, "adamw.json"), "w") as f:
      json.dump({"learning_rate": {"min": 1e-3, "max": 1e-2, "scaling": "log"}}, f)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw,radam",
           f"--tuning_search_space={spaces}", "--max_global_steps=2"])
    with self.assertRaisesRegex(app.UsageError, "without radam.json"):
      run.main(["run"])
    self.assertFalse(os.path.exists(os.path.join(directory, "adamw")))  # Refused before any trial.


class SearchSpaceDefaultTest(absltest.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  def test_workload_spaces_for_registry_optimizers_only(self):
    FLAGS(["run"])
    for name in run.DEFAULT_OPTIMIZERS:  # The main job's spaces exist and parse.
      source, label = run._search_space_source(
          submission_lib.registry_submission(name), "mnist1d_mlp")
      self.assertEqual(source, os.path.join(run.WORKLOAD_SEARCH_SPACES, "mnist1d_mlp", f"{name}.json"))
      self.assertIn(f"mnist1d_mlp/{name}.json", label)
      self.assertNotEmpty(tuning.trial_points(tuning.load_search_space(source), 3, 0, 0))
    source, label = run._search_space_source(submission_lib.registry_submission("radam"), "logreg")
    self.assertEqual(source, optimizers.registry["radam"].search_space)  # No logreg/radam.json.
    self.assertEqual(label, "the registry's")

  def test_a_submission_file_keeps_its_own_space(self):
    path = os.path.join(ROOT, "experiments", "submissions", "nadamw.py")
    FLAGS(["run", f"--submission_path={path}"])
    sub, = run._submissions()
    source, label = run._search_space_source(sub, "mnist1d_mlp")
    self.assertNotIn("search_spaces", str(source))
    self.assertNotEqual(label, "the registry's")


class RulesetTest(absltest.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  def test_self_tuning_uses_defaults_and_one_and_a_half_budgets(self):
    directory = test_util.tempdir(self)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw",
           "--tuning_ruleset=self", "--num_studies=2", "--max_global_steps=20",
           "--save_checkpoints=false"])
    run.main(["run"])
    for study in range(2):
      trial_dir = os.path.join(directory, "adamw", "logreg", f"study_{study}", "trial_0")
      with open(os.path.join(trial_dir, "meta_data.json")) as f:
        meta = json.load(f)
      budget = workloads.WORKLOADS["logreg"].targets.max_allowed_runtime_sec
      self.assertEqual(meta["max_allowed_runtime_sec"], 1.5 * budget)
      self.assertIsNone(meta["hyperparameters"])  # Self-tuning: AlgoPerf passes None.
      self.assertEqual(meta["global_step"], 20)
      self.assertFalse(os.path.exists(os.path.join(os.path.dirname(trial_dir), "trial_1")))

  def test_budget_scale_multiplies_the_budget(self):
    directory = test_util.tempdir(self)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw",
           "--tuning_ruleset=self", "--num_studies=1", "--max_global_steps=3", "--budget_scale=2",
           "--save_checkpoints=false"])
    run.main(["run"])
    with open(os.path.join(directory, "adamw", "logreg", "study_0", "trial_0", "meta_data.json")) as f:
      meta = json.load(f)
    self.assertEqual(meta["budget"], 1.5 * 2 * workloads.WORKLOADS["logreg"].targets.max_steps)

  def test_external_tuning_writes_every_trial_log(self):
    directory = test_util.tempdir(self)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=radam",
           "--num_tuning_trials=3", "--max_global_steps=10", "--save_checkpoints=false"])
    run.main(["run"])
    points = []
    for trial in range(3):
      trial_dir = os.path.join(directory, "radam", "logreg", "study_0", f"trial_{trial}")
      for name in ("hparams.json", "flags.json", "meta_data.json", "measurements.csv", "eval_measurements.csv"):
        self.assertTrue(os.path.exists(os.path.join(trial_dir, name)), (trial, name))
      with open(os.path.join(trial_dir, "hparams.json")) as f:
        points.append(json.load(f))
    self.assertLen({json.dumps(p, sort_keys=True) for p in points}, 3)  # Distinct Halton points.


class SeveralOptimizersTest(absltest.TestCase):

  def tearDown(self):
    FLAGS.unparse_flags()
    super().tearDown()

  def test_each_runs_then_all_are_scored_with_the_first_as_baseline(self):
    directory = test_util.tempdir(self)
    FLAGS(["run", f"--experiment_dir={directory}", "--workload=logreg", "--optimizer=adamw,radam",
           "--num_studies=2", "--num_tuning_trials=1", "--max_global_steps=5", "--save_checkpoints=false"])
    run.main(["run"])
    for name in ("adamw", "radam"):
      for study in range(2):
        self.assertTrue(os.path.exists(
            os.path.join(directory, name, "logreg", f"study_{study}", "trial_0", "meta_data.json")))
    with open(os.path.join(directory, "scores", "scores.md")) as f:
      report = f.read()
    self.assertIn("speedup vs adamw", report)
    self.assertIn("95% confidence intervals", report)


class PinTest(absltest.TestCase):

  def test_pins_to_one_allowed_core_before_jax_starts(self):
    if not hasattr(os, "sched_getaffinity"):
      self.skipTest("no sched_getaffinity")
    code = ("import os; from experiments import run; core = run._pin_cpu_core();"
            " print(core, sorted(os.sched_getaffinity(0)))")
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, capture_output=True,
                         text=True, timeout=120).stdout.split(maxsplit=1)
    allowed = sorted(os.sched_getaffinity(0))
    self.assertIn(int(out[0]), allowed)
    self.assertEqual(json.loads(out[1]), [int(out[0])])

  def test_not_once_jax_has_started(self):
    import jax  # pylint: disable=g-import-not-at-top
    jax.devices()
    before = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    self.assertIsNone(run._pin_cpu_core())
    if before is not None:
      self.assertEqual(os.sched_getaffinity(0), before)


def _runner(experiment_dir, *extra):
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # One device: the subprocesses must agree.
  return [sys.executable, "-m", "experiments.run", "--workload=logreg", "--optimizer=adamw",
          "--hparams={\"learning_rate\": 0.003}", f"--experiment_dir={experiment_dir}",
          "--max_global_steps=3000", "--measure=wallclock", "--eval_period_time_sec=0.3", *extra], env


def _meta(experiment_dir):
  path = os.path.join(experiment_dir, "adamw", "logreg", "study_0", "trial_0", "meta_data.json")
  with open(path) as f:
    return json.load(f)


class KillAndResumeTest(absltest.TestCase):

  def test_sigkill_then_resume_gives_the_uninterrupted_result(self):
    straight = test_util.tempdir(self)
    cmd, env = _runner(straight)
    subprocess.run(cmd, env=env, check=True, capture_output=True, cwd=ROOT, timeout=300)

    killed = test_util.tempdir(self)
    cmd, env = _runner(killed)
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trial_dir = os.path.join(killed, "adamw", "logreg", "study_0", "trial_0")
    deadline = time.monotonic() + 240
    # A completed checkpoint (with its checksums), not just a step directory: a kill while the
    # first one is written leaves nothing to resume, and the rerun would restart from step 0.
    while time.monotonic() < deadline and proc.poll() is None:
      if checkpoints.has_checkpoint(trial_dir):
        break
      time.sleep(0.05)
    self.assertIsNone(proc.poll(), "the run finished before it could be killed")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    self.assertNotEqual(_meta(killed)["status"], "complete")

    cmd, env = _runner(killed, "--resume_last_run")
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, cwd=ROOT, timeout=300)
    self.assertIn("resumed", out.stdout)
    a, b = _meta(straight), _meta(killed)
    self.assertEqual(b["status"], "complete")
    self.assertEqual(a["global_step"], b["global_step"])
    self.assertEqual(a["final_metrics"], b["final_metrics"])  # Bitwise: same trajectory.


if __name__ == "__main__":
  absltest.main()
