"""Learning-rate schedules: each against a plain transcription of its paper.

The `_reference_*` functions below transcribe each paper's formula (or, for
1cycle, torch's `OneCycleLR.get_lr`) step by step with loops and
if-statements, in float64, independently of `optimizers/schedules.py`. The
schedules run jitted over traced int32 steps and must match them at every
step, including the boundaries and past the end.
"""

from tests import test_util  # Sets up simulated CPU devices first.

import math
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import schedule_config
import optimizers
from optimizers import schedules


def _values(schedule, num_steps):
  """The schedule at steps 0 .. num_steps - 1: jitted, traced int32 steps."""
  steps = jnp.arange(num_steps, dtype=jnp.int32)
  out = jax.jit(jax.vmap(schedule))(steps)
  assert out.dtype == jnp.float32, out.dtype
  return np.asarray(out, np.float64)


U32 = 2.0**-24  # float32 unit roundoff.
# Float32 roundings, in units of the schedule's peak, between a schedule and
# its float64 transcription. A value is an affine combination of peak-sized
# terms: the fraction t / T and the interpolation init + (peak - init) s (4
# roundings); the shape's transcendental (cos, sqrt, exp, pow: within 2 ulps)
# plus its argument's rounding times the argument's condition number: pi for
# cos(pi x) on [0, 1], |b ln n| <= 0.51 ln(2^34) = 12 for the power law n^b,
# |t ln gamma| <= 1 for exp_range's gamma^t (14 at most); 4 + 2 + 14 = 20,
# 24 with margin. Relative to the peak, not to each value: near the end of a
# decay the value is a difference of peak-sized terms (cancellation), so its
# own relative error is unbounded (1.9e3 u measured for the power law's tail).
SCHEDULE_ROUNDINGS = 24
# A refined schedule is a float64 table (relative error ~1e-14: cumulative sums
# of <= 200 positive terms), rounded once to float32 (u relative) and looked
# up exactly: 2k u for k = 1 rounding, relative to each value.
REFINED_ROUNDINGS = 2


def _assert_matches(schedule, reference, num_steps):
  """Jitted over traced steps, the schedule matches the reference at every step.

  To `SCHEDULE_ROUNDINGS` float32 roundings of the peak (the largest
  reference value). Scalar steps, jitted and eager, are checked once per
  family (EveryScheduleTest).
  """
  want = np.array([reference(t) for t in range(num_steps)], np.float64)
  _assert_near(_values(schedule, num_steps), want, np.abs(want).max())


def _assert_near(got, want, peak):
  """`got` (float32 schedule values) is `want` (exact) to SCHEDULE_ROUNDINGS roundings of `peak`.

  `peak`: the schedule's largest value (the magnitude its terms have), not
  the compared value's: a tail value is a difference of peak-sized terms.
  """
  np.testing.assert_allclose(got, want, rtol=0, atol=SCHEDULE_ROUNDINGS * U32 * peak)


# --- Transcriptions of the papers ---------------------------------------------------


def _cooldown_shape(shape, x):
  if shape == "linear":
    return 1 - x
  if shape == "cosine":
    return (1 + math.cos(math.pi * x)) / 2
  if shape == "1-sqrt":
    return 1 - math.sqrt(x)
  if shape == "exponential":  # IBM dolomite-engine's decay to zero.
    return (math.exp(1 - x) - 1) / (math.e - 1)
  raise AssertionError(shape)


def _reference_wsd(t, peak, total, warmup, fraction, shape, init=0.0, end=0.0):
  """Hägele et al. 2024: linear warmup, constant, cooldown of the last fraction."""
  cooldown = round(fraction * total)
  start = total - cooldown
  if t < warmup:
    return init + (peak - init) * t / warmup
  if t < start:
    return peak
  if t < total:
    x = (t - start) / cooldown
    return end + (peak - end) * _cooldown_shape(shape, x)
  return end


def _reference_d2z(t, peak, total, warmup, init=0.0):
  """Bergsma et al. 2025: warmup, then linear to zero at the end."""
  if t < warmup:
    return init + (peak - init) * t / warmup
  if t < total:
    return peak * (1 - (t - warmup) / (total - warmup))
  return 0.0


def _reference_rex(t, peak, total, warmup, init=0.0):
  """Chen et al. 2022: (1 - z) / (1/2 + 1/2 (1 - z)) after warmup."""
  if t < warmup:
    return init + (peak - init) * t / warmup
  if t >= total:
    return 0.0
  z = (t - warmup) / (total - warmup)
  return peak * (1 - z) / (0.5 + 0.5 * (1 - z))


def _reference_rex_lr_code(t, peak, total):
  """github.com/IvanVassi/REX_LR's get_lr (min_val = 0, one cycle of `total`)."""
  z = (total - t) / total
  return peak * (z / (1 - 0.9 + 0.9 * z))


def _reference_power(t, batch, tokens_per_step, total, warmup, decay, a, b, max_lr, shape):
  """Shen et al. 2024: eta(n) in the tokens n, warmup, power law, decay."""

  def eta_power(n):
    if n == 0:
      return max_lr
    return min(max_lr, batch * a * n**b)

  n = t * tokens_per_step
  n_warmup = warmup * tokens_per_step
  n_decay = decay * tokens_per_step
  n_total = total * tokens_per_step
  if n < n_warmup:
    return n / n_warmup * eta_power(n_warmup)
  if decay == 0 or n <= n_total - n_decay:
    return eta_power(n)
  x = min(1.0, (n - (n_total - n_decay)) / n_decay)
  return _cooldown_shape(shape, x) * eta_power(n_total - n_decay)


