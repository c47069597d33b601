"""DoG / LDoG and polynomial-decay averaging: parity with dog-optimizer 1.0.3 and behaviour."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


class DoGGoldenTest(parameterized.TestCase):

  @parameterized.named_parameters(test_util.golden_parameters("dog", "ldog"))
  def test_matches_reference(self, path):
    # Averaged cases compare the averaged iterate (x/ in the file) as well.
    case, error = test_util.golden_error(path)
    self.assertLess(error, test_util.TOLERANCE[case.dtype], case.meta["description"])


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {"a": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}


def _loss(params):
  return sum(jnp.sum(jnp.sin(x) * x + 0.1 * x**4) for x in jax.tree.leaves(params))


def _trajectory(optimizer, params, steps, loss=_loss):
  state = optimizer.init(params)
  out = []
  for _ in range(steps):
    updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


class DoGBehaviourTest(parameterized.TestCase):

  def test_global_dog_matches_optax_contrib_in_float64(self):
    # An independent implementation of the same global rule (optax adds eps
    # inside the square root every step, which equals adding it once to G).
    with jax.enable_x64(True):
      params = jax.tree.map(lambda x: x.astype(jnp.float64), _params())
      ours, _ = _trajectory(optimizers.dog(), params, 20)
      theirs, _ = _trajectory(optax.contrib.dog(), params, 20)
    for a, b in zip(ours, theirs):
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-12)

  def test_init_eta_is_the_first_step_whatever_the_learning_rate(self):
    # The reference overrides the first step size with init_eta itself; optax
    # multiplies its init_step by the learning rate afterwards.
    params = _params()
    grads = jax.grad(_loss)(params)
    ours = optimizers.dog(learning_rate=0.5, init_eta=1e-3)
    updates, _ = ours.update(grads, ours.init(params), params)
    theirs = optax.contrib.dog(learning_rate=0.5, init_step=("learning_rate", 1e-3))
    optax_updates, _ = theirs.update(grads, theirs.init(params), params)
    for u, o, g in zip(jax.tree.leaves(updates), jax.tree.leaves(optax_updates), jax.tree.leaves(grads)):
      np.testing.assert_allclose(u, -1e-3 * g, rtol=1e-6)
      np.testing.assert_allclose(o, -0.5e-3 * g, rtol=1e-6)

  def test_ldog_is_dog_on_each_leaf(self):
    params = _params()
    together, _ = _trajectory(optimizers.ldog(reps_rel=0.1), params, 10)
    for name in params:
      # DoG on this leaf alone, with the loss restricted to it.
      alone, _ = _trajectory(optimizers.dog(reps_rel=0.1), params[name], 10, loss=_loss)
      for step_together, step_alone in zip(together, alone):
        np.testing.assert_allclose(step_together[name], step_alone, rtol=1e-6)
    # Not vacuous: global DoG on the same tree moves differently.
    coupled, _ = _trajectory(optimizers.dog(reps_rel=0.1), params, 10)
    moved = lambda run: run[0]["b"] - params["b"]  # The first step (both then converge).
    self.assertFalse(np.allclose(moved(coupled), moved(together), rtol=0.1))

  def test_all_zero_first_gradient_with_zero_eps_takes_no_step(self):
    # The reference stops with an assertion (G must be > 0); here eta is 0.
    params = _params()
    optimizer = optimizers.dog(eps=0.0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = optimizer.update(zeros, optimizer.init(params), params)
    for u in jax.tree.leaves(updates):
      np.testing.assert_array_equal(u, 0.0)
    updates, _ = optimizer.update(jax.grad(_loss)(params), state, params)
    for u in jax.tree.leaves(updates):
      self.assertTrue(bool(jnp.all(jnp.isfinite(u))))

  @parameterized.parameters(
      (dict(reps_rel=0.0), "reps_rel"),
      (dict(init_eta=-1.0), "init_eta"),
      (dict(eps=-1e-8), "eps"),
      (dict(weight_decay=-0.1), "weight_decay"),
      (dict(learning_rate=-1.0), "learning_rate"),
  )
  def test_rejects_bad_hyperparameters(self, kwargs, name):
    with self.assertRaisesRegex(ValueError, f"`{name}`"):
      optimizers.dog(**kwargs)
    with self.assertRaisesRegex(ValueError, f"`{name}`"):
      optimizers.ldog(**kwargs)

  def test_needs_params(self):
    optimizer = optimizers.dog()
    params = _params()
    with self.assertRaisesRegex(ValueError, "params"):
      optimizer.update(params, optimizer.init(params))


class AveragingTest(parameterized.TestCase):

  def test_uniform_average_with_gamma_zero_and_first_iterate(self):
    params = _params()
    optimizer = optax.chain(optax.sgd(0.05), optimizers.polynomial_decay_averaging(gamma=0.0))
    iterates, state = _trajectory(optimizer, params, 6)
    average = optimizers.eval_params(state, iterates[-1])
    for name in params:
      np.testing.assert_allclose(average[name], np.mean([x[name] for x in iterates], axis=0), rtol=1e-5)
    # gamma = 8: after step 1 the average is the first iterate (w_1 = 1).
    optimizer = optax.chain(optax.sgd(0.05), optimizers.polynomial_decay_averaging())
    iterates, state = _trajectory(optimizer, params, 1)
    for name in params:
      np.testing.assert_array_equal(optimizers.eval_params(state, iterates[0])[name], iterates[0][name])

  def test_eval_params_through_inject_hyperparams_and_bf16(self):
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    optimizer = optax.chain(
        optax.inject_hyperparams(optimizers.dog)(learning_rate=1.0),
        optax.inject_hyperparams(optimizers.polynomial_decay_averaging)(gamma=8.0),
    )
    state = optimizer.init(params)
    self.assertEqual(state[1].inner_state.average["a"].dtype, jnp.float32)
    grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), jax.grad(_loss)(params))
    updates, state = jax.jit(optimizer.update)(grads, state, params)
    new_params = optax.apply_updates(params, updates)
    evaluated = optimizers.eval_params(state, new_params)
    for name in params:
      self.assertEqual(evaluated[name].dtype, jnp.bfloat16)
      np.testing.assert_array_equal(evaluated[name], new_params[name])  # w_1 = 1.

  def test_updates_pass_through_and_params_are_required(self):
    params = _params()
    averaging = optimizers.polynomial_decay_averaging()
    grads = jax.grad(_loss)(params)
    updates, _ = averaging.update(grads, averaging.init(params), params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
      np.testing.assert_array_equal(u, g)
    with self.assertRaisesRegex(ValueError, "params"):
      averaging.update(grads, averaging.init(params))
    with self.assertRaisesRegex(ValueError, "`gamma`"):
      optimizers.polynomial_decay_averaging(gamma=-1.0)


if __name__ == "__main__":
  absltest.main()
