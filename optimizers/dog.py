"""DoG and LDoG (distance over gradients) and polynomial-decay averaging.

DoG is SGD whose step size is the distance travelled over the root of the
summed squared gradient norms. At step t (from 1), with x_0 the initial
parameters and c the learning rate (the paper's multiplier, default 1):

    rbar_1 = reps_rel (1 + |x_0|),       G_1 = |g_1|^2 + eps
    rbar_t = max(rbar_{t-1}, |x_t - x_0|),  G_t = G_{t-1} + |g_t|^2   (t > 1)
    eta_t  = c rbar_t / sqrt(G_t)
    x_{t+1} = x_t - eta_t g_t

eps enters once, at step 1 (not at every step). With `init_eta` the first
step size is `init_eta` itself (not multiplied by c) and, as the reference
does, reps_rel is then taken as 0: rbar_1 = 0 and rbar_2 = |x_2 - x_0|.
Weight decay is coupled, `g += wd x` before everything (the reference's).

DoG takes the norms over the whole parameter tree; LDoG ("layer-wise") applies
the same rule to each leaf separately. Both are one implementation here,
`scale_by_dog(layerwise=...)`: the per-leaf squared norms are either summed
over the tree or kept per leaf (optax.contrib writes the two out twice). The
sums are plain `jnp` reductions, so on sharded parameters XLA computes them
without gathering a tensor.

The learning rate is inside `scale_by_dog` (it multiplies rbar/sqrt(G) but
not `init_eta`), so `learning_rate` may also be a schedule.

If G is 0 (eps = 0 and an all-zero first gradient) the reference stops with an
assertion; here the step size is 0 instead (no step, no NaN).

Numerics (differences from the reference, each deliberate):
  * The norms are plain sums of squares (one pass per tensor), redone scaled
    by max|x| before squaring (`_numerics.safe_norm`, a `lax.cond`, free when
    not taken) when a sum is non-finite or so small that squares flushed
    below float32's `tiny` could matter; G is kept as its root sqrt(G)
    (`ScaleByDoGState.grad_norm`, updated as hypot(sqrt(G_prev), |g_t|)).
    The reference squares in the tensor dtype: in float32 a finite gradient
    element above ~1.8e19 makes G inf, and every later step 0, silently. Here the float32 run follows the float64 one.
    Note what the math itself does: after a gradient of norm N every later
    step size is at most lr rbar / N, so one huge gradient slows DoG for good
    (clip gradients before DoG if that can happen). A NaN or inf gradient
    makes eta (and the parameters) NaN: visible, not a freeze. The "pallas"
    backend squares in float32 in its kernel, with the same check. Complex
    trees take the scaled norms directly.
  * bfloat16/float16 parameters: `dog` and `ldog` run on float32 master
    weights (`_numerics.with_compensated_updates`, 4 bytes per parameter,
    one more element at the end of the state). In bf16 the first steps
    (reps_rel = 1e-6 relative) are below half an ulp, so the reference's
    parameters never leave x_0 and rbar never grows: frozen. The building
    block `scale_by_dog` alone sees the parameters as given.
  * Complex parameters: norms are of the modulus, so DoG on C^n is DoG on
    R^2n (the (re, im) parts); gradients follow Optax's convention.
  * Concrete hyperparameters are checked when the optimizer is built: a
    string, list, None, inf or NaN raises ValueError naming the argument
    (traced values and schedules are not checked; a NaN schedule value makes
    eta and the parameters NaN).

`polynomial_decay_averaging(gamma)` keeps the average that DoG needs for its
best results (the paper always evaluates it) and works after any optimizer:
after step t (from 1) xbar_t = (1 - w_t) xbar_{t-1} + w_t x_{t+1} with
w_t = (1 + gamma) / (t + gamma), so xbar_1 is the first iterate after x_0.
`optimizers.eval_params` returns xbar.

Defaults are dog-optimizer 1.0.3's: reps_rel 1e-6 (1e-4 suggested for models
with batch norm), lr 1, eps 1e-8, weight_decay 0, init_eta None, gamma 8.

References:
  Ivgi, Hinder, Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic
  Step Size Schedule", ICML 2023, https://arxiv.org/abs/2302.12022.
  Shamir & Zhang, "Stochastic Gradient Descent for Non-smooth Optimization:
  Convergence Results and Optimal Averaging Schemes", ICML 2013.
  Code: github.com/formll/dog (PyPI `dog-optimizer` 1.0.3).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from optimizers import _numerics
from optimizers import _validation
from pallas_kernels import reductions

__all__ = ("dog", "ldog", "polynomial_decay_averaging", "PolynomialDecayAveragingState",
    "scale_by_dog", "ScaleByDoGState")


class ScaleByDoGState(NamedTuple):
  """State of `scale_by_dog`.

  `max_distance` (rbar) and `grad_norm` (sqrt(G), the root of the summed
  squared gradient norms, kept as a root so that it cannot overflow) are
  scalars for DoG and, for LDoG, vectors with one entry per leaf in
  `jax.tree.leaves` order: one array each rather than a tree of scalars,
  since every state array is a buffer handed to and from each step (on the
  CPU two scalars per leaf cost a step ~10%).
  """

  count: chex.Array
  init_params: optax.Params
  max_distance: Any
  grad_norm: Any


def _combine(per_leaf: Any, layerwise: bool, dtype: Any) -> Any:
  """The per-leaf norms (layerwise), or the norm of the whole tree."""
  if layerwise:
    return per_leaf
  return _numerics.combine_norms(jax.tree.leaves(per_leaf), dtype)


def _norm(fn: Any, *trees: Any, layerwise: bool, dtype: Any) -> Any:
  """Norm of fn(*leaves) per leaf (layerwise) or over the tree, in `dtype`, without overflow.

  The reference squares in the tensors' dtype, so in float32 a finite
  gradient element above ~1.8e19 makes G inf and every later step 0; here
  the norms are scaled (`_numerics.safe_norm_of`, fn computed from the leaves
  in each of its passes, never written out) and G is kept as its root.
  Complex leaves use the modulus (DoG on C^n is DoG on R^2n).
  """
  per_leaf = jax.tree.map(lambda *xs: _numerics.safe_norm_of(fn, *xs, dtype=dtype), *trees)
  return _combine(per_leaf, layerwise, dtype)


_identity = lambda x: x
_moved = lambda p, p0: p.astype(p0.dtype) - p0  # x - x_0, in x_0's dtype.


def _square_sums(fn: Any, *columns: list[jax.Array], dtype: Any) -> jax.Array:
  """The vector of sum(fn(*leaves)^2) over the leaves (fn elementwise), in `dtype`.

  One pass per tensor (`_numerics.safe_norm` takes two: max|x|, then the
  scaled sum). Small vectors (biases, norm scales) of one size are stacked
  and reduced together: XLA:CPU runs every reduction as its own kernels,
  whose launches cost more than such a leaf (the barrier keeps XLA from
  splitting the stacked reduction back into one per leaf). Matrices never
  are: stacking a sharded one would gather it.
  """
  sums, small = [None] * len(columns[0]), {}
  for i, x in enumerate(columns[0]):
    if x.ndim <= 1 and x.size < _SMALL:
      small.setdefault((x.size, *(c[i].dtype for c in columns)), []).append(i)
    else:
      sums[i] = jnp.sum(jnp.square(fn(*(c[i] for c in columns)).astype(dtype)))
  for (size, *_), index in small.items():
    blocks = jax.lax.optimization_barrier([jnp.stack([c[i].reshape(size) for i in index]) for c in columns])
    block_sums = jnp.sum(jnp.square(fn(*blocks).astype(dtype)), axis=1)
    for k, i in enumerate(index):
      sums[i] = block_sums[k]
  return jnp.array(sums, dtype).reshape(-1)


_SMALL = 1 << 14  # Elements: smaller vectors are reduced together.


def _norms(updates, params, init_params, first, stack, layerwise, backend, dtype):
  """(|g|, |x - x_0|, |x_0| at step 1 else 0), per leaf as vectors (layerwise) or of the tree.

  Plain sums of squares, one pass per tensor; they are trusted when finite
  and at least n tiny / eps (squares flushed below `tiny` then moved them by
  under eps relative). Otherwise, and at step 1 (the only step that needs
  |x_0|), the norms are computed with `_norm`, overflow-safe: one
  `lax.cond`, whose branch not taken costs nothing. Complex trees take
  `_norm` directly.
  """

  def safe_norms():
    norm = lambda fn, *trees: stack(_norm(fn, *trees, layerwise=layerwise, dtype=dtype))
    return norm(_identity, updates), norm(_moved, params, init_params), norm(_identity, init_params)

  if any(jnp.iscomplexobj(x) for x in jax.tree.leaves((updates, params))):
    return safe_norms()
  if backend == "pallas":  # Squares in float32 in the kernel.
    sums = reductions.leaf_sums(_norms_rule, (), [updates, params, init_params], 2)
    square_g, square_d = (jnp.array([s[k] for s in sums], dtype).reshape(-1) for k in range(2))
  else:
    square_g = _square_sums(_identity, jax.tree.leaves(updates), dtype=dtype)
    square_d = _square_sums(_moved, jax.tree.leaves(params), jax.tree.leaves(init_params), dtype=dtype)
  sizes = jnp.array([x.size for x in jax.tree.leaves(updates)], dtype)
  if not layerwise:
    square_g, square_d, sizes = jnp.sum(square_g), jnp.sum(square_d), jnp.sum(sizes)
  info = jnp.finfo(dtype)
  suspect = lambda s: jnp.any(~(jnp.isfinite(s) & (s >= sizes * (info.tiny / info.eps))))
  fast = lambda: (jnp.sqrt(square_g), jnp.sqrt(square_d), jnp.zeros_like(square_g))
  return jax.lax.cond(first | suspect(square_g) | suspect(square_d), safe_norms, fast)


def _norms_rule(scalars, g, x, x0):
  """|g|^2 and |x - x_0|^2 of one leaf, read once (backend="pallas")."""
  del scalars
  moved = _moved(x, x0)
  return g * g, moved * moved


def _check_args(owner, learning_rate, reps_rel, eps, init_eta, backend):
  """Checks `scale_by_dog`'s concrete arguments when it is built (ValueError naming the argument)."""
  _validation.check_backend(owner, backend)
  _validation.check_learning_rate(owner, learning_rate)
  _validation.check_non_negative(owner, "eps", eps)
  if init_eta is None:
    _validation.check_positive(owner, "reps_rel", reps_rel)
  else:
    _validation.check_positive(owner, "init_eta", init_eta)
    _validation.check_finite(owner, "reps_rel", reps_rel)  # Unused, but a typo should not pass.