def _reference_clr_scale(t, step_size, mode, gamma):
  """Smith 2017, Section 3.1, and torch's CyclicLR scale functions."""
  cycle = math.floor(1 + t / (2 * step_size))
  x = abs(t / step_size - 2 * cycle + 1)
  if mode == "triangular":
    scale = 1.0
  elif mode == "triangular2":
    scale = 1 / (2.0 ** (cycle - 1))
  else:
    scale = gamma**t
  return max(0.0, 1 - x) * scale


def _reference_one_cycle(t, total, pct_start, strategy, three_phase, values):
  """torch.optim.lr_scheduler.OneCycleLR.get_lr, for one param group.

  `values` names the phases' start and end values: (initial, peak, final)
  for the learning rate, (max_m, base_m, max_m) for the momentum.
  """
  first, second, last = values
  if three_phase:
    phases = [
        (float(pct_start * total) - 1, first, second),
        (float(2 * pct_start * total) - 2, second, first),
        (total - 1, first, last),
    ]
  else:
    phases = [
        (float(pct_start * total) - 1, first, second),
        (total - 1, second, last),
    ]

  def anneal(start, end, pct):
    if strategy == "cos":
      return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start

  t = min(t, total - 1)  # torch raises past total_steps; steplab holds the end.
  start_step = 0
  for i, (end_step, start_value, end_value) in enumerate(phases):
    if t <= end_step or i == len(phases) - 1:
      pct = (t - start_step) / (end_step - start_step)
      return anneal(start_value, end_value, pct)
    start_step = end_step
  raise AssertionError("unreachable")


def _reference_median_filter(values, width):
  """The refinement authors' filter: nearest padding at the start, reflection at the end."""
  n = len(values)
  half = width // 2
  out = []
  for i in range(n):
    window = []
    for j in range(i - half, i + half + 1):
      if j < 0:
        window.append(values[0])
      elif j < n:
        window.append(values[j])
      else:  # Mirror about the last element (numpy's "reflect").
        window.append(values[2 * (n - 1) - j])
    out.append(sorted(window)[half])
  return out


