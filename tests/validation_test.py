"""Bad input gets a clear error naming what is wrong."""

from tests import test_util  # pylint: disable=unused-import  # Device set-up.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import optax

import optimizers

# (factory, argument, bad value): each must raise ValueError naming the argument.
BAD_HYPERPARAMETERS = [
    (optimizers.radam, "learning_rate", -1e-3),
    (optimizers.radam, "b1", 1.0),
    (optimizers.radam, "b2", -0.1),
    (optimizers.radam, "eps", -1e-8),
    (optimizers.radam, "weight_decay", -0.1),
    (optimizers.radam, "threshold", 3.0),
    (optimizers.radam, "b1", float("nan")),
    (optimizers.adabound, "learning_rate", -1.0),
    (optimizers.adabound, "final_lr", -0.1),
    (optimizers.adabound, "gamma", 0.0),
    (optimizers.adabound, "b2", 1.5),
    (optimizers.adabound, "base_learning_rate", 0.0),
    (optimizers.amsbound, "eps", -1.0),
    (optimizers.adamod, "b3", 1.0),
    (optimizers.adamod, "learning_rate", -0.1),
    (optimizers.adamod, "weight_decay", -1.0),
    (optimizers.adamp, "delta", -0.1),
    (optimizers.adamp, "wd_ratio", -0.1),
    (optimizers.adamp, "b1", 1.0),
    (optimizers.adamp, "channel_axis", 1.5),
    (optimizers.sgdp, "momentum", 1.0),
    (optimizers.sgdp, "dampening", 2.0),
    (optimizers.sgdp, "learning_rate", -0.1),
]


def _build(factory, argument, value):
  kwargs = {argument: value}
  if factory is optimizers.sgdp and argument != "learning_rate":
    kwargs["learning_rate"] = 0.1
  return factory(**kwargs)


class HyperparameterValidationTest(parameterized.TestCase):

  @parameterized.parameters(BAD_HYPERPARAMETERS)
  def test_invalid_value_raises_naming_the_argument(self, factory, argument, value):
    with self.assertRaisesRegex(ValueError, f"`{argument}`"):
      _build(factory, argument, value)

  def test_schedules_and_traced_values_are_not_rejected(self):
    optimizers.radam(optax.constant_schedule(1e-3))
    jax.jit(lambda lr: optimizers.radam(lr).init({"w": jnp.ones(2)}))(1e-3)


class TreeValidationTest(parameterized.TestCase):

  @parameterized.parameters(
      ("radam",), ("adabound",), ("amsbound",), ("adamod",), ("adamp",), ("sgdp",)
  )
  def test_mismatched_gradient_tree(self, name):
    optimizer = optimizers.registry[name].build()
    params = {"w": jnp.ones((2, 3)), "b": jnp.ones(3)}
    state = optimizer.init(params)
    with self.assertRaisesRegex(ValueError, "does not match the optimizer state"):
      optimizer.update({"w": jnp.ones((2, 3))}, state, params)
    with self.assertRaisesRegex(ValueError, r"\['w'\] has shape \(3, 2\)"):
      optimizer.update({"w": jnp.ones((3, 2)), "b": jnp.ones(3)}, state, {"w": jnp.ones((3, 2)), "b": jnp.ones(3)})


if __name__ == "__main__":
  absltest.main()
