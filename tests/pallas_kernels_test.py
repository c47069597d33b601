"""Fused Pallas kernels: agreement with the XLA path, dispatch, and TPU/GPU lowering.

On CPU the kernels run in Pallas interpret mode; the TPU (Mosaic) and GPU
(Triton) lowerings are produced on CPU and inspected.
"""

from tests import test_util  # Sets up simulated CPU devices first.

import sys

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.workloads import transformer
import optimizers
import pallas_kernels
from pallas_kernels import adam_family
from pallas_kernels import elementwise
from pallas_kernels import reductions


def _tree(dtype=jnp.float32, seed=0):
  """Direct leaves (size a multiple of 16 x 128), packed ones, and a scalar."""
  rng = np.random.default_rng(seed)
  shape = lambda *s: jnp.asarray(rng.normal(size=s), dtype)
  return {
      "dense": {"kernel": shape(64, 128), "bias": shape(128)},
      "conv": {"kernel": shape(3, 3, 16, 32)},  # 4608 = 2.25 tiles: packed.
      "embed": shape(32, 64),  # 2048 = one tile: direct.
      "norm": {"scale": shape(7)},
      "scalar": shape(),
  }


def _kernels_only(params):
  return jax.tree.map(lambda p: p.ndim > 1, params)


def _pairs():
  return {
      "adamw": (lambda: optax.adamw(1e-2, weight_decay=0.1),
                lambda: pallas_kernels.adamw(1e-2, weight_decay=0.1)),
      "radam": (lambda: optimizers.radam(1e-2, weight_decay=0.1),
                lambda: optimizers.radam(1e-2, weight_decay=0.1, backend="pallas")),
      "radam_no_sgd_phase": (
          lambda: optimizers.radam(1e-2, degenerated_to_sgd=False),
          lambda: optimizers.radam(1e-2, degenerated_to_sgd=False, backend="pallas")),
      "adabound": (lambda: optimizers.adabound(1e-2, final_lr=0.05, gamma=0.1),
                   lambda: optimizers.adabound(1e-2, final_lr=0.05, gamma=0.1, backend="pallas")),
      "amsbound_decoupled": (
          lambda: optimizers.amsbound(1e-2, weight_decay=0.1, decoupled_weight_decay=True),
          lambda: optimizers.amsbound(1e-2, weight_decay=0.1, decoupled_weight_decay=True, backend="pallas")),
      "adamod_schedule": (
          lambda: optimizers.adamod(optax.cosine_decay_schedule(1e-2, 10), b3=0.9, weight_decay=0.1),
          lambda: optimizers.adamod(optax.cosine_decay_schedule(1e-2, 10), b3=0.9, weight_decay=0.1,
                                    backend="pallas")),
      # The whole schedule-free step (x, decay at y, v, z, y') per leaf group.
      "schedule_free_adamw_masked": (
          lambda: optimizers.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=0.1, mask=_kernels_only),
          lambda: optimizers.schedule_free_adamw(1e-2, warmup_steps=3, weight_decay=0.1, mask=_kernels_only,
                                                 backend="pallas")),
      "schedule_free_radam": (lambda: optimizers.schedule_free_radam(1e-2, weight_decay=0.1),
                              lambda: optimizers.schedule_free_radam(1e-2, weight_decay=0.1, backend="pallas")),
      # Fused reductions: DoG's three norms per leaf, the induced metric's trace.
      "dog": (lambda: optimizers.dog(), lambda: optimizers.dog(backend="pallas")),
      "ldog_init_eta": (lambda: optimizers.ldog(init_eta=1e-3), lambda: optimizers.ldog(init_eta=1e-3, backend="pallas")),
      "induced_metric_rms": (lambda: optimizers.induced_metric_rms(1e-2, xi=0.5),
                             lambda: optimizers.induced_metric_rms(1e-2, xi=0.5, backend="pallas")),
      # Three fused passes: the dot product and |s| (reduction), the
      # statistics, the step; d from the float32 sums.
      "prodigy": (lambda: optimizers.prodigy(), lambda: optimizers.prodigy(backend="pallas")),
      "prodigy_coupled_wd": (lambda: optimizers.prodigy(weight_decay=0.1, decouple=False),
                             lambda: optimizers.prodigy(weight_decay=0.1, decouple=False, backend="pallas")),
      "prodigy_b1_zero_masked_wd": (
          lambda: optimizers.prodigy(b1=0.0, weight_decay=0.1, safeguard_warmup=True, mask=_kernels_only),
          lambda: optimizers.prodigy(b1=0.0, weight_decay=0.1, safeguard_warmup=True, mask=_kernels_only,
                                     backend="pallas")),
      # Adam-mini: per-element leaves in the Adam kernel, block leaves with
      # their 1 / (bc1 h_B) broadcast per row or column block.
      "adam_mini": (lambda: optimizers.adam_mini(1e-2, weight_decay=0.1),
                    lambda: optimizers.adam_mini(1e-2, weight_decay=0.1, backend="pallas")),
      # AdamP: the channel sums (one fused reduction per kernel leaf), the
      # projection coefficients, then the step with them broadcast per column.
      "adamp": (lambda: optimizers.adamp(1e-2, weight_decay=0.1),
                lambda: optimizers.adamp(1e-2, weight_decay=0.1, backend="pallas")),
      "adamp_nesterov_masked": (
          lambda: optimizers.adamp(1e-2, weight_decay=0.1, nesterov=True, delta=1.0, mask=_kernels_only),
          lambda: optimizers.adamp(1e-2, weight_decay=0.1, nesterov=True, delta=1.0, mask=_kernels_only,
                                   backend="pallas")),
      "adamp_pytorch_layout": (
          lambda: optimizers.adamp(1e-2, weight_decay=0.1, channel_axis=0),
          lambda: optimizers.adamp(1e-2, weight_decay=0.1, channel_axis=0, backend="pallas")),
      "radam_schedule": (
          lambda: optimizers.radam(optax.cosine_decay_schedule(1e-2, 10)),
          lambda: optimizers.radam(optax.cosine_decay_schedule(1e-2, 10), backend="pallas")),
  }


