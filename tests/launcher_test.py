"""Fanning a sweep out: --trial_shard=i/n and --launcher=ray.

The shards of an experiment, and a Ray sweep, must give the trials of one
unsharded run (same directories, same deterministic evaluation rows); a
failed Ray trial is retried a bounded number of times, then reported, and a
rerun with --resume_last_run finishes it without redoing completed trials.
Deterministic: the steps measure, a step cap, no timing.
"""

from tests import test_util  # Device set-up first.

import contextlib
import glob
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tempfile

from absl import app
from absl import flags
from absl.testing import absltest

from experiments import checkpoints
from experiments import logs
from experiments import run

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 25
# 4 trials: 2 optimizers x 2 studies x 1 trial (the Halton points of the registry spaces).
ARGS = ("--workload=logreg", "--optimizer=adamw,radam", "--num_studies=2", "--num_tuning_trials=1",
        f"--max_global_steps={STEPS}")


def _run(directory, *extra):
  """The runner in this process; returns its stdout."""
  out = io.StringIO()
  try:
    FLAGS(["run", f"--experiment_dir={directory}", *ARGS, *extra])
    with contextlib.redirect_stdout(out):
      run.main(["run"])
  finally:
    FLAGS.unparse_flags()
  return out.getvalue()


def _run_process(directory, *extra, env=None):
  """The runner as a user starts it: its own process (Ray needs a real driver)."""
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **(env or {}))
  cmd = [sys.executable, "-m", "experiments.run", f"--experiment_dir={directory}", *ARGS, *extra]
  return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)


def _trials(directory):
  """{(submission, study, trial): deterministic eval rows} of the complete trials."""
  out = {}
  for meta_path in glob.glob(os.path.join(directory, "*", "logreg", "study_*", "trial_*", "meta_data.json")):
    trial_dir = os.path.dirname(meta_path)
    meta = logs.read_json(meta_path)
    if meta.get("status") != "complete":
      continue
    rows = logs.CsvLog.resume(os.path.join(trial_dir, "eval_measurements.csv")).rows
    key = (meta["submission"], meta["study"], meta["trial"])
    out[key] = (meta["hyperparameters"], meta["global_step"],
                [{k: v for k, v in r.items() if k == "global_step" or k.split("/")[0] in ("train", "validation")}
                 for r in rows])
  return out


_STRAIGHT = {}


def _expected():
  """The trials of one unsharded run in this process (run once, shared by the tests)."""
  if not _STRAIGHT:
    directory = tempfile.mkdtemp()
    try:
      _run(directory)
      _STRAIGHT.update(_trials(directory))
    finally:
      shutil.rmtree(directory, ignore_errors=True)
    assert len(_STRAIGHT) == 4, _STRAIGHT.keys()
  return _STRAIGHT


def setUpModule():
  if not FLAGS.is_parsed():
    FLAGS.mark_as_parsed()


class ShardTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.expected = _expected()

  def test_shards_together_equal_one_run(self):
    d = test_util.tempdir(self)
    first = _run(d, "--trial_shard=0/3")
    self.assertIn("shard 0/3: 2 trial(s). When every shard is done: python -m experiments.score", first)
    self.assertNotIn("# Scores", first)  # A shard does not score a partial experiment.
    self.assertEqual(set(_trials(d)), {("adamw", 0, 0), ("radam", 1, 0)})  # Indices 0 and 3.
    _run(d, "--trial_shard=2/3")  # A later shard is not refused: its own trials do not exist yet.
    _run(d, "--trial_shard=1/3")
    self.assertEqual(_trials(d), self.expected)
    with self.assertRaisesRegex(app.UsageError, "study_0/trial_0 exists"):
      _run(d, "--trial_shard=0/3")  # Its own trials exist now.
    _run(d, "--trial_shard=0/3", "--overwrite")  # Replaces only its own trials.
    self.assertEqual(_trials(d), self.expected)

  def test_bad_shard_is_refused_before_anything_is_created(self):
    d = os.path.join(test_util.tempdir(self), "exp")
    for bad in ("2/2", "1", "-1/2", "a/b", "0/0"):
      with self.assertRaisesRegex(app.UsageError, "--trial_shard must be i/n"):
        _run(d, f"--trial_shard={bad}")
    self.assertFalse(os.path.exists(d))


@absltest.skipUnless(importlib.util.find_spec("ray"), 'Ray is an optional extra: pip install -e ".[ray]" (CI installs it)')
class RaySweepTest(absltest.TestCase):

  def test_ray_sweep_equals_one_run_and_a_failed_trial_is_retried_then_reported(self):
    d = test_util.tempdir(self)
    # One trial (shard 1/4: adamw, study 1) whose every attempt is SIGKILLed after its checkpoint at
    # step 22 committed: retried once, resuming, then reported; the driver fails, nothing is dropped.
    failed = _run_process(d, "--launcher=ray", "--trial_shard=1/4", "--trial_retries=1",
                          env={checkpoints.FAULT_ENV: "before_checksums@22"})
    self.assertNotEqual(failed.returncode, 0)
    self.assertIn("1 trial(s) failed after 1 retries: adamw study 1 trial 0 (exit -9", failed.stderr)
    self.assertIn("adamw study 1 trial 0: failed (exit -9", failed.stdout)
    self.assertIn("retry 1 of 1, resuming", failed.stdout)
    attempt = os.path.join(d, "adamw", run.LAUNCHER_LOGS_DIR, "logreg.study_1.trial_0.attempt_1.log")
    with open(attempt) as f:
      self.assertIn("resuming from step 11", f.read())
    self.assertEqual(_trials(d), {})
    # The cause fixed: the whole sweep, 4 trials on 2 workers; the failed one resumes.
    done = _run_process(d, "--launcher=ray", "--resume_last_run")
    self.assertEqual(done.returncode, 0, done.stdout[-3000:] + done.stderr[-3000:])
    self.assertIn("4 trial(s) of logreg as Ray tasks on a local Ray (1 CPU each", done.stdout)
    self.assertIn("# Scores", done.stdout)
    self.assertEqual(_trials(d), _expected())
    with open(os.path.join(d, "adamw", run.LAUNCHER_LOGS_DIR, "logreg.study_0.trial_0.attempt_0.log")) as f:
      self.assertNotIn("restarting this trial", f.read())  # A fresh trial is not reported as restarted.
    # Complete trials are not run again.
    again = _run_process(d, "--launcher=ray", "--resume_last_run")
    self.assertEqual(again.returncode, 0, again.stderr[-3000:])
    self.assertEqual(again.stdout.count("complete, skipped"), 4)
    self.assertIn("0 trial(s) of logreg as Ray tasks", again.stdout)


if __name__ == "__main__":
  absltest.main()
