"""Invariants every registered optimizer must satisfy (table-driven).

Every entry of `optimizers.registry` runs it, at the hyperparameters its
spec gives for the two test problems (`OptimizerSpec.test_problems`); the
suite checks convergence, jit stability, donation, `inject_hyperparams`, mixed
precision, masks, `lax.cond`, `chain`/`MultiSteps`, `apply_if_finite`,
sharding, an Orbax checkpoint round trip and the declared state size for it.
"""

from tests import test_util  # Sets up simulated CPU devices first.

import functools
import inspect

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import optimizers

# Every registry entry runs every invariant, at the hyperparameters its spec
# gives for the two problems (`OptimizerSpec.test_problems`). Exceptions:
# Adam-mini's state leaves that are per block, not parameter-shaped (the
# declared bytes count m only; its test tree has no Transformer names, so one
# v per tensor, per element on biases) ...
BLOCK_STATISTICS = ("adam_mini",)
# ... LDoG's rbar and sqrt(G): one vector each, an entry per leaf ...
PER_LEAF_STATISTICS = ("ldog",)
# ... and Muon's state per parameter on a tree of matrices and other leaves:
# 4 bytes (momentum) per matrix entry, the Adam fallback's 8 (m, v) elsewhere.
FALLBACK_STATE_BYTES = {"muon": 8}

NAMES = sorted(optimizers.registry)

# Complex parameters: every entry either supports them (converges on a complex
# quadratic, as optax's optimizers do) or refuses them at init with a
# ValueError naming it. Refused: rules undefined on complex numbers (AdaBound's
# clip, AdaMod's min, AdamP/SGDP's real projections).
COMPLEX_REFUSED = {
    "adabound": "adabound", "amsbound": "amsbound", "adamod": "adamod",
    "adamp": "scale_by_adamp", "sgdp": "scale_by_sgdp",
}

# A finite gradient whose square overflows float32 (1e20) must not freeze
# these (an inf second moment / trace zeroes every later step): their steps
# after it follow the float64 run. Steps to replay after the spike: the
# induced-metric trace EMA needs ~400 steps (0.8^k) to decay from ~1e39.
OVERFLOW_SAFE = {
    "adam_mini": 20, "schedule_free_adamw": 20, "schedule_free_radam": 20,
    "induced_metric_sgd": 500, "induced_metric_log": 500, "induced_metric_rms": 20,
}
# Registry entries that are optax's own optimizers, which keep their moments
# in the parameter dtype (exact names: schedule_free_adamw is steplab's).
OPTAX_MOMENTS_IN_PARAM_DTYPE = ("adamw", "nadamw")
# Entries whose second moment is optax's (those, and muon, whose non-matrix leaves
# are optax.adamw): a square that overflows float32 leaves inf in it, as in optax.
OPTAX_SECOND_MOMENT_OVERFLOWS = OPTAX_MOMENTS_IN_PARAM_DTYPE + ("muon",)
PARAMETERS = [dict(testcase_name=name, name=name) for name in NAMES]
# The entries with fused Pallas kernels (`backend="pallas"`; interpret mode on
# CPU): the invariants marked with WITH_PALLAS run for them too.
PALLAS_NAMES = [name for name in NAMES if "backend" in optimizers.registry[name].arguments]
WITH_PALLAS = PARAMETERS + [
    dict(testcase_name=f"{name}_pallas", name=name, backend="pallas") for name in PALLAS_NAMES
]


def _params(dtype=jnp.float32, seed=0, width=6):
  """A small Flax-shaped tree: dense kernel and bias, conv kernel, a scalar."""
  keys = jax.random.split(jax.random.key(seed), 4)
  return {
      "dense": {
          "kernel": jax.random.normal(keys[0], (4, width), dtype),
          "bias": jax.random.normal(keys[1], (width,), dtype) * 0.1,
      },
      "conv": {"kernel": jax.random.normal(keys[2], (3, 3, 2, 4), dtype)},
      "scale": jnp.asarray(1.5, dtype),
  }


def _loss(params):
  """Smooth, non-quadratic, couples all leaves."""
  leaves = jax.tree.leaves(params)
  total = sum(jnp.sum(jnp.sin(p.astype(jnp.float32)) * p.astype(jnp.float32)) for p in leaves)
  return total + 0.1 * sum(jnp.sum(p.astype(jnp.float32) ** 4) for p in leaves)


def _grads(params):
  return jax.tree.map(lambda g, p: g.astype(p.dtype), jax.grad(_loss)(params), params)


