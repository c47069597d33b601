"""Schedule-Free SGD, AdamW and RAdam, and `schedule_free` around any optimizer.

Schedule-free methods replace the learning-rate schedule by an average. Three
sequences: z takes the base optimizer's steps, x is a weighted average of the
z's, and the gradient is taken at their interpolation y. At step t (k = t - 1
steps taken), with base learning rate lr_t (after warmup or rectification) and
d the base's step-size estimate (Prodigy's d, else 1):

    lr_max = max(lr_max, lr_t d);   w_t = t^r lr_max^weight_lr_power
    W     += w_t;                   c_t = w_t / W  (0 while W = 0)
    z     -= lr_t wd y                               (weight decay at y)
    z      = z + base_step(g(y))                     (e.g. -lr_t g / (sqrt(v/bc2) + eps))
    x      = (1 - c_t) x + c_t z
    y      = b1 x + (1 - b1) z

Training happens at y (the parameters the user holds); evaluation and
checkpoints at x = (y - (1 - b1) z) / b1, which `schedule_free_eval_params`
and `optimizers.eval_params` return. The state keeps z (plus the base's
state and a few scalars), never x: x is derived from y and z. Decay at y
leaves x unchanged (y and z shrink consistently).

* `schedule_free_sgd`: base step -lr_t g (schedulefree's SGDScheduleFree).
* `schedule_free_adamw`: base step -lr_t g / (sqrt(v / (1 - b2^t)) + eps),
  no first moment (b1 is the interpolation weight) (AdamWScheduleFree).
* `schedule_free_radam`: RAdam's rectification: while rho_t <= 4 the step is
  -lr_t g with lr_t = 0 by default (`silent_sgd_phase`: nothing moves), then
  lr_t = lr * rect_t on the normalised gradient (RAdamScheduleFree; note the
  threshold 4, not torch RAdam's 5). The weights use lr * rect_t.
* `schedule_free(base, learning_rate, ...)`: any Optax/steplab optimizer as
  the base (ScheduleFreeWrapper). `learning_rate` must be the base's own
  learning rate (or schedule): it sets the averaging weights and the decay at
  y, as the wrapper reads the base's `lr`. Weight decay inside the base is
  decay at z. Around Prodigy the weights use lr * d with d read after the
  base step, as the reference. The reference wrapper advances Prodigy's step
  counter twice per step (it writes the param group's `k` that Prodigy also
  increments); here each keeps its own, which differs only with Prodigy's bias
  correction or r > 0.

Warmup (AdamW, SGD): lr_t = lr min(1, t / warmup_steps), so the first step
moves z (optax.contrib's schedule_free is off by one: its first z step is 0).

Defaults are schedulefree 1.4.1's: AdamW lr 0.0025, b1 0.9, b2 0.999, eps 1e-8;
SGD lr 1.0, momentum (b1) 0.9; wd 0, warmup_steps 0, r 0, weight_lr_power 2;
the wrapper b1 0.9, wd 0.

References:
  Defazio et al., "The Road Less Scheduled", NeurIPS 2024,
  https://arxiv.org/abs/2405.15682.
  Code: github.com/facebookresearch/schedule_free (PyPI `schedulefree` 1.4.1).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _eval
from optimizers import _executor
from optimizers import _numerics
from optimizers import _validation
from optimizers import _weight_decay

__all__ = ("schedule_free", "schedule_free_adamw", "schedule_free_eval_params",
    "schedule_free_radam", "schedule_free_sgd", "ScheduleFreeState")


class ScheduleFreeState(NamedTuple):
  """State of `schedule_free`: the z sequence, the weighting and the base's state.

  `b1` is kept (a scalar) so the state alone can derive x from the params y,
  also when b1 is injected.
  """

  count: chex.Array
  b1: chex.Array
  weight_sum: chex.Array
  lr_max: chex.Array
  z: optax.Params
  base_state: optax.OptState

  def eval_params(self, params: optax.Params) -> optax.Params:
    """x = y + (1 - 1/b1)(z - y), the reference's `eval()` interpolation."""
    weight = 1.0 - 1.0 / self.b1
    return jax.tree.map(
        lambda y, z: (y.astype(z.dtype) + weight.astype(z.dtype) * (z - y.astype(z.dtype))).astype(y.dtype),
        params, self.z,
    )


def schedule_free_eval_params(opt_state: optax.OptState, params: optax.Params) -> optax.Params:
  """The evaluation point x of a schedule-free optimizer (anywhere in the state).

  The same as `optimizers.eval_params`, under the name Optax uses.
  """
  return _eval.eval_params(opt_state, params)