def paired_steps(name, dtype, steps=8):
  """Runs both backends of `_pairs()[name]`; yields (u_xla, u_pallas, params) per step.

  bfloat16 params and gradients with float32 moments: the reference is the
  XLA path on the same values upcast to float32 (optax would keep bf16
  moments). Both continue from the same point (the XLA step's), so each
  step is compared, not the drift of two trajectories. The last item is
  (state_xla, state_pallas, None).
  """
  xla, pallas = (f() for f in _pairs()[name])
  params_p = _tree(jnp.dtype(dtype))
  # Methods on float32 master weights for low-precision parameters
  # (`_numerics.with_compensated_updates`: DoG, LDoG, Prodigy) keep the
  # rounding error in their state, so the XLA reference runs on the same
  # bf16 parameters (it compensates too) instead of an upcast copy.
  compensated = isinstance(pallas.init(params_p)[-1], optimizers._numerics.CompensatedState)
  upcast = (lambda t: t) if compensated else (lambda t: jax.tree.map(lambda p: p.astype(jnp.float32), t))
  params_x = upcast(params_p)
  state_x, state_p = xla.init(params_x), pallas.init(params_p)
  step_x, step_p = jax.jit(xla.update), jax.jit(pallas.update)
  for t in range(steps):  # 8: past RAdam's rectification at step 6.
    grads_p = jax.tree.map(lambda p: jnp.sin(p * (t + 1)).astype(p.dtype), params_p)
    grads_x = upcast(grads_p)
    u_x, state_x = step_x(grads_x, state_x, params_x)
    u_p, state_p = step_p(grads_p, state_p, params_p)
    yield u_x, u_p, params_p
    params_x = optax.apply_updates(params_x, u_x)
    params_p = jax.tree.map(lambda x, p: x.astype(p.dtype), params_x, params_p)
    params_x = upcast(params_p)
  yield state_x, state_p, None