def _reference_refined(norms, tau, power):
  """Defazio et al. 2023, Algorithm 1: w_t = g_t^-p sum_{s > t} g_s^-p, normalised."""
  n = len(norms)
  width = 2 * (int(tau * n) // 2) + 1
  g = _reference_median_filter(list(norms), width)
  w = []
  for t in range(n):
    tail = 0.0
    for s in range(t + 1, n):
      tail += g[s] ** -power
    w.append(g[t] ** -power * tail)
  top = max(w)
  return [v / top for v in w]


# --- WSD, D2Z, REX -------------------------------------------------------------------


class WarmupStableDecayTest(parameterized.TestCase):

  @parameterized.product(shape=["linear", "cosine", "1-sqrt"], warmup_and_fraction=[(0, 0.2), (10, 0.37)])
  def test_matches_the_paper_at_every_step(self, shape, warmup_and_fraction):
    warmup, fraction = warmup_and_fraction
    sched = optimizers.warmup_stable_decay_schedule(
        2.0, 100, warmup_steps=warmup, decay_fraction=fraction, decay_shape=shape, init_value=0.1,
        end_value=0.05)
    _assert_matches(sched, lambda t: _reference_wsd(t, 2.0, 100, warmup, fraction, shape, 0.1, 0.05),
                    120)

  @parameterized.parameters(("linear", 0.5), ("cosine", 0.5), ("1-sqrt", 1 - math.sqrt(0.5)))
  def test_boundaries(self, shape, mid):
    sched = optimizers.warmup_stable_decay_schedule(1.0, 1000, warmup_steps=100, decay_shape=shape)
    v = _values(sched, 1100)
    self.assertEqual(v[0], 0.0)
    _assert_near(v[50], 0.5, peak=1.0)
    self.assertEqual(v[100], 1.0)  # End of warmup.
    self.assertEqual(v[800], 1.0)  # Cooldown (last 200 steps) starts at peak.
    self.assertLess(v[801], 1.0)
    _assert_near(v[900], mid, peak=1.0)
    self.assertGreater(v[999], 0.0)
    np.testing.assert_array_equal(v[1000:], 0.0)  # total_steps and beyond: end_value.
    self.assertTrue(np.all(np.diff(v[100:]) <= 0))

  def test_no_cooldown_holds_the_peak_until_the_end(self):
    sched = optimizers.warmup_stable_decay_schedule(1.0, 10, decay_fraction=0.0, end_value=0.3)
    # Exact: the constant pieces select float32(peak) and float32(end), no arithmetic.
    np.testing.assert_array_equal(_values(sched, 12), np.float32([1.0] * 10 + [0.3] * 2))

  def test_bad_arguments_name_themselves(self):
    f = optimizers.warmup_stable_decay_schedule
    with self.assertRaisesRegex(ValueError, r"warmup_stable_decay_schedule: `decay_fraction` must be in \[0"):
      f(1.0, 100, decay_fraction=1.5)
    with self.assertRaisesRegex(ValueError, "warmup_steps.*cooldown"):
      f(1.0, 100, warmup_steps=90, decay_fraction=0.2)
    with self.assertRaisesRegex(ValueError, "decay_shape.*1-sqrt"):
      f(1.0, 100, decay_shape="exp")
    with self.assertRaisesRegex(ValueError, "total_steps"):
      f(1.0, 0)
    with self.assertRaisesRegex(ValueError, "total_steps.*integer"):
      f(1.0, 100.0)
    with self.assertRaisesRegex(ValueError, "peak_value"):
      f(-1.0, 100)
    with self.assertRaisesRegex(ValueError, "warmup_steps"):
      f(1.0, 100, warmup_steps=-1)


class DecayToZeroAndRexTest(parameterized.TestCase):

  @parameterized.parameters(0, 1, 25)
  def test_d2z_matches_the_paper(self, warmup):
    sched = optimizers.linear_decay_to_zero_schedule(3.0, 100, warmup_steps=warmup, init_value=0.3)
    _assert_matches(sched, lambda t: _reference_d2z(t, 3.0, 100, warmup, 0.3), 110)

  def test_d2z_boundaries(self):
    v = _values(optimizers.linear_decay_to_zero_schedule(1.0, 100, warmup_steps=20), 120)
    self.assertEqual(v[0], 0.0)
    self.assertEqual(v[20], 1.0)
    _assert_near(v[60], 0.5, peak=1.0)
    self.assertGreater(v[99], 0.0)
    np.testing.assert_array_equal(v[100:], 0.0)  # Exactly zero at total_steps.

  @parameterized.parameters(0, 10)
  def test_rex_matches_the_paper(self, warmup):
    sched = optimizers.rex_schedule(1.5, 100, warmup_steps=warmup)
    _assert_matches(sched, lambda t: _reference_rex(t, 1.5, 100, warmup), 110)

  def test_rex_beta_09_is_the_rex_lr_code(self):
    sched = optimizers.rex_schedule(2.0, 50, beta=0.9)
    _assert_matches(sched, lambda t: _reference_rex_lr_code(t, 2.0, 50), 50)

  def test_rex_boundaries_and_shape(self):
    v = _values(optimizers.rex_schedule(1.0, 100), 110)
    self.assertEqual(v[0], 1.0)
    _assert_near(v[50], 2.0 / 3.0, peak=1.0)  # (1/2) / (3/4): above linear's 1/2.
    np.testing.assert_array_equal(v[100:], 0.0)
    linear = 1 - np.arange(100) / 100
    self.assertTrue(np.all(v[1:100] > linear[1:100]))
    _assert_near(_values(optimizers.rex_schedule(1.0, 100, beta=0.0), 100), linear, peak=1.0)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "linear_decay_to_zero_schedule: `warmup_steps` must be less"):
      optimizers.linear_decay_to_zero_schedule(1.0, 10, warmup_steps=10)
    with self.assertRaisesRegex(ValueError, r"rex_schedule: `beta` must be in \[0.0, 1.0\)"):
      optimizers.rex_schedule(1.0, 10, beta=1.0)
    with self.assertRaisesRegex(ValueError, "rex_schedule: `init_value`"):
      optimizers.rex_schedule(1.0, 10, init_value=float("nan"))


# --- Power scheduler ---------------------------------------------------------------------

_POWER = dict(batch_size=8, tokens_per_step=8 * 2048, a=4.0, b=-0.51)


class PowerScheduleTest(parameterized.TestCase):

  @parameterized.parameters(("exponential", 0), ("exponential", 50), ("exponential", 300), ("linear", 50),
                            ("cosine", 300), ("1-sqrt", 0))
  def test_matches_the_paper(self, shape, warmup):
    sched = optimizers.power_schedule(total_steps=1000, warmup_steps=warmup, decay_steps=200,
                                      decay_shape=shape, **_POWER)
    reference = lambda t: _reference_power(t, 8, 8 * 2048, 1000, warmup, 200, 4.0, -0.51, 0.02, shape)
    _assert_matches(sched, reference, 1050)

  def test_boundaries(self):
    sched = optimizers.power_schedule(total_steps=1000, warmup_steps=300, decay_steps=200, **_POWER)
    v = _values(sched, 1100)
    eta = lambda step: min(0.02, 8 * 4.0 * (step * 8 * 2048) ** -0.51)
    self.assertEqual(v[0], 0.0)
    self.assertLess(eta(300), 0.02)  # The power law is below the cap here ...
    self.assertEqual(eta(100), 0.02)  # ... and capped earlier.
    peak = eta(300)  # The warmup's end; the power law falls after it.
    _assert_near(v[150], 0.5 * eta(300), peak)
    _assert_near(v[300], eta(300), peak)  # End of warmup.
    _assert_near(v[800], eta(800), peak)  # Decay starts from eta_power(N - N_decay).
    _assert_near(v[900], eta(800) * (math.exp(0.5) - 1) / (math.e - 1), peak)
    np.testing.assert_array_equal(v[1000:], 0.0)

  def test_without_decay_it_needs_no_training_length(self):
    sched = optimizers.power_schedule(total_steps=100, **_POWER)
    v = _values(sched, 3000)
    # n = 0 and small n: capped at max_value, which jnp.minimum / jnp.where select exactly.
    np.testing.assert_array_equal(v[:60], np.float32(0.02))
    _assert_near(v[2999], 8 * 4.0 * (2999 * 8 * 2048) ** -0.51, peak=0.02)
    self.assertTrue(np.all(np.diff(v) <= 0))

  def test_bad_arguments(self):
    f = optimizers.power_schedule
    with self.assertRaisesRegex(ValueError, "power_schedule: `warmup_steps` \\+ `decay_steps`"):
      f(8, 1024, total_steps=100, warmup_steps=60, decay_steps=50)
    with self.assertRaisesRegex(ValueError, "batch_size"):
      f(0, 1024, total_steps=100)
    with self.assertRaisesRegex(ValueError, "tokens_per_step"):
      f(8, -1, total_steps=100)
    with self.assertRaisesRegex(ValueError, "`b` must be in"):
      f(8, 1024, total_steps=100, b=0.5)
    with self.assertRaisesRegex(ValueError, "decay_shape.*exponential"):
      f(8, 1024, total_steps=100, decay_shape="step")


