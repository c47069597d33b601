"""The runner under faults: kills at named points, corrupt checkpoints, a second runner, a full disk.

Each test ends in the uninterrupted run's result (same final step, metrics
and evaluation rows) or in a named error. Kills use the trainer's test hook
(`checkpoints.fault_point`, STEPLAB_FAULT=<point>[@<step>]): in one process
`checkpoints._die` is patched to raise `Killed` (nothing runs after it but
`finally` blocks, which write nothing); one test SIGKILLs a real runner.
Deterministic: the steps measure, a step cap, no timing.
"""

from tests import test_util  # Device set-up first.

import contextlib
import errno
import fcntl
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl import app
from absl import flags
from absl.testing import absltest
import numpy as np

from experiments import checkpoints
from experiments import logs
from experiments import run

FLAGS = flags.FLAGS
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30  # logreg evaluates (and checkpoints) every 11 steps: 11, 22, 30.
ARGS = ("--workload=logreg", "--optimizer=adamw", '--hparams={"learning_rate": 0.003}',
        f"--max_global_steps={STEPS}", "--num_studies=2")


class Killed(BaseException):
  """A simulated SIGKILL."""


def _trial(directory, study=0):
  return os.path.join(directory, "adamw", "logreg", f"study_{study}", "trial_0")


def _meta(directory, study=0):
  return logs.read_json(os.path.join(_trial(directory, study), "meta_data.json"))


def _rows(directory, study=0):
  path = os.path.join(_trial(directory, study), "eval_measurements.csv")
  # The deterministic columns (times are wall-clock even under the steps measure).
  return [{k: v for k, v in r.items() if k == "global_step" or k.split("/")[0] in ("train", "validation", "test")}
          for r in logs.CsvLog.resume(path).rows]


def _run(directory, *extra, fault=None):
  """Runs the runner in this process; returns its stdout. A fault point raises Killed."""
  out = io.StringIO()
  env = {checkpoints.FAULT_ENV: fault} if fault else {}
  try:
    FLAGS(["run", f"--experiment_dir={directory}", *ARGS, *extra])
    with mock.patch.dict(os.environ, env), contextlib.redirect_stdout(out):
      with mock.patch.object(checkpoints, "_die", side_effect=Killed(fault)):
        run.main(["run"])
  finally:
    FLAGS.unparse_flags()
  return out.getvalue()


