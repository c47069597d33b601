"""One rule per optimizer, one executor: runs the rule over the tree with XLA or Pallas.

An optimizer writes its per-element math ONCE, as a pure elementwise rule

    rule(scalars, *leaves) -> tuple of arrays

and the executor runs it over the parameter tree: `backend="xla"` maps it
over the leaves (XLA fuses each leaf's expression), `backend="pallas"` runs it
as fused kernels (`pallas_kernels.elementwise.tree_map`: one kernel per large
leaf, small leaves packed into one). So `backend` is a property of the
executor, never a second implementation. The executor also owns grouping
leaves by a per-leaf key (a weight-decay mask) and scattering back, and the
fused sums over the tree (`tree_sums`).

How to add a rule (e.g. Lion: u = sign(b1 m + (1 - b1) g), m' = b2 m + (1 - b2) g):

    def lion_rule(scalars, g, m):
      b1, one_minus_b1, b2, one_minus_b2 = scalars
      x = g.astype(m.dtype)
      u = jnp.sign(b1 * m + one_minus_b1 * x)
      return u.astype(g.dtype), b2 * m + one_minus_b2 * x

    # in update_fn (`_validation.check_backend(owner, backend)` when building):
    scalars = (b1, _numerics.one_minus(b1), b2, _numerics.one_minus(b2))
    u, mu = _executor.tree_map(lion_rule, scalars, [updates, state.mu], 2,
                               backend=backend, aliases={1: 1})

API (each takes `backend="xla" | "pallas"`; check it with
`_validation.check_backend` when the optimizer is built):
  * `tree_map(rule, scalars, trees, num_outputs, aliases=, groups=)`: the
    rule's outputs as trees (e.g. the update and the new moments).
  * `tree_sums(rule, scalars, trees, num_outputs, groups=, dtype=)`: sums over
    the whole tree of each output (global dot products and norms), without
    materialising the outputs under Pallas.
  * `grouped(fn, keys, columns, num_outputs)`: any per-group computation
    (e.g. one group to a Pallas kernel, the rest per leaf), scattered back.

A rule's contract:
  * Elementwise and pure; no reductions (sums go through `tree_sums`).
  * `scalars` is a tuple. Under XLA each is passed as given (a Python float,
    or a traced scalar in `_numerics.scalar_dtype()`: cast it with
    `_numerics.cast_like(x, v)` before it touches an array, so float32 leaves
    stay float32 under x64); under Pallas each is a float32 0-d array (traced:
    a schedule does not recompile). Booleans travel as 0.0 / 1.0: test `> 0.5`.
  * Compute in the state dtype (e.g. `g.astype(v.dtype)`) and return each
    output in its storage dtype; under Pallas, small leaves arrive packed as
    float32 and are cast back to the dtype the rule gives them.
  * `aliases` (input index -> output index) updates state in place under Pallas.
  * A term that is off (e.g. decay with wd = 0) can be skipped where its
    scalar is a Python 0.0 (only under XLA): XLA keeps `x - 0 * y`, an extra
    read of y (see prodigy's `_gradient`).
  * A costly term used twice (a division or root feeding two outputs): write
    the second use from `unshared(input)` (e.g. `eta(unshared(v))`). XLA:CPU
    otherwise writes the shared term to memory and reads it back (AdaMod's
    step: 2.3x -> 1.4x optax.adamw); inside a Pallas kernel it is a no-op.
  * Per-leaf scalars (decay on some leaves only): `groups` is a tree (or list)
    of one key per leaf, e.g. the weight-decay mask, and `scalars` a function
    key -> tuple. Pallas launches one kernel group per key (keys must be
    concrete); XLA calls the function per leaf (keys may be traced).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from pallas_kernels import elementwise
from pallas_kernels import reductions

Rule = elementwise.Rule
unshared = elementwise.unshared
Scalars = Sequence[Any] | Callable[[Any], Sequence[Any]]


def _columns(trees: Sequence[Any]) -> tuple[Any, list[list[Any]]]:
  """(treedef, one list of leaves per tree), flattened up to the first tree."""
  treedef = jax.tree.structure(trees[0])
  return treedef, [treedef.flatten_up_to(t) for t in trees]


def _keys(groups: Any, treedef: Any, num_leaves: int) -> list[Any]:
  if groups is None:
    return [None] * num_leaves
  return groups if isinstance(groups, list) else treedef.flatten_up_to(groups)


def group_indices(keys: Sequence[Any]) -> list[tuple[Any, list[int]]]:
  """(key, leaf indices) per distinct concrete key, in order of first appearance."""
  keys = [k.item() if hasattr(k, "item") else k for k in keys]  # NumPy/JAX scalars: hashable.
  order = list(dict.fromkeys(keys))
  return [(key, [i for i, k in enumerate(keys) if k == key]) for key in order]


def grouped(fn: Callable[..., Sequence[list[Any]]], keys: Sequence[Any], columns: Sequence[list[Any]],
            num_outputs: int) -> list[list[Any]]:
  """Runs `fn(key, *sub_columns) -> num_outputs lists` per key group; scatters back.

  The one place that groups leaves by a key (a weight-decay flag) and puts
  the results back in leaf order.
  """
  out = [[None] * len(columns[0]) for _ in range(num_outputs)]
  for key, idx in group_indices(keys):
    results = fn(key, *[[c[i] for i in idx] for c in columns])
    for k in range(num_outputs):
      for i, value in zip(idx, results[k]):
        out[k][i] = value
  return out


def _scalars_for(scalars: Scalars, key: Any) -> tuple:
  return tuple(scalars(key) if callable(scalars) else scalars)


def tree_map(rule: Rule, scalars: Scalars, trees: Sequence[Any], num_outputs: int, *, backend: str = "xla",
             aliases: Mapping[int, int] = (), groups: Any = None) -> tuple[Any, ...]:
  """`rule` over trees of one structure (module docstring); returns `num_outputs` trees."""
  treedef, columns = _columns(trees)
  keys = _keys(groups, treedef, len(columns[0]))
  if backend == "pallas":
    run = lambda key, *cols: elementwise.tree_map(rule, _scalars_for(scalars, key), cols, num_outputs, aliases)
    out = grouped(run, keys, columns, num_outputs)
  else:
    per_leaf = [tuple(rule(_scalars_for(scalars, key), *leaves)) for key, *leaves in zip(keys, *columns)]
    out = [[o[k] for o in per_leaf] for k in range(num_outputs)]
  return tuple(treedef.unflatten(o) for o in out)


def tree_sums(rule: Rule, scalars: Scalars, trees: Sequence[Any], num_outputs: int = 1, *, backend: str = "xla",
              groups: Any = None, dtype: Any = jnp.float32) -> tuple[jax.Array, ...]:
  """The sums over the whole tree of each of the rule's outputs, in `dtype`.

  Pallas: one fused reduction per large leaf (`reductions.leaf_sums`, float32
  accumulation), the rule's outputs never materialised. XLA: per leaf,
  `jnp.sum(output.astype(dtype))`, which XLA fuses with the rule.
  """
  treedef, columns = _columns(trees)
  keys = _keys(groups, treedef, len(columns[0]))
  totals = [jnp.zeros([], dtype) for _ in range(num_outputs)]
  if backend == "pallas":
    for key, idx in group_indices(keys):
      sums = reductions.tree_sums(rule, _scalars_for(scalars, key), [[c[i] for i in idx] for c in columns],
                                  num_outputs)
      totals = [t + s.astype(dtype) for t, s in zip(totals, sums)]
    return tuple(totals)
  for key, *leaves in zip(keys, *columns):
    values = rule(_scalars_for(scalars, key), *leaves)
    totals = [t + jnp.sum(v.astype(dtype)) for t, v in zip(totals, values)]
  return tuple(totals)