# --- Cyclical learning rates and 1cycle -------------------------------------------------------


class CyclicTest(parameterized.TestCase):

  @parameterized.parameters(("triangular", 1.0), ("triangular2", 1.0), ("exp_range", 0.995))
  def test_matches_the_paper(self, mode, gamma):
    sched = optimizers.cyclic_schedule(0.1, 1.0, 20, mode=mode, gamma=gamma)
    _assert_matches(sched, lambda t: 0.1 + 0.9 * _reference_clr_scale(t, 20, mode, gamma), 200)
    momentum = optimizers.cyclic_momentum_schedule(0.8, 0.9, 20, mode=mode, gamma=gamma)
    _assert_matches(momentum, lambda t: 0.9 - 0.1 * _reference_clr_scale(t, 20, mode, gamma), 200)

  def test_boundaries(self):
    v = _values(optimizers.cyclic_schedule(0.1, 1.0, 10, mode="triangular2"), 45)
    _assert_near(v[0], 0.1, peak=1.0)
    _assert_near(v[10], 1.0, peak=1.0)  # Peak after step_size.
    _assert_near(v[20], 0.1, peak=1.0)  # Base after a cycle.
    _assert_near(v[30], 0.55, peak=1.0)  # Second peak: half the amplitude.
    _assert_near(v[40], 0.1, peak=1.0)
    m = _values(optimizers.cyclic_momentum_schedule(0.85, 0.95, 10), 21)
    _assert_near(m[0], 0.95, peak=0.95)  # Momentum opposite to the rate.
    _assert_near(m[10], 0.85, peak=0.95)
    e = _values(optimizers.cyclic_schedule(0.0, 1.0, 10, mode="exp_range", gamma=0.9), 11)
    _assert_near(e[10], 0.9**10, peak=1.0)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "cyclic_schedule: `step_size`"):
      optimizers.cyclic_schedule(0.1, 1.0, 0)
    with self.assertRaisesRegex(ValueError, "cyclic_schedule: `mode`.*triangular2"):
      optimizers.cyclic_schedule(0.1, 1.0, 10, mode="sine")
    with self.assertRaisesRegex(ValueError, "cyclic_schedule: `gamma`"):
      optimizers.cyclic_schedule(0.1, 1.0, 10, gamma=1.5)
    with self.assertRaisesRegex(ValueError, "cyclic_schedule: `max_value`"):
      optimizers.cyclic_schedule(0.5, 0.1, 10)
    with self.assertRaisesRegex(ValueError, "cyclic_momentum_schedule: `max_momentum`"):
      optimizers.cyclic_momentum_schedule(0.8, 1.0, 10)


