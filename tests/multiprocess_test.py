"""One trial over two processes (jax.distributed, gloo), started by experiments.spmd.

Two processes of two simulated CPU devices each train one trial
data-parallel over the four devices. Its logs and final checkpoint are
compared BITWISE with the same trial in one process of four devices run the
same way (`--num_processes=1`: jax.distributed with gloo collectives). Exact
equality, no tolerance, is what to expect: every process builds the same
global batch, each device computes on the same shard of it, and gloo's
all-reduce sums the four devices' partial gradients in an order that depends
on the ranks only, not on which process holds them. (A plain single-process
run on four devices uses XLA's in-process all-reduce, which sums the same four
terms in another order: its numbers differ in float32 rounding, not compared
here; docs/scaling.md gives the measured gap.)

Only process 0 writes and prints; a SIGKILL at a fault point
(STEPLAB_FAULT, experiments/checkpoints.py) ends the launcher non-zero with
the other process stopped too, and --resume_last_run, over two processes
again, ends with the uninterrupted run's logs and state (both on an FSDP
mesh, data:1,fsdp:4, where each process writes and reads its own shards).
Deterministic: the steps measure, a step cap, no timing.
"""

from tests import test_util  # Device set-up first (this process; the runners get their own).

import os
import shutil
import subprocess
import sys
import tempfile

from absl.testing import absltest
import numpy as np

from experiments import checkpoints
from experiments import logs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 30  # logreg evaluates (and checkpoints) every 11 steps: 11, 22, 30.
ARGS = ("--workload=logreg", "--optimizer=adamw", '--hparams={"learning_rate": 0.003}',
        f"--max_global_steps={STEPS}", "--num_studies=1")
TRIAL = os.path.join("adamw", "logreg", "study_0", "trial_0")
# The 64 x 10 kernel and its moments split over 4 devices of 2 processes (each process writes its shards).
FSDP = ("--mesh=data:1,fsdp:4", "--fsdp_min_size=256")


def _launch(directory, num_processes, devices, *extra, fault=None):
  """experiments.spmd in a subprocess; returns (CompletedProcess, the directory of processes 1..'s output)."""
  env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", checkpoints.FAULT_ENV)}
  env["PYTHONPATH"] = ROOT
  if fault:
    env[checkpoints.FAULT_ENV] = fault
  process_logs = os.path.join(directory + "_process_logs")
  cmd = [sys.executable, "-m", "experiments.spmd", f"--num_processes={num_processes}",
         f"--devices_per_process={devices}", f"--process_log_dir={process_logs}", "--",
         f"--experiment_dir={directory}", *ARGS, *extra]
  return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600), process_logs


def _rows(directory):
  """eval_measurements.csv's deterministic columns (times are wall-clock even under the steps measure)."""
  path = os.path.join(directory, TRIAL, "eval_measurements.csv")
  return [{k: v for k, v in r.items() if k == "global_step" or k.split("/")[0] in ("train", "validation", "test")}
          for r in logs.CsvLog.resume(path).rows]


def _meta(directory):
  return logs.read_json(os.path.join(directory, TRIAL, "meta_data.json"))


def _state(directory, step=STEPS):
  """The checkpoint's arrays as numpy, {path: array} (read on one device, whatever wrote them)."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, TRIAL, "checkpoints", str(step), "state")
  checkpointer = ocp.StandardCheckpointer()
  metadata = checkpointer.metadata(path)
  tree = getattr(metadata, "item_metadata", metadata)
  one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=one), tree)
  restored = checkpointer.restore(path, target)
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(restored)}


def _printed(path):
  """What a process printed, but gloo's connection messages (C++, straight to fd 1)."""
  with open(path) as f:
    return [line for line in f if not line.startswith("[Gloo]")]


class MultiprocessTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp()
    cls.addClassCleanup(shutil.rmtree, cls.root, ignore_errors=True)
    cls.two = os.path.join(cls.root, "two")
    cls.two_run, cls.two_logs = _launch(cls.two, 2, 2)
    cls.one = os.path.join(cls.root, "one")
    cls.one_run, _ = _launch(cls.one, 1, 4)
    cls.fsdp = os.path.join(cls.root, "fsdp")
    cls.fsdp_run, _ = _launch(cls.fsdp, 2, 2, *FSDP)

  def assertSameTrial(self, directory, reference):
    a, b = _meta(reference), _meta(directory)
    self.assertEqual(b["status"], "complete")
    self.assertEqual((b["global_step"], b["num_devices"], b["batch_size"]), (a["global_step"], 4, a["batch_size"]))
    self.assertEqual(b["final_metrics"], a["final_metrics"])  # Bitwise.
    self.assertEqual(_rows(directory), _rows(reference))
    sa, sb = _state(reference), _state(directory)
    self.assertEqual(sorted(sa), sorted(sb))
    for name in sa:
      np.testing.assert_array_equal(sb[name], sa[name], err_msg=name)  # Bitwise.

  def test_two_processes_equal_one_bitwise(self):
    for run in (self.two_run, self.one_run):
      self.assertEqual(run.returncode, 0, run.stderr[-3000:])
    self.assertIn("4 x cpu", self.two_run.stdout)  # The global device set.
    self.assertSameTrial(self.two, self.one)
    self.assertEqual([r["global_step"] for r in _rows(self.two)], [11, 22, STEPS])

  def test_only_process_0_prints_and_writes(self):
    self.assertEqual(self.two_run.returncode, 0, self.two_run.stderr[-3000:])
    self.assertEqual(self.two_run.stdout.count("study 0 trial 0:"), 1)
    self.assertEqual(self.two_run.stdout.count("logreg step 30:"), 1)
    self.assertEqual(_printed(os.path.join(self.two_logs, "process_1.stdout")), [])
    trial = os.path.join(self.two, TRIAL)
    self.assertEqual(len(logs.CsvLog.resume(os.path.join(trial, "measurements.csv")).rows), 3)
    self.assertEqual(sorted(os.listdir(os.path.join(trial, "checkpoints"))), ["22", str(STEPS)])
    for step in (22, STEPS):  # Checksums written (once, by process 0) and intact.
      self.assertIsNone(checkpoints.verify(os.path.join(trial, "checkpoints", str(step))))
    leftovers = [n for _, _, names in os.walk(self.two) for n in names if n.startswith(".tmp-")]
    self.assertEqual(leftovers, [])

  def test_kill_and_resume_across_processes(self):
    """Under FSDP: every process saves and restores its own shards of the kernel and its moments."""
    self.assertEqual(self.fsdp_run.returncode, 0, self.fsdp_run.stderr[-3000:])
    self.assertEqual(_meta(self.fsdp)["mesh"], "data:1,fsdp:4")
    d = os.path.join(test_util.tempdir(self), "killed")
    killed, _ = _launch(d, 2, 2, *FSDP, fault="before_checksums@22")  # Orbax committed step 22, no checksums yet.
    self.assertNotEqual(killed.returncode, 0)
    self.assertRegex(killed.stderr, r"error: process \d of 2 failed \(killed by SIGKILL\)")
    self.assertEqual(_meta(d)["status"], "running")
    resumed, _ = _launch(d, 2, 2, *FSDP, "--resume_last_run")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertRegex(resumed.stdout, r"checkpoints/22 has no checksums.*resuming from step 11")
    self.assertIn("resumed", resumed.stdout)
    self.assertLen(os.listdir(os.path.join(d, TRIAL, checkpoints.BAD_CHECKPOINTS)), 1)  # Moved once.
    self.assertEqual(_meta(d)["preemption_count"], 1)
    self.assertSameTrial(d, self.fsdp)


if __name__ == "__main__":
  absltest.main()
