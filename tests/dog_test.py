"""DoG / LDoG and polynomial-decay averaging: parity with dog-optimizer 1.0.3 and behaviour."""

from tests import test_util  # Sets up simulated CPU devices first.

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

import optimizers

U32 = 2.0**-24  # float32 unit roundoff.


def _params(seed=0):
  rng = np.random.default_rng(seed)
  return {"a": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
          "b": jnp.asarray(rng.normal(size=(4,)), jnp.float32)}


def _loss(params):
  return sum(jnp.sum(jnp.sin(x) * x + 0.1 * x**4) for x in jax.tree.leaves(params))


def _trajectory(optimizer, params, steps, loss=_loss, grad=None):
  grad = grad or jax.grad(loss)
  state = optimizer.init(params)
  out = []
  for _ in range(steps):
    updates, state = optimizer.update(grad(params), state, params)
    params = optax.apply_updates(params, updates)
    out.append(params)
  return out, state


class DoGBehaviourTest(parameterized.TestCase):

  def test_global_dog_matches_optax_contrib_in_float64(self):
    # An independent implementation of the same global rule (optax adds eps
    # inside the square root every step, which equals adding it once to G).
    with jax.enable_x64(True):
      params = jax.tree.map(lambda x: x.astype(jnp.float64), _params())
      ours, _ = _trajectory(optimizers.dog(), params, 20)
      theirs, _ = _trajectory(optax.contrib.dog(), params, 20)
    for a, b in zip(ours, theirs):
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        # Float64: the two programs differ by tens of 2^-53 roundings a step,
        # ~1e-14 over 20 steps (measured 0 here): 1e-12 has margin.
        np.testing.assert_allclose(x, y, rtol=1e-12)

  def test_init_eta_is_the_first_step_whatever_the_learning_rate(self):
    # The reference overrides the first step size with init_eta itself; optax
    # multiplies its init_step by the learning rate afterwards.
    params = _params()
    grads = jax.grad(_loss)(params)
    ours = optimizers.dog(learning_rate=0.5, init_eta=1e-3)
    updates, _ = ours.update(grads, ours.init(params), params)
    theirs = optax.contrib.dog(learning_rate=0.5, init_step=("learning_rate", 1e-3))
    optax_updates, _ = theirs.update(grads, theirs.init(params), params)
    for u, o, g in zip(jax.tree.leaves(updates), jax.tree.leaves(optax_updates), jax.tree.leaves(grads)):
      # Exact: the step size is float32(init_eta) itself (weight decay 0 adds
      # 0 exactly), so u is the one product float32(1e-3) g, negated; optax
      # scales that product by -0.5, exact, and float32(-0.5e-3) is
      # -float32(1e-3) / 2 (rounding commutes with powers of two).
      np.testing.assert_array_equal(u, -1e-3 * g)
      np.testing.assert_array_equal(o, -0.5e-3 * g)

  def test_ldog_is_dog_on_each_leaf(self):
    params = _params()
    together, _ = _trajectory(optimizers.ldog(reps_rel=0.1), params, 10)
    for name in params:
      # DoG on this leaf alone, with the loss restricted to it.
      alone, _ = _trajectory(optimizers.dog(reps_rel=0.1), params[name], 10, loss=_loss)
      for step_together, step_alone in zip(together, alone):
        # Exact: the same float32 ops in the same order (op by op, not jitted):
        # the leaf's gradient does not involve the other leaf, and DoG's norm of
        # a one-leaf tree is that leaf's norm exactly (n * sqrt((n / n)^2)).
        np.testing.assert_array_equal(step_together[name], step_alone)
    # Not vacuous: global DoG on the same tree moves differently. Not a
    # rounding tolerance: the first steps are the same direction with step
    # sizes about 30% apart (ratio 0.69), far outside rtol 10% (atol 0).
    coupled, _ = _trajectory(optimizers.dog(reps_rel=0.1), params, 10)
    moved = lambda run: run[0]["b"] - params["b"]  # The first step (both then converge).
    self.assertFalse(np.allclose(moved(coupled), moved(together), rtol=0.1, atol=0.0))

  def test_all_zero_first_gradient_with_zero_eps_takes_no_step(self):
    # The reference stops with an assertion (G must be > 0); here eta is 0.
    params = _params()
    optimizer = optimizers.dog(eps=0.0)
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, state = optimizer.update(zeros, optimizer.init(params), params)
    for u in jax.tree.leaves(updates):
      np.testing.assert_array_equal(u, 0.0)
    updates, _ = optimizer.update(jax.grad(_loss)(params), state, params)
    for u in jax.tree.leaves(updates):
      self.assertTrue(bool(jnp.all(jnp.isfinite(u))))

  @parameterized.parameters(
      (dict(reps_rel=0.0), "reps_rel"),
      (dict(init_eta=-1.0), "init_eta"),
      (dict(eps=-1e-8), "eps"),
      (dict(weight_decay=-0.1), "weight_decay"),
      (dict(learning_rate=-1.0), "learning_rate"),
      (dict(learning_rate=float("inf")), "learning_rate"),
      (dict(learning_rate=float("nan")), "learning_rate"),
      (dict(learning_rate="1.0"), "learning_rate"),
      (dict(learning_rate=[1.0]), "learning_rate"),
      (dict(reps_rel=float("inf")), "reps_rel"),
      (dict(reps_rel=float("nan")), "reps_rel"),
      (dict(reps_rel="1e-6"), "reps_rel"),
      (dict(reps_rel=-1e-6), "reps_rel"),
      (dict(eps=float("inf")), "eps"),
      (dict(eps=float("nan")), "eps"),
      (dict(eps="1e-8"), "eps"),
      (dict(eps=None), "eps"),
      (dict(init_eta=float("inf")), "init_eta"),
      (dict(init_eta="1e-3"), "init_eta"),
      (dict(weight_decay=float("inf")), "weight_decay"),
      (dict(weight_decay=float("nan")), "weight_decay"),
      (dict(weight_decay="0.1"), "weight_decay"),
      (dict(weight_decay=[0.1]), "weight_decay"),
  )
  def test_rejects_bad_hyperparameters(self, kwargs, name):
    with self.assertRaisesRegex(ValueError, f"`{name}`"):
      optimizers.dog(**kwargs)
    with self.assertRaisesRegex(ValueError, f"`{name}`"):
      optimizers.ldog(**kwargs)

  def test_traced_hyperparameters_still_accepted(self):
    params = _params()
    optimizer = optax.inject_hyperparams(optimizers.dog)(learning_rate=1.0, reps_rel=1e-6, weight_decay=0.0)
    updates, _ = jax.jit(optimizer.update)(jax.grad(_loss)(params), optimizer.init(params), params)
    self.assertTrue(all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates)))

  @parameterized.parameters("dog", "ldog")
  def test_gradient_whose_square_overflows_float32(self, name):
    # (1e20)^2 = inf in float32: the reference squares in the tensor dtype,
    # so its G becomes inf and every later step 0 (frozen, silently). Here
    # the norms are scaled and G is kept as its root: the float32 run follows
    # the float64 run (the reference's math without overflow). In that math a
    # gradient of norm N caps every later step size at lr rbar / N: DoG's own
    # behaviour, not an overflow.
    def grads(t, params):
      g = jax.grad(_loss)(params)
      return {**g, "b": g["b"].at[0].set(1e20)} if t == 3 else g

    def to(dtype, tree):
      return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)

    optimizer = getattr(optimizers, name)(reps_rel=1e-2)
    params = _params()
    state = optimizer.init(params)
    ours = [params]
    for t in range(8):
      g = grads(t, params)
      updates, new_state = jax.jit(optimizer.update)(g, state, params)
      new_params = optax.apply_updates(params, updates)
      # Each float32 step against the float64 step from the same state,
      # parameters and gradient (cast exactly): a float32 trajectory against a
      # float64 one would compound the rounding over the steps. An overflow
      # (G = inf from step 4 on) shows here as grad_norm inf against ~1e20.
      with jax.enable_x64(True):
        up64, state64 = optimizer.update(to(jnp.float64, g), to(jnp.float64, state), to(jnp.float64, params))
        new64 = optax.apply_updates(to(jnp.float64, params), up64)
      # Float32 roundings (u = 2^-24) against float64, itemized for DoG (two
      # leaves of n = 15 and 4; LDoG skips the tree combine: fewer).
      # safe_norm of a leaf: a / s and the square 3 per term, the sum of
      # n >= 0 terms n - 1, sqrt halves, + 1, x s 1: (n + 6) / 2 = 10.5 u
      # (+ 1 for x - x_0, one subtraction); over the tree the same on the two
      # leaf norms (n = 2): + 4, so |g|, |x_0| 14.5 u, |x - x_0| 15.5 u.
      # (Squares that underflow next to the 1e20 element move the sum by
      # < 2^-126 of its 1: nothing at u.) rbar = reps_rel (1 + |x_0|):
      # + 1 + 1 + 1 (sum, reps_rel to float32, product) = 17.5 u, or
      # max(rbar_prev, |x - x_0|) <= 15.5 u. sqrt(G) = hypot(acc, |g|), acc
      # exact: |g|'s 14.5 + 4 of hypot = 18.5 u. eta = 1 * rbar / sqrt(G):
      # 17.5 + 18.5 + 1 = 37 u; eta g 38 u. p + update rounds once: u of
      # |p_new|. +1 u on each for the float64 side and second-order terms.
      for k in params:
        x, y = np.asarray(new_params[k], np.float64), np.asarray(new64[k])
        bound = U32 * (39 * np.abs(np.asarray(up64[k])) + 2 * np.abs(y))
        np.testing.assert_array_less(np.abs(x - y), bound, err_msg=f"step {t + 1}, {k}")
      for field in ("max_distance", "grad_norm"):  # 17.5 u and 18.5 u (above).
        for x, y in zip(jax.tree.leaves(getattr(new_state[1], field)), jax.tree.leaves(getattr(state64[1], field))):
          np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y), rtol=19 * U32, atol=0.0)
      params, state = new_params, new_state
      ours.append(params)
    for leaf in jax.tree.leaves(state):
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))), leaf)
    # The huge-gradient step moved "b" (by about rbar: a normalized step).
    self.assertGreater(float(jnp.abs(ours[4]["b"][0] - ours[3]["b"][0])), 1e-3)

  def test_pallas_backend_recovers_from_an_overflowing_square(self):
    # The fused kernel squares in float32; on overflow the norms are redone safely.
    params = _params()
    g = jax.grad(_loss)(params)
    g = {**g, "b": g["b"].at[0].set(1e20)}
    for name in ("dog", "ldog"):
      fused, plain = getattr(optimizers, name)(backend="pallas"), getattr(optimizers, name)()
      u1, s1 = jax.jit(fused.update)(g, fused.init(params), params)
      u2, s2 = jax.jit(plain.update)(g, plain.init(params), params)
      # Two float32 programs with the same math (the overflow branch redoes
      # the norms as the plain path does, fused differently): each is within
      # 38 u (u = 2^-24) of the exact update at step 1 and 18.5 u of the exact
      # norms (itemized in test_gradient_whose_square_overflows_float32), so
      # they differ by at most 2 x 38 u relative, element by element.
      for x, y in zip(jax.tree.leaves((u1, s1)), jax.tree.leaves((u2, s2))):
        np.testing.assert_allclose(x, y, rtol=76 * U32, atol=0.0)

  @parameterized.parameters("dog", "ldog")
  def test_nan_gradient_shows_in_the_parameters(self, name):
    params = _params()
    optimizer = getattr(optimizers, name)()
    g = jax.grad(_loss)(params)
    updates, _ = optimizer.update({**g, "b": g["b"].at[0].set(jnp.nan)}, optimizer.init(params), params)
    self.assertTrue(bool(jnp.isnan(updates["b"][0])))

  @parameterized.parameters("dog", "ldog")
  def test_bf16_params_move_and_follow_the_float32_run(self, name):
    # Without float32 master weights the first steps (reps_rel = 1e-6 relative)
    # are below half a bf16 ulp, apply_updates rounds them away, rbar never
    # grows and the parameters never move.
    error, bound = test_util.bf16_against_float32(self, getattr(optimizers, name)(), steps=200)
    self.assertLess(error.max(), bound)  # At every step.

  @parameterized.parameters("dog", "prodigy")
  def test_master_weights_only_for_low_precision_leaves(self, name):
    # A float32 leaf keeps no residual, not even a scalar placeholder: every
    # state array is a buffer passed to and from each step (on the CPU, 131
    # scalars cost a 10M-parameter DoG step ~7%). A mixed tree still
    # compensates its bfloat16 leaf, under jit.
    optimizer = getattr(optimizers, name)()
    params = _params()
    self.assertEmpty(jax.tree.leaves(optimizer.init(params)[-1]))
    mixed = {"a": params["a"].astype(jnp.bfloat16), "b": params["b"]}
    state = optimizer.init(mixed)
    residual = state[-1].residual
    self.assertEqual(residual["a"].dtype, jnp.float32)
    self.assertEqual(residual["a"].shape, mixed["a"].shape)
    self.assertIsNone(residual["b"])
    step = jax.jit(lambda p, s: optimizer.update(jax.grad(_loss)(p), s, p))
    for _ in range(3):
      updates, state = step(mixed, state)
      mixed = optax.apply_updates(mixed, updates)
    self.assertIsNone(state[-1].residual["b"])
    self.assertEqual(mixed["a"].dtype, jnp.bfloat16)
    # The first steps are below half a bf16 ulp: the bf16 leaf moves in its residual.
    self.assertGreater(float(jnp.max(jnp.abs(state[-1].residual["a"]))), 0.0)
    self.assertFalse(np.array_equal(mixed["b"], params["b"]))

  @parameterized.parameters("dog", "ldog")
  def test_complex_parameters_are_dog_on_real_and_imaginary_parts(self, name):
    rng = np.random.default_rng(3)
    z0 = rng.normal(size=(6,)) + 1j * rng.normal(size=(6,))
    target = rng.normal(size=(6,)) + 1j * rng.normal(size=(6,))
    split = lambda z: jnp.stack([jnp.real(z), jnp.imag(z)], -1)
    optimizer = getattr(optimizers, name)()
    # In float64 (complex128): the two float32 programs round differently (the
    # modulus' roundings in the norms), and 100 steps compound that.
    with jax.enable_x64(True):
      z0, target = jnp.asarray(z0, jnp.complex128), jnp.asarray(target, jnp.complex128)
      complex_loss = lambda z: jnp.sum(jnp.abs(z["z"] - target) ** 2)
      real_loss = lambda x: jnp.sum((x["z"] - split(target)) ** 2)
      # For a real loss JAX's grad in z is conj(dL/dre + i dL/dim); descent uses its conj.
      zs, _ = _trajectory(optimizer, {"z": z0}, 100,
                          grad=lambda z: jax.tree.map(jnp.conj, jax.grad(complex_loss)(z)))
      xs, _ = _trajectory(optimizer, {"z": split(z0)}, 100, loss=real_loss)
    self.assertEqual(zs[-1]["z"].dtype, jnp.complex128)
    for z, x in zip(zs, xs):
      # Float64: tens of 2^-53 roundings a step of O(1) values over 100
      # (contracting) steps, ~1e-13: 1e-10 has margin.
      np.testing.assert_allclose(split(z["z"]), x["z"], rtol=1e-10, atol=1e-10)
    # And it converges (DoG without averaging: about 10x closer in 100 steps).
    z_end, z0, target = (np.asarray(x) for x in (zs[-1]["z"], z0, target))
    self.assertLess(np.abs(z_end - target).max(), 0.2 * np.abs(z0 - target).max())

  def test_needs_params(self):
    optimizer = optimizers.dog()
    params = _params()
    with self.assertRaisesRegex(ValueError, "params"):
      optimizer.update(params, optimizer.init(params))