U32 = 2.0**-24  # float32 unit roundoff: one rounding is off by at most U32 relatively.
# Per backend, an upper bound on the float32 roundings along one element's path
# through the elementwise rules of `_pairs()` (the longest, e.g. AMSBound or
# schedule-free RAdam: g^2 and the two moment EMAs 7, bias corrections 2,
# sqrt, + eps and the division 3, a clip or step-size EMA 3, the interpolations
# 4, weight decay and lr 3). The paths may round each of them differently (the
# kernels regroup the scalars, and either path's a * b + c may or may not be
# fused into one FMA, depending on the CPU), so two such results differ by up to
# 2 * 24 roundings of the element's magnitude terms; moment errors only shrink
# through sqrt and the EMAs' convex combinations.
ELEMENTWISE_ROUNDINGS = 24
_TREE_SIZE = 64 * 128 + 128 + 3 * 3 * 16 * 32 + 32 * 64 + 7 + 1  # `_tree()`'s elements.
# Sums of non-negative terms the two paths add in different orders (XLA's
# vector lanes, which depend on the CPU's SIMD width, vs the kernel's tiles):
# (terms of the largest such sum, total exponent with which the update depends
# on the sums). A float32 sum of n non-negative terms in ANY order is within
# (n - 1) U32 of the exact sum, relatively, so two orders differ by up to
# 2 (n - 1) U32; a sum entering as S^e moves the update by |e| times that.
#   dog: eta = rbar / sqrt(G), rbar and sqrt(G) square roots of tree sums (e = 1/2 + 1/2).
#   ldog: the same per leaf (largest leaf 64 x 128).
#   induced_metric_rms: s = 1 / (1 + |mu_hat|), mu the EMA of a tree sum; |d log s / d log mu| <= 1.
#   adam_mini: v^-1/2 of a block mean of g^2; a block is at most a leaf.
# Prodigy's and AdamP's statistics are signed sums (a dot product, a cosine),
# whose relative error has no bound without the data's cancellation; they are
# held to the elementwise bound (Prodigy's relative to the parameter's ulp).
NONNEGATIVE_SUMS = {
    "dog": (_TREE_SIZE, 1.0), "ldog_init_eta": (64 * 128, 1.0),
    "induced_metric_rms": (_TREE_SIZE, 1.0), "adam_mini": (64 * 128, 0.5),
}


def float32_bound(name):
  """Relative bound on |pallas - xla| for `_pairs()[name]` in float32 (see above)."""
  n, exponent = NONNEGATIVE_SUMS.get(name, (1, 0.0))
  return (2 * ELEMENTWISE_ROUNDINGS + exponent * 2 * (n - 1)) * U32


def difference_scale(name, xla_update, param):
  """What a leaf's difference is relative to: max|update|, or max|param| for Prodigy.

  Prodigy forms x - (x_decayed - step) as the reference rounds it, so its
  update is exact to an ulp of the parameter, not of the step.
  """
  reference = param if name.startswith("prodigy") else xla_update
  return np.abs(np.asarray(reference, np.float32)).max()


