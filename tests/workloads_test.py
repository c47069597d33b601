"""Workloads: data pipelines, models and evaluation on tiny inputs."""

from tests import test_util  # Sets up simulated CPU devices first.

import functools
import os
import pickle
import random
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import workloads
from experiments.algoperf_compat import spec
from experiments.workloads import _common
from experiments.workloads import base
from experiments.workloads import cifar10
from experiments.workloads import transformer

del test_util  # Imported for its side effect.

U32 = 2.0**-24  # float32 unit roundoff.

_TMP = tempfile.TemporaryDirectory()  # Fake data files, shared by the tests of one process.
_LM = dict(context_length=16, model_dim=16, num_layers=1, num_heads=2, mlp_dim=32,
           num_eval_windows=10, eval_batch_size=4)


def _fake_cifar(path: str, n_train: int = 8, n_test: int = 10, skip: str = "") -> str:
  """CIFAR-10's python-pickle layout with `n_train` random images per batch."""
  os.makedirs(path, exist_ok=True)
  rng = np.random.default_rng(0)
  for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
    if name == skip:
      continue
    batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}
    with open(os.path.join(path, name), "wb") as f:
      pickle.dump(batch, f, protocol=2)
  return path


def _fake_text(path: str) -> str:
  """Six text files of distinct words (and a hidden file to be skipped)."""
  rng = np.random.default_rng(0)
  os.makedirs(os.path.join(path, "sub"), exist_ok=True)
  for i in range(6):
    words = [f"w{i}_{int(k)}" for k in rng.integers(0, 50, 400)]
    with open(os.path.join(path, "sub" if i % 2 else "", f"f{i}.txt"), "w") as f:
      f.write(" ".join(words))
  with open(os.path.join(path, ".hidden"), "w") as f:
    f.write("x" * 100_000)
  return path


TINY = {
    "mnist1d_mlp": dict(num_samples=300, num_validation=40, hidden=(16,)),
    "mnist1d_cnn": dict(num_samples=300, num_validation=40, channels=4),
    "logreg": dict(),
    "stdlib_lm": dict(max_bytes=200_000, **_LM),
    "cifar10_resnet": dict(num_validation=6, stage_sizes=(1, 1), width=4, eval_batch_size=8),
    "lm_transformer": dict(dtype=jnp.float32, **_LM),
}
TINY.update({variant: TINY[base_name] for variant, base_name in workloads.VARIANTS.items()})
NAMES = [(name, name) for name in TINY]


@functools.lru_cache(maxsize=None)
def tiny(name: str) -> workloads.Workload:
  options = dict(TINY[name])
  if name == "cifar10_resnet":
    options["data_dir"] = _fake_cifar(os.path.join(_TMP.name, "cifar"))
  elif name == "lm_transformer":
    options["data_dir"] = _fake_text(os.path.join(_TMP.name, "text"))
  return workloads.get_workload(name, **options)