class OneCycleTest(parameterized.TestCase):

  @parameterized.parameters(
      (1000, 0.3, "cos", False), (1000, 0.3, "linear", True), (10, 0.25, "cos", True),
      (10, 0.25, "linear", False), (37, 0.1, "cos", True), (20, 0.0, "linear", False),
      (20, 1.0, "cos", False))
  def test_matches_torch_one_cycle_lr(self, total, pct, strategy, three_phase):
    sched = optimizers.one_cycle_schedule(0.5, total, pct_start=pct, anneal_strategy=strategy,
                                          div_factor=20.0, final_div_factor=100.0, three_phase=three_phase)
    values = (0.5 / 20.0, 0.5, 0.5 / 20.0 / 100.0)
    _assert_matches(sched, lambda t: _reference_one_cycle(t, total, pct, strategy, three_phase, values),
                    total + 5)
    momentum = optimizers.one_cycle_momentum_schedule(
        total, base_momentum=0.8, max_momentum=0.97, pct_start=pct, anneal_strategy=strategy,
        three_phase=three_phase)
    _assert_matches(momentum,
                    lambda t: _reference_one_cycle(t, total, pct, strategy, three_phase, (0.97, 0.8, 0.97)),
                    total + 5)

  def test_boundaries(self):
    v = _values(optimizers.one_cycle_schedule(1.0, 100), 110)  # Peak at step 0.3 * 100 - 1 = 29.
    _assert_near(v[0], 1.0 / 25.0, peak=1.0)
    self.assertEqual(int(np.argmax(v)), 29)
    _assert_near(v[29], 1.0, peak=1.0)
    # min from step T - 1 on: peak + (min - peak)(1 - cos(pi)) / 2 cancels to min = 4e-6, so
    # to the peak's roundings (1.4e-6), which still tells it from 0 and from the initial 0.04.
    _assert_near(v[99:], 1.0 / 25.0 / 1e4, peak=1.0)
    m = _values(optimizers.one_cycle_momentum_schedule(100), 110)
    _assert_near([m[0], m[29], m[99], m[105]], [0.95, 0.85, 0.95, 0.95], peak=0.95)
    # optax's one-cycle peaks a step later and reaches its minimum only at T.
    optax_values = _values(optax.cosine_onecycle_schedule(100, 1.0), 101)
    self.assertEqual(int(np.argmax(optax_values)), 30)

  def test_three_phase_boundaries(self):
    v = _values(optimizers.one_cycle_schedule(1.0, 100, three_phase=True), 100)
    self.assertEqual(int(np.argmax(v)), 29)
    _assert_near(v[58], 1.0 / 25.0, peak=1.0)  # Back at initial at 2P - 2.
    m = _values(optimizers.one_cycle_momentum_schedule(100, three_phase=True), 100)
    _assert_near(m[58:], 0.95, peak=0.95)  # Held at max_momentum in phase 3.

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, r"one_cycle_schedule: `pct_start` must be in \[0.0, 1.0\]"):
      optimizers.one_cycle_schedule(1.0, 100, pct_start=1.5)
    with self.assertRaisesRegex(ValueError, "one_cycle_schedule: `anneal_strategy`"):
      optimizers.one_cycle_schedule(1.0, 100, anneal_strategy="exp")
    with self.assertRaisesRegex(ValueError, "three_phase.*pct_start"):
      optimizers.one_cycle_schedule(1.0, 100, pct_start=0.6, three_phase=True)
    with self.assertRaisesRegex(ValueError, "div_factor"):
      optimizers.one_cycle_schedule(1.0, 100, div_factor=0.0)
    with self.assertRaisesRegex(ValueError, "one_cycle_momentum_schedule: `max_momentum`"):
      optimizers.one_cycle_momentum_schedule(100, base_momentum=0.9, max_momentum=0.8)
    with self.assertRaisesRegex(ValueError, "one_cycle_momentum_schedule: `base_momentum`"):
      optimizers.one_cycle_momentum_schedule(100, base_momentum=1.0)

  @parameterized.parameters("radam", "adamw")
  def test_momentum_cycles_b1_through_inject_hyperparams(self, name):
    factory = optimizers.radam if name == "radam" else optax.adamw
    total = 20
    lr = optimizers.one_cycle_schedule(0.1, total)
    b1 = optimizers.one_cycle_momentum_schedule(total)
    opt = optax.inject_hyperparams(factory)(learning_rate=lr, b1=b1)
    params = {"w": jnp.linspace(-1.0, 1.0, 4)}
    grads = [{"w": jnp.asarray(np.random.default_rng(t).normal(size=4), jnp.float32)} for t in range(6)]
    state = opt.init(params)
    update = jax.jit(opt.update)
    by_hand = factory(learning_rate=float(lr(0)), b1=float(b1(0))).init(params)  # Same state layout.
    # The by-hand step gets the float32 hyperparameters the injected update used (recorded in its
    # state: the scheduled learning rate and b1, and b2, eps, ... as float32 arrays), as traced
    # arguments of a jitted update: 1 - b1, b2^t and the bias corrections are then the same float32
    # operations on the same values as under inject_hyperparams.
    by_hand_update = jax.jit(lambda g, s, p, hp: factory(**hp).update(g, s, p))
    # Eager schedule vs the same schedule jitted inside the update: each within
    # SCHEDULE_ROUNDINGS of its peak of the exact value, so twice that apart.
    apart = lambda peak: 2 * SCHEDULE_ROUNDINGS * U32 * peak
    for t, g in enumerate(grads):
      updates, state = update(g, state, params)
      # The state records the b1 the update used: the schedule at the step count before it.
      np.testing.assert_allclose(state.hyperparams["b1"], b1(t), rtol=0, atol=apart(0.95))
      np.testing.assert_allclose(state.hyperparams["learning_rate"], lr(t), rtol=0, atol=apart(0.1))
      expected, by_hand = by_hand_update(g, by_hand, params, state.hyperparams)
      # Exact: the same float32 operations on the same float32 inputs, in the same order.
      np.testing.assert_array_equal(updates["w"], expected["w"])
    self.assertLess(float(state.hyperparams["b1"]), 0.95)  # It moved.
    # A constant b1 gives other updates, so the cycled b1 reached the optimizer.
    constant = optax.inject_hyperparams(factory)(learning_rate=lr, b1=0.95)
    cstate = constant.init(params)
    for g in grads:
      cupdates, cstate = constant.update(g, cstate, params)
    self.assertGreater(float(jnp.max(jnp.abs(cupdates["w"] - updates["w"]))), 1e-6)


# --- Refined schedules ------------------------------------------------------------------------