class AgreementTest(parameterized.TestCase):

  @parameterized.product(name=list(_pairs()), dtype=["float32", "bfloat16"])
  def test_pallas_matches_xla_to_float32_rounding(self, name, dtype):
    *steps, (state_x, state_p, _) = paired_steps(name, dtype)
    for u_x, u_p, params in steps:
      for a, b, p in zip(jax.tree.leaves(u_x), jax.tree.leaves(u_p), jax.tree.leaves(params)):
        self.assertEqual(b.dtype, p.dtype)
        a = np.asarray(a.astype(p.dtype), np.float32)
        b = np.asarray(b, np.float32)
        # Float32: `float32_bound`, relative to each element's magnitude terms;
        # atol scales it by the leaf's largest update (or parameter, for
        # Prodigy), for elements where terms cancel. bfloat16: the two
        # roundings of float32 values that close may land on neighbouring
        # bf16 values, one bf16 ulp apart (2^-8 to 2^-7 relative).
        if dtype == "float32":
          rtol = atol = float32_bound(name)
        else:
          rtol, atol = 2.0**-7, 2 * 2.0**-7
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol * difference_scale(name, a, p))
    for a, b in zip(jax.tree.leaves(state_x), jax.tree.leaves(state_p)):
      self.assertEqual(jnp.shape(a), jnp.shape(b))
    for m in jax.tree.leaves(state_p):
      if jnp.ndim(m):
        self.assertEqual(m.dtype, jnp.float32)

  def test_state_is_interchangeable_with_the_xla_path(self):
    params = _tree()
    xla, pallas = optimizers.radam(1e-2), optimizers.radam(1e-2, backend="pallas")
    self.assertEqual(jax.tree.structure(xla.init(params)), jax.tree.structure(pallas.init(params)))
    # A state written by one backend continues in the other.
    grads = jax.tree.map(jnp.cos, params)
    _, state = xla.update(grads, xla.init(params), params)
    u_p, _ = jax.jit(pallas.update)(grads, state, params)
    u_x, _ = xla.update(grads, state, params)
    # RAdam is elementwise: the float32 bound of `float32_bound("radam")`.
    tolerance = float32_bound("radam")
    for a, b in zip(jax.tree.leaves(u_x), jax.tree.leaves(u_p)):
      np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max())

  def test_a_schedule_does_not_recompile(self):
    optimizer = optimizers.radam(optax.linear_schedule(1e-2, 0.0, 5), backend="pallas")
    traces = []

    @jax.jit
    def step(grads, state, params):
      traces.append(1)
      return optimizer.update(grads, state, params)

    params = _tree()
    state = optimizer.init(params)
    for _ in range(7):  # Scalars change every step (lr, bias corrections, r_t).
      _, state = step(jax.tree.map(jnp.cos, params), state, params)
    self.assertLen(traces, 1)


class AdamMiniTest(absltest.TestCase):

  def test_transformer_blocks_match_the_xla_path_and_lower(self):
    model = transformer.TransformerLM(num_layers=1)
    params = {
        "lm": model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)),
        # 2-D q/k kernels split into heads (GQA: 2 key heads).
        "attn": {"q_proj": {"kernel": jnp.full((64, 64), 0.3)}, "k_proj": {"kernel": jnp.full((64, 32), 0.2)}},
    }
    xla = optimizers.adam_mini(1e-2, weight_decay=0.1, num_heads=4, num_kv_heads=2)
    pallas = optimizers.adam_mini(1e-2, weight_decay=0.1, num_heads=4, num_kv_heads=2, backend="pallas")
    state_x, state_p = xla.init(params), pallas.init(params)
    # Bound from the float32 roundings that can differ between the two paths
    # (u = 2^-24), valid on any CPU whatever its SIMD width or FMA use:
    #  * Block sums. The paths sum a block's g^2 in different orders (XLA's
    #    vector lanes, which depend on the CPU's SIMD width, vs the kernel's
    #    tiles). A float32 sum of n non-negative terms in ANY order is within
    #    (n - 1) u of the exact sum, relatively, so the two sums differ by up to
    #    2 (n - 1) u; the step scales with v^-1/2, which halves that: (n - 1) u.
    #    Constant blocks (the q/k kernels here) make this worst case real: the
    #    rounding errors all have one sign and add up (2.4e-6 on an AMD EPYC).
    #    The largest block is one head of the (128, 4, 32) attention kernels,
    #    n = 4096.
    #  * Elementwise roundings, each at most u of its own magnitude and counted
    #    for both paths (the kernel regroups the scalars, and either path's
    #    a * b + c may or may not be fused into one FMA): per path g^2 and the
    #    division by n (2), the v EMA (3 per step, 3 steps; halved by the
    #    square root, <= 5), sqrt, / sqrt(bc2), + eps (3), the m EMA (3 per
    #    step: 9), / bc1 and the division by h (2), weight decay and lr (3):
    #    24 per path, k = 48 for the difference.
    # Relative to each element's magnitude; atol scales it by the leaf's
    # largest update, for elements where the weight decay and the step cancel.
    block, k = 128 * 32, 48
    tolerance = ((block - 1) + k) * 2.0**-24  # 2.47e-4.
    for t in range(3):
      grads = jax.tree.map(lambda p: jnp.sin(p * (t + 1) + 0.1), params)
      u_x, state_x = jax.jit(xla.update)(grads, state_x, params)
      u_p, state_p = jax.jit(pallas.update)(grads, state_p, params)
      for a, b in zip(jax.tree.leaves(u_x), jax.tree.leaves(u_p)):
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max())
    text = jax.jit(pallas.update).trace(grads, state_p, params).lower(lowering_platforms=("tpu",)).as_text()
    # On TPU, 11 block leaves take a block-means reduction and a step kernel
    # each, the three LayerNorm scales (a single row: no (8, bc) fold for the
    # reduction) a step kernel, and the per-element biases one packed kernel.
    traced = jax.jit(pallas.update).trace(grads, state_p, params)
    self.assertEqual(traced.lower(lowering_platforms=("tpu",)).as_text().count("tpu_custom_call"), 26)
    # Triton tiles powers of two only, and single-row column sums are XLA's.
    self.assertEqual(traced.lower(lowering_platforms=("cuda",)).as_text().count("xla.gpu.triton"), 19)