class AveragingTest(parameterized.TestCase):

  def test_uniform_average_with_gamma_zero_and_first_iterate(self):
    params = _params()
    optimizer = optax.chain(optax.sgd(0.05), optimizers.polynomial_decay_averaging(gamma=0.0))
    iterates, state = _trajectory(optimizer, params, 6)
    average = optimizers.eval_params(state, iterates[-1])
    for name in params:
      stacked = np.asarray([x[name] for x in iterates], np.float64)
      # Float32 (u = 2^-24) running mean a = (1 - w) a + w x, w = 1/t, against
      # the float64 mean of the same iterates: step 1 is exact (w = 1); each
      # later step rounds w 1, 1 - w 1 (2 u of 1 - w as w <= 1/2), the two
      # products 1 each, the sum 1: within 4 u of (1 - w)|a| + w|x| <=
      # max_t |x_t|, and earlier errors shrink by 1 - w. Signed: absolute,
      # 5 steps x 4 u of max_t |x_t| per element.
      bound = 20 * U32 * np.abs(stacked).max(axis=0)
      np.testing.assert_array_less(np.abs(np.asarray(average[name], np.float64) - stacked.mean(axis=0)), bound)
    # gamma = 8: after step 1 the average is the first iterate (w_1 = 1).
    optimizer = optax.chain(optax.sgd(0.05), optimizers.polynomial_decay_averaging())
    iterates, state = _trajectory(optimizer, params, 1)
    for name in params:
      np.testing.assert_array_equal(optimizers.eval_params(state, iterates[0])[name], iterates[0][name])

  def test_eval_params_through_inject_hyperparams_and_bf16(self):
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), _params())
    optimizer = optax.chain(
        optax.inject_hyperparams(optimizers.dog)(learning_rate=1.0),
        optax.inject_hyperparams(optimizers.polynomial_decay_averaging)(gamma=8.0),
    )
    state = optimizer.init(params)
    self.assertEqual(state[1].inner_state.average["a"].dtype, jnp.float32)
    grads = jax.tree.map(lambda g: g.astype(jnp.bfloat16), jax.grad(_loss)(params))
    updates, state = jax.jit(optimizer.update)(grads, state, params)
    new_params = optax.apply_updates(params, updates)
    evaluated = optimizers.eval_params(state, new_params)
    for name in params:
      self.assertEqual(evaluated[name].dtype, jnp.bfloat16)
      np.testing.assert_array_equal(evaluated[name], new_params[name])  # w_1 = 1.

  def test_updates_pass_through_and_params_are_required(self):
    params = _params()
    averaging = optimizers.polynomial_decay_averaging()
    grads = jax.grad(_loss)(params)
    updates, _ = averaging.update(grads, averaging.init(params), params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
      np.testing.assert_array_equal(u, g)
    with self.assertRaisesRegex(ValueError, "params"):
      averaging.update(grads, averaging.init(params))
    with self.assertRaisesRegex(ValueError, "`gamma`"):
      optimizers.polynomial_decay_averaging(gamma=-1.0)

  def test_accepts_extra_arguments_like_every_optimizer(self):
    params = _params()
    averaging = optimizers.polynomial_decay_averaging()
    grads = jax.grad(_loss)(params)
    plain, _ = averaging.update(grads, averaging.init(params), params)
    with_value, _ = averaging.update(grads, averaging.init(params), params, value=_loss(params))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(with_value)):
      np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
  absltest.main()
