"""AdamP / SGDP: parity with `adamp` 0.3.0 and the projection's properties."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


def _scale_invariant_grad(w, rng, axes):
  """A random gradient with its radial part (per slice over `axes`) removed."""
  g = rng.normal(size=w.shape)
  w_hat = w / np.sqrt(np.sum(w * w, axis=axes, keepdims=True))
  return g - w_hat * np.sum(w_hat * g, axis=axes, keepdims=True)


def _radial_bound(w, u, axes):
  """Float32 rounding bound (u = 2^-24) on sum(w * projected, axes) of a projected `u`.

  projected = u - c w, c = (w . u) / (w . w) per slice. The signed sum w . u
  is off by up to (n - 1) u sum |w u| (not relative to itself: it cancels),
  w . w by (n - 1) u of itself, the norms, division and the square roots by a
  few more: (n + 3) u |c| w . w. Each element then rounds c w_i and the
  difference (2 u of |u_i| + |c w_i|), and w itself was rounded to float32 (u
  of |w_i|, against |projected_i| <= |u_i| + |c w_i|). The float64 sum of the
  test adds 2^-53 terms only.
  """
  n = w.size if axes is None else int(np.prod([w.shape[a] for a in axes]))
  eps = 2.0**-24
  s = lambda x: np.sum(x, axis=axes, keepdims=True)
  ww = s(w * w)
  c = s(w * u) / ww
  dc = ((n - 1) * s(np.abs(w * u)) + (n + 3) * np.abs(c) * ww) * eps / ww
  magnitude = np.abs(u) + np.abs(c * w)
  return np.squeeze(s(np.abs(w) * (np.abs(w) * dc + 2 * eps * magnitude) + eps * np.abs(w) * magnitude))


class ProjectionTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.rng = np.random.default_rng(3)
    self.w = self.rng.normal(size=(3, 3, 4, 8))  # Flax conv kernel (..., in, out).

  def test_channel_view_projects_each_output_channel(self):
    g = _scale_invariant_grad(self.w, self.rng, axes=(0, 1, 2))
    u = self.rng.normal(size=self.w.shape)
    projected, wd_factor = optimizers.adamp_projection(
        jnp.asarray(self.w), jnp.asarray(g), jnp.asarray(u), delta=0.1, wd_ratio=0.1, eps=1e-8
    )
    radial = np.sum(np.asarray(projected, np.float64) * self.w, axis=(0, 1, 2))
    np.testing.assert_array_less(np.abs(radial), _radial_bound(self.w, u, (0, 1, 2)))
    self.assertEqual(float(wd_factor), float(np.float32(0.1)))  # Exact: selected, not computed.

  def test_whole_tensor_view_when_channels_are_not_invariant(self):
    # Exact data: w in {+-1/2, +-1} (powers of two) and u in eighths of
    # [-1, 1], so every w_i u_i and w_i^2 is exact and no partial sum of 288 of
    # them needs more than 13 significant bits: w . u and w . w are exact in
    # float32, in any order (the 288-term signed sum's worst case,
    # (n - 1) u sum |w_i u_i|, would otherwise dominate the bound).
    w = self.rng.choice([-1.0, -0.5, 0.5, 1.0], size=self.w.shape)
    g = _scale_invariant_grad(w, self.rng, axes=None)
    u = self.rng.integers(-8, 9, size=w.shape) / 8.0
    projected, wd_factor = optimizers.adamp_projection(
        jnp.asarray(w, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(u, jnp.float32), delta=0.1,
        wd_ratio=0.1, eps=1e-8)
    projected = np.asarray(projected, np.float64)
    self.assertGreater(np.max(np.abs(np.sum(projected * w, axis=(0, 1, 2)))), 1e-3)
    # Then coef = (w . u) / (sqrt(w . w) + eps)^2 is (w . u) / (w . w) times
    # 1 + theta, |theta| <= 6 u (u = 2^-24: sqrt and + eps, 2 u each once
    # squared; the square and the division) + 2 eps / |w|; each c w_i is exact
    # (w_i a power of two) and u_i - c w_i rounds once (u of |projected_i|).
    # So sum w_i projected_i = -(w . u) theta + sum w_i projected_i rho_i,
    # |rho_i| <= u; the float64 sum of exact products adds 287 2^-53 of
    # sum |w_i projected_i|, within a second u.
    wu, ww = np.sum(w * u), np.sum(w * w)
    bound = (6 * 2.0**-24 + 2e-8 / np.sqrt(ww)) * abs(wu) + 2 * 2.0**-24 * np.sum(np.abs(w * projected))
    self.assertLess(abs(float(np.sum(projected * w))), bound)
    self.assertEqual(float(wd_factor), float(np.float32(0.1)))  # Exact: selected, not computed.

  def test_no_projection_for_aligned_gradients(self):
    g = self.w + 0.1 * self.rng.normal(size=self.w.shape)
    u = self.rng.normal(size=self.w.shape)
    projected, wd_factor = optimizers.adamp_projection(
        jnp.asarray(self.w), jnp.asarray(g), jnp.asarray(u), delta=0.1, wd_ratio=0.1, eps=1e-8
    )
    np.testing.assert_array_equal(projected, u.astype(np.float32))
    self.assertEqual(float(wd_factor), 1.0)

  def test_whole_tensor_threshold_uses_every_element(self):
    # g = w + a random radial-free part r with |r| = k |w| per tensor: the
    # whole-tensor cosine is 1 / sqrt(1 + k^2), set halfway (in log) between
    # delta / sqrt(numel) = 0.0034 and delta / sqrt(channel size) = 0.0167,
    # so only a threshold over the wrong count would project. The channels
    # (cosine ~0.006 each, above 0.0167 for some) do not project either.
    g_perp = _scale_invariant_grad(self.w, self.rng, axes=None)
    cosine = np.sqrt(0.1 / np.sqrt(self.w.size) * 0.1 / np.sqrt(self.w.size // self.w.shape[-1]))
    k = np.sqrt(1.0 / cosine**2 - 1.0)
    g = self.w + k * np.linalg.norm(self.w) / np.linalg.norm(g_perp) * g_perp
    u = self.rng.normal(size=self.w.shape)
    projected, wd_factor = optimizers.adamp_projection(
        jnp.asarray(self.w), jnp.asarray(g), jnp.asarray(u), delta=0.1, wd_ratio=0.1, eps=1e-8)
    np.testing.assert_array_equal(projected, u.astype(np.float32))
    self.assertEqual(float(wd_factor), 1.0)

  def test_vmapped_projection_equals_each_unbatched_one(self):
    # Under vmap the branch that takes w . u becomes a select over the batch.
    # Exact data (w powers of two, u eighths, as above): every sum is exact in
    # any order, so the batched reductions' order cannot change a bit.
    w = self.rng.choice([-1.0, -0.5, 0.5, 1.0], size=(2, *self.w.shape))
    g = np.stack([_scale_invariant_grad(w[0], self.rng, axes=(0, 1, 2)), w[1] + 0.1])  # Projects, does not.
    u = self.rng.integers(-8, 9, size=w.shape) / 8.0
    project = lambda w, g, u: optimizers.adamp_projection(w, g, u, delta=0.1, wd_ratio=0.1, eps=1e-8)
    batched, factors = jax.vmap(project)(*(jnp.asarray(x, jnp.float32) for x in (w, g, u)))
    for i in range(2):
      one, factor = project(*(jnp.asarray(x[i], jnp.float32) for x in (w, g, u)))
      np.testing.assert_array_equal(batched[i], one)
      self.assertEqual(factors[i], factor)
    self.assertEqual([float(f) for f in factors], [float(np.float32(0.1)), 1.0])

  def test_channel_axis_for_pytorch_layouts(self):
    # Exact data (w powers of two, u eighths: every per-channel w . u and
    # w . w exact in float32 in any order, and each c w_i exact), so both
    # layouts compute the same coefficients and the same one rounding of
    # u_i - c w_i: equal, whatever order each layout sums in. (g only selects
    # the view, far from the threshold.)
    w = self.rng.choice([-1.0, -0.5, 0.5, 1.0], size=self.w.shape)
    g = _scale_invariant_grad(w, self.rng, axes=(0, 1, 2))
    u = self.rng.integers(-8, 9, size=w.shape) / 8.0
    to_torch = lambda x: jnp.asarray(np.transpose(x, (3, 2, 0, 1)), jnp.float32)  # (out, in, h, w)
    flax_out, _ = optimizers.adamp_projection(
        jnp.asarray(w, jnp.float32), jnp.asarray(g, jnp.float32), jnp.asarray(u, jnp.float32), delta=0.1,
        wd_ratio=0.1, eps=1e-8)
    torch_out, _ = optimizers.adamp_projection(
        to_torch(w), to_torch(g), to_torch(u), delta=0.1, wd_ratio=0.1, eps=1e-8, channel_axis=0
    )
    self.assertFalse(np.array_equal(torch_out, to_torch(u)))  # Projected.
    np.testing.assert_array_equal(to_torch(np.asarray(flax_out)), torch_out)


class AdamPBehaviourTest(absltest.TestCase):

  def test_vectors_are_never_projected_adamp_is_adam(self):
    # In float64: optax.adam's float32 bias correction 1 - 0.999^t is off by
    # ~1e-5 relative (ours is exact to rounding), which would hide the point.
    rng = np.random.default_rng(4)
    with jax.enable_x64(True):
      params = {"b": jnp.asarray(rng.normal(size=(7,)), jnp.float64)}
      ours, theirs = optimizers.adamp(1e-2), optax.adam(1e-2)
      s_o, s_t = ours.init(params), theirs.init(params)
      for _ in range(4):
        g = {"b": jnp.asarray(rng.normal(size=(7,)), jnp.float64)}
        u_o, s_o = ours.update(g, s_o, params)
        u_t, s_t = theirs.update(g, s_t, params)
        # Float64: optax's 1 - 0.999^t cancels to ~1e-13 relative, 10x below.
        np.testing.assert_allclose(u_o["b"], u_t["b"], rtol=1e-12)

  def test_needs_params(self):
    params = {"w": jnp.ones((2, 2))}
    for optimizer in (optimizers.adamp(), optimizers.sgdp(0.1)):
      with self.assertRaisesRegex(ValueError, "parameters"):
        optimizer.update(params, optimizer.init(params))

  def test_sgdp_stores_the_projected_momentum(self):
    rng = np.random.default_rng(5)
    w = rng.normal(size=(4, 6))
    g = _scale_invariant_grad(w, rng, axes=(0,))
    params = {"w": jnp.asarray(w, jnp.float32)}
    plain = optimizers.scale_by_sgdp(momentum=0.9)
    nesterov = optimizers.scale_by_sgdp(momentum=0.9, nesterov=True)
    grads = {"w": jnp.asarray(g + 0.01 * w, jnp.float32)}  # Nearly invariant.
    updates, state = plain.update(grads, plain.init(params), params)
    np.testing.assert_array_equal(state.momentum["w"], updates["w"])
    _, state_n = nesterov.update(grads, nesterov.init(params), params)
    # Exact: the Nesterov buffer is 0.9 * 0 + 1 * g = g (never projected).
    np.testing.assert_array_equal(state_n.momentum["w"], grads["w"])


if __name__ == "__main__":
  absltest.main()