def _orthogonal(w, r, axes):
  """r minus its projection on w over `axes`: cosine 0 with w there."""
  return r - w * jnp.sum(w * r, axes, keepdims=True) / jnp.sum(w * w, axes, keepdims=True)


class AdamPTest(parameterized.TestCase):

  @parameterized.parameters(-1, 0)
  def test_channel_and_layer_projections_match_the_xla_path(self, channel_axis):
    # Gradients built so that each leaf takes a known branch of the test:
    # orthogonal to w per channel (channel view), orthogonal only as a whole
    # (whole-tensor view), equal to w (no projection).
    rng = np.random.default_rng(0)
    normal = lambda *s: jnp.asarray(rng.normal(size=s), jnp.float32)
    params = {"channel": normal(64, 128), "layer": normal(3, 3, 16, 128), "none": normal(128, 32),
              "bias": normal(128)}
    reduce_axes = lambda x: tuple(a for a in range(x.ndim) if a != channel_axis % x.ndim)

    def grads(t):
      r = jax.tree.map(lambda p: jnp.cos(p * (t + 2)), params)
      return {"channel": _orthogonal(params["channel"], r["channel"], reduce_axes(params["channel"])),
              "layer": _orthogonal(params["layer"], r["layer"], None), "none": params["none"],
              "bias": r["bias"]}

    adamp_module = sys.modules[optimizers.adamp.__module__]
    for name, expected in (("channel", 0.1), ("layer", 0.1), ("none", 1.0)):
      _, wd_factor = adamp_module.project(params[name], grads(0)[name], params[name], delta=0.1, wd_ratio=0.1,
                                          eps=1e-8, channel_axis=channel_axis)
      # Exact: the factor is selected (wd_ratio or 1), not computed.
      self.assertEqual(float(wd_factor), float(np.float32(expected)), msg=name)
    layer, g = np.asarray(params["layer"]), np.asarray(grads(0)["layer"])
    axes = reduce_axes(layer)
    cosines = np.abs(np.sum(layer * g, axes)) / np.sqrt(np.sum(layer**2, axes) * np.sum(g**2, axes))
    self.assertGreater(cosines.max(), 0.1 / np.sqrt(layer.size / layer.shape[channel_axis]))  # Not the channel view.

    xla = optimizers.adamp(1e-2, weight_decay=0.1, channel_axis=channel_axis)
    pallas = optimizers.adamp(1e-2, weight_decay=0.1, channel_axis=channel_axis, backend="pallas")
    state_x, state_p = xla.init(params), pallas.init(params)
    # The projection subtracts w (w . d) / (w . w) from the Adam direction d.
    # w . d is a signed sum: summed in two orders it moves by up to 2 (n - 1) u
    # of sum |w_i d_i| <= |w| |d| (Cauchy-Schwarz), so the subtracted w_i-term
    # moves by at most 2 (n - 1) u |d| (|w_i| <= |w|): relative to the leaf's
    # largest update, not to each (cancelling) element. n: the terms of the
    # sum in the view that projects: a channel's for "channel", none for
    # "none" (cosine 1: no projection) and "bias" (a vector: never projected).
    # Plus the elementwise roundings of `float32_bound("adamp")`. "layer"
    # (a whole-tensor sum of 18432 terms, a bound of 2.2e-3) is compared on
    # exact data instead: `test_whole_tensor_projection_on_exact_data`.
    terms = {"channel": params["channel"].size // params["channel"].shape[channel_axis], "none": 1, "bias": 1}
    for t in range(3):
      u_x, state_x = jax.jit(xla.update)(grads(t), state_x, params)
      u_p, state_p = jax.jit(pallas.update)(grads(t), state_p, params)
      for name in terms:
        a, b = np.asarray(u_x[name]), np.asarray(u_p[name])
        tolerance = float32_bound("adamp") + 2 * (terms[name] - 1) * U32
        np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max(), err_msg=name)
    traced = jax.jit(pallas.update).trace(grads(0), state_p, params)
    # A reduction (per column, or per row for channels first) and a step
    # kernel per kernel leaf, one for the bias. Triton tiles powers of two
    # only, so leaves with a 32 or 3 row/column dimension stay in XLA there.
    tpu, cuda = (7, 5) if channel_axis == -1 else (7, 3)
    self.assertEqual(traced.lower(lowering_platforms=("tpu",)).as_text().count("tpu_custom_call"), tpu)
    self.assertEqual(traced.lower(lowering_platforms=("cuda",)).as_text().count("xla.gpu.triton"), cuda)

  @parameterized.parameters(-1, 0)
  def test_whole_tensor_projection_on_exact_data(self, channel_axis):
    # The whole-tensor view's sums (18432 terms, whose any-order bound would be
    # 2.2e-3) made exact, so only the elementwise roundings can differ: b1 =
    # 1/2, b2 = 0 and g = +-1 give v = g^2 = 1, bc2 = 1, sqrt(v) / sqrt(bc2) +
    # 1e-8 = 1 (1e-8 is below half an ulp of 1) and m (so the direction d) in
    # eighths of [-1, 1]; w in {+-1/2, +-1} makes every product w_i d_i, w_i^2,
    # g_i w_i, g_i^2 exact, and no partial sum of 18432 of them needs over 20
    # significant bits: the four sums are exact in float32, in any order.
    rng = np.random.default_rng(1)
    shape = (3, 3, 16, 128)
    view = lambda x: np.moveaxis(x, channel_axis, -1)  # (..., channels), a writable view.
    w = rng.choice([-1.0, -0.5, 0.5, 1.0], size=shape)
    w2 = view(w).reshape(-1, view(w).shape[-1])
    half = w2.shape[0] // 2
    w2[:, 1] = w2[:, 0]
    w2[half:, 2:] = w2[:half, 2:]
    w = np.moveaxis(w2.reshape(view(w).shape), -1, channel_axis)

    def gradient(t):
      # Channel 0 aligned with w (cosine ~0.8: not the channel view), channel
      # 1 its negation on the same w, the others cosine 0 (rows paired with
      # negated gradients) but for t + 1 unpaired rows of channel 2: g . w is
      # at most 2 (t + 1) <= 6, cosine <= 6 / (|g| |w|) = 4.1e-4 < 0.1 /
      # sqrt(18432) = 7.4e-4 (the whole-tensor view), and w . d is not zero.
      g = np.random.default_rng(t).choice([-1.0, 1.0], size=shape)
      g2 = view(g).reshape(-1, view(g).shape[-1]).copy()
      g2[:, 0] = np.sign(w2[:, 0])
      g2[:, 1] = -g2[:, 0]
      g2[half:, 2:] = -g2[:half, 2:]
      g2[half:half + t + 1, 2] = g2[:t + 1, 2]
      return np.moveaxis(g2.reshape(view(g).shape), -1, channel_axis)

    params = {"layer": jnp.asarray(w, jnp.float32)}
    xla = optimizers.adamp(1e-2, b1=0.5, b2=0.0, weight_decay=0.1, channel_axis=channel_axis)
    pallas = optimizers.adamp(1e-2, b1=0.5, b2=0.0, weight_decay=0.1, channel_axis=channel_axis, backend="pallas")
    state_x, state_p = xla.init(params), pallas.init(params)
    # With exact sums, only the elementwise roundings differ (XLA divides by
    # bc1 as a product with 1 / bc1: 2 roundings, the kernel 1): the bound of
    # `float32_bound("adamp")`, without a sum term.
    tolerance = float32_bound("adamp")
    for t in range(3):
      grads = {"layer": jnp.asarray(gradient(t), jnp.float32)}
      u_x, state_x = jax.jit(xla.update)(grads, state_x, params)
      u_p, state_p = jax.jit(pallas.update)(grads, state_p, params)
      a, b = np.asarray(u_x["layer"]), np.asarray(u_p["layer"])
      np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance * np.abs(a).max())
      jax.tree.map(np.testing.assert_array_equal, state_p, state_x)  # Exact moments (eighths, ones).
      # The whole-tensor view did project: w . u is the decay's -lr wd
      # wd_ratio |w|^2 alone, to the elements' roundings (each element's
      # update <= 8 u off: u_i - c w_i, / bc1 (2), + decay w_i, x lr, and c's
      # own (6 u) on c w_i <= |u_i| + |d_i|, so 16 u of sum |w_i (u_i| + |d_i|)).
      # Without the projection it would be off by lr |w . d| / bc1, checked
      # to exceed that bound.
      m = np.asarray(state_x[0].mu["layer"], np.float64)
      bc1 = 1 - 0.5 ** (t + 1)
      decay = 1e-2 * 0.1 * float(np.float32(0.1)) * np.sum(w * w)
      radial_bound = 16 * U32 * np.sum(np.abs(w) * (np.abs(a) + 1e-2 * np.abs(m) / bc1))
      self.assertGreater(1e-2 * abs(np.sum(w * m)) / bc1, 2 * radial_bound)
      self.assertLess(abs(np.sum(np.asarray(a, np.float64) * w) + decay), radial_bound)


