"""Muon (MomentUm Orthogonalized by Newton-Schulz) with an Adam fallback.

Muon is for the hidden weight matrices of a network. For such a matrix W
(Flax layout `(fan_in, fan_out)`, `x W = y`), with momentum beta:

    m  <- beta m + (1 - beta) g                    (bias-corrected: mhat)
    d   = beta mhat_{t+1} + (1 - beta) ghat       (Nesterov, the default; else mhat)
    O   = NS5(d)       five quintic Newton-Schulz steps after d / (|d|_F + eps),
                       approximately U V^T for d = U S V^T
    u   = sqrt(max(1, fan_out / fan_in)) O        (Keller Jordan's width scaling;
                                                   `consistent_rms=c`: sqrt(max(fan_in, fan_out)) c O)
    p  <- p - lr (u + wd p)

Every other parameter (biases, norm scales, embeddings, position tables,
scalars) takes Adam, `u = mhat / (sqrt(vhat) + adam_eps)`, with
`p <- p - adam_lr_ratio lr (u + wd p)`. The Adam learning rate is a ratio of
Muon's so that one schedule (the runner's warmup + cosine) drives both.

The Muon block is `optax.contrib.scale_by_muon` (its momentum, bias
correction, Nesterov form and Newton-Schulz coefficients (3.4445, -4.7750,
2.0315)); the Adam block is `optax.scale_by_adam`. What this module adds, and
why (optax 0.2.8's `optax.contrib.muon` differs in each point):

* Which parameters get Muon. optax's default sends every 2-D leaf to Muon and
  everything else to Adam. In Flax that puts embeddings `(vocab, d)`,
  learned position tables and attention biases `(heads, head_dim)` under Muon,
  and sends the 3-D attention kernels `(d, heads, head_dim)` /
  `(heads, head_dim, d)` and 4-D conv kernels `(kh, kw, in, out)` to Adam:
  the opposite of Keller Jordan's guidance (Muon for hidden weights,
  convolution filters viewed as 2-D; AdamW for embeddings, gains and biases).
  `muon_dimension_numbers` gives Muon to leaves named `kernel` (Flax Dense,
  DenseGeneral, Conv) or `w` (Haiku) of rank >= 2, with `fan_out` the last
  axis (`(kh, kw, in) x out` for convolutions, `(heads head_dim) x d` for an
  attention output) except under `query`/`key`/`value`, whose `(d, heads,
  head_dim)` kernels are `d x (heads head_dim)` matrices, one per projection
  as in modded-nanogpt. The output layer is a `kernel` too and so gets Muon
  (Keller Jordan recommends AdamW there); pass `dimension_numbers` to change
  any of this, and see `muon_partition` for what a model gets.
* Weight decay and its `mask` apply to both groups, decoupled and scaled by
  each group's learning rate, as in Keller Jordan's `MuonWithAuxAdam` (optax
  decays the Muon group with `weight_decay` and the Adam group with a separate,
  unmasked `adam_weight_decay`).
* The fallback is plain Adam with `MuonWithAuxAdam`'s betas (0.9, 0.95) and
  eps 1e-10 (optax's is NAdam whenever Muon is Nesterov, and shares Muon's
  Newton-Schulz eps).
* bfloat16 parameters get float32 state (steplab's mixed-precision rule), and
  the state holds no constant arrays (optax keeps the Newton-Schulz
  coefficients in it): every state array is shaped like a parameter.

Defaults: Keller Jordan's `Muon` (lr 0.02, momentum 0.95, Nesterov, 5
Newton-Schulz steps, weight decay 0) and `MuonWithAuxAdam`'s Adam group (lr
3e-4, i.e. a ratio of 0.015 to Muon's 0.02; betas (0.9, 0.95); eps 1e-10);
the Newton-Schulz eps 1e-8 is optax's (Keller Jordan's code adds 1e-7).
Newton-Schulz runs in the state dtype (float32), where the reference uses
bfloat16 on GPU.

References:
  Jordan et al., "Muon: An optimizer for hidden layers in neural networks",
  2024, https://kellerjordan.github.io/posts/muon/; code
  github.com/KellerJordan/Muon (muon.py) and KellerJordan/modded-nanogpt.
  Liu et al., "Muon is Scalable for LLM Training", arXiv:2502.16982, 2025
  (`consistent_rms`). Implementation reused: optax.contrib.scale_by_muon.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import optax
from optax import contrib as optax_contrib

from optimizers import _numerics
from optimizers import _validation

__all__ = ("muon", "muon_dimension_numbers", "muon_partition", "MuonDimensionNumbers",
    "ScaleByMuonState")

MuonDimensionNumbers = optax_contrib.MuonDimensionNumbers

# A rule: (path names, shape) -> how to view the leaf as a matrix, or None
# for the Adam fallback.
Rule = Callable[[tuple[str, ...], tuple[int, ...]], "MuonDimensionNumbers | None"]

# Leaf names of weight matrices: Flax (`kernel`) and Haiku (`w`), both laid
# out (..., fan_in, fan_out).
_MATRIX_NAMES = ("kernel", "w")
# Flax attention projections whose kernels are (d, heads, head_dim).
_HEAD_SPLIT_OUTPUTS = ("query", "key", "value")


def muon_dimension_numbers(
    path: Sequence[str], shape: Sequence[int]
) -> MuonDimensionNumbers | None:
  """steplab's default rule: how Muon views a leaf as a matrix, or None (Adam).

  Args:
    path: the leaf's key names from the root, e.g. `("Dense_0", "kernel")`.
    shape: the leaf's shape.

  Returns:
    For a leaf named `kernel` or `w` of rank >= 2: reduction axes all but the
    last, output axis the last (`(fan_in, fan_out)` for Dense, `(kh, kw, in)
    x out` for Conv, `(heads, head_dim) x d` for an attention output); under
    `query`/`key`/`value` reduction axis 0 and the rest as output (Flax's
    `(d, heads, head_dim)`). None (Adam) for everything else.
  """
  ndim = len(shape)
  if ndim < 2 or not path or path[-1] not in _MATRIX_NAMES:
    return None
  if ndim > 2 and len(path) >= 2 and path[-2] in _HEAD_SPLIT_OUTPUTS:
    return MuonDimensionNumbers(reduction_axis=(0,), output_axis=tuple(range(1, ndim)))
  return MuonDimensionNumbers(reduction_axis=tuple(range(ndim - 1)), output_axis=(ndim - 1,))


def _is_spec(x: Any) -> bool:
  return x is None or isinstance(x, MuonDimensionNumbers)


def _as_rule(dimension_numbers: Any) -> Rule:
  """A per-leaf rule from None (the default), a rule, or a tree of specs."""
  if dimension_numbers is None:
    return muon_dimension_numbers
  if callable(dimension_numbers):
    return dimension_numbers
  flat, _ = jax.tree_util.tree_flatten_with_path(dimension_numbers, is_leaf=_is_spec)
  for path, spec in flat:
    if not _is_spec(spec):
      raise ValueError(
          f"muon: `dimension_numbers` must hold MuonDimensionNumbers or None, got"
          f" {spec!r} at {jax.tree_util.keystr(path)}."
      )
  table = {_numerics.key_names(path): spec for path, spec in flat}

  def rule(path, shape):
    del shape
    if path not in table:
      raise ValueError(f"muon: `dimension_numbers` has no entry for the parameter {'/'.join(path)}.")
    return table[path]

  return rule


def muon_partition(params: Any, dimension_numbers: Any = None) -> Any:
  """What `muon` does to each leaf of `params`: a tree of MuonDimensionNumbers
  (Muon, with the axes it orthogonalises over) or None (the Adam fallback).

  Args:
    params: a parameter tree (arrays or anything with `.shape`, e.g.
      `jax.ShapeDtypeStruct`).
    dimension_numbers: as `muon`'s.
  """
  rule = _as_rule(dimension_numbers)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: rule(_numerics.key_names(path), tuple(jnp.shape(x))), params
  )


def _fans(shape: Sequence[int], spec: MuonDimensionNumbers) -> tuple[int, int]:
  def axes(a):
    return tuple(ax % len(shape) for ax in ((a,) if isinstance(a, int) else a))

  fan_in = math.prod(shape[ax] for ax in axes(spec.reduction_axis))
  fan_out = math.prod(shape[ax] for ax in axes(spec.output_axis))
  return fan_in, fan_out


class ScaleByMuonState(NamedTuple):
  """State of the Muon block: int32 step count and the momentum."""

  count: chex.Array
  mu: optax.Updates


def _scale_by_orthogonalised_momentum(
    beta: Any, ns_steps: int, eps: Any, nesterov: bool, mu_dtype: Any, specs: Callable[[Any], Any]
) -> optax.GradientTransformation:
  """`optax.contrib.scale_by_muon` with the constant coefficients out of the state."""
  inner = optax_contrib.scale_by_muon(
      ns_steps=ns_steps, beta=beta, eps=eps, mu_dtype=mu_dtype, nesterov=nesterov,
      weight_dimension_numbers=specs,
  )

  coefficients = inner.init({}).ns_coeffs  # Constants: built once, kept out of the state.

  def init_fn(params):
    state = inner.init(params)
    return ScaleByMuonState(count=state.count, mu=state.mu)

  def update_fn(updates, state, params=None):
    full = optax_contrib.MuonState(count=state.count, mu=state.mu, ns_coeffs=coefficients)
    updates, full = inner.update(updates, full, params)
    return updates, ScaleByMuonState(count=full.count, mu=full.mu)

  return optax.GradientTransformation(init_fn, update_fn)


def _scale_by_shape(consistent_rms: Any, specs: Callable[[Any], Any]) -> optax.GradientTransformation:
  """Keller Jordan's sqrt(max(1, fan_out / fan_in)), or Moonlight's consistent RMS."""

  def update_fn(updates, state, params=None):
    del params

    def scale(u, spec):
      fan_in, fan_out = _fans(u.shape, spec)
      if consistent_rms is None:
        return u * math.sqrt(max(1.0, fan_out / fan_in))
      return (u * (math.sqrt(max(fan_in, fan_out)) * consistent_rms)).astype(u.dtype)

    return jax.tree.map(scale, updates, specs(updates)), state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def _scale_fallback(ratio: Any, is_muon: Callable[[Any], Any]) -> optax.GradientTransformation:
  """Multiplies the Adam group's updates by `ratio` (its learning-rate ratio)."""

  def update_fn(updates, state, params=None):
    del params
    updates = jax.tree.map(
        lambda u, muon: u if muon else (u * ratio).astype(u.dtype), updates, is_muon(updates)
    )
    return updates, state

  return optax.GradientTransformation(optax.init_empty_state, update_fn)