class RefinedScheduleTest(parameterized.TestCase):

  @parameterized.parameters(1, 2)
  def test_constant_norms_give_the_linear_decay(self, power):
    sched = optimizers.refined_schedule(np.full(50, 3.0), 2.0, norm_power=power)
    _assert_matches(sched, lambda t: 2.0 * max(0, 49 - t) / 49, 55)

  def test_hand_checked_example(self):
    # p = 2: g^-2 = [1, 1/4, 1, 1/4]; tails [3/2, 5/4, 1/4, 0]; w = [3/2, 5/16, 1/4, 0].
    sched = optimizers.refined_schedule([1.0, 2.0, 1.0, 2.0], 1.0, smoothing_window=0.0)
    # REFINED_ROUNDINGS: the float64 table rounded once to float32.
    np.testing.assert_allclose(_values(sched, 6), [1.0, 5 / 24, 1 / 6, 0.0, 0.0, 0.0],
                               rtol=REFINED_ROUNDINGS * U32, atol=0)
    # p = 1 (Adam, l1 norms): g^-1 = [1, 1/2, 1, 1/2]; w = [2, 3/4, 1/2, 0].
    sched = optimizers.refined_schedule([1.0, 2.0, 1.0, 2.0], 1.0, smoothing_window=0.0, norm_power=1)
    np.testing.assert_allclose(_values(sched, 4), [1.0, 3 / 8, 1 / 4, 0.0], rtol=REFINED_ROUNDINGS * U32, atol=0)

  @parameterized.parameters((0.0, 2), (0.05, 1), (0.1, 2), (0.3, 1))
  def test_matches_algorithm_1(self, tau, power):
    rng = np.random.default_rng(3)
    t = np.arange(200)
    norms = (1.0 + t / 50.0) * np.exp(0.3 * rng.normal(size=200))  # Rising, noisy norms.
    norms[:10] *= 0.2  # Small early norms: an automatic warmup.
    sched = optimizers.refined_schedule(norms, 0.5, smoothing_window=tau, norm_power=power)
    reference = _reference_refined(norms, tau, power)
    _assert_matches(sched, lambda s: 0.5 * reference[s] if s < 200 else 0.0, 205)
    v = _values(sched, 200)
    self.assertEqual(float(np.max(v)), 0.5)  # Exact: 0.5 * (w / max w = 1.0), a float32.
    self.assertEqual(v[-1], 0.0)

  def test_median_filter_matches_the_authors_padding(self):
    rng = np.random.default_rng(0)
    values = rng.normal(size=60)
    for width in (1, 3, 7, 21, 59):
      np.testing.assert_array_equal(schedules.median_filter(values, width),
                                    _reference_median_filter(list(values), width))

  def test_median_filter_removes_spikes(self):
    norms = np.ones(100)
    norms[[30, 31, 70]] = 50.0  # Outliers would nearly zero the schedule there.
    linear = 1 - np.arange(100) / 99
    # The filtered norms are all 1: the float64 table is (99 - t) / 99, rounded once to float32.
    np.testing.assert_allclose(_values(optimizers.refined_schedule(norms, 1.0, smoothing_window=0.1), 100),
                               linear, rtol=REFINED_ROUNDINGS * U32, atol=0)
    raw = _values(optimizers.refined_schedule(norms, 1.0, smoothing_window=0.0), 100)
    self.assertLess(raw[30], 0.01)

  def test_norms_logged_every_k_steps_are_interpolated(self):
    steps = np.arange(0, 100, 10)
    norms = 1.0 + steps / 20.0
    sched = optimizers.refined_schedule(norms, 1.0, smoothing_window=0.0, steps=steps)
    per_step = np.interp(np.arange(91), steps, norms)  # Steps 0 .. 90.
    reference = _reference_refined(per_step, 0.0, 2)
    _assert_matches(sched, lambda t: reference[t] if t < 91 else 0.0, 95)

  def test_total_steps_stretches_the_run(self):
    sched = optimizers.refined_schedule(np.full(10, 2.0), 1.0, total_steps=101)
    _assert_matches(sched, lambda t: max(0, 100 - t) / 100, 105)

  def test_warmup_multiplies_a_ramp(self):
    sched = optimizers.refined_schedule(np.full(11, 2.0), 1.0, warmup_steps=4)
    _assert_matches(sched, lambda t: min(1.0, t / 4) * max(0, 10 - t) / 10, 12)

  def test_bad_norms_fail_clearly(self):
    f = optimizers.refined_schedule
    with self.assertRaisesRegex(ValueError, "refined_schedule: `grad_norms` is empty"):
      f([], 1.0)
    with self.assertRaisesRegex(ValueError, "must be finite; entry 2 is nan"):
      f([1.0, 1.0, float("nan"), 1.0], 1.0)
    with self.assertRaisesRegex(ValueError, "must be finite; entry 0 is inf"):
      f([float("inf"), 1.0], 1.0)
    with self.assertRaisesRegex(ValueError, "must be positive; entry 1 is 0.0"):
      f([1.0, 0.0, 1.0], 1.0)
    with self.assertRaisesRegex(ValueError, "must be positive"):
      f([1.0, -2.0], 1.0)
    with self.assertRaisesRegex(ValueError, "1-D"):
      f(np.ones((3, 3)), 1.0)
    with self.assertRaisesRegex(ValueError, "at least 2 steps"):
      f([1.0], 1.0)
    with self.assertRaisesRegex(ValueError, "strictly increasing; step 10 follows 10"):
      f([1.0, 2.0, 3.0], 1.0, steps=[0, 10, 10])
    with self.assertRaisesRegex(ValueError, "one step per norm"):
      f([1.0, 2.0, 3.0], 1.0, steps=[0, 10])
    with self.assertRaisesRegex(ValueError, "smoothing_window"):
      f([1.0, 2.0], 1.0, smoothing_window=2.0)
    with self.assertRaisesRegex(ValueError, "norm_power"):
      f([1.0, 2.0], 1.0, norm_power=0.0)

  def test_reads_the_runners_csv_and_npy(self):
    tmp = test_util.tempdir(self)
    steps = np.arange(0, 200, 5)
    norms = 1.0 + np.sin(steps / 30.0) ** 2
    path = os.path.join(tmp, "grad_norms.csv")
    with open(path, "w") as f:
      f.write("step,grad_norm\n")
      for s, g in zip(steps, norms):
        f.write(f"{s},{float(g)!r}\n")
    expected = _values(optimizers.refined_schedule(norms, 0.3, steps=steps), 200)
    # Exact: repr round-trips the float64 norms and steps, so the same table.
    np.testing.assert_array_equal(_values(schedule_config.refined_schedule_from_file(path, 0.3), 200), expected)
    # Column order and extra columns do not matter.
    other = os.path.join(tmp, "other.csv")
    with open(other, "w") as f:
      f.write("grad_norm,wallclock,step\n")
      for s, g in zip(steps, norms):
        f.write(f"{float(g)!r},1.0,{s}\n")
    np.testing.assert_array_equal(_values(schedule_config.refined_schedule_from_file(other, 0.3), 200), expected)
    npy = os.path.join(tmp, "rows.npy")
    np.save(npy, np.stack([steps, norms], axis=1))
    np.testing.assert_array_equal(_values(schedule_config.refined_schedule_from_file(npy, 0.3), 200), expected)
    flat = os.path.join(tmp, "flat.npy")
    np.save(flat, np.full(30, 2.0))
    _assert_matches(schedule_config.refined_schedule_from_file(flat, 1.0), lambda t: max(0, 29 - t) / 29, 31)

  def test_bad_files_fail_clearly(self):
    tmp = test_util.tempdir(self)
    with self.assertRaisesRegex(ValueError, "no such file"):
      schedule_config.refined_schedule_from_file(os.path.join(tmp, "missing.csv"), 1.0)
    bad_header = os.path.join(tmp, "a.csv")
    with open(bad_header, "w") as f:
      f.write("step,loss\n0,1.0\n1,2.0\n")
    with self.assertRaisesRegex(ValueError, "grad_norm. column"):
      schedule_config.refined_schedule_from_file(bad_header, 1.0)
    bad_value = os.path.join(tmp, "b.csv")
    with open(bad_value, "w") as f:
      f.write("step,grad_norm\n0,1.0\n1,oops\n")
    with self.assertRaisesRegex(ValueError, "line 3"):
      schedule_config.refined_schedule_from_file(bad_value, 1.0)
    nan_value = os.path.join(tmp, "c.csv")
    with open(nan_value, "w") as f:
      f.write("step,grad_norm\n0,1.0\n1,nan\n2,1.0\n")
    with self.assertRaisesRegex(ValueError, "c.csv.*must be finite; entry 1"):
      schedule_config.refined_schedule_from_file(nan_value, 1.0)