def _with_loss(name, optimizer, loss=_loss):
  """The runner's contract for `needs_value` entries: the loss as `value=`."""
  if not optimizers.registry[name].needs_value:
    return optimizer

  def update(updates, state, params=None, **extra_args):
    del extra_args
    return optimizer.update(updates, state, params, value=loss(params))

  return optax.GradientTransformationExtraArgs(optimizer.init, update)


def _build(name, loss=_loss, backend="xla", **overrides):
  if backend != "xla":
    overrides["backend"] = backend
  return _with_loss(name, optimizers.registry[name].build(**overrides), loss)


def _run(optimizer, loss, params, steps):
  def step(carry, _):
    params, state = carry
    updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    return (optax.apply_updates(params, updates), state), None

  (params, _), _ = jax.jit(
      lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=steps)
  )(params)
  return params


def _assert_trees_close(test, a, b, rtol=0.0, atol=0.0, leaf_scale=False):
  """Leafwise assert_allclose (exact by default); `leaf_scale`: atol times each leaf's max |b|."""
  test.assertEqual(jax.tree.structure(a), jax.tree.structure(b))
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    scale = np.abs(y).max() if leaf_scale and y.size else 1.0
    np.testing.assert_allclose(x, y, rtol=rtol, atol=atol * scale)


U32 = 2.0**-24  # float32 unit roundoff.
# Elementwise float32 roundings along one element's update, per path (the
# longest rules, as `pallas_kernels_test.ELEMENTWISE_ROUNDINGS`): two programs
# that fuse differently (a * b + c into an FMA or not, depending on the CPU)
# may round each differently, so 2 x 24 of the update's magnitude terms.
ELEMENTWISE_ROUNDINGS = 24
# Sums the two programs may add in another order (shards, fusion), per entry:
# the most terms of one sum. A float32 sum of n terms in ANY order is within
# (n - 1) u of the sum of its terms' magnitudes, so two orders differ by up to
# 2 (n - 1) u of it, and the update scales with the sum (exponent <= 1) or, for
# signed sums, moves by that much of the magnitude terms. `_params()` has
# 4 x 6 + 6 + 3 x 3 x 2 x 4 + 1 = 103 elements (tree sums: DoG's norms,
# Prodigy's and the induced metric's sums); leaf sums (LDoG's norms, Adam-mini's
# block means, AdamP's and SGDP's cosines) have at most 72 terms; Muon's matrix
# products at most 18 (the conv kernel's fan-in). Elementwise rules: 1.
_SUM_TERMS = {
    "dog": 103, "prodigy": 103, "induced_metric_sgd": 103, "induced_metric_rms": 103,
    "induced_metric_log": 103, "ldog": 72, "adam_mini": 72, "adamp": 72, "sgdp": 72, "muon": 18,
}
# Muon's 5 Newton-Schulz steps X -> p(X) = a X + b X X^T X + c (X X^T)^2 X
# (optax's a, b, c) amplify a perturbation of X by at most max |p'(s)| <= 4
# per step on the singular values they visit (s in [0, 1.21]): 4^5.
_AMPLIFICATION = {"muon": 4.0**5}


def _restructured_bound(name):
  """Bound on |update difference| / max |update| per leaf for two programs with the same math."""
  roundings = 2 * ELEMENTWISE_ROUNDINGS + 2 * (_SUM_TERMS.get(name, 1) - 1)
  return roundings * _AMPLIFICATION.get(name, 1.0) * U32


def _moment_leaves(state):
  """Array leaves of a state that have parameter shape (not counters)."""
  return [x for x in jax.tree.leaves(state) if jnp.ndim(x) > 0]


class RegistryCoverageTest(absltest.TestCase):

  def test_exceptions_name_registered_optimizers(self):
    for table in (BLOCK_STATISTICS, PER_LEAF_STATISTICS, FALLBACK_STATE_BYTES, COMPLEX_REFUSED, OVERFLOW_SAFE):
      self.assertEmpty(set(table) - set(optimizers.registry))


