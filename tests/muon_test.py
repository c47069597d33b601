"""Muon: parity with optax.contrib's Muon and Adam blocks, and which leaves get Muon."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax
from optax import contrib as optax_contrib

import optimizers

DimNums = optimizers.MuonDimensionNumbers


def _flax_like(seed=0):
  """Leaf names and layouts as Flax's Dense, Conv, Embed, LayerNorm, attention."""
  rng = np.random.default_rng(seed)
  shapes = {
      "Embed_0": {"embedding": (32, 8)},
      "positions": (16, 8),
      "attention": {
          "query": {"kernel": (8, 2, 4), "bias": (2, 4)},
          "out": {"kernel": (2, 4, 8), "bias": (8,)},
      },
      "Conv_0": {"kernel": (3, 3, 2, 4), "bias": (4,)},
      "Dense_0": {"kernel": (8, 16), "bias": (16,)},
      "LayerNorm_0": {"scale": (8,)},
  }
  return jax.tree.map(
      lambda s: jnp.asarray(rng.normal(size=s), jnp.float32), shapes, is_leaf=lambda x: isinstance(x, tuple)
  )


def _is_spec(x):
  return x is None or isinstance(x, DimNums)


def _steps(optimizer, params, steps=4):
  state = optimizer.init(params)
  for i in range(steps):
    grads = jax.tree.map(lambda p: p * 0.5 + 0.1 * (i + 1), params)  # Not proportional to p.
    updates, state = jax.jit(optimizer.update)(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params


class MuonPartitionTest(absltest.TestCase):

  def test_default_rule_on_flax_layouts(self):
    specs = optimizers.muon_partition(_flax_like())
    expected = {
        "Embed_0": {"embedding": None},
        "positions": None,
        "attention": {
            # (d, heads, head_dim): one d x (heads head_dim) matrix, as modded-nanogpt.
            "query": {"kernel": DimNums((0,), (1, 2)), "bias": None},
            "out": {"kernel": DimNums((0, 1), (2,)), "bias": None},
        },
        "Conv_0": {"kernel": DimNums((0, 1, 2), (3,)), "bias": None},  # (kh kw in) x out.
        "Dense_0": {"kernel": DimNums((0,), (1,)), "bias": None},
        "LayerNorm_0": {"scale": None},
    }
    self.assertEqual(
        jax.tree.leaves(specs, is_leaf=_is_spec), jax.tree.leaves(expected, is_leaf=_is_spec)
    )
    self.assertEqual(
        jax.tree.structure(specs, is_leaf=_is_spec), jax.tree.structure(expected, is_leaf=_is_spec)
    )

  def test_optax_default_would_differ(self):
    # Why steplab has its own rule: optax's default (2-D leaves) would put the
    # embedding, the position table and the attention bias under Muon and the
    # attention and conv kernels under Adam.
    params = _flax_like()
    ours = optimizers.muon_partition(params)
    optax_2d = jax.tree.map(lambda x: x.ndim == 2, params)
    disagree = jax.tree.map(lambda spec, two_d: (spec is not None) != two_d, ours, optax_2d, is_leaf=_is_spec)
    self.assertEqual(sum(jax.tree.leaves(disagree)), 6)

  def test_tree_and_rule_arguments(self):
    params = {"w1": jnp.ones((4, 6)), "b1": jnp.ones(6)}
    tree = {"w1": DimNums(), "b1": None}
    self.assertEqual(optimizers.muon_partition(params, tree), tree)
    everything_adam = optimizers.muon_partition(params, lambda path, shape: None)
    self.assertEqual(everything_adam, {"w1": None, "b1": None})
    with self.assertRaisesRegex(ValueError, "no entry for the parameter b1"):
      optimizers.muon_partition(params, {"w1": DimNums()})


class MuonParityTest(parameterized.TestCase):

  @parameterized.parameters(None, 0.2)
  def test_matrices_follow_optax_contrib_muon(self, consistent_rms):
    # In float64: both run optax's scale_by_muon and the same shape scaling
    # and decay, but as differently fused programs (a * b + c as an FMA or
    # not, depending on the CPU), and Newton-Schulz amplifies such rounding
    # (~500x measured in float32). Bound: per element 2 x 24 elementwise
    # roundings plus 2 (n - 1) for the matrix products' sums (n <= 18 terms),
    # times 4^5 (5 Newton-Schulz steps, each with |p'(s)| <= 4 on the singular
    # values it visits), times 4 steps (each step's difference carries into
    # the next with gain ~1), in float64's u = 2^-53, relative to each leaf's
    # total movement: 3.7e-11.
    with jax.enable_x64(True):
      params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), {
          "Dense_0": {"kernel": _flax_like()["Dense_0"]["kernel"]},
          "Conv_0": {"kernel": _flax_like()["Conv_0"]["kernel"]},
          "query": {"kernel": _flax_like()["attention"]["query"]["kernel"]},
      })
      lr, wd = 0.02, 0.1
      ours = optimizers.muon(lr, weight_decay=wd, consistent_rms=consistent_rms)
      reference = optax_contrib.muon(
          lr, weight_decay=wd, consistent_rms=consistent_rms,
          muon_weight_dimension_numbers=optimizers.muon_partition(params),
      )
      a, b = _steps(ours, params), _steps(reference, params)
    bound = 4 * (2 * 24 + 2 * (18 - 1)) * 4.0**5 * 2.0**-53
    for x, y, p in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(params)):
      self.assertEqual(x.dtype, np.float64)
      np.testing.assert_allclose(x, y, rtol=0, atol=bound * np.abs(np.asarray(y) - np.asarray(p)).max())

  def test_other_leaves_follow_adamw_at_the_ratio(self):
    params = {"bias": jnp.linspace(-1.0, 1.0, 5), "embedding": jnp.ones((3, 4)), "scale": jnp.asarray(2.0)}
    lr, ratio, wd = 0.02, 0.5, 0.1
    ours = optimizers.muon(lr, weight_decay=wd, adam_lr_ratio=ratio)
    reference = optax.adamw(lr * ratio, b1=0.9, b2=0.95, eps=1e-10, weight_decay=wd)
    # Exact: the same ops (scale_by_adam, + wd p, times the learning rate),
    # and the ratio 0.5 is a power of two, so (u 0.5) (-f32(0.02)) and
    # u (-f32(0.01)) round identically.
    jax.tree.map(np.testing.assert_array_equal, _steps(ours, params), _steps(reference, params))

  def test_update_is_nearly_orthogonal_with_width_scaling(self):
    rng = np.random.default_rng(3)
    params = {"kernel": jnp.zeros((8, 32))}
    grads = {"kernel": jnp.asarray(rng.normal(size=(8, 32)), jnp.float32)}
    optimizer = optimizers.muon(1.0)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    # Newton-Schulz gives U S' V^T with S' roughly in (0.5, 1.5) (Keller
    # Jordan), times sqrt(max(1, fan_out / fan_in)) = 2.
    singular = np.linalg.svd(-np.asarray(updates["kernel"]) / 2.0, compute_uv=False)
    self.assertTrue(np.all((singular > 0.5) & (singular < 1.5)), singular)


class MuonValidationTest(parameterized.TestCase):

  @parameterized.parameters(
      ("learning_rate", -0.1), ("beta", 1.0), ("ns_steps", 0), ("ns_steps", 2.5), ("eps", -1.0),
      ("weight_decay", -0.1), ("adam_lr_ratio", -1.0), ("adam_b1", 1.0), ("adam_b2", -0.5),
      ("adam_eps", -1e-8), ("consistent_rms", 0.0),
  )
  def test_invalid_value_raises_naming_the_argument(self, argument, value):
    with self.assertRaisesRegex(ValueError, f"`{argument}`"):
      optimizers.muon(**{argument: value})

  def test_bad_dimension_numbers_tree(self):
    with self.assertRaisesRegex(ValueError, "`dimension_numbers`"):
      optimizers.muon(dimension_numbers={"w": "muon"})


if __name__ == "__main__":
  absltest.main()