class DispatchTest(absltest.TestCase):

  def test_large_leaves_get_their_own_kernel_small_ones_share_one(self):
    # dense.kernel and embed are whole tiles; the other four share one kernel.
    self.assertEqual(elementwise.kernel_count(_tree()), 3)
    many = {f"layer_{i}": {"bias": jnp.ones(96), "scale": jnp.ones(96)} for i in range(200)}
    self.assertEqual(elementwise.kernel_count(many), 1)
    tx = pallas_kernels.scale_by_adam()
    text = jax.jit(tx.update).trace(many, tx.init(many)).lower(lowering_platforms=("tpu",)).as_text()
    self.assertEqual(text.count("tpu_custom_call"), 1)

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "unknown backend 'cuda'; valid: xla, pallas"):
      optimizers.radam(backend="cuda")
    with self.assertRaisesRegex(ValueError, "nesterov"):
      optimizers.scale_by_radam(nesterov=True, backend="pallas")
    with self.assertRaisesRegex(ValueError, r"\(rows, 128\)"):
      elementwise.fused_map(adam_family.adam_family_direction, adam_family.adam_scalars(0.9, 0.999, 1e-8, 0.1, 0.001),
                            [jnp.zeros((10, 128))] * 3)
    with self.assertRaisesRegex(ValueError, "float32"):
      opt = optimizers.scale_by_radam(backend="pallas", mu_dtype=jnp.bfloat16)
      params = _tree()
      opt.update(params, opt.init(params))


