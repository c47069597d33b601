"""Adam-mini: parity with adam-mini 1.1.1, its partition, and the memory it saves."""

from tests import test_util  # Sets up simulated CPU devices first.

import importlib
import math

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.workloads import transformer
import optimizers


# The module (the package attribute `optimizers.adam_mini` is the optimizer).
adam_mini_lib = importlib.import_module("optimizers.adam_mini")


def _state_bytes(state):
  return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(state))


class AdamMiniGoldenTest(parameterized.TestCase):

  @parameterized.named_parameters(test_util.golden_parameters("adam_mini"))
  def test_partition_is_the_references(self, path):
    case = test_util.load_golden(path)
    params = {n: jnp.asarray(case.params[n][0]) for n in case.meta["param_names"]}
    kwargs = case.meta["kwargs"]
    rows = optimizers.print_adam_mini_partition(
        params, kwargs["num_heads"], kwargs["num_kv_heads"], print_fn=lambda line: None)
    self.assertEqual({name: n for name, _, _, n in rows}, case.meta["reference_blocks"])

  def test_the_partition_matters_on_this_problem(self):
    # AdamW on the same gradients ends far from the reference: the golden
    # test above could not pass with a per-element second moment.
    case = test_util.load_golden(test_util.golden_paths("adam_mini")[0])
    adam = optax.adam(float(case.lr[0]), b1=0.9, b2=0.999, eps=1e-8)
    with jax.enable_x64(case.dtype == "float64"):
      ours = test_util.replay(case, adam)
    self.assertGreater(test_util.worst_relative_error(ours, case), 1e-2)


class PartitionTest(absltest.TestCase):

  def test_flax_transformer_layout(self):
    model = transformer.TransformerLM(num_layers=1)
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    rows = {name: (shape, rule, n) for name, shape, rule, n in optimizers.print_adam_mini_partition(
        params, num_heads=4, print_fn=lambda line: None)}
    attention = "params.block_0.multiheaddotproductattention_0"
    self.assertEqual(rows[f"{attention}.query.kernel"], ((128, 4, 32), "head", 4))
    self.assertEqual(rows[f"{attention}.key.kernel"], ((128, 4, 32), "head", 4))
    self.assertEqual(rows[f"{attention}.value.kernel"], ((128, 4, 32), "neuron", 128))
    self.assertEqual(rows[f"{attention}.out.kernel"], ((4, 32, 128), "neuron", 128))
    self.assertEqual(rows[f"{attention}.query.bias"], ((4, 32), "adam", 128))
    self.assertEqual(rows["params.embed_0.embedding"], ((256, 128), "token", 256))
    self.assertEqual(rows["params.layernorm_0.scale"], ((128,), "whole", 1))

  def test_two_d_query_and_key_kernels_split_into_heads(self):
    params = {"attn": {"q_proj": {"kernel": jnp.ones((8, 8))}, "k_proj": {"kernel": jnp.ones((8, 4))}}}
    blocks = optimizers.adam_mini_partition(params, num_heads=4, num_kv_heads=2)
    self.assertEqual(blocks["attn"]["q_proj"]["kernel"], adam_mini_lib.Block("head", 4, (0, 2)))
    self.assertEqual(blocks["attn"]["k_proj"]["kernel"], adam_mini_lib.Block("head", 2, (0, 2)))
    # Each head's block is its own output columns: scaling head 1's gradient
    # changes only head 1's v.
    g = {"attn": {"q_proj": {"kernel": jnp.ones((8, 8)).at[:, 2:4].set(3.0)},
                  "k_proj": {"kernel": jnp.ones((8, 4))}}}
    tx = optimizers.scale_by_adam_mini(num_heads=4, num_kv_heads=2)
    _, state = tx.update(g, tx.init(params), params)
    # g^2 and the block means (of 16 equal values) are exact; 0.001 to float32
    # and the product are 2 roundings of u = 2^-24 against the float64 values.
    np.testing.assert_allclose(np.ravel(state.nu["attn"]["q_proj"]["kernel"]), 0.001 * np.array([1, 9, 1, 1]),
                               rtol=2 * 2.0**-24)

  def test_query_kernel_needs_the_head_count(self):
    params = {"wq": {"kernel": jnp.ones((8, 8))}}
    with self.assertRaisesRegex(ValueError, "num_heads"):
      optimizers.adam_mini().init(params)
    with self.assertRaisesRegex(ValueError, "not divisible into 3 heads"):
      optimizers.adam_mini(num_heads=3).init(params)
    with self.assertRaisesRegex(ValueError, "num_kv_heads"):
      optimizers.adam_mini(num_heads=4, num_kv_heads=3)

  def test_custom_partition(self):
    params = {"w": jnp.ones((4, 6))}
    per_row = lambda p: jax.tree.map(lambda _: adam_mini_lib.Block("custom", None, (1,)), p)
    tx = optimizers.scale_by_adam_mini(partition=per_row)
    self.assertEqual(tx.init(params).nu["w"].shape, (4, 1))

  def test_weight_decay_exclusions_match_ln_as_a_token_only(self):
    excluded = adam_mini_lib.excluded_from_weight_decay
    for name in ("ln_f.scale", "h.0.ln_1.scale", "final_ln.scale", "lnf.scale", "encoder.layernorm_0.scale",
                 "mlp.fc1.bias", "norm.weight"):
      self.assertTrue(excluded(name), name)
    # The reference's bare "ln" substring would exclude these too.
    for name in ("kiln.kernel", "vulnerable.kernel", "layers.0.attn.q_proj.kernel", "lm_head.kernel"):
      self.assertFalse(excluded(name), name)

  def test_decay_skips_norms_and_biases(self):
    params = {"mlp": {"kernel": jnp.ones((2, 3)), "bias": jnp.ones((3,))}, "ln_f": {"scale": jnp.ones((3,))}}
    zeros = jax.tree.map(jnp.zeros_like, params)
    tx = optimizers.adam_mini(0.1, weight_decay=0.5)
    updates, _ = tx.update(zeros, tx.init(params), params)
    # Exact: m = v = 0, so the update is -lr wd p = float32(0.1) times 2^-1 and
    # 1, in any grouping: float32(0.05) (rounding commutes with powers of two).
    np.testing.assert_array_equal(updates["mlp"]["kernel"], np.float32(-0.05))
    np.testing.assert_array_equal(updates["mlp"]["bias"], 0.0)
    np.testing.assert_array_equal(updates["ln_f"]["scale"], 0.0)