# --- Name table, and what every schedule must do ------------------------------------------------

_EVERY_SCHEDULE = {
    "wsd": lambda: optimizers.warmup_stable_decay_schedule(0.1, 50, 5, decay_shape="1-sqrt"),
    "d2z": lambda: optimizers.linear_decay_to_zero_schedule(0.1, 50, 5),
    "rex": lambda: optimizers.rex_schedule(0.1, 50, 5),
    "power": lambda: optimizers.power_schedule(8, 8 * 2048, 50, 5, 10),
    "cyclic": lambda: optimizers.cyclic_schedule(0.01, 0.1, 7, mode="exp_range", gamma=0.99),
    "cyclic_momentum": lambda: optimizers.cyclic_momentum_schedule(0.8, 0.9, 7),
    "one_cycle": lambda: optimizers.one_cycle_schedule(0.1, 50),
    "one_cycle_momentum": lambda: optimizers.one_cycle_momentum_schedule(50, three_phase=True),
    "refined": lambda: optimizers.refined_schedule(1.0 + np.arange(30.0), 0.1),
}


class EveryScheduleTest(parameterized.TestCase):

  @parameterized.named_parameters((name, name) for name in _EVERY_SCHEDULE)
  def test_jit_traced_steps_and_optimizers(self, name):
    sched = _EVERY_SCHEDULE[name]()
    steps = (1, 25, 49, 60)
    eager = np.array([float(sched(t)) for t in steps])  # Python ints, op by op.
    traced = jax.jit(sched)
    # Each within SCHEDULE_ROUNDINGS of the peak of the exact value (eager and
    # jitted programs may round differently): twice that apart.
    atol = 2 * SCHEDULE_ROUNDINGS * U32 * np.abs(_values(sched, 61)).max()
    np.testing.assert_allclose([float(traced(jnp.int32(t))) for t in steps], eager, rtol=0, atol=atol)
    self.assertEqual(traced(jnp.int32(3)).dtype, jnp.float32)
    self.assertEqual(traced(jnp.int32(3)).shape, ())
    np.testing.assert_allclose(_values(sched, 61)[list(steps)], eager, rtol=0, atol=atol)
    if "momentum" in name:
      return
    # As `learning_rate` of a steplab optimizer, and inside inject_hyperparams.
    params = {"w": jnp.ones(3)}
    for opt in (optimizers.radam(sched), optax.inject_hyperparams(optax.sgd)(learning_rate=sched)):
      state = opt.init(params)
      updates, state = jax.jit(opt.update)({"w": jnp.ones(3)}, state, params)
      self.assertTrue(bool(jnp.all(jnp.isfinite(updates["w"]))))