class ReductionTest(absltest.TestCase):

  def test_fused_sums_equal_the_float64_sums(self):
    # Values in quarters of [-1, 1] make every sum exact in float32, in any
    # order: x^2 and 2 x y are multiples of 2^-4 and 2^-3, and no partial sum
    # of 2^19 of them exceeds 2^20, so each needs at most 24 significant bits.
    # (With normal values the fused and float64 sums differ by rounding that
    # depends on the summation order, up to (n - 1) 2^-24 relatively for
    # n = 2^19 terms: a bound too loose to catch a lost tile.) So the sums
    # must equal the float64 ones exactly, on any CPU and order.
    rng = np.random.default_rng(3)
    quarters = lambda: rng.integers(-4, 5, size=(4096, 128)) / 4.0
    a = jnp.asarray(quarters(), jnp.float32)
    b = jnp.asarray(quarters(), jnp.bfloat16)
    sq, dot = reductions.fused_sums(lambda scalars, x, y: (x * x, scalars[0] * x * y), (2.0,), [a, b], 2)
    a64, b64 = np.asarray(a, np.float64), np.asarray(b.astype(jnp.float32), np.float64)
    self.assertEqual(float(sq), np.sum(a64 * a64))
    self.assertEqual(float(dot), 2.0 * np.sum(a64 * b64))

  def test_one_kernel_reads_all_three_norms_of_a_leaf(self):
    tx = optimizers.scale_by_dog(backend="pallas")
    params = {"w": jnp.ones((64, 128)), "b": jnp.ones(5)}
    text = jax.jit(tx.update).trace(params, tx.init(params), params).lower(
        lowering_platforms=("tpu",)).as_text()
    self.assertEqual(text.count("tpu_custom_call"), 1)  # "b" is reduced by XLA.

  def test_lowers_for_gpu(self):
    tx = optimizers.induced_metric_rms(backend="pallas")
    params = {"w": jnp.ones((64, 128))}
    text = jax.jit(tx.update).trace(params, tx.init(params), params).lower(
        lowering_platforms=("cuda",)).as_text()
    self.assertEqual(text.count("xla.gpu.triton"), 1)