def _corrupt(step_dir):
  """Random bytes over the middle of the largest array data file of a checkpoint."""
  files = [os.path.join(r, n) for r, _, ns in os.walk(os.path.join(step_dir, "state")) for n in ns
           if os.sep + "d" + os.sep in os.path.join(r, n) + os.sep or os.path.basename(r) == "d"]
  path = max(files, key=os.path.getsize)
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.seek(size // 2)
    f.write(np.random.default_rng(0).bytes(max(1, min(64, size - size // 2))))


def _steps(directory, study=0):
  d = os.path.join(_trial(directory, study), "checkpoints")
  return sorted(int(n) for n in os.listdir(d) if n.isdigit())


class FaultInjectionTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.straight = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.straight, ignore_errors=True)
    _run(cls.straight)

  def assertUninterrupted(self, directory, study=0):
    a, b = _meta(self.straight, study), _meta(directory, study)
    self.assertEqual(b["status"], "complete")
    self.assertEqual(b["global_step"], a["global_step"])
    self.assertEqual(b["final_metrics"], a["final_metrics"])  # Bitwise: the same trajectory.
    self.assertEqual(_rows(directory, study), _rows(self.straight, study))

  def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(self):
    d = test_util.tempdir(self)
    with self.assertRaises(Killed):
      _run(d, fault="after_final_checkpoint")  # Study 0's last checkpoint is written, not its meta.
    self.assertEqual(_steps(d), [22, STEPS])
    _corrupt(os.path.join(_trial(d), "checkpoints", str(STEPS)))
    out = _run(d, "--resume_last_run")
    self.assertRegex(out, rf"checkpoints/{STEPS} is corrupt: .* resuming from step 22")
    self.assertUninterrupted(d, 0)
    self.assertUninterrupted(d, 1)
    self.assertLen(os.listdir(os.path.join(_trial(d), checkpoints.BAD_CHECKPOINTS)), 1)  # Kept to inspect.

  def test_every_checkpoint_corrupt_is_a_clear_error(self):
    d = test_util.tempdir(self)
    with self.assertRaises(Killed):
      _run(d, fault="after_final_checkpoint")
    for step in _steps(d):
      _corrupt(os.path.join(_trial(d), "checkpoints", str(step)))
    with self.assertRaisesRegex(checkpoints.CheckpointError, r"no intact checkpoint.*step 22 is corrupt"):
      _run(d, "--resume_last_run")
    self.assertEqual(_meta(d)["status"], "running")  # Never marked complete.

  def test_kill_before_the_first_checkpoint_restarts_that_trial_only(self):
    d = test_util.tempdir(self)
    _run(d, "--num_studies=1")
    done = _meta(d, 0)
    with self.assertRaises(Killed):  # Study 1: checkpoints/ exists, nothing in it.
      _run(d, "--resume_last_run", fault="before_first_checkpoint")
    self.assertTrue(os.path.isdir(os.path.join(_trial(d, 1), "checkpoints")))
    out = _run(d, "--resume_last_run")
    self.assertIn("study 0 trial 0: complete, skipped", out)
    self.assertIn("restarting this trial from step 0", out)
    self.assertEqual(_meta(d, 0), done)
    self.assertUninterrupted(d, 1)

  def test_kill_during_the_first_checkpoint_restarts_the_trial(self):
    d = test_util.tempdir(self)
    with self.assertRaises(Killed):  # Orbax committed step 11; its checksums are not written.
      _run(d, fault="before_checksums@11")
    leftover = os.path.join(_trial(d), "checkpoints", "11.orbax-checkpoint-tmp-1234")
    os.makedirs(leftover)  # What a kill inside Orbax's write leaves.
    self.assertFalse(checkpoints.has_checkpoint(_trial(d)))
    out = _run(d, "--resume_last_run")
    self.assertIn("restarting this trial from step 0", out)
    self.assertFalse(os.path.exists(leftover))
    self.assertUninterrupted(d, 0)
    self.assertUninterrupted(d, 1)

  def test_kill_after_the_final_checkpoint_trains_no_further(self):
    d = test_util.tempdir(self)
    with self.assertRaises(Killed):
      _run(d, fault="after_final_checkpoint")
    self.assertEqual(_meta(d)["status"], "running")
    _run(d, "--resume_last_run")
    self.assertUninterrupted(d, 0)  # global_step STEPS, not STEPS + 1; no extra evaluation row.
    self.assertEqual(_meta(d)["global_step"], STEPS)

  def test_incomplete_latest_checkpoint_falls_back(self):
    d = test_util.tempdir(self)
    with self.assertRaises(Killed):  # Step 22 committed by Orbax, without checksums.
      _run(d, fault="before_checksums@22")
    out = _run(d, "--resume_last_run")
    self.assertRegex(out, r"checkpoints/22 has no checksums.*resuming from step 11")
    self.assertUninterrupted(d, 0)

  def test_a_second_runner_is_refused_naming_the_holder(self):
    d = test_util.tempdir(self)
    _run(d, "--num_studies=1")
    before = _meta(d)
    path = run.lock_path(d, "adamw", "logreg", 0, 0)
    with open(path, "w") as holder:
      fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
      holder.write("pid 4242 on elsewhere since then\n")
      holder.flush()
      for flag in ("--resume_last_run", "--overwrite"):
        with self.assertRaisesRegex(app.UsageError, "in use by another runner .pid 4242 on elsewhere"):
          _run(d, flag)
      self.assertEqual(_meta(d), before)  # --overwrite deleted nothing.
    # Released (as by the holder's death): the same file no longer blocks.
    _run(d, "--resume_last_run")
    self.assertUninterrupted(d, 1)

  def test_disk_full_is_one_clear_error_and_resumable(self):
    d = test_util.tempdir(self)
    real_save = checkpoints.TrialCheckpointer.save
    calls = []

    def save(self, step, state, record):
      calls.append(step)
      if len(calls) == 2:  # Orbax wraps the OSError in its own errors.
        try:
          raise OSError(errno.ENOSPC, "No space left on device", "ckpt")
        except OSError as e:
          raise RuntimeError("orbax: save failed") from e
      return real_save(self, step, state, record)

    with mock.patch.object(checkpoints.TrialCheckpointer, "save", save):
      with self.assertRaisesRegex(SystemExit, "no space left on the device of --experiment_dir.*--resume_last_run"):
        _run(d)
    _run(d, "--resume_last_run")  # Space freed.
    self.assertUninterrupted(d, 0)
    self.assertUninterrupted(d, 1)

  def test_disk_full_in_a_log_write(self):
    d = test_util.tempdir(self)
    with mock.patch.object(logs, "write_atomic", side_effect=OSError(errno.ENOSPC, "No space left on device")):
      with self.assertRaisesRegex(SystemExit, "no space left"):
        _run(d)

  def test_orbax_disk_full_tracebacks_are_dropped(self):
    record = lambda path, msg: logging.LogRecord("absl", logging.ERROR, path, 1, msg, None, None)
    quiet = checkpoints._QuietDiskFull()  # pylint: disable=protected-access
    self.assertFalse(quiet.filter(record("/x/orbax/checkpoint/future.py", "... No space left on device ...")))
    self.assertTrue(quiet.filter(record("/x/orbax/checkpoint/future.py", "another error")))
    self.assertTrue(quiet.filter(record("/x/experiments/run.py", "No space left on device")))

  def test_real_sigkill_at_a_fault_point(self):
    d = test_util.tempdir(self)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu", **{checkpoints.FAULT_ENV: "after_final_checkpoint"})
    cmd = [sys.executable, "-m", "experiments.run", f"--experiment_dir={d}", *ARGS, "--num_studies=1"]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, timeout=300)
    self.assertEqual(proc.returncode, -9, proc.stderr[-2000:])
    self.assertEqual(_meta(d)["status"], "running")
    _run(d, "--resume_last_run")  # The flock died with the process.
    self.assertUninterrupted(d, 0)
    self.assertUninterrupted(d, 1)


if __name__ == "__main__":
  absltest.main()