class WorkloadTest(parameterized.TestCase):

  @parameterized.named_parameters(NAMES)
  def test_declares_the_interface(self, name):
    w = tiny(name)
    self.assertEqual(w.name, name)
    self.assertIs(workloads.WORKLOADS[name], type(w))
    self.assertIsInstance(w.targets, workloads.Targets)
    self.assertIn(w.targets.mode, ("min", "max"))
    self.assertGreater(w.targets.step_hint, 0)
    self.assertGreater(w.targets.max_allowed_runtime_sec, w.targets.eval_period_time_sec)
    self.assertNotIn("PLACEHOLDER", w.targets.how_set)
    self.assertEqual(w.loss_type, spec.LossType.SOFTMAX_CROSS_ENTROPY)
    self.assertGreater(w.default_batch_size, 0)

  @parameterized.named_parameters(NAMES)
  def test_train_batch_is_a_pure_function_of_seed_and_step(self, name):
    w = tiny(name)
    batch = w.train_batch(3, 5, 4)
    again = w.train_batch(3, 5, 4)
    self.assertEqual(set(batch), {"inputs", "targets"})
    for key in batch:
      np.testing.assert_array_equal(batch[key], again[key])
    self.assertFalse(np.array_equal(batch["inputs"], w.train_batch(3, 6, 4)["inputs"]))
    self.assertFalse(np.array_equal(batch["inputs"], w.train_batch(4, 5, 4)["inputs"]))
    self.assertEqual(len(batch["inputs"]), 4)
    self.assertEqual(batch["targets"].dtype, np.int32)
    self.assertTrue(np.all((batch["targets"] >= 0) & (batch["targets"] < 256)))
    if isinstance(w, transformer.ByteLMWorkload):
      self.assertEqual(batch["inputs"].shape, (4, w.context_length))
      self.assertEqual(batch["inputs"].dtype, np.int32)
      np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
    else:
      self.assertEqual(batch["inputs"].dtype, np.float32)
      self.assertTrue(np.all(batch["targets"] < 10))

  @parameterized.named_parameters(NAMES)
  def test_eval_batches_cover_each_example_once(self, name):
    w = tiny(name)
    for split in ("train", "validation", "test"):
      batches = list(w.eval_batches(split, 7))
      weights = np.concatenate([b["weights"] for b in batches])
      for b in batches:
        self.assertEqual(len(b["inputs"]), 7)
        self.assertEqual(len(b["targets"]), 7)
      n = int(weights.sum())
      self.assertGreater(n, 0)
      np.testing.assert_array_equal(weights, np.arange(len(weights)) < n)  # Padding at the end.
      self.assertLess(len(weights) - n, 7)
      targets = np.concatenate([b["targets"] for b in batches])[:n]
      if isinstance(w, transformer.ByteLMWorkload):
        self.assertEqual(n, len(w._eval_offsets[split]))
        self.assertLen(np.unique(targets, axis=0), n)
      else:
        np.testing.assert_array_equal(targets, w._splits[split][1][:n])
        self.assertEqual(n, w.num_examples(split))
    with self.assertRaisesRegex(ValueError, "unknown split"):
      next(w.eval_batches("valid", 7))

  @parameterized.named_parameters(NAMES)
  def test_model_trains_and_evaluates(self, name):
    # One test per workload for everything that compiles, so that under
    # pytest-xdist each model is compiled in one process only.
    w = tiny(name)
    params, model_state = w.init_model_fn(jax.random.key(0))
    self.assertEqual(w.param_shapes, jax.tree.map(lambda x: spec.ShapeTuple(x.shape), params))
    self.assertEqual(w.num_params(), sum(x.size for x in jax.tree.leaves(params)))
    batch = w.train_batch(0, 0, 8)
    logits, _ = jax.eval_shape(
        functools.partial(w.model_fn, mode="eval", rng=None, update_batch_norm=False),
        params, batch, model_state,
    )
    num_classes = 256 if isinstance(w, transformer.ByteLMWorkload) else 10
    self.assertEqual(logits.shape, batch["targets"].shape + (num_classes,))

    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(params, model_state, opt_state, batch):
      def loss(params):
        logits, new_state = w.model_fn(params, batch, model_state, "train", jax.random.key(1),
                                       True)
        out = w.loss_fn(batch["targets"], logits)
        self.assertEqual(out["per_example"].shape, batch["targets"].shape)
        return out["summed"] / out["n_valid_examples"], new_state

      (value, model_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state)
      return optax.apply_updates(params, updates), model_state, opt_state, value

    trained, state, opt_state, losses = params, model_state, optimizer.init(params), []
    for _ in range(8):
      trained, state, opt_state, value = step(trained, state, opt_state, batch)
      losses.append(float(value))
    self.assertTrue(np.all(np.isfinite(losses)), losses)
    self.assertLess(losses[-1], 0.9 * losses[0], losses)
    if model_state is not None:  # Batch norm: training steps update the running statistics.
      self.assertFalse(np.allclose(jax.tree.leaves(state)[0], jax.tree.leaves(model_state)[0]))

    metrics = w.eval_model(trained, state, jax.random.key(0), "validation")
    self.assertIn(w.targets.metric, metrics)
    self.assertIn("loss", metrics)
    for value in metrics.values():
      self.assertIsInstance(value, float)
      self.assertTrue(np.isfinite(value))
    if w.targets.metric == "perplexity":
      # Exact: `_finalize` takes float(np.exp(loss)) of the same Python float (float64 exp).
      self.assertEqual(metrics["perplexity"], float(np.exp(metrics["loss"])))
    jitted = w._jitted_batch_stats
    w.eval_model(trained, state, None, "test")
    self.assertIs(w._jitted_batch_stats, jitted)
    self.assertEqual(jitted._cache_size(), 1)  # One batch shape: compiled once.


