#!/usr/bin/env python3
"""Prints the worst golden-trajectory error per optimizer and dtype.

    python tools/parity_report.py

Replays every `tests/golden/*.npz` through steplab exactly as the golden tests
do (stored reference gradients, teacher forcing) and prints a markdown table
of the worst relative error, max over cases, parameters and steps of
|ours - ref|_inf / |ref|_inf, next to the tolerance the tests enforce.
"""

import collections
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests import test_util  # pylint: disable=g-import-not-at-top


X64_SCALARS = ("prodigy",)


def main() -> None:
  worst = collections.defaultdict(lambda: (0.0, ""))
  for path in sorted(glob.glob(os.path.join(test_util.GOLDEN_DIR, "*.npz"))):
    case = test_util.load_golden(path)
    # Prodigy's reference keeps d and its statistics in double also for
    # float32 tensors; compare with the same layout (x64 scalars).
    _, error = test_util.golden_error(path, x64_scalars=case.meta["optimizer"] in X64_SCALARS)
    key = (case.meta["optimizer"], case.dtype)
    if error >= worst[key][0]:
      worst[key] = (error, case.meta["case"])
  print("| optimizer | reference | float64 worst (case) | float32 worst (case) |")
  print("|---|---|---|---|")
  for name in sorted({name for name, _ in worst}):
    reference = test_util.load_golden(test_util.golden_paths(name)[0]).meta["reference"].split(" + ")[0]
    cells = [f"{worst[(name, d)][0]:.1e} ({worst[(name, d)][1]})" for d in ("float64", "float32")]
    print(f"| {name} | {reference} | " + " | ".join(cells) + " |")
  print(f"\ntolerances: float64 {test_util.TOLERANCE['float64']:.0e}, float32 {test_util.TOLERANCE['float32']:.0e}"
        f" (float32 {', '.join(X64_SCALARS)}: x64 scalars, per-step bound, see tests/prodigy_test.py)")


if __name__ == "__main__":
  main()