class ShardingTest(absltest.TestCase):

  def test_block_means_reduce_sharded_kernels_without_gathering_them(self):
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:4]).reshape(2, 2), ("data", "model"))
    P = jax.sharding.PartitionSpec
    specs = {
        "attn": {"q_proj": {"kernel": P("data", "model")}, "v_proj": {"kernel": P(None, "model")}},
        "mlp": {"fc1": {"kernel": P("data", "model")}},
        "embed": {"embedding": P("model", "data")},
    }
    rng = np.random.default_rng(0)
    unsharded = {
        "attn": {"q_proj": {"kernel": jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)},
                 "v_proj": {"kernel": jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)}},
        "mlp": {"fc1": {"kernel": jnp.asarray(rng.normal(size=(8, 16)), jnp.float32)}},
        "embed": {"embedding": jnp.asarray(rng.normal(size=(16, 8)), jnp.float32)},
    }
    params = jax.device_put(unsharded, jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs))
    tx = optimizers.adam_mini(0.1, num_heads=4)

    def step(p, s):
      updates, s = tx.update(jax.tree.map(jnp.sin, p), s, p)
      return optax.apply_updates(p, updates), s

    state = jax.jit(tx.init)(params)
    hlo = jax.jit(step).lower(params, state).compile().as_text()
    self.assertNotIn("all-gather", hlo)  # Partial sums are all-reduced, never the kernels gathered.
    new_params, new_state = jax.jit(step)(params, state)
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
      self.assertTrue(q.sharding.is_equivalent_to(p.sharding, p.ndim))
    for m, p in zip(jax.tree.leaves(new_state[0].mu), jax.tree.leaves(params)):
      self.assertTrue(m.sharding.is_equivalent_to(p.sharding, p.ndim))
    expected, _ = step(unsharded, tx.init(unsharded))
    # Bound from float32 rounding (u = 2^-24), on any CPU: sharding changes
    # the order of each block's sum of g^2 (per-shard partial sums, then an
    # all-reduce). A float32 sum of n non-negative terms in ANY order is within
    # (n - 1) u of the exact sum, so the two differ by up to 2 (n - 1) u; the
    # update scales with v^-1/2, which halves that: (n - 1) u, with n <= 128
    # (a block is at most a leaf of 8 x 16). Plus 2 x 24 elementwise roundings
    # (g^2, mean, EMAs, bias corrections, sqrt, + eps, division, lr, as in
    # pallas_kernels_test's ELEMENTWISE_ROUNDINGS; the partitioned program may
    # fuse a * b + c into an FMA differently). All relative to the update; the
    # parameters p + u then round once more on each side: 2 u of |p + u|
    # (3 u: the update's scale below is read off the rounded parameters).
    block, k = 8 * 16, 2 * 24
    for a, b, p0 in zip(jax.tree.leaves(new_params), jax.tree.leaves(expected), jax.tree.leaves(unsharded)):
      a, b, p0 = (np.asarray(x, np.float64) for x in (a, b, p0))
      step_scale = np.abs(b - p0).max()
      np.testing.assert_allclose(a, b, rtol=3 * 2.0**-24, atol=((block - 1) + k) * 2.0**-24 * step_scale)


class MemoryTest(absltest.TestCase):

  def test_state_is_about_half_of_adamws_on_the_stdlib_lm_model(self):
    model = transformer.TransformerLM()
    params = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))
    mini = _state_bytes(jax.eval_shape(optimizers.adam_mini(num_heads=4).init, params))
    adamw = _state_bytes(jax.eval_shape(optax.adamw(1e-3).init, params))
    count = sum(math.prod(p.shape) for p in jax.tree.leaves(params))
    self.assertEqual(adamw, 8 * count + 4)  # m, v and the step count.
    self.assertLess(mini / adamw, 0.51)
    self.assertGreater(mini / adamw, 0.5)  # m is full size.


if __name__ == "__main__":
  absltest.main()
