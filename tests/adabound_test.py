"""AdaBound / AMSBound: parity with `adabound` 0.0.5 and the bound behaviour."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


class AdaBoundBehaviourTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(1)
    self.params = {"w": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}
    self.grad = {"w": jnp.asarray(rng.normal(size=(5,)), jnp.float32)}

  def test_late_steps_are_sgd_with_final_lr(self):
    # gamma large: both bounds are within 1e-4 of final_lr after 1e4 steps.
    optimizer = optimizers.adabound(1e-3, final_lr=0.1, gamma=1.0)
    state = optimizer.init(self.params)
    for _ in range(3):
      updates, state = optimizer.update(self.grad, state, self.params)
    # Jump the step counter: chain state is (decay, adabound, lr).
    state = (state[0], state[1]._replace(count=jnp.asarray(10_000, jnp.int32)), state[2])
    updates, state = optimizer.update(self.grad, state, self.params)
    # Expected in float64 from the run's own m and v: the step is clipped to
    # l_t or u_t (t = 10001, final = 0.1 / 1e-3), not merely near final_lr.
    m, v = (np.asarray(x["w"], np.float64) for x in (state[1].mu, state[1].nu))
    t, final = 10_001.0, 0.1 / 1e-3
    step = np.sqrt(-np.expm1(t * np.log(0.999))) / -np.expm1(t * np.log(0.9)) / (np.sqrt(v) + 1e-8)
    clipped = np.clip(step, final * (1 - 1 / (t + 1)), final * (1 + 1 / t))
    self.assertTrue(np.all(clipped != step))  # Only the bounds' float32 roundings enter.
    # Float32 roundings of a product of positive factors, each <= u (2^-24):
    # a bound (final_lr and 1e-3 to float32, the division, 1 / (t + 1), 1 -,
    # final *) 6, times m 1, lr to float32 and times it 2: 9 u, +1 u margin
    # for the float64 reference.
    np.testing.assert_allclose(updates["w"], -1e-3 * clipped * m, rtol=10 * 2.0**-24)

  def test_bounds_follow_the_schedule(self):
    # Halving the learning rate halves the whole step, bounds included.
    full = optimizers.adabound(1e-3, final_lr=0.1, gamma=0.5)
    half = optimizers.adabound(lambda count: 0.5e-3, base_learning_rate=1e-3, final_lr=0.1, gamma=0.5)
    u_full, _ = full.update(self.grad, full.init(self.params), self.params)
    u_half, _ = half.update(self.grad, half.init(self.params), self.params)
    # Exact: the same float32 ops, with the lr constant scaled by 2^-1 (exact).
    np.testing.assert_array_equal(u_half["w"], 0.5 * u_full["w"])

  def test_schedule_starting_at_zero_needs_base_learning_rate(self):
    warmup = optax.linear_schedule(0.0, 1e-3, 10)
    with self.assertRaisesRegex(ValueError, "base_learning_rate"):
      optimizers.adabound(warmup)
    optimizer = optimizers.adabound(warmup, base_learning_rate=1e-3)
    updates, _ = optimizer.update(self.grad, optimizer.init(self.params), self.params)
    np.testing.assert_array_equal(updates["w"], 0.0)

  def test_amsbound_keeps_the_running_max(self):
    optimizer = optimizers.scale_by_adabound(amsbound=True)
    state = optimizer.init(self.params)
    _, state = optimizer.update({"w": 10 * self.grad["w"]}, state)
    _, state = optimizer.update({"w": jnp.zeros(5)}, state)  # v decays.
    self.assertTrue(bool(jnp.all(state.nu_max["w"] >= state.nu["w"])))
    self.assertTrue(bool(jnp.any(state.nu_max["w"] > state.nu["w"])))
    self.assertIsNone(optimizers.scale_by_adabound().init(self.params).nu_max)

  def test_decoupled_weight_decay(self):
    decayed = optimizers.adabound(1e-2, weight_decay=0.5, decoupled_weight_decay=True)
    plain = optimizers.adabound(1e-2)
    u_d, _ = decayed.update(self.grad, decayed.init(self.params), self.params)
    u_p, _ = plain.update(self.grad, plain.init(self.params), self.params)
    decay = 1e-2 * 0.5 * self.params["w"]
    # float32: each side is a few roundings (lr * d, lr * wd * p, their sum) of
    # terms of size |u_p| + |decay|: 6 units of 2^-24 of that bound where the
    # terms cancel, whatever the CPU's FMA use.
    atol = 6 * 2.0**-24 * float(np.max(np.abs(u_p["w"]) + np.abs(decay)))
    np.testing.assert_allclose(u_d["w"], u_p["w"] - decay, rtol=6 * 2.0**-24, atol=atol)


if __name__ == "__main__":
  absltest.main()