def _init(params: optax.Params, layerwise: bool) -> ScaleByDoGState:
  """`scale_by_dog`'s initial state: x_0 (a copy), and zero rbar and sqrt(G) (a vector, an entry per leaf, for LDoG)."""
  dtype = _numerics.scalar_dtype()
  # A function, not one array: two state fields sharing a buffer cannot
  # both be donated.
  zeros = lambda: jnp.zeros([len(jax.tree.leaves(params))] if layerwise else [], dtype)
  return ScaleByDoGState(
      count=jnp.zeros([], jnp.int32),
      init_params=_numerics.copy_to_state(params),
      max_distance=zeros(),
      grad_norm=zeros(),
  )


def scale_by_dog(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    reps_rel: float = 1e-6,
    eps: float = 1e-8,
    init_eta: float | None = None,
    *,
    layerwise: bool = False,
    backend: str = "xla",
) -> optax.GradientTransformation:
  """DoG's (or LDoG's) step `eta_t g_t`, learning rate included (no sign flip).

  Args:
    learning_rate: the multiplier c of rbar/sqrt(G), a float or a schedule
      (reference 1; the authors advise against changing it).
    reps_rel: initial distance relative to 1 + |x_0| (reference 1e-6; 1e-4
      for models with batch norm). Ignored when `init_eta` is given.
    eps: added once to the first squared gradient norm (reference 1e-8).
    init_eta: if given, the first step size (the reference's override).
    layerwise: False for DoG (norms over the whole tree), True for LDoG
      (per leaf).
    backend: "xla" (default) or "pallas": the three squared norms of each
      large leaf in one fused reduction kernel (`pallas_kernels.reductions`),
      accumulated in float32.

  Returns:
    An `optax.GradientTransformation`.
  """
  owner = "scale_by_ldog" if layerwise else "scale_by_dog"
  _check_args(owner, learning_rate, reps_rel, eps, init_eta, backend)
  if init_eta is not None:
    reps_rel = 0.0  # As the reference: the first distance is then 0.
  init_fn = functools.partial(_init, layerwise=layerwise)

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(f"{owner}: `params` are required (DoG measures |x_t - x_0|).")
    _validation.check_tree_matches(owner, updates, state.init_params)
    dtype = _numerics.scalar_dtype()
    first = state.count == 0
    lr = _numerics.learning_rate_at(learning_rate, state.count)

    leaves = jax.tree.leaves(updates)
    # Per-leaf scalars as one vector (LDoG) or the tree's (DoG): a few small
    # kernels for all leaves instead of several per leaf.
    stack = lambda tree: jnp.array(jax.tree.leaves(tree), dtype).reshape(-1) if layerwise else tree
    grad_norm, moved_norm, init_norm = _norms(
        updates, params, state.init_params, first, stack, layerwise, backend, dtype)
    # At step 1, x_t = x_0: the distance is reps_rel (1 + |x_0|) instead.
    max_distance = jnp.where(first, reps_rel * (1.0 + init_norm), jnp.maximum(state.max_distance, moved_norm))
    # sqrt(G) = hypot(sqrt(G_prev), |g|); at step 1 hypot(|g|, sqrt(eps)).
    root_eps = jnp.sqrt(jnp.asarray(eps, dtype))
    grad_norm = jnp.where(first, jnp.hypot(grad_norm, root_eps), jnp.hypot(state.grad_norm, grad_norm))
    # The reference asserts G > 0.
    eta = jnp.where(grad_norm > 0, lr * max_distance / grad_norm, 0.0)
    if init_eta is not None:
      eta = jnp.where(first, init_eta, eta)
    treedef = jax.tree.structure(updates)
    if layerwise:
      new_updates = treedef.unflatten([(eta[i] * g).astype(g.dtype) for i, g in enumerate(leaves)])
    else:
      new_updates = jax.tree.map(lambda g: (eta * g).astype(g.dtype), updates)
    return new_updates, ScaleByDoGState(
        count=optax.safe_increment(state.count),
        init_params=state.init_params,
        max_distance=max_distance,
        grad_norm=grad_norm,
    )

  return optax.GradientTransformation(init_fn, update_fn)


