"""Induced-metric optimisers: parity with the NumPy transcription, and the math."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers

U32 = 2.0**-24  # float32 unit roundoff.


def _tree(seed=0, dtype=jnp.float64):
  rng = np.random.default_rng(seed)
  return {
      "dense": {"kernel": jnp.asarray(rng.normal(size=(3, 4)), dtype), "bias": jnp.asarray(rng.normal(size=(4,)), dtype)},
      "scale": jnp.asarray(rng.normal(), dtype),
  }


def _flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def _trajectory(optimizer, params, grads_list, values=None):
  state = optimizer.init(params)
  out = []
  for t, grads in enumerate(grads_list):
    extra = {} if values is None else dict(value=values[t])
    updates, state = optimizer.update(grads, state, params, **extra)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out


class InducedMetricMathTest(parameterized.TestCase):

  @parameterized.parameters(False, True)
  def test_one_step_is_the_sherman_morrison_natural_gradient(self, rms):
    # With no momentum and no trace EMA (rho = beta = 0) one step is exactly
    # lr G^-1 g for G = P^-1 + xi g g^T, solved here densely.
    lr, xi = 0.3, 0.7
    with jax.enable_x64(True):
      params, grads = _tree(0), _tree(1)
      if rms:
        optimizer = optimizers.induced_metric_rms(lr, momentum=0.0, xi=xi, beta=0.0, b_rms=0.5, eps=1e-3)
      else:
        optimizer = optimizers.induced_metric_sgd(lr, momentum=0.0, xi=xi, beta=0.0)
      updates, _ = optimizer.update(grads, optimizer.init(params), params)
    g = _flat(grads)
    # After one step v_hat = g^2, so P = 1 / (|g| + eps).
    p_diag = 1.0 / (np.abs(g) + 1e-3) if rms else np.ones_like(g)
    metric = np.diag(1.0 / p_diag) + xi * np.outer(g, g)
    np.testing.assert_allclose(_flat(updates), -lr * np.linalg.solve(metric, g), rtol=1e-12)

  def test_rms_is_the_wrapper_around_optax_scale_by_adam(self):
    # induced_metric_rms == scale_by_induced_metric(optax.scale_by_adam, adam_preconditioner).
    hp = dict(momentum=0.8, xi=0.5, beta=0.7, b_rms=0.95, eps=1e-6)
    with jax.enable_x64(True):
      params = _tree(0)
      grads_list = [_tree(s) for s in range(2, 8)]
      ours = _trajectory(optimizers.induced_metric_rms(0.05, weight_decay=0.1, **hp), params, grads_list)
      wrapped = optax.chain(
          optimizers.scale_by_induced_metric(
              optax.scale_by_adam(hp["momentum"], hp["b_rms"], hp["eps"]), hp["xi"], hp["beta"],
              preconditioner=optimizers.adam_preconditioner(hp["b_rms"], hp["eps"]),
          ),
          optax.add_decayed_weights(0.1),
          optax.scale_by_learning_rate(0.05),
      )
      theirs = _trajectory(wrapped, params, grads_list)
    for a, b in zip(ours, theirs):
      np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-12)

  def test_sgd_is_the_wrapper_around_debiased_ema(self):
    with jax.enable_x64(True):
      params = _tree(0)
      grads_list = [_tree(s) for s in range(2, 8)]
      ours = _trajectory(optimizers.induced_metric_sgd(0.1, momentum=0.7, xi=0.2), params, grads_list)
      wrapped = optax.chain(
          optimizers.scale_by_induced_metric(optax.ema(0.7, debias=True), 0.2),
          optax.scale_by_learning_rate(0.1),
      )
      theirs = _trajectory(wrapped, params, grads_list)
    for a, b in zip(ours, theirs):
      np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-12)

  def test_wraps_steplab_radam(self):
    # Any preconditioner: the factor is 1 / (1 + xi <g, P g>) on RAdam's step.
    params, grads = _tree(0, jnp.float32), _tree(1, jnp.float32)
    base = optimizers.scale_by_radam()
    wrapped = optimizers.scale_by_induced_metric(
        base, xi=0.5, beta=0.0, preconditioner=optimizers.adam_preconditioner(0.999, 1e-8)
    )
    plain_updates, _ = base.update(grads, base.init(params), params)
    updates, state = wrapped.update(grads, wrapped.init(params), params)
    # One step: v_hat = g^2, P g = g / (|g| + eps) ~ sign(g), <g, P g> ~ |g|_1
    # (eps kept: it moves the factor by ~1e-8, a fraction of u).
    g = _flat(grads).astype(np.float64)
    factor = 1.0 / (1.0 + 0.5 * np.sum(g * g / (np.abs(g) + 1e-8)))
    # Float32 roundings (u = 2^-24; log1p / expm1 taken as 2 u) against
    # float64, relative: v = (0.001 g) g 3 (constant, 2 products); bc2 5
    # (0.001 to float32, log1p, expm1); v / bc2 1, 9; sqrt halves, + 1: 5.5;
    # + eps 2 (eps to float32, sum): 7.5; g / () 1, g * P g 1: 9.5 per term;
    # the sum of n = 17 terms >= 0 + 16: 25.5; xi = 0.5, beta = 0 exact;
    # 1 + trace 1, 1 / () 1: 27.5; x the direction (the same float32 numbers
    # as plain_updates: same base, same inputs) 1: 28.5 u.
    np.testing.assert_allclose(_flat(updates), factor * _flat(plain_updates).astype(np.float64), rtol=29 * U32)
    self.assertEqual(int(state.count), 1)

  def test_no_preconditioner_found_is_a_clear_error(self):
    params = _tree(0, jnp.float32)
    wrapped = optimizers.scale_by_induced_metric(
        optax.trace(0.9), preconditioner=optimizers.adam_preconditioner()
    )
    with self.assertRaisesRegex(ValueError, "exactly one state with `nu`"):
      wrapped.update(params, wrapped.init(params), params)

  def test_log_variant_needs_the_loss(self):
    params = _tree(0, jnp.float32)
    optimizer = optimizers.induced_metric_log()
    with self.assertRaisesRegex(ValueError, "value=loss"):
      optimizer.update(params, optimizer.init(params), params)
    updates, _ = optimizer.update(params, optimizer.init(params), params, value=jnp.float32(2.0))
    self.assertTrue(all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)))

  def test_log_variant_at_an_exact_minimum_takes_no_step(self):
    # L = 0 and g = 0: the reference computes 0 / 0 = NaN.
    params = _tree(0, jnp.float32)
    zeros = jax.tree.map(jnp.zeros_like, params)
    optimizer = optimizers.induced_metric_log()
    updates, _ = optimizer.update(zeros, optimizer.init(params), params, value=jnp.float32(0.0))
    for u in jax.tree.leaves(updates):
      np.testing.assert_array_equal(u, 0.0)

  def test_log_factor_uses_the_given_loss(self):
    # beta = 0, rho = 0: factor L / (L^2 + xi |g|^2) exactly.
    with jax.enable_x64(True):
      params, grads = _tree(0), _tree(1)
      optimizer = optimizers.induced_metric_log(1.0, momentum=0.0, xi=0.3, beta=0.0)
      updates, _ = optimizer.update(grads, optimizer.init(params), params, value=1.5)
    g = _flat(grads)
    np.testing.assert_allclose(_flat(updates), -1.5 / (1.5**2 + 0.3 * g @ g) * g, rtol=1e-12)

  def test_weight_decay_is_not_scaled_by_the_metric(self):
    with jax.enable_x64(True):
      params, grads = _tree(0), _tree(1)
      decayed = optimizers.induced_metric_sgd(0.1, weight_decay=0.5)
      plain = optimizers.induced_metric_sgd(0.1)
      u_d, _ = decayed.update(grads, decayed.init(params), params)
      u_p, _ = plain.update(grads, plain.init(params), params)
    np.testing.assert_allclose(_flat(u_d), _flat(u_p) - 0.1 * 0.5 * _flat(params), rtol=1e-12)

  @parameterized.parameters(
      (optimizers.induced_metric_sgd, dict(xi=-1.0), "xi"),
      (optimizers.induced_metric_sgd, dict(beta=1.0), "beta"),
      (optimizers.induced_metric_sgd, dict(momentum=1.5), "momentum"),
      (optimizers.induced_metric_rms, dict(b_rms=-0.1), "b_rms"),
      (optimizers.induced_metric_rms, dict(eps=-1.0), "eps"),
      (optimizers.induced_metric_log, dict(learning_rate=-1.0), "learning_rate"),
      (optimizers.induced_metric_log, dict(weight_decay=-1.0), "weight_decay"),
  )
  def test_bad_hyperparameters_name_the_argument(self, factory, kwargs, name):
    with self.assertRaisesRegex(ValueError, name):
      factory(**kwargs)


if __name__ == "__main__":
  absltest.main()
