"""SGD with momentum: AlgoPerf's momentum/nesterov baselines, to the bit."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


def _tree(seed, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  return {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 6)), dtype), "bias": jnp.asarray(rng.normal(size=6), dtype)},
      "scale": jnp.asarray(rng.normal(), dtype),
  }


def _steps(optimizer, steps=5):
  params = _tree(0)
  state = optimizer.init(params)
  for i in range(steps):
    updates, state = jax.jit(optimizer.update)(_tree(i + 1), state, params)
    params = optax.apply_updates(params, updates)
  return params


class SGDTest(parameterized.TestCase):

  @parameterized.parameters((optimizers.sgd_momentum, False), (optimizers.sgd_nesterov, True))
  def test_equals_algoperf_baseline_chain(self, factory, nesterov):
    # algorithms/archived_paper_baselines/{momentum,nesterov}/jax/submission.py.
    lr, momentum, wd = 0.3, 0.8, 1e-2
    algoperf = optax.chain(
        optax.add_decayed_weights(wd), optax.sgd(learning_rate=lr, momentum=momentum, nesterov=nesterov)
    )
    ours = _steps(factory(lr, momentum=momentum, weight_decay=wd))
    jax.tree.map(np.testing.assert_array_equal, ours, _steps(algoperf))

  @parameterized.parameters(False, True)
  def test_decoupled_weight_decay_is_outside_the_momentum(self, nesterov):
    lr, momentum, wd = 0.3, 0.8, 1e-2
    expected = optax.chain(
        optax.trace(decay=momentum, nesterov=nesterov), optax.add_decayed_weights(wd),
        optax.scale_by_learning_rate(lr),
    )
    ours = optimizers.sgd_momentum(lr, momentum, wd, nesterov=nesterov, decoupled_weight_decay=True)
    jax.tree.map(np.testing.assert_array_equal, _steps(ours), _steps(expected))

  def test_bfloat16_params_keep_a_float32_trace(self):
    params = _tree(0, jnp.bfloat16)
    optimizer = optimizers.sgd_nesterov(0.1)
    state = optimizer.init(params)
    for leaf in jax.tree.leaves(state):
      self.assertEqual(leaf.dtype, jnp.float32)
    updates, _ = optimizer.update(_tree(1, jnp.bfloat16), state, params)
    for leaf in jax.tree.leaves(updates):
      self.assertEqual(leaf.dtype, jnp.bfloat16)

  @parameterized.parameters(
      ("learning_rate", -0.1), ("momentum", 1.0), ("momentum", -0.1), ("weight_decay", -1e-4),
  )
  def test_invalid_value_raises_naming_the_argument(self, argument, value):
    for factory in (optimizers.sgd_momentum, optimizers.sgd_nesterov):
      with self.assertRaisesRegex(ValueError, f"`{argument}`"):
        factory(**{argument: value})

  def test_algoperf_one_minus_beta1_sets_the_momentum(self):
    hparams = optimizers.registry["sgd_nesterov"].hyperparameters(one_minus_beta1=0.1)
    self.assertEqual(hparams["momentum"], 1.0 - 0.1)  # Exact: the same Python (float64) subtraction.
    self.assertNotIn("b1", hparams)


if __name__ == "__main__":
  absltest.main()