def _dog_alias(layerwise: bool):
  """`dog` or `ldog`: one alias body for both (only `layerwise` differs)."""
  name = "ldog" if layerwise else "dog"

  def alias(
      learning_rate: optax.ScalarOrSchedule = 1.0,
      reps_rel: float = 1e-6,
      eps: float = 1e-8,
      init_eta: float | None = None,
      weight_decay: float = 0.0,
      *,
      mask: Any = None,
      backend: str = "xla",
  ) -> optax.GradientTransformation:
    _validation.check_non_negative(name, "weight_decay", weight_decay)
    # bfloat16/float16 parameters: float32 master weights (see the module docstring).
    return _numerics.with_compensated_updates(optax.chain(
        optax.add_decayed_weights(weight_decay, mask),  # Coupled, as the reference.
        scale_by_dog(learning_rate, reps_rel, eps, init_eta, layerwise=layerwise, backend=backend),
        optax.scale(-1.0),
    ))

  alias.__name__ = alias.__qualname__ = name
  alias.__doc__ = f"""{"LDoG, DoG's rule per leaf" if layerwise else "DoG"} (dog-optimizer 1.0.3 defaults).

  `chain(add_decayed_weights(wd) [coupled], scale_by_dog(layerwise={layerwise}),
  negate)` on float32 master weights for bfloat16/float16 parameters
  (`_numerics.with_compensated_updates`; the state gets one more element at
  the end); pair it with `polynomial_decay_averaging` and evaluate at
  `optimizers.eval_params`.

  Args:
    learning_rate, reps_rel, eps, init_eta: see `scale_by_dog`.
    weight_decay: coupled (L2) decay added to the gradient (default 0).
    mask: Optax-style mask selecting decayed leaves.
    backend: "xla" (default) or "pallas" (see `scale_by_dog`).

  Returns:
    An `optax.GradientTransformation`.
  """
  return alias


