"""The registry: lookups, defaults, search spaces and hyperparameter names."""

from tests import test_util  # pylint: disable=unused-import  # Device set-up.

import importlib
import inspect
import math
import sys

from absl.testing import absltest
from absl.testing import parameterized
import optax

import jax.numpy as jnp
import numpy as np

import optimizers
registry_lib = importlib.import_module("optimizers.registry")  # `optimizers.registry` is the Registry.

NAMES = sorted(optimizers.registry)


class RegistryTest(parameterized.TestCase):

  def test_unknown_name_lists_the_registered_ones(self):
    with self.assertRaisesRegex(KeyError, "unknown optimizer 'adamx'.*radam"):
      optimizers.registry["adamx"]  # pylint: disable=pointless-statement

  def test_covers_the_design_names(self):
    for name in ("radam", "adabound", "amsbound", "adamod", "adamp", "sgdp", "adamw", "nadamw"):
      self.assertIn(name, optimizers.registry)

  def test_covers_the_baselines(self):
    # AlgoPerf's momentum/nesterov baselines and Muon, on AlgoPerf's schedule.
    for name in ("sgd_momentum", "sgd_nesterov", "muon"):
      self.assertFalse(optimizers.registry[name].sets_own_schedule, name)
    # Only the methods that set their own step-size schedule run without it.
    self.assertCountEqual(
        [name for name, spec in optimizers.registry.items() if spec.sets_own_schedule],
        ["dog", "ldog", "schedule_free_sgd", "schedule_free_adamw", "schedule_free_radam"])
    # AlgoPerf's momentum baselines tune one_minus_beta1: it sets `momentum`.
    hparams = optimizers.registry["sgd_momentum"].hyperparameters(one_minus_beta1=0.05)
    self.assertTrue(math.isclose(hparams["momentum"], 0.95))

  @parameterized.parameters(NAMES)
  def test_defaults_are_the_factory_defaults(self, name):
    # The factories carry the reference defaults; the registry must not drift.
    spec = optimizers.registry[name]
    signature = inspect.signature(spec.factory).parameters
    for key, value in spec.defaults.items():
      default = signature[key].default
      if default is not inspect.Parameter.empty:
        self.assertEqual(value, default, f"{name}.{key}")

  @parameterized.parameters(NAMES)
  def test_search_space_is_valid_algoperf_json(self, name):
    spec = optimizers.registry[name]
    self.assertIn("learning_rate", spec.search_space)
    for key, space in spec.search_space.items():
      if "feasible_points" in space:
        self.assertNotEmpty(space["feasible_points"])
        continue
      self.assertIn(space["scaling"], ("linear", "log"), key)
      self.assertLess(space["min"], space["max"], key)
      if space["scaling"] == "log":
        self.assertGreater(space["min"], 0.0, key)
      # Every point of the space builds an optimizer.
      for value in (space["min"], space["max"]):
        self.assertIsInstance(spec.build(**{key: value}), optax.GradientTransformation)

  @parameterized.parameters(NAMES)
  def test_metadata(self, name):
    spec = optimizers.registry[name]
    self.assertTrue(spec.paper)
    self.assertTrue(spec.reference)
    self.assertGreater(spec.state_bytes_per_param, 0)

  def test_one_minus_names_translate(self):
    hparams = optimizers.registry["radam"].hyperparameters(one_minus_b2=1e-2)
    self.assertTrue(math.isclose(hparams["b2"], 0.99))

  def test_unknown_hyperparameter_lists_valid_names(self):
    with self.assertRaisesRegex(ValueError, "unknown hyperparameter 'beta_one'.*'b1'"):
      optimizers.registry["radam"].build(beta_one=0.9)

  def test_algoperf_names_translate(self):
    # AlgoPerf's search spaces (adamw/nadamw baselines) say beta1, beta2, one_minus_beta1.
    hparams = optimizers.registry["nadamw"].hyperparameters(one_minus_beta1=0.1, beta2=0.99)
    self.assertTrue(math.isclose(hparams["b1"], 0.9))
    self.assertEqual(hparams["b2"], 0.99)
    self.assertNotIn("beta2", hparams)
    # optax.nadamw is a partial of adamw; the registry wraps it with validation.
    factory = optimizers.registry["nadamw"].factory
    self.assertEqual(factory.__wrapped__.func.__name__, "adamw")
    self.assertEqual(registry_lib.factory_name(factory), "nadamw")
    self.assertEqual(registry_lib.factory_name(factory.__wrapped__), "adamw")

  def test_optax_entries_are_validated_when_built(self):
    for name in ("adamw", "nadamw"):
      spec = optimizers.registry[name]
      self.assertIn("b1", spec.arguments)  # The wrapper keeps optax's signature.
      with self.assertRaisesRegex(ValueError, f"{name}: `b1`"):
        spec.build(b1=1.5)
      with self.assertRaisesRegex(ValueError, f"{name}: `learning_rate`"):
        spec.build(learning_rate=-1.0)
      # Same numbers as optax's own.
      params = {"w": jnp.arange(3.0)}
      ours = spec.build(learning_rate=0.1)
      theirs = getattr(optax, name)(learning_rate=0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4)
      a, _ = ours.update(params, ours.init(params), params)
      b, _ = theirs.update(params, theirs.init(params), params)
      np.testing.assert_array_equal(a["w"], b["w"])

  def test_registry_is_read_only_and_rejects_duplicates(self):
    spec = optimizers.registry["radam"]
    with self.assertRaises(TypeError):
      optimizers.registry["radam"] = spec  # pytype: disable=unsupported-operands
    with self.assertRaisesRegex(ValueError, "already registered"):
      optimizers.registry.register(spec)
    with self.assertRaises(TypeError):
      spec.defaults["learning_rate"] = 1.0  # pytype: disable=unsupported-operands

  def test_spec_rejects_unknown_arguments(self):
    with self.assertRaisesRegex(ValueError, "not arguments of radam"):
      optimizers.OptimizerSpec(
          name="bad", factory=optimizers.radam, defaults=dict(beta_one=0.9), search_space={},
          paper="p", reference="r", state_bytes_per_param=8,
      )


class ExportsTest(absltest.TestCase):

  def test_every_steplab_optimizer_and_its_building_block_is_exported(self):
    for name, spec in optimizers.registry.items():
      if spec.factory.__module__.startswith("optimizers."):  # Not optax's adamw/nadamw.
        self.assertIs(getattr(optimizers, name), spec.factory, name)
        self.assertIn(name, optimizers.__all__)
    for module in {spec.factory.__module__ for spec in optimizers.registry.values()}:
      if module.startswith("optimizers."):
        blocks = [n for n in vars(sys.modules[module]) if n.startswith("scale_by_")]
        self.assertEmpty(set(blocks) - set(optimizers.__all__), module)


if __name__ == "__main__":
  absltest.main()
