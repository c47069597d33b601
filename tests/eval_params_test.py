"""`optimizers.eval_params` finds an evaluation-point rule anywhere in a state."""

from tests import test_util  # pylint: disable=unused-import  # Device set-up.

from typing import NamedTuple

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


class _AverageState(NamedTuple):
  """A toy averaging state: evaluates at its running mean."""

  count: jax.Array
  average: optax.Params

  def eval_params(self, params):
    del params
    return self.average


def _running_mean() -> optax.GradientTransformation:
  def init(params):
    return _AverageState(jnp.zeros([], jnp.int32), params)

  def update(updates, state, params):
    count = state.count + 1
    new_params = optax.apply_updates(params, updates)
    average = jax.tree.map(lambda a, p: a + (p - a) / count, state.average, new_params)
    return updates, _AverageState(count, average)

  return optax.GradientTransformation(init, update)


class EvalParamsTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.params = {"w": jnp.arange(3.0)}
    self.grads = {"w": jnp.ones(3)}

  def test_plain_optimizers_evaluate_where_they_train(self):
    optimizer = optimizers.radam(0.1)
    state = optimizer.init(self.params)
    self.assertIs(optimizers.eval_params(state, self.params), self.params)

  def _check_found(self, optimizer):
    state = optimizer.init(self.params)
    params = self.params
    for _ in range(2):
      updates, state = optimizer.update(self.grads, state, params)
      params = optax.apply_updates(params, updates)
    evaluated = optimizers.eval_params(state, params)
    self.assertFalse(np.allclose(evaluated["w"], params["w"]))
    return evaluated

  def test_found_inside_chain_inject_multisteps_and_masked(self):
    base = optax.chain(optax.sgd(0.1), _running_mean())
    expected = self._check_found(base)
    wrapped = [
        optax.chain(optax.clip(1.0), base),
        optax.inject_hyperparams(lambda learning_rate: optax.chain(optax.sgd(learning_rate), _running_mean()))(0.1),
        optax.MultiSteps(base, every_k_schedule=1),
        optax.masked(base, {"w": True}),
    ]
    # Exact: every wrapper hands the running mean the same float32 numbers:
    # clip(1) leaves g = 1; inject_hyperparams' float32(0.1) is the constant
    # sgd(0.1) scales by; MultiSteps(every 1) averages one gradient
    # (0 + (g - 0) / 1); the mask selects the one leaf.
    for optimizer in wrapped:
      np.testing.assert_array_equal(self._check_found(optimizer)["w"], expected["w"])

  def test_two_rules_are_ambiguous(self):
    optimizer = optax.chain(_running_mean(), _running_mean())
    with self.assertRaisesRegex(ValueError, "several evaluation-point rules"):
      optimizers.eval_params(optimizer.init(self.params), self.params)

  def test_a_field_named_eval_params_does_not_count(self):
    class Odd(NamedTuple):
      eval_params: jax.Array

    self.assertIs(optimizers.eval_params(Odd(jnp.zeros(1)), self.params), self.params)


if __name__ == "__main__":
  absltest.main()
