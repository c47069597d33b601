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
    (optimizers.adamod, "learning_rate", "0.001"),  # Was accepted silently.
    (optimizers.radam, "learning_rate", float("inf")),
    (optimizers.radam, "weight_decay", float("inf")),
    (optimizers.radam, "eps", float("inf")),
    (optimizers.radam, "b1", [0.9]),
    (optimizers.radam, "mu_dtype", jnp.int32),
    (optimizers.adabound, "mu_dtype", jnp.int32),
    (optimizers.adamod, "mu_dtype", jnp.int8),
    (optimizers.adamp, "mu_dtype", jnp.int32),
    (optimizers.sgdp, "mu_dtype", jnp.int32),
    (optimizers.adam_mini, "mu_dtype", jnp.int32),
    (optimizers.schedule_free_radam, "b2", 1.0),
]


def _registry_rows():
  """(name, argument, bad value) for every registry entry: no inf learning rate,
  weight decay or eps; no strings or lists as numbers; no integer mu_dtype."""
  rows = []
  for name, spec in sorted(optimizers.registry.items()):
    for argument in ("learning_rate", "weight_decay", "eps"):
      if argument in spec.arguments:
        rows.append((name, argument, float("inf")))
    rows.append((name, "learning_rate", "0.001"))
    rows.append((name, "learning_rate", [0.001]))
    for argument in ("b1", "momentum", "b2", "eps", "weight_decay"):
      if argument in spec.arguments:
        rows.append((name, argument, "0.5"))
    if "mu_dtype" in spec.arguments:
      rows.append((name, "mu_dtype", jnp.int32))
  rows += [
      ("adamw", "b1", 1.5), ("adamw", "learning_rate", -1e-3), ("adamw", "learning_rate", float("nan")),
      ("nadamw", "b1", 1.5), ("nadamw", "learning_rate", -1e-3), ("nadamw", "learning_rate", float("nan")),
      ("adamw", "b2", float("nan")), ("nadamw", "weight_decay", -1.0),
      ("schedule_free_radam", "b2", 1.0),  # Was a ZeroDivisionError.
      ("schedule_free_adamw", "b2", 1.0),
      ("radam", "mu_dtype", jnp.bool_), ("radam", "mu_dtype", "not a dtype"),
  ]
  return [
      dict(testcase_name=f"{name}_{argument}_{i}", name=name, argument=argument, value=value)
      for i, (name, argument, value) in enumerate(rows)
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

  @parameterized.named_parameters(_registry_rows())
  def test_registry_entry_rejects_bad_value_at_build_time(self, name, argument, value):
    with self.assertRaisesRegex(ValueError, f"`{argument}`"):
      optimizers.registry[name].build(**{argument: value})

  @parameterized.parameters(
      (optimizers.adamp, 2), (optimizers.adamp, -3), (optimizers.sgdp, 5), (optimizers.sgdp, -4),
  )
  def test_channel_axis_out_of_range_is_refused_not_wrapped(self, factory, axis):
    # A matrix has axes -2 .. 1: Python's modulo would silently wrap 2 to 0.
    kwargs = dict(learning_rate=0.1) if factory is optimizers.sgdp else {}
    optimizer = factory(channel_axis=axis, **kwargs)
    with self.assertRaisesRegex(ValueError, "`channel_axis` .* out of range"):
      optimizer.init({"w": jnp.ones((3, 4)), "b": jnp.ones(4)})
    # In range for every projected (ndim > 1) leaf is fine; vectors are never projected.
    factory(channel_axis=-2, **kwargs).init({"w": jnp.ones((3, 4)), "b": jnp.ones(4)})

  def test_traced_hyperparameters_are_documented_as_unchecked(self):
    # Traced values (inject_hyperparams, jit) cannot be checked when built:
    # they are the caller's responsibility, never branched on.
    optimizer = optax.inject_hyperparams(optimizers.adamod)(learning_rate=1e-3)
    optimizer.init({"w": jnp.ones(2)})
    jax.jit(lambda b1: optimizers.registry["adamw"].build(b1=b1).init({"w": jnp.ones(2)}))(0.9)

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