def _lerp(start: jax.Array, end: jax.Array, weight: jax.Array) -> jax.Array:
  """start + weight (end - start), as torch.lerp rounds it for weight < 0.5."""
  return jnp.where(weight < 0.5, start + weight * (end - start), end - (end - start) * (1.0 - weight))


def _x_and_decayed_z(y, z, x_weight, lr_wd):
  """x = lerp(y, z, 1 - 1/b1) before the step, and z after decay at y (none for lr_wd = 0.0).

  A Python 0.0 skips the decay (as the reference's `if weight_decay != 0`):
  XLA keeps z - 0 y, an extra read of y.
  """
  no_decay = isinstance(lr_wd, float) and lr_wd == 0.0
  return _lerp(y, z, x_weight), z if no_decay else z - lr_wd * y


def _new_y(x, z, c, one_minus_b1):
  """y' = lerp(lerp(x, z', c), z', 1 - b1): the averaged x', then the interpolation."""
  return _lerp(_lerp(x, z, c), z, one_minus_b1)


def _rms_normalised(g, v, b2, one_minus_b2, bc2, eps, adaptive):
  """v' and g / (sqrt(v' / bc2) + eps) (g itself where not `adaptive`), in v's dtype.

  |g|^2 (complex gradients: the squared modulus). Overflow: a finite |g| above
  ~1.8e19 squares to inf in float32, and an inf v would zero every later step
  of that element. Where a term overflows (only there: elsewhere the numbers
  are the reference's), (1 - b2) |g|^2 is taken as (sqrt(1 - b2) |g|)^2 and
  sqrt(v / bc2) as sqrt(v) / sqrt(bc2), both finite while the true values
  are; v beyond the dtype is capped at its largest finite value (that step
  is then tiny, and v decays back by b2 per step). A non-finite gradient
  still gives a non-finite update.
  """
  g = g.astype(v.dtype)
  real = v.real.dtype
  term = one_minus_b2 * _numerics.abs_sq(g)
  rescaled = _numerics.scaled_abs_sq(one_minus_b2, g.astype(v.dtype))
  term = jnp.where(jnp.isinf(term.real) & jnp.isfinite(g), rescaled.astype(term.dtype), term)
  v = b2 * v + term
  big = jnp.finfo(real).max  # A select, not jnp.minimum (the same numbers): with minimum,
  v = jnp.where(v.real > big, big, v.real).astype(v.dtype)  # XLA:CPU copies v and z (1.2x the bytes).
  return v, jnp.where(adaptive, g / (_numerics.sqrt_ratio(v, bc2) + eps), g)


def _adam_step_rule(scalars, p, g, z, v):
  """A whole Schedule-Free AdamW/RAdam element step, both backends: (u, z', v').

  The roundings of `schedule_free` around `_scale_by_debiased_rms` and
  `scale_by_learning_rate`, so the two backends and the wrapper agree.
  """
  x_weight, lr_wd, neg_lr, b2, one_minus_b2, bc2, eps, adaptive, c, one_minus_b1 = scalars
  cast = _numerics.cast_like
  y = p.astype(z.dtype)
  x, z = _x_and_decayed_z(y, z, cast(x_weight, z), lr_wd if isinstance(lr_wd, float) else cast(lr_wd, z))
  v, normalised = _rms_normalised(g, v, cast(b2, v), cast(one_minus_b2, v), cast(bc2, v), eps, adaptive > 0.5)
  z = z + cast(neg_lr, z) * normalised.astype(z.dtype)
  return (_new_y(x, z, cast(c, z), cast(one_minus_b1, z)) - y).astype(p.dtype), z, v


def _averaging(state: ScheduleFreeState, lr_d: jax.Array, r: Any, weight_lr_power: Any) -> tuple:
  """(lr_max', W', c_t): the running max of lr d, the weight sum and z's weight in x."""
  t = _numerics.step_count(optax.safe_increment(state.count))
  lr_max = jnp.maximum(state.lr_max, lr_d)
  weight = t**r * lr_max**weight_lr_power
  weight_sum = state.weight_sum + weight
  return lr_max, weight_sum, jnp.where(weight_sum > 0, weight / jnp.where(weight_sum > 0, weight_sum, 1.0), 0.0)


