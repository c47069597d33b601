"""AdamP / SGDP: parity with `adamp` 0.3.0 and the projection's properties."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers


class AdamPGoldenTest(parameterized.TestCase):

  @parameterized.named_parameters(test_util.golden_parameters("adamp", "sgdp"))
  def test_matches_reference(self, path):
    case, error = test_util.golden_error(path)
    self.assertLess(error, test_util.TOLERANCE[case.dtype], case.meta["description"])


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
    g = _scale_invariant_grad(self.w, self.rng, axes=None)
    u = self.rng.normal(size=self.w.shape)
    projected, wd_factor = optimizers.adamp_projection(
        jnp.asarray(self.w), jnp.asarray(g), jnp.asarray(u), delta=0.1, wd_ratio=0.1, eps=1e-8
    )
    self.assertGreater(np.max(np.abs(np.sum(np.asarray(projected) * self.w, axis=(0, 1, 2)))), 1e-3)
    self.assertLess(abs(float(np.sum(np.asarray(projected, np.float64) * self.w))), _radial_bound(self.w, u, None))
    self.assertEqual(float(wd_factor), float(np.float32(0.1)))  # Exact: selected, not computed.

  def test_no_projection_for_aligned_gradients(self):
    g = self.w + 0.1 * self.rng.normal(size=self.w.shape)
    u = self.rng.normal(size=self.w.shape)
    projected, wd_factor = optimizers.adamp_projection(
        jnp.asarray(self.w), jnp.asarray(g), jnp.asarray(u), delta=0.1, wd_ratio=0.1, eps=1e-8
    )
    np.testing.assert_array_equal(projected, u.astype(np.float32))
    self.assertEqual(float(wd_factor), 1.0)

  def test_channel_axis_for_pytorch_layouts(self):
    g = _scale_invariant_grad(self.w, self.rng, axes=(0, 1, 2))
    u = self.rng.normal(size=self.w.shape)
    to_torch = lambda x: jnp.asarray(np.transpose(x, (3, 2, 0, 1)))  # (out, in, h, w)
    flax_out, _ = optimizers.adamp_projection(
        jnp.asarray(self.w), jnp.asarray(g), jnp.asarray(u), delta=0.1, wd_ratio=0.1, eps=1e-8
    )
    torch_out, _ = optimizers.adamp_projection(
        to_torch(self.w), to_torch(g), to_torch(u), delta=0.1, wd_ratio=0.1, eps=1e-8, channel_axis=0
    )
    np.testing.assert_allclose(to_torch(np.asarray(flax_out)), torch_out, rtol=1e-5, atol=1e-6)


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
    np.testing.assert_allclose(state_n.momentum["w"], grads["w"], rtol=1e-6)


if __name__ == "__main__":
  absltest.main()