dog = _dog_alias(layerwise=False)
ldog = _dog_alias(layerwise=True)


class PolynomialDecayAveragingState(NamedTuple):
  """State of `polynomial_decay_averaging`: count and the average xbar."""

  count: chex.Array
  average: optax.Params

  def eval_params(self, params: optax.Params) -> optax.Params:
    """The averaged iterate, in the parameters' dtypes."""
    return jax.tree.map(lambda a, p: a.astype(p.dtype), self.average, params)


def polynomial_decay_averaging(gamma: float = 8.0) -> optax.GradientTransformationExtraArgs:
  """Polynomial-decay iterate averaging (Shamir & Zhang), after any optimizer.

  Passes updates through unchanged and averages the new parameters
  `params + updates`, so it must be the LAST transformation of the chain (it
  needs the final, signed updates), e.g. `optax.chain(dog(), polynomial_decay_
  averaging())`. `optimizers.eval_params(state, params)` returns the average.
  The average is kept in at least float32.

  Args:
    gamma: decay power, >= 0 (reference 8; 0 is the uniform average).

  Returns:
    An `optax.GradientTransformationExtraArgs` (extra arguments such as
    `value=` are accepted and unused, so it chains with any optimizer).
  """
  owner = "polynomial_decay_averaging"
  _validation.check_non_negative(owner, "gamma", gamma)

  def init_fn(params):
    return PolynomialDecayAveragingState(
        count=jnp.zeros([], jnp.int32),
        average=_numerics.copy_to_state(params),
    )

  def update_fn(updates, state, params=None, **extra_args):
    del extra_args  # Averaging needs no loss; accepted so `update(..., value=)` works.
    if params is None:
      raise ValueError(f"{owner}: `params` are required (it averages params + updates).")
    _validation.check_tree_matches(owner, updates, state.average)
    count = optax.safe_increment(state.count)
    t = _numerics.step_count(count)
    weight = (1.0 + gamma) / (t + gamma)
    new_params = optax.apply_updates(params, updates)  # Exactly what the user gets.
    average = jax.tree.map(
        lambda a, x: (1.0 - _numerics.cast_like(weight, a)) * a
        + _numerics.cast_like(weight, a) * x.astype(a.dtype),
        state.average, new_params,
    )
    return updates, PolynomialDecayAveragingState(count=count, average=average)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