def _init(params: optax.Params, base: optax.GradientTransformation, b1: Any) -> ScheduleFreeState:
  """`schedule_free`'s initial state: z = x_0 (a copy), no weight yet, the base initialised at z."""
  dtype = _numerics.scalar_dtype()
  z = _numerics.copy_to_state(params)
  return ScheduleFreeState(
      count=jnp.zeros([], jnp.int32),
      b1=jnp.asarray(b1, dtype),
      weight_sum=jnp.zeros([], dtype),
      lr_max=jnp.zeros([], dtype),
      z=z,
      base_state=base.init(z),
  )


def schedule_free(
    base: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    *,
    mask: Any = None,
) -> optax.GradientTransformationExtraArgs:
  """Makes any optimizer schedule-free (schedulefree's ScheduleFreeWrapper).

  Args:
    base: the optimizer stepping z (signed updates, learning rate included,
      e.g. `optax.sgd(lr)`, `optimizers.prodigy()`).
    learning_rate: the base's learning rate (float or schedule): it weights
      the average and scales the decay at y.
    b1: interpolation weight (the wrapper's `momentum`), in (0, 1).
    weight_decay: decay at y (`weight_decay_at_y`); decay inside the base is
      decay at z.
    r: polynomial weighting power of the average.
    weight_lr_power: the weights are lr_max ** weight_lr_power (0: uniform).
    mask: Optax-style mask selecting the leaves decayed at y.

  Returns:
    An `optax.GradientTransformationExtraArgs` (extra arguments to `update`,
    e.g. `value=loss`, are passed to the base); train at the params (y),
    evaluate at `schedule_free_eval_params(state, params)` (x).
  """
  owner = "schedule_free"
  _check_common(owner, learning_rate, b1, weight_decay, r, weight_lr_power)
  # Extra arguments (`value=loss`, ...) reach the base, as in optax.chain.
  base = optax.with_extra_args_support(base)

  init_fn = functools.partial(_init, base=base, b1=b1)

  def update_fn(updates, state, params=None, **extra_args):
    if params is None:
      raise ValueError(f"{owner}: `params` are required (they are y, the interpolation).")
    _validation.check_tree_matches(owner, updates, state.z)
    dtype = _numerics.scalar_dtype()
    lr = _numerics.learning_rate_at(learning_rate, state.count)
    lr = jnp.asarray(lr, dtype)
    cast = _numerics.cast_like
    y = jax.tree.map(lambda p, z: p.astype(z.dtype), params, state.z)
    # x from y and z before the step; decay at y moves z and y but not x.
    decayed = _weight_decay.mask_tree(mask, params)
    no_decay = _validation.concrete_value(weight_decay) == 0.0
    x, z = _numerics.tree_map_unzip(
        lambda y, z, m: _x_and_decayed_z(y, z, cast(1.0 - 1.0 / b1, z), 0.0 if no_decay else
                                         cast(lr * weight_decay, z) * _weight_decay.as_multiplier(m, z.dtype)),
        2, y, state.z, decayed,
    )
    base_updates, base_state = base.update(
        jax.tree.map(lambda g, z: g.astype(z.dtype), updates, z), state.base_state, z, **extra_args
    )
    z = jax.tree.map(lambda z, u: z + u.astype(z.dtype), z, base_updates)

    d = _eval.estimated_d(base_state)  # Prodigy's d, read after the base step.
    lr_max, weight_sum, c = _averaging(state, lr if d is None else lr * jnp.asarray(d, dtype), r, weight_lr_power)

    y_new = jax.tree.map(lambda x, z: _new_y(x, z, cast(c, z), cast(1.0 - b1, z)), x, z)
    new_updates = jax.tree.map(lambda yn, yo, p: (yn - yo).astype(p.dtype), y_new, y, params)
    return new_updates, ScheduleFreeState(
        count=optax.safe_increment(state.count),
        b1=state.b1,
        weight_sum=weight_sum,
        lr_max=lr_max,
        z=z,
        base_state=base_state,
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class ScaleByDebiasedRmsState(NamedTuple):
  """State of the AdamW/RAdam schedule-free base: count and v."""

  count: chex.Array
  nu: optax.Updates


def _scale_by_debiased_rms(b2: float, eps: float, *, rectify: bool) -> optax.GradientTransformation:
  """g / (sqrt(v / (1 - b2^t)) + eps); with `rectify`, g itself while rho_t <= 4."""

  def init_fn(params):
    # Complex parameters: v holds |g|^2 (real values in the parameters' dtype).
    return ScaleByDebiasedRmsState(jnp.zeros([], jnp.int32), _numerics.zeros_like_state(params))

  def update_fn(updates, state, params=None):
    del params
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    bc2 = _numerics.bias_correction(b2, t)
    adaptive = _numerics.sma_length(b2, t) > 4.0 if rectify else True
    cast = _numerics.cast_like
    nu, out = _numerics.tree_map_unzip(
        lambda g, v: _rms_normalised(g, v, cast(b2, v), cast(1.0 - b2, v), cast(bc2, v), eps, adaptive),
        2, updates, state.nu,
    )
    return jax.tree.map(lambda o, g: o.astype(g.dtype), out, updates), ScaleByDebiasedRmsState(count, nu)

  return optax.GradientTransformation(init_fn, update_fn)


def _warmup(learning_rate: optax.ScalarOrSchedule, warmup_steps: int) -> optax.Schedule:
  """lr(k) min(1, (k + 1) / warmup_steps): the first step already moves."""

  def schedule(count):
    lr = _numerics.learning_rate_at(learning_rate, count)
    if not warmup_steps:
      return lr
    return lr * jnp.minimum(1.0, (count + 1.0) / warmup_steps)

  return schedule


def _rectified(learning_rate: optax.ScalarOrSchedule, b2: float, silent_sgd_phase: bool) -> optax.Schedule:
  """RAdamScheduleFree's lr_t: lr * rect_t once rho_t > 4, else 0 (silent) or lr."""
  rho_inf = 2.0 / _numerics.one_minus(b2) - 1.0

  def schedule(count):
    lr = _numerics.learning_rate_at(learning_rate, count)
    rho = _numerics.sma_length(b2, _numerics.step_count(count + 1))
    safe_rho = jnp.where(rho > 4.0, rho, 5.0)
    rect = jnp.sqrt((safe_rho - 4) * (safe_rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * safe_rho))
    return lr * jnp.where(rho > 4.0, rect, 0.0 if silent_sgd_phase else 1.0)

  return schedule


def _check_common(owner, learning_rate, b1, weight_decay, r, weight_lr_power):
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_range(owner, "b1", b1, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
  _validation.check_non_negative(owner, "weight_decay", weight_decay)
  _validation.check_non_negative(owner, "r", r)
  _validation.check_non_negative(owner, "weight_lr_power", weight_lr_power)


def _check_warmup(owner, warmup_steps):
  if not isinstance(warmup_steps, int) or isinstance(warmup_steps, bool) or warmup_steps < 0:
    raise ValueError(f"{owner}: `warmup_steps` must be an int >= 0, got {warmup_steps!r}.")


def _adaptive(owner, learning_rate, lr_t, rectify, b1, b2, eps, weight_decay, r, weight_lr_power, mask,
              backend="xla"):
  """AdamW/RAdam schedule-free: base step -lr_t g / (sqrt(v / bc2) + eps).

  `lr_t(learning_rate)` is the stepped rate (after warmup or rectification).
  The state is `schedule_free`'s around that base; the whole step (x, decay
  at y, v, z, y') is one rule, `_adam_step_rule`, run by `_executor` on
  either backend (one pass over memory per leaf group).
  """
  _check_common(owner, learning_rate, b1, weight_decay, r, weight_lr_power)
  _validation.check_backend(owner, backend)
  lr = lr_t(learning_rate)
  _validation.check_decay(owner, "b2", b2)
  _validation.check_non_negative(owner, "eps", eps)
  base = optax.chain(_scale_by_debiased_rms(b2, eps, rectify=rectify), optax.scale_by_learning_rate(lr))
  wrapped = schedule_free(base, lr, b1, weight_decay, r, weight_lr_power, mask=mask)

  def init_fn(params):
    if backend == "pallas":
      _numerics.reject_complex(owner, params, "backend='pallas' is real-only; use backend='xla'")
    return wrapped.init(params)

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args  # Accepted (e.g. `value=loss`) like every Optax transformation; unused.
    if params is None:
      raise ValueError(f"{owner}: `params` are required (they are y, the interpolation).")
    _validation.check_tree_matches(owner, updates, state.z)
    dtype = _numerics.scalar_dtype()
    rms_state, schedule_state = state.base_state
    lr_now = jnp.asarray(_numerics.learning_rate_at(lr, state.count), dtype)
    lr_max, weight_sum, c = _averaging(state, lr_now, r, weight_lr_power)
    t = _numerics.step_count(optax.safe_increment(state.count))
    adaptive = _numerics.sma_length(b2, t) > 4.0 if rectify else True
    lr_wd = lambda decayed: (0.0 if _validation.concrete_value(weight_decay) == 0.0
                             else lr_now * weight_decay * _weight_decay.as_multiplier(decayed, dtype))
    scalars = lambda decayed: (
        1.0 - 1.0 / b1, lr_wd(decayed), -lr_now, b2,
        _numerics.one_minus(b2), _numerics.bias_correction(b2, t), eps, jnp.where(adaptive, 1.0, 0.0), c, 1.0 - b1)
    u, z, nu = _executor.tree_map(_adam_step_rule, scalars, [params, updates, state.z, rms_state.nu], 3,
                                  backend=backend, aliases={2: 1, 3: 2}, groups=_weight_decay.mask_tree(mask, params))
    return u, ScheduleFreeState(
        count=optax.safe_increment(state.count), b1=state.b1, weight_sum=weight_sum, lr_max=lr_max, z=z,
        base_state=(ScaleByDebiasedRmsState(optax.safe_increment(rms_state.count), nu),
                    schedule_state._replace(count=optax.safe_increment(schedule_state.count))),
    )

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def schedule_free_sgd(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    b1: float = 0.9,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    *,
    mask: Any = None,
) -> optax.GradientTransformation:
  """Schedule-Free SGD (schedulefree 1.4.1 SGDScheduleFree; b1 is its momentum).

  Args:
    learning_rate: float or schedule (reference 1.0).
    b1: interpolation weight (reference `momentum` 0.9), in (0, 1).
    weight_decay: decay at y (reference 0).
    warmup_steps: linear warmup of the learning rate (reference 0).
    r, weight_lr_power: weighting of the average (reference 0, 2).
    mask: Optax-style mask selecting the leaves decayed at y.

  Returns:
    An `optax.GradientTransformation`; evaluate at `schedule_free_eval_params`.
  """
  _check_common("schedule_free_sgd", learning_rate, b1, weight_decay, r, weight_lr_power)
  _check_warmup("schedule_free_sgd", warmup_steps)
  lr = _warmup(learning_rate, warmup_steps)
  return schedule_free(optax.sgd(lr), lr, b1, weight_decay, r, weight_lr_power, mask=mask)


def schedule_free_adamw(
    learning_rate: optax.ScalarOrSchedule = 0.0025,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    *,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Schedule-Free AdamW (schedulefree 1.4.1 AdamWScheduleFree).

  Args:
    learning_rate: float or schedule (reference 0.0025).
    b1: interpolation weight (reference 0.9), in (0, 1).
    b2: second-moment decay (reference 0.999).
    eps: added to the bias-corrected sqrt(v) (reference 1e-8).
    weight_decay: decay at y (reference 0).
    warmup_steps: linear warmup of the learning rate (reference 0).
    r, weight_lr_power: weighting of the average (reference 0, 2).
    mask: Optax-style mask selecting the leaves decayed at y.
    backend: "xla" (default) or "pallas": the whole step fused per leaf.

  Returns:
    An `optax.GradientTransformation`; evaluate at `schedule_free_eval_params`.
  """
  _check_warmup("schedule_free_adamw", warmup_steps)
  return _adaptive(
      "schedule_free_adamw", learning_rate, lambda lr: _warmup(lr, warmup_steps), False, b1, b2,
      eps, weight_decay, r, weight_lr_power, mask, backend,
  )


def schedule_free_radam(
    learning_rate: optax.ScalarOrSchedule = 0.0025,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    r: float = 0.0,
    weight_lr_power: float = 2.0,
    silent_sgd_phase: bool = True,
    *,
    mask: Any = None,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """Schedule-Free RAdam (schedulefree 1.4.1 RAdamScheduleFree); no warmup needed.

  Args:
    learning_rate: float or schedule (reference 0.0025).
    b1: interpolation weight (reference 0.9), in (0, 1).
    b2: second-moment decay (reference 0.999).
    eps: added to the bias-corrected sqrt(v) (reference 1e-8).
    weight_decay: decay at y (reference 0).
    r, weight_lr_power: weighting of the average (reference 0, 2).
    silent_sgd_phase: no step while rho_t <= 4 (reference True); False takes
      plain SGD steps at lr there.
    mask: Optax-style mask selecting the leaves decayed at y.
    backend: "xla" (default) or "pallas": the whole step fused per leaf.

  Returns:
    An `optax.GradientTransformation`; evaluate at `schedule_free_eval_params`.
  """
  _validation.check_decay("schedule_free_radam", "b2", b2)  # Before _rectified divides by 1 - b2.
  return _adaptive(
      "schedule_free_radam", learning_rate, lambda lr: _rectified(lr, b2, silent_sgd_phase), True,
      b1, b2, eps, weight_decay, r, weight_lr_power, mask, backend,
  )
