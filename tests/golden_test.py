"""Every golden trajectory replayed against its reference implementation.

`tools/make_golden.py` runs each reference PyTorch optimizer on small problems
and writes `tests/golden/{case}_{dtype}.npz`; this test replays every file
with teacher forcing (`test_util.golden_error`: the stored gradients in, the
parameters -- and the evaluation point, where the reference has one -- out)
and compares in the file's precision: 1e-10 in float64, 1e-5 relative in
float32 (`test_util.TOLERANCE`). A new golden case needs nothing here; a new
registry optimizer needs golden cases, or a line in NO_GOLDEN saying what pins
it instead.
"""

from tests import test_util  # Sets up simulated CPU devices first.

import collections

from absl.testing import absltest
from absl.testing import parameterized

import optimizers

# Registry entries pinned another way than by a torch reference's trajectory.
NO_GOLDEN = {
    "adamw": "is optax.adamw",
    "nadamw": "is optax.nadamw",
    "muon": "optax.contrib.muon in float64 (muon_test)",
    "sgd_momentum": "AlgoPerf's momentum baseline, optax.sgd, to the bit (sgd_test)",
    "sgd_nesterov": "AlgoPerf's nesterov baseline, optax.sgd, to the bit (sgd_test)",
}
# Cases compared another way: in float32 Prodigy's d amplifies rounding (torch's
# own float32 run is up to 190% from its float64 run), so prodigy_test bounds
# the replay by torch's float32-vs-float64 gap, step by step.
REPLAYED_ELSEWHERE = {("prodigy", "float32")}


def _compared_here(path):
  meta = test_util.load_golden(path).meta
  return (meta["optimizer"], meta["dtype"]) not in REPLAYED_ELSEWHERE


class GoldenTest(parameterized.TestCase):

  @parameterized.named_parameters((n, p) for n, p in test_util.golden_parameters() if _compared_here(p))
  def test_matches_reference(self, path):
    case, error = test_util.golden_error(path)
    self.assertLess(error, test_util.TOLERANCE[case.dtype], case.meta["description"])

  def test_every_registry_optimizer_has_golden_cases_in_both_precisions(self):
    dtypes = collections.defaultdict(set)
    for _, path in test_util.golden_parameters():
      meta = test_util.load_golden(path).meta
      dtypes[meta["optimizer"]].add(meta["dtype"])
    for name in optimizers.registry:
      if name not in NO_GOLDEN:
        self.assertEqual(dtypes[name], {"float32", "float64"}, f"{name}: add golden cases (tools/make_golden.py)")
    self.assertEmpty(set(NO_GOLDEN) - set(optimizers.registry))


if __name__ == "__main__":
  absltest.main()
