"""Schedule-free SGD / AdamW / RAdam and the wrapper: parity with schedulefree 1.4.1."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers

_BUILT_IN = ("schedule_free_sgd", "schedule_free_adamw", "schedule_free_radam")


def _setup():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  grads = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32),
           "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}
  return params, grads


class ScheduleFreeBehaviourTest(parameterized.TestCase):

  def test_first_warmup_step_moves_where_optax_does_not(self):
    params, grads = _setup()
    theirs = optax.contrib.schedule_free_adamw(0.01, warmup_steps=10)
    _, their_state = theirs.update(grads, theirs.init(params), params)
    ours = optimizers.schedule_free_adamw(0.01, warmup_steps=10)
    our_updates, state = ours.update(grads, ours.init(params), params)
    # optax's off-by-one: its warmup gives lr_0 = 0, so its z did not move.
    their_z = [s for s in jax.tree.leaves(their_state, is_leaf=lambda n: hasattr(n, "z"))
               if hasattr(s, "z")][0].z
    jax.tree.map(np.testing.assert_array_equal, their_z, params)
    # Ours: z moved by lr/10 times the normalised gradient (|g / sqrt(g^2)| = 1).
    z_step = jax.tree.map(lambda z, p: z - p, state.z, params)
    for leaf in jax.tree.leaves(z_step):
      np.testing.assert_allclose(jnp.abs(leaf), 1e-3, rtol=1e-4)
    self.assertTrue(all(bool(jnp.all(u != 0)) for u in jax.tree.leaves(our_updates)))

  @parameterized.parameters(*_BUILT_IN)
  def test_eval_params_is_x_through_chain_and_inject_hyperparams(self, name):
    params, grads = _setup()
    spec = optimizers.registry[name]
    optimizer = optax.chain(
        optax.clip_by_global_norm(10.0),
        optax.inject_hyperparams(spec.factory, static_args=spec.static_args)(**spec.hyperparameters(b1=0.8)),
    )
    state = optimizer.init(params)
    for _ in range(8):  # Past RAdam's silent phase.
      updates, state = jax.jit(optimizer.update)(grads, state, params)
      params = optax.apply_updates(params, updates)
    x = optimizers.eval_params(state, params)
    jax.tree.map(np.testing.assert_array_equal, optimizers.schedule_free_eval_params(state, params), x)
    z = state[1].inner_state.z
    for name_ in params:
      y64, z64 = (np.asarray(a[name_], np.float64) for a in (params, z))
      expected = (y64 - 0.2 * z64) / 0.8
      # x = y + w (z - y), w = 1 - 1 / b1 = -0.25 in float32 to within 2.75 u
      # (0.8 to float32 and the division, 1.25 u each, the subtraction 0.25 u;
      # u = 2^-24): w (z - y) is off by 3 u |z - y| with its rounding, the sum
      # by u |x|; the float64 expectation by 2^-50 (|y| + |z|). Absolute: x
      # may cancel.
      bound = 2.0**-24 * (3 * np.abs(z64 - y64) + np.abs(expected)) + 2.0**-50 * (np.abs(y64) + np.abs(z64))
      np.testing.assert_array_less(np.abs(np.asarray(x[name_], np.float64) - expected), bound)
      self.assertFalse(np.allclose(x[name_], params[name_]))

  def test_state_keeps_z_but_no_x(self):
    params, _ = _setup()
    state = optimizers.schedule_free_sgd().init(params)
    per_param = [leaf for leaf in jax.tree.leaves(state) if jnp.ndim(leaf) > 0]
    self.assertLen(per_param, len(jax.tree.leaves(params)))  # z only.

  def test_wrapper_weights_use_prodigys_d(self):
    params, grads = _setup()
    wrapped = optimizers.schedule_free(optimizers.prodigy(1.0), 1.0)
    state = wrapped.init(params)
    for _ in range(3):
      updates, state = wrapped.update(grads, state, params)
      params = optax.apply_updates(params, updates)
    d = float(optimizers.estimated_d(state))
    self.assertGreater(d, 1e-6)
    # Exact: lr_max = max(lr d) with lr = 1 (an exact product) and d non-decreasing.
    self.assertEqual(float(state.lr_max), d)

  @parameterized.parameters(
      (dict(b1=0.0), "b1"),
      (dict(b1=1.0), "b1"),
      (dict(weight_decay=-1.0), "weight_decay"),
      (dict(r=-1.0), "r"),
      (dict(weight_lr_power=-1.0), "weight_lr_power"),
      (dict(warmup_steps=-1), "warmup_steps"),
      (dict(learning_rate=-1.0), "learning_rate"),
  )
  def test_rejects_bad_hyperparameters(self, kwargs, name):
    with self.assertRaisesRegex(ValueError, f"`{name}`"):
      optimizers.schedule_free_adamw(**kwargs)
    if name != "warmup_steps":
      with self.assertRaisesRegex(ValueError, f"`{name}`"):
        optimizers.schedule_free(optax.sgd(0.1), **dict(dict(learning_rate=0.1), **kwargs))

  @parameterized.parameters(
      ("sgd",), ("adamw",), ("radam",), ("adamw_pallas",), ("radam_pallas",), ("wrapper",)
  )
  def test_update_accepts_extra_arguments(self, kind):
    # optax.chain passes extra arguments (value=loss) to every element; a
    # schedule-free optimizer must accept them and give the same step.
    params, grads = _setup()
    optimizer = {
        "sgd": lambda: optimizers.schedule_free_sgd(0.1),
        "adamw": lambda: optimizers.schedule_free_adamw(),
        "radam": lambda: optimizers.schedule_free_radam(),
        "adamw_pallas": lambda: optimizers.schedule_free_adamw(backend="pallas"),
        "radam_pallas": lambda: optimizers.schedule_free_radam(backend="pallas"),
        "wrapper": lambda: optimizers.schedule_free(optax.adam(0.1), 0.1),
    }[kind]()
    self.assertIsInstance(optimizer, optax.GradientTransformationExtraArgs)
    state = optimizer.init(params)
    expected, _ = optimizer.update(grads, state, params)
    got, _ = optimizer.update(grads, state, params, value=jnp.asarray(1.5))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(a, b)
    chained = optax.chain(optimizer, optax.identity())
    got, _ = chained.update(grads, chained.init(params), params, value=jnp.asarray(1.5))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
      np.testing.assert_array_equal(a, b)

  def test_wrapper_passes_the_loss_to_a_base_that_needs_it(self):
    # schedule_free(induced_metric_log()): the base reads `value=`.
    params, grads = _setup()
    optimizer = optimizers.schedule_free(optimizers.induced_metric_log(0.1), 0.1)
    state = optimizer.init(params)
    with self.assertRaisesRegex(ValueError, "current loss is required"):
      optimizer.update(grads, state, params)
    small, _ = optimizer.update(grads, state, params, value=jnp.asarray(0.5))
    large, _ = optimizer.update(grads, state, params, value=jnp.asarray(50.0))
    # The base's factor L / (L^2 + mu_hat) depends on the loss: the steps differ.
    self.assertFalse(np.allclose(small["w"], large["w"]))
    for leaf in jax.tree.leaves(small):
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))

  def test_needs_params(self):
    params, grads = _setup()
    optimizer = optimizers.schedule_free_sgd()
    with self.assertRaisesRegex(ValueError, "params"):
      optimizer.update(grads, optimizer.init(params))


if __name__ == "__main__":
  absltest.main()
