"""AdaMod: parity with `adamod` 0.0.3 and its step-size EMA."""

from tests import test_util  # pylint: disable=unused-import  # Sets up simulated CPU devices first.

from absl.testing import absltest
import jax.numpy as jnp
import numpy as np

import optimizers


class AdaModBehaviourTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(2)
    self.params = {"w": jnp.asarray(rng.normal(size=(6,)), jnp.float32)}
    self.grad = {"w": jnp.asarray(rng.normal(size=(6,)), jnp.float32)}

  def test_first_step_is_bounded_by_the_unbiased_ema(self):
    # s_1 = (1 - b3) eta_1 < eta_1, so the first step is (1 - b3) eta_1 m_1.
    lr, b1, b3 = 0.1, 0.9, 0.9
    optimizer = optimizers.adamod(lr, b1=b1, b3=b3)
    updates, _ = optimizer.update(self.grad, optimizer.init(self.params), self.params)
    g = self.grad["w"]
    eta = lr * np.sqrt(1 - 0.999) / (1 - b1) / (np.sqrt((1 - 0.999) * g**2) + 1e-8)
    # Float32 roundings of a product of positive factors (u = 2^-24 each;
    # log1p / expm1 taken as 2 u): lr 1; sqrt(bc2) (0.001 to float32, log1p,
    # expm1: 5, halved) 2.5 + 1; bc1 5; the step_coef ops 2; sqrt(v) (0.001,
    # g^2, the product: 3, halved) 1.5 + 1; + eps, / 2; s (0.1, product) 2;
    # m 2; min(eta, s) m 1: 21 u against the float64 expectation.
    np.testing.assert_allclose(updates["w"], -(1 - b3) * eta * (1 - b1) * g, rtol=21 * 2.0**-24)

  def test_b3_zero_is_adam_with_uncorrected_momentum_scaling(self):
    # With b3 = 0, s_t = eta_t and the bound never binds.
    optimizer = optimizers.adamod(0.1, b3=0.0)
    updates, state = optimizer.update(self.grad, optimizer.init(self.params), self.params)
    eta_times_m = state[0].eta_avg["w"] * state[0].mu["w"]
    # Exact: s = 0 s + 1 eta is eta, so the update is the same float32 product.
    np.testing.assert_array_equal(updates["w"], -eta_times_m)

  def test_weight_decay_follows_the_schedule(self):
    schedule = lambda count: 0.1 / (1.0 + count)
    decayed = optimizers.adamod(schedule, weight_decay=0.5)
    plain = optimizers.adamod(schedule)
    s_d, s_p = decayed.init(self.params), plain.init(self.params)
    for step in range(3):
      u_d, s_d = decayed.update(self.grad, s_d, self.params)
      u_p, s_p = plain.update(self.grad, s_p, self.params)
      decay = schedule(step) * 0.5 * self.params["w"]
      # float32: a few roundings of terms of size |u_p| + |decay| on each side
      # (6 units of 2^-24 of that bound where they cancel), whatever the CPU's FMA use.
      atol = 6 * 2.0**-24 * float(np.max(np.abs(u_p["w"]) + np.abs(decay)))
      np.testing.assert_allclose(u_d["w"], u_p["w"] - decay, rtol=6 * 2.0**-24, atol=atol)


if __name__ == "__main__":
  absltest.main()
