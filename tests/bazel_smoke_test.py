"""Checks the environment tests run in, under pytest and under `bazel test`.

Under Bazel (TEST_SRCDIR is set) it also checks the wiring in //:BUILD: the
steplab packages are imported from the runfiles tree (not from the source
tree through the editable install), the interpreter is the virtualenv's, and
every tests/golden/*.npz file of the checkout is visible next to the test.
"""

import os
import sys

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np

import experiments
import optimizers
import pallas_kernels

_STEPLAB_PACKAGES = (optimizers, pallas_kernels, experiments)


def _golden_dir():
  """tests/golden as the tests find it: next to the test file."""
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")


def _npz_files(directory):
  if not os.path.isdir(directory):
    return []
  return sorted(f for f in os.listdir(directory) if f.endswith(".npz"))


def _under_bazel():
  return "TEST_SRCDIR" in os.environ


class BazelSmokeTest(absltest.TestCase):

  def test_python_version(self):
    self.assertGreaterEqual(sys.version_info[:2], (3, 11))

  def test_steplab_packages_are_importable(self):
    for module in _STEPLAB_PACKAGES:
      path = os.path.abspath(module.__file__)
      self.assertTrue(os.path.isfile(path), path)
      self.assertEqual(os.path.basename(os.path.dirname(path)),
                       module.__name__)
    # The public API is there, not just an empty package.
    self.assertTrue(callable(optimizers.radam))

  def test_bazel_uses_runfiles_and_the_virtualenv(self):
    if not _under_bazel():
      self.skipTest("only meaningful under `bazel test`")
    runfiles = os.path.abspath(os.environ["TEST_SRCDIR"])
    for module in _STEPLAB_PACKAGES:
      path = os.path.abspath(module.__file__)
      self.assertTrue(
          path.startswith(runfiles + os.sep),
          f"{module.__name__} imported from {path}, outside the runfiles "
          f"tree {runfiles}: a deps entry is missing in //:BUILD")
    self.assertNotEqual(
        sys.prefix, sys.base_prefix,
        f"{sys.executable} is not a virtualenv's python; activate the "
        "virtualenv before running bazel")
    for module in (jax, np, absltest):
      path = os.path.realpath(module.__file__)
      self.assertTrue(path.startswith(os.path.realpath(sys.prefix) + os.sep),
                      f"{module.__name__} imported from {path}, not from the "
                      f"virtualenv {sys.prefix}")

  def test_golden_data_is_visible(self):
    golden = _golden_dir()
    if _under_bazel():
      # The path logic tests use agrees with Bazel's runfiles layout.
      expected = os.path.join(os.environ["TEST_SRCDIR"],
                              os.environ["TEST_WORKSPACE"], "tests", "golden")
      self.assertEqual(os.path.abspath(expected), golden)
    # The runfiles tree links back to the checkout: every golden file of the
    # checkout must be visible here (under pytest both are the same folder).
    source = os.path.join(
        os.path.dirname(os.path.realpath(__file__)), "golden")
    in_checkout = _npz_files(source)
    visible = _npz_files(golden)
    self.assertEqual(
        visible, in_checkout,
        "tests/golden as seen by the test differs from the checkout: "
        "is `data = [\":golden_data\"]` set in //:BUILD?")
    for name in visible:
      with np.load(os.path.join(golden, name)) as data:
        self.assertNotEmpty(data.files, name)
        for key in data.files:
          data[key]  # Reads the array: the file is complete, not a stub.

  def test_jax_computes(self):
    def f(x):
      return jnp.sum(jnp.sin(x) ** 2 + x ** 2)

    x = jnp.arange(4.0)
    value, grad = jax.jit(jax.value_and_grad(f))(x)
    x_np = np.arange(4.0)
    u = 2.0**-24  # float32 unit roundoff; x = 0..3 and x^2 are exact.
    # Non-negative terms: sin within 2 ulps (4 u), doubled by the square (8 u); square and add,
    # 2k u = 4 u for k = 2; the sum of 4 terms, 2 (n - 1) u = 6 u. 18 u of the value.
    np.testing.assert_allclose(
        value, np.sum(np.sin(x_np) ** 2 + x_np ** 2), rtol=18 * u)
    # A signed sum 2 sin cos + 2 x: sin and cos within 2 ulps (4 u each), product and add
    # (2k u = 4 u for k = 2): 12 u of the magnitude terms |2 sin cos| + |2 x|.
    magnitude = np.abs(2 * np.sin(x_np) * np.cos(x_np)) + np.abs(2 * x_np)
    error = np.abs(np.asarray(grad, np.float64) - (2 * np.sin(x_np) * np.cos(x_np) + 2 * x_np))
    self.assertTrue(np.all(error <= 12 * u * magnitude), (error, magnitude))
    self.assertNotEmpty(jax.devices())


if __name__ == "__main__":
  absltest.main()
