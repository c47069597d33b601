"""RAdam: parity with torch.optim.RAdam and the original code; behaviour around rectification."""

from tests import test_util  # Sets up simulated CPU devices first.

import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


def _steps(optimizer, grads_per_step, params):
  state = optimizer.init(params)
  out = []
  for g in grads_per_step:
    updates, state = optimizer.update(g, state, params)
    out.append(updates)
    params = optax.apply_updates(params, updates)
  return out


class RAdamBehaviourTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.params = {"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)}
    self.grads = [{"w": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)} for _ in range(8)]

  def test_first_steps_are_momentum_sgd_as_torch(self):
    updates = _steps(optimizers.radam(0.1), self.grads[:1], self.params)
    # Step 1: m / (1 - b1) is the gradient itself.
    # Float32 roundings of a product (u = 2^-24 each; log1p / expm1 taken as
    # 2 u) against float64: 0.1 to float32 and m 2, bc1 (0.1, log1p, expm1) 5,
    # m / bc1 1, lr to float32 and the product 2: 10 u.
    np.testing.assert_allclose(updates[0]["w"], -0.1 * np.asarray(self.grads[0]["w"], np.float64),
                               rtol=10 * 2.0**-24)

  def test_original_fallback_does_not_move_before_rectification(self):
    updates = _steps(optimizers.radam(0.1, degenerated_to_sgd=False), self.grads, self.params)
    # With b2 = 0.999, rho_t > 5 first at step 6.
    for u in updates[:5]:
      np.testing.assert_array_equal(u["w"], 0.0)
    self.assertGreater(float(jnp.abs(updates[5]["w"]).max()), 0.0)

  @parameterized.parameters(1, 2)  # Whole tree decayed; a mask leaving one leaf out.
  def test_original_fallback_with_weight_decay_matches_hand_computation(self, variant):
    # LiyuanLucasLiu/RAdam (degenerated_to_sgd=False) decays p only in the
    # steps it takes: before rectification nothing moves, decay included;
    # from step 6: p -= lr (wd p + r_t sqrt(bc2)/bc1 m / (sqrt(v) + eps)).
    lr, wd, b1, b2, eps = 0.1, 0.5, 0.9, 0.999, 1e-8
    params = {"w": self.params["w"], "b": jnp.ones(4, jnp.float32)}
    grads = [{"w": g["w"], "b": g["w"][0]} for g in self.grads]
    mask = None if variant == 1 else {"w": True, "b": False}
    optimizer = optimizers.radam(lr, weight_decay=wd, degenerated_to_sgd=False, mask=mask)
    with jax.enable_x64(True):
      expected = {k: np.asarray(v, np.float64) for k, v in params.items()}
      m = {k: np.zeros_like(v) for k, v in expected.items()}
      v2 = {k: np.zeros_like(v) for k, v in expected.items()}
      rho_inf = 2 / (1 - b2) - 1
      trajectory = []
      for t, g in enumerate(grads, start=1):
        rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
        for k in expected:
          gk = np.asarray(g[k], np.float64)
          m[k] = b1 * m[k] + (1 - b1) * gk
          v2[k] = b2 * v2[k] + (1 - b2) * gk * gk
          if rho > 5:
            r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            decay = wd if (mask is None or mask[k]) else 0.0
            step = r * np.sqrt(1 - b2**t) / (1 - b1**t) * m[k] / (np.sqrt(v2[k]) + eps)
            expected[k] = expected[k] - lr * (decay * expected[k] + step)
        trajectory.append({k: x.copy() for k, x in expected.items()})
      # Ours in float64 as well: a float32 trajectory against this float64
      # one would need a bound growing with the steps.
      to64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), tree)
      state = optimizer.init(to64(params))
      p = to64(params)
      for t, (g, want) in enumerate(zip(grads, trajectory), start=1):
        updates, state = jax.jit(optimizer.update)(to64(g), state, p)
        if t <= 5:
          for leaf in jax.tree.leaves(updates):
            np.testing.assert_array_equal(leaf, 0.0)  # No step, no decay.
        p = optax.apply_updates(p, updates)
        for k in p:
          self.assertEqual(p[k].dtype, jnp.float64)
          # Float64: tens of 2^-53 roundings a step of O(1) terms (rho_t's
          # cancellation in the hand formula ~4e-14), 3 steps: 1e-10 has margin.
          np.testing.assert_allclose(p[k], want[k], rtol=1e-10, atol=1e-10)
    # Not vacuous: the decay acts from step 6 on.
    undecayed = _steps(optimizers.radam(lr, degenerated_to_sgd=False), [{"w": g["w"]} for g in grads],
                       {"w": params["w"]})
    self.assertFalse(np.allclose(sum(u["w"] for u in undecayed) + params["w"], p["w"]))

  @parameterized.parameters("float32", "float64")
  def test_original_golden_does_not_move_before_rectification(self, dtype):
    # The golden case from the original code (pytorch_optimizer's port,
    # degenerated_to_sgd=False, decoupled decay): keeps the case from silently
    # degrading into one where the first steps move (an SGD step or decay).
    path = os.path.join(test_util.GOLDEN_DIR, f"radam_original_no_sgd_wd_{dtype}.npz")
    case = test_util.load_golden(path)
    kwargs = case.meta["kwargs"]
    self.assertFalse(kwargs["degenerated_to_sgd"])
    self.assertTrue(kwargs["decoupled_weight_decay"])
    self.assertGreater(kwargs["weight_decay"], 0.0)
    cov = case.meta["coverage"]
    self.assertEqual(cov["first_rectified_step"], 6)  # b2 = 0.999: rho_t > 5 from step 6.
    self.assertEqual(cov["unrectified_steps"], 5)
    self.assertEqual(cov["no_move_steps"], 5)
    self.assertGreater(cov["rectified_steps"], 0)
    for name in case.meta["param_names"]:
      p, g = case.params[name], case.grads[name]
      for t in range(5):  # Steps 1-5: p[t + 1] == p[0] bit for bit although g[t] != 0.
        self.assertTrue(np.any(g[t] != 0), (name, t))
        np.testing.assert_array_equal(p[t + 1], p[0], err_msg=f"{name} step {t + 1}")
      self.assertTrue(np.all(p[6] != p[5]), name)  # Step 6 moves every entry.

  def test_torch_fallback_decays_from_the_first_step(self):
    # degenerated_to_sgd=True (torch, and the original with it): decay every step.
    updates = _steps(optimizers.radam(0.1, weight_decay=0.5), self.grads[:1], self.params)
    g, p = (np.asarray(x["w"], np.float64) for x in (self.grads[0], self.params))
    # Signed (g + 0.5 p may cancel): absolute, per element, in u = 2^-24 of
    # the magnitude terms 0.1 (|g| + 0.5 |p|): m / bc1 8 u (see above), 0.5 p
    # exact, the sum 1, lr to float32 and the product 2: 11 u.
    bound = 11 * 2.0**-24 * 0.1 * (np.abs(g) + 0.5 * np.abs(p))
    np.testing.assert_array_less(np.abs(np.asarray(updates[0]["w"], np.float64) + 0.1 * (g + 0.5 * p)), bound)

  def test_rectification_switches_on_at_step_six(self):
    sgd_like = _steps(optimizers.radam(0.1), self.grads, self.params)
    frozen = _steps(optimizers.radam(0.1, degenerated_to_sgd=False), self.grads, self.params)
    for t in range(5):
      self.assertFalse(np.allclose(sgd_like[t]["w"], frozen[t]["w"]))
    # Exact: from step 6 both are the same float32 ops on the same moments.
    np.testing.assert_array_equal(sgd_like[5]["w"], frozen[5]["w"])

  @parameterized.parameters(False, True)
  def test_matches_optax_radam_when_eps_is_zero(self, nesterov):
    # optax.radam puts eps on the bias-corrected sqrt(v) and rectifies at
    # rho_t >= 5; with eps = 0 (and rho_t never exactly 5) the two agree,
    # which pins our Nesterov form to optax's. In float64: optax computes
    # rho_t by cancellation, which in float32 is off by ~1% at step 6.
    with jax.enable_x64(True):
      params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), self.params)
      grads = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), self.grads)
      ours = _steps(optimizers.radam(0.1, eps=0.0, nesterov=nesterov), grads, params)
      theirs = _steps(optax.radam(0.1, eps=0.0, nesterov=nesterov), grads, params)
    for a, b in zip(ours, theirs):
      # Float64 (optax's rho_t cancellation costs ~1e-14): 1e-10 has margin.
      np.testing.assert_allclose(a["w"], b["w"], rtol=1e-10)

  def test_decoupled_weight_decay_is_the_default(self):
    params = self.params
    decayed = optimizers.radam(0.1, weight_decay=0.5)
    plain = optimizers.radam(0.1)
    u_d, _ = decayed.update(self.grads[0], decayed.init(params), params)
    u_p, _ = plain.update(self.grads[0], plain.init(params), params)
    decay = 0.1 * 0.5 * params["w"]
    # 6 roundings (u = 2^-24) of the magnitude terms: wd p, the sum and x lr
    # in u_d; x lr in u_p, decay (float32(0.05) = float32(0.1) / 2) and the
    # difference in the test. Absolute: the two terms may cancel.
    atol = 6 * 2.0**-24 * float(np.max(np.abs(u_p["w"]) + np.abs(decay)))
    np.testing.assert_allclose(u_d["w"], u_p["w"] - decay, rtol=6 * 2.0**-24, atol=atol)

  def test_coupled_weight_decay_adds_to_the_gradient(self):
    params = self.params
    coupled = optimizers.radam(0.1, weight_decay=0.5, decoupled_weight_decay=False)
    plain = optimizers.radam(0.1)
    shifted = {"w": self.grads[0]["w"] + 0.5 * params["w"]}
    u_c, _ = coupled.update(self.grads[0], coupled.init(params), params)
    u_p, _ = plain.update(shifted, plain.init(params), params)
    # Exact: g + 0.5 p (an exact product, one rounding) then the same program.
    np.testing.assert_array_equal(u_c["w"], u_p["w"])

  def test_mu_dtype(self):
    optimizer = optimizers.scale_by_radam(mu_dtype=jnp.bfloat16)
    state = optimizer.init(self.params)
    self.assertEqual(state.mu["w"].dtype, jnp.bfloat16)
    _, state = jax.jit(optimizer.update)(self.grads[0], state)
    self.assertEqual(state.mu["w"].dtype, jnp.bfloat16)
    self.assertEqual(state.nu["w"].dtype, jnp.float32)

  def test_sma_length_is_accurate_in_float32(self):
    from optimizers import _numerics  # pylint: disable=g-import-not-at-top
    for b2 in (0.999, 0.99, 0.9):
      for t in (1, 5, 6, 7, 20, 100, 10_000):
        exact = (2 / (1 - b2) - 1) - 2 * t * b2**t / (1 - b2**t)
        got = float(_numerics.sma_length(b2, jnp.float32(t)))
        self.assertLess(abs(got - exact), 1e-6 * max(abs(exact), 1.0), (b2, t, got, exact))


if __name__ == "__main__":
  absltest.main()