class InvariantsTest(parameterized.TestCase):

  @parameterized.named_parameters(WITH_PALLAS)
  def test_converges_on_quadratic(self, name, backend="xla"):
    rng = np.random.default_rng(0)
    target = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), _params())
    curvature = jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.5, 2.0, size=p.shape), jnp.float32), _params())

    def loss(p):
      terms = jax.tree.map(lambda x, c, a: 0.5 * jnp.sum(a * (x - c) ** 2), p, target, curvature)
      return sum(jax.tree.leaves(terms))

    start = _params()
    final = _run(_build(name, loss, backend, **optimizers.registry[name].test_problems["quadratic"]), loss, start, 2000)
    self.assertLess(float(loss(final)), 1e-3 * float(loss(start)))

  @parameterized.named_parameters(PARAMETERS)
  def test_converges_on_rosenbrock(self, name):
    def rosenbrock(p):
      x, y = p["xy"][0], p["xy"][1]
      return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2

    start = {"xy": jnp.asarray([-1.2, 1.0], jnp.float32)}
    final = _run(_build(name, rosenbrock, **optimizers.registry[name].test_problems["rosenbrock"]), rosenbrock, start, 10_000)
    self.assertLess(float(rosenbrock(final)), 1e-2)  # From 24.2 at the start.
    np.testing.assert_allclose(final["xy"], [1.0, 1.0], atol=0.2)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_jit_does_not_recompile(self, name, backend="xla"):
    optimizer = _build(name, backend=backend)
    traces = []

    @jax.jit
    def update(grads, state, params):
      traces.append(1)
      return optimizer.update(grads, state, params)

    params = _params()
    state = optimizer.init(params)
    for _ in range(3):
      updates, state = update(_grads(params), state, params)
      params = optax.apply_updates(params, updates)
    self.assertLen(traces, 1)

  @parameterized.named_parameters(PARAMETERS)
  def test_step_lowers_for_tpu_and_gpu(self, name):
    # The XLA path carries CPU-motivated structure (optimization barriers,
    # lax.cond around overflow-safe norms and AdamP's projection): it must
    # still lower for the accelerators, where CI cannot run it.
    optimizer = _build(name)
    params = _params()
    traced = jax.jit(optimizer.update).trace(_grads(params), optimizer.init(params), params)
    for platform in ("tpu", "cuda"):
      self.assertIn("func.func public @main", traced.lower(lowering_platforms=(platform,)).as_text())

  @parameterized.named_parameters(WITH_PALLAS)
  def test_step_with_params_and_state_donated(self, name, backend="xla"):
    # The usual training step donates both; state that starts at x_0 (DoG,
    # Prodigy, schedule-free z, averaging) must own its buffers, or XLA
    # refuses to donate one buffer twice.
    optimizer = _build(name, backend=backend)

    @functools.partial(jax.jit, donate_argnums=(1, 2))
    def step(grads, state, params):
      updates, state = optimizer.update(grads, state, params)
      return optax.apply_updates(params, updates), state

    params = _params()
    grads = _grads(params)
    expected, _ = step(grads, optimizer.init(jax.tree.map(jnp.copy, params)), jax.tree.map(jnp.copy, params))
    state = optimizer.init(params)
    params, state = step(grads, state, params)
    chex.assert_trees_all_close(params, expected, rtol=0, atol=0)

  @parameterized.named_parameters(PARAMETERS)
  def test_inject_hyperparams_gives_identical_updates_and_state(self, name):
    spec = optimizers.registry[name]
    overrides = dict(weight_decay=1e-2) if "weight_decay" in spec.arguments else {}
    # inject_hyperparams stores hyperparameters as float32 arrays, so the
    # plain optimizer gets the same float32-rounded values (1 - f32(0.999)
    # differs from 1 - 0.999 by 1e-5 relative).
    hparams = {
        k: np.float32(v) if isinstance(v, float) else v
        for k, v in spec.hyperparameters(**overrides).items()
    }
    plain = _with_loss(name, spec.factory(**hparams))
    injected = _with_loss(name, optax.inject_hyperparams(spec.factory, static_args=spec.static_args)(**hparams))
    params_a = params_b = _params()
    state_a, state_b = plain.init(params_a), injected.init(params_b)
    # Exact: with the same float32 hyperparameter values, the two programs
    # evaluate the same float32 operations in the same order (constants
    # there, array arguments here), so every update and state leaf is equal.
    for _ in range(7):  # Past RAdam's rectification threshold.
      updates_a, state_a = jax.jit(plain.update)(_grads(params_a), state_a, params_a)
      updates_b, state_b = jax.jit(injected.update)(_grads(params_b), state_b, params_b)
      _assert_trees_close(self, updates_a, updates_b)
      params_a = optax.apply_updates(params_a, updates_a)
      params_b = optax.apply_updates(params_b, updates_b)
    _assert_trees_close(self, state_a, state_b.inner_state)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_bf16_params_with_float32_state(self, name, backend="xla"):
    optimizer = _build(name, backend=backend)
    params16 = _params(jnp.bfloat16)
    state = optimizer.init(params16)
    own_moments = [
        x for x in _moment_leaves(state)
        if name not in OPTAX_MOMENTS_IN_PARAM_DTYPE
    ]
    for leaf in own_moments:
      self.assertEqual(leaf.dtype, jnp.float32)
    updates, state = jax.jit(optimizer.update)(_grads(params16), state, params16)
    for leaf in jax.tree.leaves(updates):
      self.assertEqual(leaf.dtype, jnp.bfloat16)
    new_params = optax.apply_updates(params16, updates)
    for leaf in jax.tree.leaves(new_params):
      self.assertEqual(leaf.dtype, jnp.bfloat16)
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))
    # The first update agrees with the float32 run to bfloat16 precision.
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params16)
    optimizer32 = _build(name, backend=backend)
    updates32, _ = jax.jit(optimizer32.update)(_grads(params32), optimizer32.init(params32), params32)
    # Bound from bfloat16 rounding (2^-9 per rounding), relative to each
    # leaf's largest update: the bf16 gradient is the loss's 3 cotangent terms
    # (sin p, p cos p, 0.4 p^3), each rounded to bf16 and summed in bf16: 5
    # roundings of the terms' magnitudes, at most 3 max |g| here. The update
    # depends on the gradient with gain <= 2 (linear in g, times a norm of g
    # for DoG/Prodigy-like step sizes), then rounds to bf16 once: 2^-9 (1 + 2 x
    # 5 x 3) = 31 x 2^-9 (8.6 x 2^-8 measured worst, LDoG).
    _assert_trees_close(self, updates, updates32, atol=31 * 2.0**-9, leaf_scale=True)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_update_accepts_value_extra_argument(self, name, backend="xla"):
    # Every Optax transformation takes extra arguments (`value=loss` for
    # optax.contrib / induced_metric_log): an entry that needs it gets the
    # loss, the others must accept and ignore it.
    optimizer = optimizers.registry[name].build(**({} if backend == "xla" else dict(backend=backend)))
    params = _params()
    state = optimizer.init(params)
    with_value = jax.jit(lambda g, s, p: optimizer.update(g, s, p, value=_loss(p)))
    updates, new_state = with_value(_grads(params), state, params)
    for leaf in jax.tree.leaves(updates):
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))
    if not optimizers.registry[name].needs_value:
      expected, _ = jax.jit(optimizer.update)(_grads(params), state, params)
      _assert_trees_close(self, updates, expected, rtol=0.0)

  @parameterized.named_parameters(PARAMETERS)
  def test_complex_parameters_converge_or_are_refused(self, name):
    rng = np.random.default_rng(0)

    def complex_tree():
      return jax.tree.map(
          lambda p: jnp.asarray(rng.normal(size=p.shape) + 1j * rng.normal(size=p.shape), jnp.complex64),
          _params())

    start, target = complex_tree(), complex_tree()
    curvature = jax.tree.map(lambda p: jnp.asarray(rng.uniform(0.5, 2.0, size=p.shape), jnp.float32), _params())

    def loss(p):
      terms = jax.tree.map(lambda x, c, a: 0.5 * jnp.sum(a * jnp.abs(x - c) ** 2), p, target, curvature)
      return sum(jax.tree.leaves(terms))

    optimizer = _build(name, loss, **optimizers.registry[name].test_problems["quadratic"])
    if name in COMPLEX_REFUSED:
      with self.assertRaisesRegex(ValueError, f"{COMPLEX_REFUSED[name]}: complex parameters"):
        optimizer.init(start)
      return

    def step(carry, _):
      params, state = carry
      # Optax's convention: the update direction for a real loss of complex
      # parameters is conj(jax.grad) (the steepest-ascent direction).
      grads = jax.tree.map(jnp.conj, jax.grad(loss)(params))
      updates, state = optimizer.update(grads, state, params)
      return (optax.apply_updates(params, updates), state), None

    (final, _), _ = jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=2000))(start)
    for leaf in jax.tree.leaves(final):
      self.assertEqual(leaf.dtype, jnp.complex64)
    self.assertLess(float(loss(final)), 1e-3 * float(loss(start)))

  @parameterized.parameters(
      ("radam", "scale_by_radam"), ("adam_mini", "scale_by_adam_mini"),
      ("schedule_free_adamw", "schedule_free_adamw"), ("schedule_free_radam", "schedule_free_radam"),
      ("induced_metric_sgd", "scale_by_induced_metric"), ("induced_metric_rms", "scale_by_induced_metric"),
      ("induced_metric_log", "scale_by_induced_metric"),
  )
  def test_pallas_backend_refuses_complex_parameters(self, name, owner):
    # The kernels are real float32 only; the XLA path supports complex (above).
    optimizer = optimizers.registry[name].build(backend="pallas")
    params = {"w": jnp.ones((2, 3), jnp.complex64), "b": jnp.ones(3)}
    with self.assertRaisesRegex(ValueError, f"{owner}: complex parameters are not supported .*pallas"):
      optimizer.init(params)

  @parameterized.named_parameters([p for p in WITH_PALLAS if p["name"] in OVERFLOW_SAFE])
  def test_gradient_whose_square_overflows_does_not_freeze(self, name, backend="xla"):
    steps = OVERFLOW_SAFE[name]
    spec = optimizers.registry[name]
    rng = np.random.default_rng(1)
    # Float32 inputs, and float32-rounded hyperparameters, for both runs: the float64 steps
    # then see the very values the float32 ones do (1 - f32(0.999) is not 1 - 0.999).
    params = jax.tree.map(lambda p: np.asarray(p, np.float32), _params())
    grads = [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params) for _ in range(steps + 1)]
    grads[0]["dense"]["kernel"][0, 0] = 1e20  # Finite; its square is not (float32).
    values = rng.uniform(0.5, 2.0, size=steps + 1).astype(np.float32)
    hparams = {k: spec.defaults.get(k, a.default) for k, a in inspect.signature(spec.factory).parameters.items()}
    hparams = {k: float(np.float32(v)) for k, v in hparams.items() if isinstance(v, float)}
    extra = lambda value: dict(value=value) if spec.needs_value else {}
    optimizer = spec.build(**hparams, **({} if backend == "xla" else dict(backend=backend)))

    def step(carry, inputs):
      p, state = carry
      g, value = inputs
      updates, new_state = optimizer.update(g, state, p, **extra(value))
      return (optax.apply_updates(p, updates), new_state), (p, state, updates, new_state)

    gs = jax.tree.map(lambda *xs: jnp.asarray(np.stack(xs)), *grads)
    params32 = jax.tree.map(jnp.asarray, params)
    (_, state32), trace = jax.jit(lambda p, xs: jax.lax.scan(step, (p, optimizer.init(p)), xs))(
        params32, (gs, jnp.asarray(values)))
    for leaf in jax.tree.leaves(state32):
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))), leaf)
    trace = jax.tree.map(lambda x: np.asarray(x, np.float64) if jnp.issubdtype(x.dtype, jnp.floating)
                         else np.asarray(x), trace)
    # Every float32 step, the spike's included, is the exact step from the same float32 state:
    # each is replayed in float64 (the kernels keep float32 moments: the XLA rule) from the
    # float32 run's parameters and state, so the two differ by that one step's float32
    # roundings only, `_restructured_bound` of the magnitude terms (float32 against exact is
    # half of it). Magnitude terms: each leaf's largest update and new state entry; for
    # schedule-free, whose updates are differences y' - y of parameters, also the parameters'.
    # The float32 state is the exact one capped at float32's largest value (the trace EMA
    # after the spike: (1 - beta) xi 1e40); the induced metric's factor 1 / (1 + mu_hat)
    # (log: L / (L^2 + mu_hat)) is then below float32's smallest normal, `tiny`, and float32
    # gives 0 (the cap, or subnormals flushed): the update lr d f is off by up to
    # tiny lr max |d|, |d| <= max |g| so far (d, the debiased momentum, averages past g).
    big, tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).tiny)
    underflows = name in ("induced_metric_sgd", "induced_metric_log")
    with jax.enable_x64(True):
      exact = spec.factory(**{**spec.defaults, **hparams})
      update64 = jax.jit(lambda g, s, p, value: exact.update(g, s, p, **extra(value)))
      for t in range(steps + 1):
        p, state, updates, new_state = jax.tree.map(lambda x, t=t: x[t], trace)
        g = jax.tree.map(lambda x: np.asarray(x, np.float64), grads[t])
        updates64, new_state64 = update64(g, state, p, np.float64(values[t]))
        # The magnitude terms: the same step on |g|, |state|, |p| (each EMA b m + (1 - b) g
        # becomes b |m| + (1 - b) |g|, the sum of its terms' magnitudes).
        magnitudes = update64(*jax.tree.map(np.abs, (g, state, p)), np.float64(values[t]))
        param_scale = max(np.abs(x).max() for x in jax.tree.leaves(p)) if name.startswith("schedule_free") else 0
        max_g = max(np.abs(x).max() for s in grads[:t + 1] for x in jax.tree.leaves(s))
        floor = tiny * hparams["learning_rate"] * max_g if underflows else 0.0
        for (path, a), b, m in zip(jax.tree_util.tree_leaves_with_path((updates, new_state)),
                                   jax.tree.leaves((updates64, new_state64)), jax.tree.leaves(magnitudes)):
          a, b = np.asarray(a), np.clip(np.asarray(b), -big, big)
          self.assertTrue(np.all(np.isfinite(a)), (t, a))
          scale = max(np.abs(b).max(initial=0.0), np.minimum(np.abs(m), big).max(initial=0.0), param_scale)
          np.testing.assert_allclose(a, b, rtol=0, atol=_restructured_bound(name) * scale + floor,
                                     err_msg=f"step {t}, {jax.tree_util.keystr(path)}")
    # The last step is a normal one again (not frozen at 0).
    last = [np.abs(x[-1]).max() for x in jax.tree.leaves(trace[2])]
    self.assertGreater(max(last), 0.0)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_gradient_whose_square_overflows_leaves_the_state_finite(self, name, backend="xla"):
    # Every steplab rule keeps a finite state after a finite gradient whose square overflows
    # float32 (the OVERFLOW_SAFE ones are also checked against float64 above). Optax's own
    # adamw/nadamw, and muon's AdamW leaves (optax's), keep an inf second moment as optax does:
    # those leaves stop moving (docs/optimizers.md, "Edge cases"). Parameters stay finite for every entry.
    params = _params()
    grads = _grads(params)  # Fixed: after SGD-like steps of 1e20 the loss's own gradients would overflow.
    spike = jax.tree.map(jnp.copy, grads)
    spike["dense"]["kernel"] = spike["dense"]["kernel"].at[0, 0].set(1e20)  # A matrix (muon: Newton-Schulz)
    spike["dense"]["bias"] = spike["dense"]["bias"].at[0].set(1e20)  # and a vector (muon: AdamW).
    optimizer = _build(name, backend=backend)
    update = jax.jit(optimizer.update)
    updates, state = update(spike, optimizer.init(params), params)
    p = optax.apply_updates(params, updates)
    for _ in range(3):
      updates, state = update(grads, state, p)
      p = optax.apply_updates(p, updates)
    for leaf in jax.tree.leaves(p):
      self.assertTrue(np.all(np.isfinite(np.asarray(leaf))), name)
    finite = all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state)
                 if jnp.issubdtype(jnp.result_type(x), jnp.inexact))
    self.assertEqual(finite, name not in OPTAX_SECOND_MOMENT_OVERFLOWS, name)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_optax_masked_freezes_unselected_leaves(self, name, backend="xla"):
    params = _params()
    mask = {"dense": {"kernel": True, "bias": False}, "conv": {"kernel": True}, "scale": False}
    optimizer = optax.masked(_build(name, backend=backend), mask)
    updates, _ = jax.jit(optimizer.update)(_grads(params), optimizer.init(params), params)
    # optax.masked passes unselected gradients through unchanged.
    np.testing.assert_array_equal(updates["dense"]["bias"], _grads(params)["dense"]["bias"])
    self.assertFalse(np.allclose(updates["dense"]["kernel"], _grads(params)["dense"]["kernel"]))

  @parameterized.named_parameters(PARAMETERS)
  def test_weight_decay_mask(self, name):
    spec = optimizers.registry[name]
    if "weight_decay" not in spec.arguments or "mask" not in spec.arguments:
      self.skipTest(f"{name} has no weight decay with a mask")
    params = _params()
    mask = {"dense": {"kernel": True, "bias": False}, "conv": {"kernel": True}, "scale": False}
    # The test loss is separable, so each leaf's trajectory depends on its
    # own decay only: masked-out leaves follow the undecayed run, the others
    # the run with decay everywhere.
    def trajectory(**kwargs):
      return _run(_with_loss(name, spec.build(**kwargs)), _loss, params, 10)

    masked = trajectory(weight_decay=1.0, mask=mask)
    undecayed = trajectory(weight_decay=0.0)
    decayed = trajectory(weight_decay=1.0)
    if optimizers.registry[name].global_step_size:
      # A global step size couples the leaves: check the mask's extremes and
      # that a partial mask is neither.
      none = jax.tree.map(lambda _: False, params)
      _assert_trees_close(self, trajectory(weight_decay=1.0, mask=none), undecayed, rtol=0.0)
      everything = jax.tree.map(lambda _: True, params)
      _assert_trees_close(self, trajectory(weight_decay=1.0, mask=everything), decayed, rtol=0.0)
      # Decayed leaves move unlike the undecayed run, masked-out ones unlike the decayed run.
      self.assertFalse(np.array_equal(masked["conv"]["kernel"], undecayed["conv"]["kernel"]))
      self.assertFalse(np.array_equal(masked["scale"], decayed["scale"]))
      return
    for leaf, chosen in (("dense", "bias"), ("dense", "kernel")):
      reference = decayed if mask[leaf][chosen] else undecayed
      # Exact: a leaf's trajectory runs the same operations as in the
      # reference run (the mask selects per leaf; the loss is separable).
      np.testing.assert_array_equal(masked[leaf][chosen], reference[leaf][chosen])
    np.testing.assert_array_equal(masked["scale"], undecayed["scale"])
    np.testing.assert_array_equal(masked["conv"]["kernel"], decayed["conv"]["kernel"])
    # Not vacuous: the decay changes the decayed leaves.
    self.assertFalse(np.allclose(decayed["conv"]["kernel"], undecayed["conv"]["kernel"], rtol=1e-6))
    # A callable mask gives the same as the tree.
    by_callable = trajectory(weight_decay=1.0, mask=lambda p: mask)
    _assert_trees_close(self, by_callable, masked, rtol=0.0)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_state_shapes_and_dtypes_stable_under_cond(self, name, backend="xla"):
    optimizer = _build(name, backend=backend)
    params = _params()
    state = optimizer.init(params)

    @functools.partial(jax.jit, static_argnums=3)
    def maybe_update(grads, state, params, _):
      return jax.lax.cond(
          jnp.sum(grads["scale"]) > 0,
          lambda: optimizer.update(grads, state, params),
          lambda: (jax.tree.map(jnp.zeros_like, grads), state),
      )

    for _ in range(2):
      _, new_state = maybe_update(_grads(params), state, params, None)
      self.assertEqual(jax.tree.structure(new_state), jax.tree.structure(state))
      for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(state)):
        self.assertEqual((a.shape, a.dtype), (b.shape, b.dtype))
      state = new_state
    counters = [x for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.integer)]
    for counter in counters:
      self.assertEqual(counter.dtype, jnp.int32)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_works_inside_chain_and_multisteps(self, name, backend="xla"):
    params = _params()
    grads = _grads(params)
    chained = optax.chain(optax.clip_by_global_norm(1e6), _build(name, backend=backend))
    alone = _build(name, backend=backend)
    updates_c, _ = jax.jit(chained.update)(grads, chained.init(params), params)
    updates_a, _ = jax.jit(alone.update)(grads, alone.init(params), params)
    # Exact: clipping at 1e6 selects the unchanged gradients (jnp.where), so
    # the optimizer sees the same values and runs the same operations.
    _assert_trees_close(self, updates_c, updates_a)
    # Two micro-steps of the same gradient equal one step with it.
    multi = optax.MultiSteps(_build(name, backend=backend), every_k_schedule=2)
    state = multi.init(params)
    first, state = jax.jit(multi.update)(grads, state, params)
    for leaf in jax.tree.leaves(first):
      np.testing.assert_array_equal(leaf, 0.0)
    second, state = jax.jit(multi.update)(grads, state, params)
    # The averaged gradient is exact (g + (g - g) / 2 = g), but MultiSteps runs
    # the step inside lax.cond, a differently fused program:
    # `_restructured_bound`, relative to each leaf's largest update.
    _assert_trees_close(self, second, updates_a, atol=_restructured_bound(name), leaf_scale=True)

  @parameterized.named_parameters(WITH_PALLAS)
  def test_apply_if_finite_skips_non_finite_gradients(self, name, backend="xla"):
    params = _params()
    optimizer = optax.apply_if_finite(_build(name, backend=backend), max_consecutive_errors=3)
    state = optimizer.init(params)
    bad = jax.tree.map(lambda g: g.at[...].set(jnp.nan), _grads(params))
    updates, bad_state = jax.jit(optimizer.update)(bad, state, params)
    for leaf in jax.tree.leaves(updates):
      np.testing.assert_array_equal(leaf, 0.0)
    self.assertEqual(int(bad_state.notfinite_count), 1)
    _assert_trees_close(self, bad_state.inner_state, state.inner_state, rtol=0.0)
    good, _ = jax.jit(optimizer.update)(_grads(params), bad_state, params)
    for leaf in jax.tree.leaves(good):
      self.assertTrue(bool(jnp.all(jnp.isfinite(leaf))))

  @parameterized.named_parameters(PARAMETERS)
  def test_sharded_params_keep_their_sharding(self, name):
    devices = jax.devices()
    self.assertGreaterEqual(len(devices), 4, "needs simulated CPU devices")
    mesh = jax.sharding.Mesh(np.asarray(devices[:4]).reshape(2, 2), ("data", "model"))
    P = jax.sharding.PartitionSpec
    specs = {
        "dense": {"kernel": P("data", "model"), "bias": P("model")},
        "conv": {"kernel": P(None, None, "data", "model")},
        "scale": P(),
    }
    shardings = jax.tree.map(lambda s: jax.sharding.NamedSharding(mesh, s), specs)
    params = jax.device_put(_params(), shardings)
    optimizer = _build(name)
    state = jax.jit(optimizer.init)(params)

    @jax.jit
    def step(params, state):
      updates, state = optimizer.update(_grads(params), state, params)
      return optax.apply_updates(params, updates), state

    first_params, first_state = step(params, state)
    new_params, new_state = step(first_params, first_state)
    for p, q in zip(jax.tree.leaves(params), jax.tree.leaves(new_params)):
      self.assertTrue(q.sharding.is_equivalent_to(p.sharding, p.ndim), (q.sharding, p.sharding))
    # Moments are sharded like their parameters: nothing was gathered.
    param_shardings = {p.shape: p.sharding for p in jax.tree.leaves(params)}
    param_sizes = sorted(p.size for p in jax.tree.leaves(params))
    for leaf in _moment_leaves(new_state):
      if name in BLOCK_STATISTICS and leaf.shape not in param_shardings:
        self.assertLess(leaf.size, param_sizes[-1])  # A per-block statistic (Adam-mini's v).
        continue
      if name in PER_LEAF_STATISTICS and leaf.shape == (len(param_sizes),):
        continue  # One entry per leaf (LDoG's rbar, sqrt(G)): not a moment.
      self.assertTrue(leaf.sharding.is_equivalent_to(param_shardings[leaf.shape], leaf.ndim))
    # And the numbers equal the unsharded run's.
    unsharded = jax.device_put(_params(), devices[0])
    reference, _ = step(unsharded, optimizer.init(unsharded))
    # Sharding reorders the sums (partial sums, all-reduced) and fuses the
    # program differently: the updates differ by `_restructured_bound` of each leaf's
    # largest update; p + u then rounds once on each side (2 u of |p + u|).
    first_params, reference = jax.device_get(first_params), jax.device_get(reference)
    for p, q, p0 in zip(jax.tree.leaves(first_params), jax.tree.leaves(reference), jax.tree.leaves(_params())):
      p, q, p0 = (np.asarray(x, np.float64) for x in (p, q, p0))
      # 3 u: the update's scale is read off the rounded parameters.
      np.testing.assert_allclose(p, q, rtol=3 * U32, atol=_restructured_bound(name) * np.abs(q - p0).max())

  @parameterized.named_parameters(PARAMETERS)
  def test_orbax_round_trip_resumes_the_same_trajectory(self, name):
    optimizer = _build(name)
    step = jax.jit(lambda g, s, p: optimizer.update(g, s, p))
    params = _params()
    state = optimizer.init(params)
    for _ in range(3):
      updates, state = step(_grads(params), state, params)
      params = optax.apply_updates(params, updates)
    path = test_util.tempdir(self) + "/state"
    with ocp.StandardCheckpointer() as checkpointer:
      checkpointer.save(path, state)
      checkpointer.wait_until_finished()
      abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, optimizer.init(params))
      restored = checkpointer.restore(path, abstract)
    self.assertEqual(jax.tree.structure(restored), jax.tree.structure(state))
    _assert_trees_close(self, restored, state, rtol=0.0)
    # The restored state continues exactly as the live one.
    continued, _ = step(_grads(params), state, params)
    resumed, _ = step(_grads(params), restored, params)
    _assert_trees_close(self, resumed, continued, rtol=0.0)

  @parameterized.named_parameters(PARAMETERS)
  def test_declared_state_bytes_per_param(self, name):
    spec = optimizers.registry[name]

    def state_bytes(params):
      state = jax.eval_shape(spec.build().init, params)
      return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))

    # The marginal cost of one more parameter: per-tree and per-leaf scalars
    # (counters, Prodigy's d, DoG's distances) cancel in the difference.
    small, large = _params(), _params(width=38)
    extra = sum(p.size for p in jax.tree.leaves(large)) - sum(p.size for p in jax.tree.leaves(small))
    marginal = (state_bytes(large) - state_bytes(small)) / extra
    if name in BLOCK_STATISTICS:
      # Declared: the full-size state; per-block statistics add less than
      # one float32 per parameter (here: per-element only on the bias).
      self.assertGreaterEqual(marginal, spec.state_bytes_per_param)
      self.assertLess(marginal, spec.state_bytes_per_param + 4)
    elif name in FALLBACK_STATE_BYTES:
      # Two groups with different state: the declared bytes hold for the main
      # group, the fallback's for the rest; the grown dense layer adds a
      # kernel row (main) and bias entries (fallback), so in between.
      self.assertGreater(marginal, spec.state_bytes_per_param)
      self.assertLess(marginal, FALLBACK_STATE_BYTES[name])
    else:
      self.assertEqual(marginal, spec.state_bytes_per_param)


if __name__ == "__main__":
  absltest.main()
