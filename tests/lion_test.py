"""Lion: optax.lion's numbers, the Pallas kernel's agreement, and sign(0) = 0.

Parity with the reference (lion-pytorch) is in tests/golden_test.py.
"""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers

U32 = 2.0**-24  # float32 unit roundoff.


def _tree(seed=0):
  rng = np.random.default_rng(seed)
  return {"w": jnp.asarray(rng.normal(size=(64, 130)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(7,)), jnp.float32)}


def _run(optimizer, steps=20):
  params, state, out = _tree(), None, []
  state = optimizer.init(params)
  update = jax.jit(optimizer.update)
  for k in range(steps):
    updates, state = update(_tree(100 + k), state, params)
    params = optax.apply_updates(params, updates)
    out.append((updates, state))
  return params, out


class LionTest(absltest.TestCase):

  def test_equals_optax_lion_bitwise(self):
    # The same chain (scale_by_lion, add_decayed_weights, -lr) on the same float32 ops.
    for kwargs in (dict(), dict(b1=0.95, b2=0.98, weight_decay=0.1)):
      ours, _ = _run(optimizers.lion(1e-2, **kwargs))
      theirs, _ = _run(optax.lion(1e-2, **{"weight_decay": 0.0, **kwargs}))
      jax.tree.map(np.testing.assert_array_equal, ours, theirs)

  def test_pallas_agrees_with_xla(self):
    xla = optimizers.scale_by_lion()
    pallas = optimizers.scale_by_lion(backend="pallas")
    grads, mu = _tree(1), jax.tree.map(lambda x: 0.1 * x, _tree(2))
    state = optimizers.ScaleByLionState(count=jnp.zeros([], jnp.int32), mu=mu)
    (u_x, s_x), (u_p, s_p) = xla.update(grads, state), pallas.update(grads, state)
    for g, m, a, b, ma, mb in zip(*map(jax.tree.leaves, (grads, mu, u_x, u_p, s_x.mu, s_p.mu))):
      g, m = np.asarray(g, np.float64), np.asarray(m, np.float64)
      # c = b1 m + (1 - b1) g: two products and a sum, 3 roundings of its terms' magnitude; the
      # sign may differ only where |c| is within two such errors of 0.
      c, scale = 0.9 * m + 0.1 * g, 0.9 * np.abs(m) + 0.1 * np.abs(g)
      settled = np.abs(c) > 2 * 3 * U32 * scale
      self.assertGreater(settled.mean(), 0.999)
      np.testing.assert_array_equal(np.asarray(a)[settled], np.asarray(b)[settled])
      # The momentum: 3 roundings per side of |b2 m| + |(1 - b2) g|.
      bound = 2 * 3 * U32 * (0.99 * np.abs(m) + 0.01 * np.abs(g))
      np.testing.assert_array_less(np.abs(np.asarray(ma, np.float64) - np.asarray(mb, np.float64)), bound + 1e-45)

  def test_zero_momentum_and_gradient_do_not_move(self):
    params = _tree()
    optimizer = optimizers.lion(1e-2)
    updates, state = optimizer.update(jax.tree.map(jnp.zeros_like, params), optimizer.init(params), params)
    for u in jax.tree.leaves(updates):
      np.testing.assert_array_equal(u, 0.0)  # sign(0) = 0, as torch's sgn.
    self.assertEqual(int(state[0].count), 1)

  def test_rejects_bad_hyperparameters(self):
    for kwargs, name in ((dict(b1=1.5), "b1"), (dict(b2=-0.1), "b2"), (dict(weight_decay=-1.0), "weight_decay"),
                         (dict(learning_rate=-1.0), "learning_rate"), (dict(backend="cuda"), "backend")):
      with self.assertRaisesRegex(ValueError, name):
        optimizers.lion(**kwargs)


if __name__ == "__main__":
  absltest.main()
