"""Smoke tests of the maintainer scripts that have no other test: they run and print their tables."""

import csv
import json
import os
import subprocess
import sys

from absl.testing import absltest

from tests import test_util

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> str:
  result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  if result.returncode:
    raise AssertionError(f"{args} failed:\n{result.stderr[-3000:]}")
  return result.stdout


class ToolsTest(absltest.TestCase):

  def test_bench_kernels_times_every_optimizer_with_a_floor(self):
    out = _run("tools/bench_kernels.py", "--sizes=16384", "--transformer_params=0", "--rounds=1",
               "--steps_per_round=1", "--interpret", "--optimizers=radam,adamp,adam_mini,prodigy")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "flat" in line]
    self.assertEqual([r[0].strip() for r in rows], ["radam", "adamp", "adam_mini", "prodigy"])
    for row in rows:
      self.assertGreater(float(row[5]), 0.0)  # floor ms
      self.assertGreater(float(row[4]), 0.0)  # pallas ms (interpret mode)

  def test_bench_step_pairs_rows_with_their_optax_counterparts(self):
    out = _run("tools/bench_step.py", "--num_params=2e5", "--optimizers=adamw,lion,adamp", "--rounds=2",
               "--steps_per_round=2", "--pair_baseline")
    header, *rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines()
                     if line.startswith("| ") and "---" not in line]
    table = {r[0]: dict(zip(header, r)) for r in rows}
    self.assertEqual(list(table), ["adamw", "lion", "adamp", "lion (optax)", "adamw (again)"])
    self.assertEqual(table["adamw"]["x optax [min-max]"], "self")
    for paired in ("lion", "adamw (again)"):  # Timed beside their counterparts, then compiled bytes.
      self.assertRegex(table[paired]["x optax [min-max]"], r"^\d+\.\d\d \[\d+\.\d\d-\d+\.\d\d\]$")
      self.assertEqual(table[paired]["bytes x optax"], "1.000")  # Same program as optax's.
    self.assertEqual(table["adamp"]["x optax [min-max]"], "")  # Optax has no AdamP,
    self.assertTrue(table["adamp"]["x adamw [min-max]"].endswith(" p"))  # so it was timed beside adamw;
    self.assertFalse(table["lion"]["x adamw [min-max]"].endswith(" p"))  # lion beside optax.lion.
    self.assertEqual(float(table["adamp"]["state B/p"]), 8.0)
    self.assertEqual(float(table["adamw"]["temp B/p"]), 0.0)  # Adam writes nothing full-size but its outputs.

  def test_bench_kernels_rejects_unknown_optimizers(self):
    with self.assertRaisesRegex(AssertionError, "unknown --optimizers"):
      _run("tools/bench_kernels.py", "--optimizers=sgdp")  # Registered, no Pallas path.

  def test_bench_sharding_accounting_matches_the_measured_shards(self):
    out = _run("tools/bench_sharding.py", "--sizes=19m")
    rows = {r[2].strip(): r for r in (line.split("|")[1:-1] for line in out.splitlines()) if r and r[0].strip() == "19m"}
    self.assertEqual(set(rows), {"adamw", "adam_mini"})
    for row in rows.values():
      replicated, fsdp, measured = (float(row[i]) for i in (3, 4, 5))
      self.assertEqual(fsdp, measured)  # The rule's arithmetic is what the arrays hold.
      self.assertLess(fsdp, replicated / 3.9)  # Nearly all of the state splits 4 ways.
    self.assertLess(float(rows["adam_mini"][6]), 0.51)  # Adam-mini about half of AdamW's state.

  def test_bench_scaling_reads_step_times_off_the_runners_clock(self):
    out = _run("tools/bench_scaling.py", "--configs=1x2,2x1", "--workload=logreg", "--steps=34")
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "x" in line.split("|")[1]]
    self.assertEqual([(r[0].strip(), r[2].strip(), r[4].strip()) for r in rows],
                     [("1x2", "2", "run"), ("2x1", "2", "spmd (gloo)")])
    for row in rows:
      self.assertGreater(float(row[5]), 0.0)  # ms per step, from two intervals (22-33, 33-34).

  def test_plot_schedules_writes_the_figure(self):
    path = os.path.join(test_util.tempdir(self), "schedules.png")
    _run("tools/plot_schedules.py", f"--output={path}")
    self.assertGreater(os.path.getsize(path), 10_000)

  def test_reproduce_findings_reports_equal_step_tables_from_the_runs(self):
    directory = test_util.tempdir(self)
    # Two seeds of two schedules, perplexity at steps 0..1200; d2z 0.1 lower than
    # cosine at every step of seed 0 and 0.3 lower for seed 1.
    for name, offsets in (("adamw_cosine", (0.0, 0.0)), ("adamw_d2z", (-0.1, -0.3))):
      for seed, offset in enumerate(offsets):
        trial = os.path.join(directory, "schedules", name, "stdlib_lm", f"study_{seed}", "trial_0")
        os.makedirs(trial)
        with open(os.path.join(trial, "meta_data.json"), "w") as f:
          json.dump({"status": "complete", "steps_to_target": 1000 + seed, "step_cost": {"relative": 1.0}}, f)
        with open(os.path.join(trial, "eval_measurements.csv"), "w", newline="") as f:
          writer = csv.writer(f)
          writer.writerow(["global_step", "validation/perplexity"])
          for step in range(0, 1201, 100):
            writer.writerow([step, 10.0 - step / 200 + seed + offset])
    out = _run("tools/reproduce_findings.py", f"--findings_dir={directory}", "--findings=schedules",
               "--report_only", "--seeds=2")
    # Means over the two seeds at step 1200: cosine (4 + 5) / 2, d2z (3.9 + 4.7) / 2.
    self.assertRegex(out, r"\| adamw_cosine \| 2 \| .* \| 4\.5000 \[4\.0000, 5\.0000\] \|")
    self.assertRegex(out, r"\| adamw_d2z \| 2 \| .* \| 4\.3000 \[3\.9000, 4\.7000\] \|")
    self.assertRegex(out, r"\| adamw_d2z \| 2 \| .* \| -0\.2000 \[-0\.3000, -0\.1000\] \|")  # Paired.
    self.assertIn("| adamw_d2z | 1000, 1001 | 1.00, 1.00 |", out)
    self.assertTrue(os.path.exists(os.path.join(directory, "findings.md")))

  def test_reproduce_findings_rejects_unknown_findings(self):
    with self.assertRaisesRegex(AssertionError, "unknown --findings"):
      _run("tools/reproduce_findings.py", "--findings_dir=/tmp/x", "--findings=nope", "--report_only")


if __name__ == "__main__":
  absltest.main()