class ScheduleFromConfigTest(parameterized.TestCase):

  def _same(self, a, b, num_steps=60):
    # Exact: the config builds the same schedule, so the same float32 ops.
    np.testing.assert_array_equal(_values(a, num_steps), _values(b, num_steps))

  def test_every_name_builds_the_named_schedule(self):
    tmp = test_util.tempdir(self)
    path = os.path.join(tmp, "grad_norms.csv")
    with open(path, "w") as f:
      f.write("step,grad_norm\n" + "".join(f"{s},{1.0 + s / 10}\n" for s in range(0, 100, 10)))
    cfg = lambda name, **o: schedule_config.schedule_from_config(name, learning_rate=0.1, total_steps=50,
                                                          warmup_steps=5, **o)
    self.assertEqual(set(schedule_config.SCHEDULE_NAMES), {
        "constant", "cosine", "wsd", "d2z", "rex", "power", "cyclic", "one_cycle", "refined"})
    self._same(cfg("constant"), optax.warmup_constant_schedule(0.0, 0.1, 5))
    self._same(cfg("cosine"), optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50))
    self._same(cfg("wsd", decay_fraction=0.4, decay_shape="cosine"),
               optimizers.warmup_stable_decay_schedule(0.1, 50, 5, 0.4, "cosine"))
    self._same(cfg("d2z"), optimizers.linear_decay_to_zero_schedule(0.1, 50, 5))
    self._same(cfg("rex", beta=0.9), optimizers.rex_schedule(0.1, 50, 5, beta=0.9))
    self._same(cfg("power", batch_size=8, tokens_per_step=512, decay_fraction=0.2),
               optimizers.power_schedule(8, 512, 50, 5, 10, max_value=0.1))
    self._same(cfg("cyclic"), optimizers.cyclic_schedule(0.025, 0.1, 50 / 8))
    self._same(cfg("cyclic", base_value=0.01, step_size=5, mode="triangular2"),
               optimizers.cyclic_schedule(0.01, 0.1, 5, mode="triangular2"))
    self._same(cfg("cyclic", base_fraction=0.5, num_cycles=2), optimizers.cyclic_schedule(0.05, 0.1, 12.5))
    self._same(cfg("one_cycle", pct_start=0.2), optimizers.one_cycle_schedule(0.1, 50, pct_start=0.2))
    self._same(cfg("refined", grad_norms_path=path, norm_power=1),
               optimizers.refined_schedule(1.0 + np.arange(0, 100, 10) / 10, 0.1, steps=np.arange(0, 100, 10),
                                           norm_power=1, warmup_steps=5, total_steps=50))

  def test_errors_list_what_is_valid(self):
    cfg = schedule_config.schedule_from_config
    with self.assertRaisesRegex(ValueError,
                                "unknown schedule 'linear_cosine'; valid names:.*'wsd'.*'refined'"):
      cfg("linear_cosine", learning_rate=0.1, total_steps=10)
    with self.assertRaisesRegex(ValueError, r"'d2z' has no option\(s\) \['decay_shape'\]; valid options: "
                                            r"\['init_value'\]"):
      cfg("d2z", learning_rate=0.1, total_steps=10, decay_shape="cosine")
    with self.assertRaisesRegex(ValueError, "'constant' has no option.*valid options: none"):
      cfg("constant", learning_rate=0.1, total_steps=10, end_value=0.0)
    with self.assertRaisesRegex(ValueError, r"needs options \['batch_size'\]"):
      cfg("power", learning_rate=0.1, total_steps=10, tokens_per_step=4)
    with self.assertRaisesRegex(ValueError, "grad_norms_path"):
      cfg("refined", learning_rate=0.1, total_steps=10)
    with self.assertRaisesRegex(ValueError, "`step_size` or `num_cycles`, not both"):
      cfg("cyclic", learning_rate=0.1, total_steps=10, step_size=2, num_cycles=2)
    with self.assertRaisesRegex(ValueError, "learning_rate"):
      cfg("wsd", learning_rate=-0.1, total_steps=10)
    with self.assertRaisesRegex(ValueError, "warmup_stable_decay_schedule: `decay_fraction`"):
      cfg("wsd", learning_rate=0.1, total_steps=10, decay_fraction=2.0)


if __name__ == "__main__":
  absltest.main()
