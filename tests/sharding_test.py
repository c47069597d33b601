"""FSDP: parameters and optimizer states sharded over a data x fsdp mesh of 8 devices.

For every registry optimizer: the sharded step gives the unsharded step's
numbers (float64, bound from the reordered sums), every moment keeps its
parameter's sharding, and the compiled step never all-gathers a whole sharded
parameter (a statistic over a tensor or the tree is reduced from partial
sums). The model is a small Flax Transformer LM (embeddings, attention,
MLP, LayerNorm), sharded by `experiments.sharding`'s shape rule.
"""

from tests import test_util  # Sets up 8 simulated CPU devices first.

import re

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import sharding
from experiments.workloads import transformer
import optimizers

NAMES = sorted(optimizers.registry)
MIN_SIZE = 512  # Small for the test model, so every matrix is sharded.
U64 = 2.0**-53
# Newton-Schulz (Muon) amplifies a perturbation by at most 4 per step, 5 steps (tests/invariants_test.py).
AMPLIFICATION = {"muon": 4.0**5}


def _params():
  model = transformer.TransformerLM(context_length=16, model_dim=32, num_layers=1, num_heads=4, mlp_dim=64)
  params = model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32))["params"]
  return jax.tree.map(lambda p: p.astype(jnp.float64), params)


def _grads(params, k):
  # Deterministic, parameter-dependent gradients (the loss is not what is tested).
  return jax.tree.map(lambda p: jnp.sin(3.0 * p + k) + 0.1 * p, params)


def _build(name):
  return optax.with_extra_args_support(optimizers.registry[name].build())


def _step(optimizer):
  def step(params, state, k):
    updates, state = optimizer.update(_grads(params, k), state, params, value=jnp.sum(params["Embed_0"]["embedding"]))
    return optax.apply_updates(params, updates), state, updates
  return step


def _assert_moments_sharded(test, name, state, params, shardings):
  by_shape = {x.shape: sh for x, sh in zip(jax.tree.leaves(params), jax.tree.leaves(shardings))}
  for leaf in jax.tree.leaves(state):
    if getattr(leaf, "ndim", 0) and leaf.shape in by_shape and by_shape[leaf.shape].spec != P():
      test.assertTrue(leaf.sharding.is_equivalent_to(by_shape[leaf.shape], leaf.ndim),
                      (name, leaf.shape, leaf.sharding))


class MeshTest(absltest.TestCase):

  def test_parse_mesh(self):
    self.assertEqual(sharding.parse_mesh("data:2,fsdp:4"), {"data": 2, "fsdp": 4})
    self.assertEqual(sharding.parse_mesh("fsdp:8"), {"data": 1, "fsdp": 8})
    for bad, why in (("model:2", "unknown axis"), ("data:2,data:4", "given twice"), ("data:0", "size >= 1"),
                     ("data", "not axis:size"), ("", "at least one axis")):
      with self.assertRaisesRegex(ValueError, why):
        sharding.parse_mesh(bad)
    with self.assertRaisesRegex(ValueError, "needs 6 devices, there are 8"):
      sharding.make_mesh({"data": 2, "fsdp": 3})

  def test_fsdp_rule(self):
    self.assertEqual(sharding.fsdp_spec((256, 32), 4, 512), sharding.P("fsdp", None))  # Largest divisible dim.
    self.assertEqual(sharding.fsdp_spec((32, 4, 8), 4, 512), sharding.P("fsdp", None, None))
    self.assertEqual(sharding.fsdp_spec((30, 30), 4, 512), sharding.P())  # Nothing divides.
    self.assertEqual(sharding.fsdp_spec((64,), 4, 512), sharding.P())  # Small: replicated.
    self.assertEqual(sharding.fsdp_spec((64, 64), 1, 512), sharding.P())  # No fsdp axis.


class ShardedOptimizerTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.mesh = sharding.make_mesh({"data": 2, "fsdp": 4})

  @parameterized.named_parameters((n, n) for n in NAMES)
  def test_sharded_equals_unsharded_and_gathers_no_parameter(self, name):
    with jax.enable_x64(True):
      params = _params()
      shardings = sharding.param_shardings(params, self.mesh, MIN_SIZE)
      sharded = jax.device_put(params, shardings)
      full_shapes = {p.shape for p, s in zip(jax.tree.leaves(params), jax.tree.leaves(shardings)) if s.spec != P()}
      self.assertGreaterEqual(len(full_shapes), 4)  # Embedding, positions, attention and MLP kernels.
      optimizer = _build(name)
      step = jax.jit(_step(optimizer))
      state = sharding.init_state(optimizer, sharded, self.mesh, MIN_SIZE)

      # No whole sharded parameter (or moment) is gathered: reductions are all-reduced partial sums.
      # From init on: never a whole moment on every device.
      _assert_moments_sharded(self, name, state, params, shardings)
      # The shardings are kept from step to step (as a trainer does): params and state in = out.
      state_shardings = jax.tree.map(lambda x: x.sharding, state)
      compiled = jax.jit(_step(optimizer), out_shardings=(shardings, state_shardings, shardings)).lower(
          sharded, state, 0.0).compile()
      hlo = compiled.as_text()
      gathered = {tuple(int(d) for d in dims.split(",") if d)
                  for dims in re.findall(r"= f64\[([\d,]*)\][^\n]*? all-gather(?:-start)?\(", hlo)}
      # (Muon gathers only its small Gram matrices X X^T for Newton-Schulz, never X itself.)
      self.assertEmpty(gathered & full_shapes, f"{name} all-gathers whole parameters: {gathered & full_shapes}")

      unsharded = jax.device_put(params, jax.devices()[0])
      p, s, q, r = sharded, state, unsharded, jax.jit(optimizer.init)(unsharded)
      for k in range(2):
        p, s, u = compiled(p, s, float(k))
        q, r, v = step(q, r, float(k))
        # Sharding reorders each sum over a tensor or the tree (partial sums, all-reduced): two orders
        # of n terms differ by at most 2 (n - 1) u of the terms' magnitudes, plus 2 x 24 elementwise
        # roundings, in float64 (u = 2^-53), relative to the largest update of the leaf.
        n = sum(x.size for x in jax.tree.leaves(params))
        bound = (2 * 24 + 2 * (n - 1)) * U64 * AMPLIFICATION.get(name, 1.0)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
          a, b = np.asarray(a), np.asarray(b)
          np.testing.assert_allclose(a, b, rtol=0, atol=bound * max(np.abs(b).max(), 1e-300), err_msg=name)
      # The parameters keep their sharding, and every moment of parameter shape has it.
      for x, sh in zip(jax.tree.leaves(p), jax.tree.leaves(shardings)):
        self.assertTrue(x.sharding.is_equivalent_to(sh, x.ndim), (name, x.shape, x.sharding))
      _assert_moments_sharded(self, name, s, params, shardings)


P = sharding.P

if __name__ == "__main__":
  absltest.main()