class LoweringTest(parameterized.TestCase):

  @parameterized.parameters(("tpu", "tpu_custom_call"), ("cuda", "xla.gpu.triton"))
  def test_lowers_for_the_accelerator(self, platform, marker):
    scalars = adam_family.adam_scalars(0.9, 0.999, 1e-8, 0.1, 0.001)
    g = jnp.ones((1024, 128), jnp.bfloat16)
    m = v = jnp.zeros((1024, 128), jnp.float32)
    fused = lambda g, m, v: elementwise.fused_map(
        adam_family.adam_family_direction, scalars, [g, m, v], aliases={1: 1, 2: 2})
    text = jax.jit(fused).trace(g, m, v).lower(lowering_platforms=(platform,)).as_text()
    self.assertIn(marker, text)
    self.assertIn("output_operand_aliases", text)  # m and v updated in place.

  @parameterized.product(
      platform=["tpu", "cuda"],
      case=[("radam", 3), ("adamod", 3), ("amsbound", 3), ("adabound", 3), ("schedule_free_adamw", 3),
            ("schedule_free_radam", 3), ("dog", 2), ("ldog", 2),
            # Prodigy: a reduction for the two whole-tile leaves, then the
            # statistics and the step kernels (2 direct + 1 packed each).
            ("prodigy", 8)])
  def test_whole_optimizer_lowers(self, platform, case):
    # Elementwise rules: two whole-tile leaves and one packed kernel for the
    # rest. Reductions: the two whole-tile leaves (small ones reduce in XLA).
    name, kernels = case
    optimizer = optimizers.registry[name].build(backend="pallas")
    params = _tree()
    text = jax.jit(optimizer.update).trace(params, optimizer.init(params), params).lower(
        lowering_platforms=(platform,)).as_text()
    self.assertEqual(text.count("tpu_custom_call" if platform == "tpu" else "xla.gpu.triton"), kernels)


if __name__ == "__main__":
  absltest.main()