class RegistryTest(absltest.TestCase):

  def test_unknown_name_lists_the_valid_ones(self):
    with self.assertRaisesRegex(ValueError, "unknown workload 'mnist'.*logreg.*mnist1d_mlp"):
      workloads.get_workload("mnist")
    with self.assertRaisesRegex(ValueError, "unknown workload 'mnist1d_mlp_x'.*mnist1d_mlp_tanh"):
      workloads.get_workload("mnist1d_mlp_x")

  def test_calibrated_small_workloads_fit_a_cpu(self):
    for name in ("mnist1d_mlp", "mnist1d_cnn", "logreg", "stdlib_lm", *workloads.VARIANTS):
      targets = workloads.WORKLOADS[name].targets
      self.assertBetween(targets.max_allowed_runtime_sec, 10, 180)
      # At least ~5 evaluations within the budget, so time-to-target resolves.
      self.assertBetween(targets.eval_period_time_sec, 0.1, targets.max_allowed_runtime_sec / 5)


class VariantTest(parameterized.TestCase):
  """Named variants: one detail of a base workload changed, with their own targets."""

  def test_the_four_cpu_workloads_have_variants(self):
    self.assertCountEqual(workloads.VARIANTS.values(),
                          ["mnist1d_mlp", "mnist1d_cnn", "logreg", "stdlib_lm"])

  @parameterized.named_parameters((v, v, b) for v, b in workloads.VARIANTS.items())
  def test_selectable_by_name_with_own_coherent_targets(self, variant, base_name):
    cls, base_cls = workloads.WORKLOADS[variant], workloads.WORKLOADS[base_name]
    self.assertEqual(cls.name, variant)
    self.assertTrue(issubclass(cls, base_cls))
    self.assertIsInstance(tiny(variant), cls)
    tg, base_tg = cls.targets, base_cls.targets
    # The same task and step budget, its own calibrated targets.
    for field in ("metric", "mode", "measure", "step_hint", "max_steps", "eval_period_time_sec"):
      self.assertEqual(getattr(tg, field), getattr(base_tg, field), field)
    self.assertNotEqual((tg.validation, tg.test), (base_tg.validation, base_tg.test))
    self.assertBetween(tg.max_steps, tg.step_hint, (1 + base.MAX_FINAL_FRACTION) * tg.step_hint)
    self.assertEqual(tg.eval_period_steps, tg.max_steps // base.EVALS_PER_BUDGET)
    self.assertGreater(tg.max_allowed_runtime_sec, tg.eval_period_time_sec)
    self.assertIn("tools/calibrate_targets.py", tg.how_set)
    self.assertIn("19 of 20 seeds", tg.how_set)
    self.assertNotIn("PLACEHOLDER", tg.how_set)
    self.assertEqual(tg.tuned_baseline["optimizer"], "adamw")
    lr = tg.tuned_baseline["hyperparameters"]["learning_rate"]
    self.assertIn(f"best {lr:g}", tg.how_set)
    if tg.mode == "max":  # Accuracy well above chance (10 classes).
      self.assertBetween(tg.validation, 0.2, 1.0)
    else:
      self.assertGreater(tg.validation, 0)

  def _logits(self, name, params=None):
    w = tiny(name)
    params = w.init_model_fn(jax.random.key(0))[0] if params is None else params
    batch = w.train_batch(0, 0, 4)
    return params, np.asarray(w.model_fn(params, batch, None, "eval", None, False)[0])

  def test_mlp_tanh_changes_only_the_activation(self):
    params, logits = self._logits("mnist1d_mlp")
    params_v, logits_v = self._logits("mnist1d_mlp_tanh")
    jax.tree.map(np.testing.assert_array_equal, params, params_v)  # Same parameters ...
    self.assertFalse(np.allclose(logits, logits_v))  # ... different function:
    x = np.asarray(tiny("mnist1d_mlp").train_batch(0, 0, 4)["inputs"], np.float64)
    W0, b0, W1, b1 = (np.asarray(params[layer][k], np.float64)
                      for layer in ("Dense_0", "Dense_1") for k in ("kernel", "bias"))
    # Expected in float64 from the float32 data; the float32 model's error, propagated:
    # a dense layer of n inputs is an n-term dot plus a bias, (n + 1) u sum|terms|;
    h = np.tanh(x @ W0 + b0)
    err_pre = (x.shape[1] + 1) * U32 * (np.abs(x) @ np.abs(W0) + np.abs(b0))
    # tanh (derivative <= 1) passes its argument's error on, and adds its own, assumed
    # within 4 u relative (a few ulps);
    err_h = err_pre + 4 * U32 * np.abs(h)
    # the next layer carries |W1|^T err_h and adds its own rounding (on |h| + err_h).
    expected = h @ W1 + b1
    bound = err_h @ np.abs(W1) + (W1.shape[0] + 1) * U32 * ((np.abs(h) + err_h) @ np.abs(W1)
                                                             + np.abs(b1))
    np.testing.assert_array_less(np.abs(logits_v - expected), bound)

  def test_cnn_ln_adds_a_layer_norm_after_each_convolution(self):
    params, logits = self._logits("mnist1d_cnn")
    params_v, _ = self._logits("mnist1d_cnn_ln")
    norms = {k: params_v.pop(k) for k in [k for k in params_v if k.startswith("LayerNorm")]}
    self.assertCountEqual(norms, ["LayerNorm_0", "LayerNorm_1", "LayerNorm_2"])
    jax.tree.map(np.testing.assert_array_equal, params, params_v)  # The rest is the base's.
    P = workloads.ParameterType
    self.assertEqual(tiny("mnist1d_cnn_ln").model_params_types["LayerNorm_1"],
                     {"scale": P.LAYER_NORM_SCALE, "bias": P.LAYER_NORM_BIAS})
    # Scale invariance: scaling a convolution's kernel and bias leaves the output
    # as it is with the LayerNorm, not without it. Scaling by 2 scales every float32
    # rounding in the convolution and in the LayerNorm's mean and (fast) variance
    # exactly: Conv_1's output doubles, its mean doubles, its variance v quadruples,
    # and x - mean doubles, all exactly.
    double = lambda p: dict(p, Conv_1=jax.tree.map(lambda x: 2.0 * x, p["Conv_1"]))
    full = dict(params_v, **norms)
    w = tiny("mnist1d_cnn_ln")
    inputs = w.train_batch(0, 0, 4)["inputs"]
    capture = lambda p: w._model.apply({"params": p}, inputs, capture_intermediates=True)[1][
        "intermediates"]
    got, ref = capture(double(full)), capture(full)
    conv = np.asarray(ref["Conv_1"]["__call__"][0], np.float64)
    np.testing.assert_array_equal(got["Conv_1"]["__call__"][0], 2 * conv)
    y2 = np.asarray(got["LayerNorm_1"]["__call__"][0], np.float64)
    y1 = np.asarray(ref["LayerNorm_1"]["__call__"][0], np.float64)
    # So only eps differs: y2 / y1 = 2 rsqrt(4v + eps) / rsqrt(v + eps)
    # = sqrt((v + eps) / (v + eps / 4)) =: rho, about 1 + (3/8) eps / v. rho falls with v;
    # the float32 fast variance E[x^2] - E[x]^2 of n channels is within (2n + 4) u E[x^2].
    n, eps = conv.shape[-1], nn.LayerNorm().epsilon
    mean_sq = (conv**2).mean(-1, keepdims=True)
    v = np.maximum(conv.var(-1, keepdims=True) - (2 * n + 4) * U32 * mean_sq, 1e-30)
    rho = np.sqrt((v + eps) / (v + eps / 4))
    # Rounding: v + eps and 4v + eps (u each, halved by the square root), rsqrt (assumed
    # within 2 u each), the final (x - mean) * mul (u each; scale 1 and bias 0 exact): 7 u.
    np.testing.assert_array_less(np.abs(y2 - y1), (rho - 1 + 7 * U32) * np.abs(y1) + 1e-38)
    self.assertFalse(np.allclose(self._logits("mnist1d_cnn", double(params))[1], logits))

  def test_logreg_raw_keeps_raw_pixels(self):
    w, w_raw = tiny("logreg"), tiny("logreg_raw")
    for split in ("train", "validation", "test"):
      x, y = w_raw._splits[split]
      np.testing.assert_array_equal(y, w._splits[split][1])  # Same examples, same order.
      np.testing.assert_array_equal(x, np.round(x))  # Intensities 0..16, untouched.
      self.assertEqual((x.min(), x.max()), (0, 16))
    self.assertEqual(w_raw.param_shapes, w.param_shapes)
    # Standardising is affine per feature: the base features are the raw ones, standardised
    # as the workload does it (float64 training mean and std, constant features' std 1,
    # then float32). The raw intensities are small integers, exact in float32, so this
    # repeats the same float64 operations on the same values: exactly equal.
    for split in ("train", "validation", "test"):
      train = w_raw._splits["train"][0].astype(np.float64)
      mean, std = train.mean(0), train.std(0)
      std[std == 0] = 1.0
      x_raw = w_raw._splits[split][0].astype(np.float64)
      np.testing.assert_array_equal(w._splits[split][0], ((x_raw - mean) / std).astype(np.float32))

  def test_stdlib_lm_post_ln_normalises_after_each_block(self):
    self.assertFalse(tiny("stdlib_lm")._model.post_ln)
    self.assertTrue(tiny("stdlib_lm_post_ln")._model.post_ln)
    shapes, shapes_v = tiny("stdlib_lm").param_shapes, tiny("stdlib_lm_post_ln").param_shapes
    # Same blocks; no final LayerNorm (post-LN blocks end normalised).
    self.assertEqual(set(shapes) - set(shapes_v), {"LayerNorm_0"})
    self.assertEqual(shapes["Block_0"], shapes_v["Block_0"])
    x = jax.random.normal(jax.random.key(1), (2, 5, 8)) * 3 + 1
    mask = nn.make_causal_mask(jnp.zeros((2, 5)))
    outputs, ln_inputs = {}, []

    def record(f, args, kwargs, context):  # The LayerNorms' inputs.
      if isinstance(context.module, nn.LayerNorm):
        ln_inputs.append(args[0])
      return f(*args, **kwargs)

    for post_ln in (False, True):
      block = transformer.Block(num_heads=2, mlp_dim=8, post_ln=post_ln)
      variables = block.init(jax.random.key(2), x, mask, True, 0.0)
      ln_inputs.clear()
      with nn.intercept_methods(record):
        outputs[post_ln] = block.apply(variables, x, mask, True, 0.0)
    # LN's initial scale 1 and bias 0: y_i = (x_i - m) rsqrt(v + eps), x the last LN's input.
    y = np.asarray(outputs[True], np.float64)
    x_ln = np.asarray(ln_inputs[-1], np.float64)
    n, eps = x_ln.shape[-1], nn.LayerNorm().epsilon
    v = x_ln.var(-1)
    r = 1 / np.sqrt(v + eps)
    # Mean: exactly 0 but for rounding: the float32 mean m (n-term sum, divide: n u mean|x|)
    # shifts every y by (m_exact - m) r; each y rounds twice (x - m, times r: 2 u |y|);
    # y's float32 mean adds (n - 1) u mean|y| + u.
    bound = n * U32 * np.abs(x_ln).mean(-1) * r + (n + 2) * U32 * np.abs(y).mean(-1)
    np.testing.assert_array_less(np.abs(outputs[True].mean(-1)), bound)
    # Variance: v / (v + eps) (eps's effect, not rounding; shifts leave it alone). Rounding:
    # r's relative error, from the fast variance's (2n + 4) u E[x^2] / v (halved by the
    # square root), v + eps (u / 2) and rsqrt (assumed 2 u), enters twice; y's own 2 u, twice;
    # y's float32 two-pass variance, (n + 3) u.
    err_r = (n + 2) * U32 * (x_ln**2).mean(-1) / v + 2.5 * U32
    expected = v / (v + eps)
    np.testing.assert_array_less(np.abs(outputs[True].var(-1) - expected),
                                 expected * (2 * err_r + (n + 7) * U32))
    self.assertGreater(float(jnp.abs(outputs[False].mean(-1)).max()), 0.1)  # Pre-LN: residual.


class ParameterTypeTest(parameterized.TestCase):

  def test_transformer_parameters(self):
    types = tiny("stdlib_lm").model_params_types
    attention = types["Block_0"]["MultiHeadDotProductAttention_0"]
    P = workloads.ParameterType
    self.assertEqual(
        {k: (v["kernel"], v["bias"]) for k, v in attention.items()},
        {"query": (P.ATTENTION_Q, P.ATTENTION_BIAS), "key": (P.ATTENTION_K, P.ATTENTION_BIAS),
         "value": (P.ATTENTION_V, P.ATTENTION_BIAS), "out": (P.ATTENTION_OUT, P.ATTENTION_BIAS)})
    self.assertEqual(types["Embed_0"]["embedding"], P.EMBEDDING)
    self.assertEqual(types["positions"], P.EMBEDDING)
    self.assertEqual(types["LayerNorm_0"], {"scale": P.LAYER_NORM_SCALE, "bias": P.LAYER_NORM_BIAS})
    self.assertEqual(types["Dense_0"], {"kernel": P.WEIGHT, "bias": P.BIAS})

  def test_convolutions_and_batch_norm(self):
    P = workloads.ParameterType
    self.assertEqual(tiny("mnist1d_cnn").model_params_types["Conv_0"],
                     {"kernel": P.CONV_WEIGHT, "bias": P.BIAS})
    self.assertEqual(workloads.parameter_type(("BatchNorm_3", "scale"), 1), P.BATCH_NORM_SCALE)
    self.assertEqual(workloads.parameter_type(("Block_1", "BatchNorm_0", "bias"), 1),
                     P.BATCH_NORM_BIAS)
    self.assertEqual(workloads.parameter_type(("Dense_0", "kernel"), 2), P.WEIGHT)
    # "out" outside an attention module is just a layer named "out".
    self.assertEqual(workloads.parameter_type(("out", "kernel"), 2), P.WEIGHT)


class CommonTest(absltest.TestCase):

  def test_epochs_are_permutations_and_batches_straddle_them(self):
    n, bs = 10, 4
    seen = np.concatenate([_common.epoch_indices(1, t, bs, n) for t in range(5)])  # 2 epochs.
    np.testing.assert_array_equal(np.sort(seen[:n]), np.arange(n))
    np.testing.assert_array_equal(np.sort(seen[n:2 * n]), np.arange(n))
    self.assertFalse(np.array_equal(seen[:n], seen[n:2 * n]))
    np.testing.assert_array_equal(_common.epoch_indices(1, 2, bs, n), seen[8:12])

  def test_loss_broadcasts_a_per_example_mask_over_tokens(self):
    logits = jnp.zeros((2, 3, 5))
    labels = jnp.zeros((2, 3), jnp.int32)
    loss = jax.jit(_common.softmax_cross_entropy, static_argnums=3)
    out = loss(labels, logits, jnp.array([1.0, 0.0]), 0.0)
    self.assertEqual(float(out["n_valid_examples"]), 3)
    # 3 tokens of log(sum exp 0) = log 5: float32 log within 2 ulps (4 u; its argument 5 is exact),
    # then a sum of 3 equal non-negative terms, 2 (n - 1) u = 4 u.
    np.testing.assert_allclose(out["summed"], 3 * np.log(5), rtol=8 * U32)
    smoothed = loss(labels, logits, None, 0.1)
    # 6 tokens of -sum_k q_k log p_k = log 5 (sum q = 1): smoothed q (2 roundings), log_softmax
    # (log 5 within 2 ulps: 4 u; 0 - log 5 exact), q log p (1): 2k u = 6 u for k = 3, plus 4 u;
    # non-negative sums of 5 classes then 6 tokens, 2 (n - 1) u: 8 u + 10 u. 28 u in all.
    np.testing.assert_allclose(smoothed["summed"], 6 * np.log(5), rtol=28 * U32)


class Mnist1dTest(absltest.TestCase):

  def test_generation_leaves_global_rngs_alone(self):
    np.random.seed(7)
    random.seed(7)
    workloads.get_workload("mnist1d_mlp", num_samples=200, num_validation=20)
    self.assertEqual(np.random.randint(1 << 30), np.random.RandomState(7).randint(1 << 30))
    self.assertEqual(random.random(), random.Random(7).random())

  def test_rejects_a_validation_set_larger_than_the_training_part(self):
    with self.assertRaisesRegex(ValueError, "num_validation"):
      workloads.get_workload("mnist1d_cnn", num_samples=100, num_validation=90)


class LogregTest(absltest.TestCase):

  def test_is_one_dense_layer_on_standardised_features(self):
    w = tiny("logreg")
    self.assertEqual(w.param_shapes, {"kernel": spec.ShapeTuple((64, 10)), "bias": spec.ShapeTuple((10,))})
    x = w._splits["train"][0].astype(np.float64)
    # The features are float32 roundings (u relative) of exactly standardised float64 ones
    # (float64 work: n 2^-53 relative, with n = 1197 rows); their float64 mean and std:
    rms = np.sqrt((x**2).mean(0))
    err = U32 + 4 * len(x) * 2.0**-53
    np.testing.assert_array_less(np.abs(x.mean(0)), err * np.abs(x).mean(0) + 1e-300)
    std = x.std(0)  # std is a norm of the centred values: it moves by at most rms(error).
    self.assertTrue(np.all((np.abs(std - 1) <= err * rms) | (std == 0)))
    self.assertEqual([len(w._splits[s][1]) for s in ("train", "validation", "test")],
                     [1197, 300, 300])


class Cifar10Test(absltest.TestCase):

  def test_missing_file_is_named(self):
    path = _fake_cifar(tempfile.mkdtemp(dir=_TMP.name), skip="data_batch_3")
    with self.assertRaisesRegex(FileNotFoundError, "data_batch_3"):
      workloads.get_workload("cifar10_resnet", data_dir=path)

  def test_validation_is_the_end_of_train(self):
    w = tiny("cifar10_resnet")
    self.assertEqual([len(w._splits[s][1]) for s in ("train", "validation", "test")], [34, 6, 10])

  def test_augmentation_is_a_padded_crop_or_its_flip(self):
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    out = cifar10.augment(images, np.random.default_rng(1))
    padded = np.pad(images, ((0, 0), (4, 4), (4, 4), (0, 0)))
    for image, crop in zip(padded, out):
      candidates = [image[y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
      self.assertTrue(any(np.array_equal(crop, c) or np.array_equal(crop[:, ::-1], c)
                          for c in candidates))


  def test_running_statistics_change_only_with_update_batch_norm(self):
    w = tiny("cifar10_resnet")
    params, state = jax.eval_shape(w.init_model_fn, jax.random.key(0))
    batch = w.train_batch(0, 0, 4)
    for update in (False, True):
      model_fn = lambda p, s, u=update: w.model_fn(p, batch, s, "train", None, u)[1]
      jaxpr = jax.make_jaxpr(model_fn)(params, state).jaxpr
      state_vars = jaxpr.invars[len(jax.tree.leaves(params)):]
      self.assertEqual(jaxpr.outvars == state_vars, not update)  # Passed through untouched.


class TextTest(absltest.TestCase):

  def test_splits_share_no_file(self):
    files = [(f"f{i}", bytes([i]) * 100) for i in range(20)]
    splits = transformer.split_by_file(files, 0.1, 0.1, min_bytes=10)
    owners = {s: set(np.unique(v).tolist()) for s, v in splits.items()}
    self.assertEqual(sum(map(len, owners.values())), 20)
    self.assertFalse(owners["train"] & owners["validation"])
    self.assertFalse(owners["train"] & owners["test"])
    self.assertFalse(owners["validation"] & owners["test"])
    self.assertEqual(len(splits["validation"]), 200)

  def test_one_file_is_split_by_position(self):
    path = os.path.join(tempfile.mkdtemp(dir=_TMP.name), "book.txt")
    with open(path, "w") as f:
      f.write("abcdefghij" * 100)
    w = workloads.get_workload("lm_transformer", data_dir=path, **TINY["lm_transformer"])
    self.assertEqual([w.num_bytes(s) for s in ("train", "validation", "test")], [800, 100, 100])

  def test_lm_transformer_errors(self):
    with self.assertRaisesRegex(ValueError, "needs data_dir"):
      workloads.get_workload("lm_transformer")
    with self.assertRaisesRegex(FileNotFoundError, "does not exist"):
      workloads.get_workload("lm_transformer", data_dir="/nonexistent/text")

  def test_hidden_files_are_skipped(self):
    w = tiny("lm_transformer")
    total = sum(w.num_bytes(s) for s in ("train", "validation", "test"))
    self.assertLess(total, 100_000)

  def test_stdlib_text_is_python_source(self):
    w = tiny("stdlib_lm")
    self.assertIn(b"def ", w._splits["train"].tobytes())
    self.assertLessEqual(sum(w.num_bytes(s) for s in ("train", "validation", "test")), 200_000)


if __name__ == "__main__":
  absltest.main()