def muon(
    learning_rate: optax.ScalarOrSchedule = 0.02,
    beta: float = 0.95,
    ns_steps: int = 5,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    adam_lr_ratio: float = 0.015,
    adam_b1: float = 0.9,
    adam_b2: float = 0.95,
    adam_eps: float = 1e-10,
    consistent_rms: float | None = None,
    *,
    nesterov: bool = True,
    mask: Any = None,
    mu_dtype: Any | None = None,
    dimension_numbers: Any = None,
) -> optax.GradientTransformation:
  """Muon for weight matrices, Adam for the rest (see the module docstring).

  Args:
    learning_rate: Muon's learning rate (a float or an Optax schedule), in
      units of spectral norm per step.
    beta: Muon's momentum, in [0, 1).
    ns_steps: Newton-Schulz iterations (a positive int; static).
    eps: added to the Frobenius norm before Newton-Schulz.
    weight_decay: decoupled decay for both groups: `p -= lr_group wd p`.
    adam_lr_ratio: the Adam group's learning rate as a multiple of
      `learning_rate` (so it follows the same schedule).
    adam_b1, adam_b2, adam_eps: the Adam group's betas and eps.
    consistent_rms: None (default): Keller Jordan's width scaling
      `sqrt(max(1, fan_out / fan_in))`; a float c: `sqrt(max(fan_in,
      fan_out)) c`, updates of AdamW-like RMS (Liu et al. use 0.2).
    nesterov: Nesterov momentum for Muon (Keller Jordan's default True).
    mask: Optax-style mask (tree or callable) selecting decayed leaves.
    mu_dtype: dtype of the first moments; default the state dtype (at least
      float32).
    dimension_numbers: which leaves get Muon and how each is viewed as a
      matrix. None: `muon_dimension_numbers`; a rule `(path names, shape) ->
      MuonDimensionNumbers | None`; or a tree like the parameters with
      MuonDimensionNumbers (Muon) or None (Adam) leaves. A rule sees each
      leaf's own path, so it also works under `optax.masked`.

  Returns:
    An `optax.GradientTransformation`.

  Raises:
    ValueError: for a hyperparameter out of range, naming it.
  """
  _validation.check_learning_rate("muon", learning_rate)
  _validation.check_decay("muon", "beta", beta)
  if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 1:
    raise ValueError(f"muon: `ns_steps` must be a positive int, got {ns_steps!r}.")
  _validation.check_non_negative("muon", "eps", eps)
  _validation.check_non_negative("muon", "weight_decay", weight_decay)
  _validation.check_non_negative("muon", "adam_lr_ratio", adam_lr_ratio)
  _validation.check_decay("muon", "adam_b1", adam_b1)
  _validation.check_decay("muon", "adam_b2", adam_b2)
  _validation.check_non_negative("muon", "adam_eps", adam_eps)
  _validation.check_mu_dtype("muon", mu_dtype)
  if consistent_rms is not None:
    _validation.check_positive("muon", "consistent_rms", consistent_rms)
  rule = _as_rule(dimension_numbers)

  def specs(tree):
    return jax.tree_util.tree_map_with_path(
        lambda path, x: rule(_numerics.key_names(path), tuple(x.shape)), tree)

  def is_muon(tree):
    return jax.tree.map(lambda spec: spec is not None, specs(tree), is_leaf=_is_spec)

  def labels(tree):
    return jax.tree.map(lambda muon_leaf: "muon" if muon_leaf else "adam", is_muon(tree))

  directions = optax.partition(
      {
          "muon": optax.chain(
              _scale_by_orthogonalised_momentum(beta, ns_steps, eps, nesterov, mu_dtype, specs),
              _scale_by_shape(consistent_rms, specs),
          ),
          "adam": optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=adam_eps, mu_dtype=mu_dtype),
      },
      labels,
  )
  return optax.chain(
      _numerics.in_state_dtype(directions),
      optax.add_decayed_weights(weight_decay, mask),
      _scale_fallback(adam_lr_ratio, is_muon),
      optax.scale_by_learning_rate(learning_rate),
  )
