"""Shared test machinery: simulated devices and golden-trajectory replay.

Golden files (`tests/golden/{case}_{dtype}.npz`, written by
`tools/make_golden.py` from the reference PyTorch packages) hold, for each
parameter N, the reference trajectory `p/N` (T+1 steps) and the gradients
`g/N` (T steps) the reference used, in Flax layout, plus the learning rate per
step and a JSON `meta` record. Replay feeds the stored gradients to the steplab
optimizer (teacher forcing), so a comparison pins the optimizer's arithmetic
and nothing else.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import tempfile
from typing import Any

from tests import test_env

test_env.setup()  # Effective only if JAX has not initialised yet (Bazel runs each file alone).

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top

import optimizers  # pylint: disable=g-import-not-at-top

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")

# Worst relative error allowed between our trajectory and the reference's:
# float64 where the math is the same, float32 rounding otherwise.
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


@dataclasses.dataclass(frozen=True)
class GoldenCase:
  path: str
  meta: dict[str, Any]
  lr: np.ndarray
  params: dict[str, np.ndarray]  # name -> (T+1, *shape)
  grads: dict[str, np.ndarray]  # name -> (T, *shape)
  # The reference's evaluation point (schedule-free x, averaged iterate),
  # name -> (T+1, *shape); None when the reference evaluates at the params.
  eval_params: dict[str, np.ndarray] | None = None
  scalars: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # key -> (T,)
  # The loss L_t at p_t, (T,), for optimizers that take it (`update(..., value=)`).
  values: np.ndarray | None = None

  @property
  def name(self) -> str:
    return os.path.basename(self.path)[: -len(".npz")]

  @property
  def dtype(self) -> str:
    return self.meta["dtype"]


def golden_paths(*optimizer_names: str) -> list[str]:
  """Golden files whose `meta.optimizer` is one of `optimizer_names` (all files without names)."""
  paths = sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.npz")))
  chosen = [p for p in paths if not optimizer_names or load_golden(p).meta["optimizer"] in optimizer_names]
  if not chosen:
    raise FileNotFoundError(
        f"no golden data for {optimizer_names} in {GOLDEN_DIR}; run"
        " tools/make_golden.py"
    )
  return chosen


def golden_parameters(*optimizer_names: str) -> list[tuple[str, str]]:
  """(test name, path) pairs for `parameterized.named_parameters`."""
  return [(os.path.basename(p)[: -len(".npz")], p) for p in golden_paths(*optimizer_names)]


def load_golden(path: str) -> GoldenCase:
  with np.load(path, allow_pickle=False) as data:
    meta = json.loads(str(data["meta"]))
    names = meta["param_names"]
    return GoldenCase(
        path=path,
        meta=meta,
        lr=np.asarray(data["lr"]),
        params={n: np.asarray(data[f"p/{n}"]) for n in names},
        grads={n: np.asarray(data[f"g/{n}"]) for n in names},
        eval_params=(
            {n: np.asarray(data[f"x/{n}"]) for n in names} if meta.get("eval_params") else None
        ),
        scalars={k: np.asarray(data[f"s/{k}"]) for k in meta.get("scalars", ())},
        values=np.asarray(data["value"]) if meta.get("value") else None,
    )


def learning_rate_of(case: GoldenCase) -> Any:
  """A float for a constant learning rate, else an Optax schedule over `lr`."""
  lr = case.lr
  if np.all(lr == lr[0]):
    return float(lr[0])
  table = jnp.asarray(lr, jnp.float64 if case.dtype == "float64" else jnp.float32)
  return lambda count: table[jnp.minimum(count, len(lr) - 1)]


# The bases of the schedule-free wrapper cases (torch SGD, Adagrad with eps 0
# and no initial accumulator, prodigyopt's Prodigy), built with the case's lr.
_WRAPPED_BASES = {
    "sgd": optax.sgd,
    "adagrad": lambda lr: optax.adagrad(lr, initial_accumulator_value=0.0, eps=0.0),
    "prodigy": lambda lr: optimizers.prodigy(lr),
}


def optimizer_for(case: GoldenCase) -> optax.GradientTransformation:
  """steplab's counterpart of the case's reference setup (meta optimizer + kwargs)."""
  lr = learning_rate_of(case)
  kwargs = dict(case.meta["kwargs"])
  if case.meta["optimizer"] == "schedule_free":  # ScheduleFreeWrapper(base).
    return optimizers.schedule_free(_WRAPPED_BASES[kwargs.pop("base")](lr), lr, **kwargs)
  optimizer = optimizers.registry[case.meta["optimizer"]].factory(learning_rate=lr, **kwargs)
  if case.meta.get("averaging_gamma") is not None:
    optimizer = optax.chain(optimizer, optimizers.polynomial_decay_averaging(case.meta["averaging_gamma"]))
  return optimizer


def replay(case: GoldenCase, optimizer: optax.GradientTransformation | None = None):
  """Runs our optimizer on the stored gradients; returns name -> trajectory."""
  return replay_with_eval(case, optimizer)[0]


def replay_with_eval(case: GoldenCase, optimizer: optax.GradientTransformation | None = None):
  """Like `replay`, plus the trajectory of `optimizers.eval_params`.

  Returns (params, eval params), each name -> (T+1, *shape).
  """
  if optimizer is None:
    optimizer = optimizer_for(case)
  names = case.meta["param_names"]
  params = {n: jnp.asarray(case.params[n][0]) for n in names}
  grads = {n: jnp.asarray(case.grads[n]) for n in names}

  values = None if case.values is None else jnp.asarray(case.values, case.dtype)

  def step(carry, inputs):
    params, state = carry
    g, value = inputs
    extra = {} if value is None else dict(value=value)
    updates, state = optimizer.update(g, state, params, **extra)
    params = optax.apply_updates(params, updates)
    return (params, state), (params, optimizers.eval_params(state, params))

  _, (trajectory, eval_trajectory) = jax.jit(lambda p, s, xs: jax.lax.scan(step, (p, s), xs))(
      params, optimizer.init(params), (grads, values)
  )
  whole = lambda t: {n: np.concatenate([case.params[n][:1], np.asarray(t[n])]) for n in names}
  return whole(trajectory), whole(eval_trajectory)


def worst_relative_error(
    ours: dict[str, np.ndarray], case: GoldenCase, reference: dict[str, np.ndarray] | None = None
) -> float:
  """max over parameters and steps of |ours - ref|_inf / |ref|_inf.

  `reference` defaults to the case's parameter trajectory.
  """
  worst = 0.0
  for name, ref in (case.params if reference is None else reference).items():
    ref = ref.astype(np.float64)
    diff = np.abs(ours[name].astype(np.float64) - ref)
    axes = tuple(range(1, ref.ndim))
    scale = np.maximum(np.max(np.abs(ref), axis=axes), np.finfo(np.float64).tiny)
    worst = max(worst, float(np.max(np.max(diff, axis=axes) / scale)))
  return worst


def golden_error(path: str, x64_scalars: bool = False) -> tuple[GoldenCase, float]:
  """Replays one golden file in its own precision; returns the worst error.

  The error covers the evaluation point too where the file stores it. With
  `x64_scalars`, a float32 case runs with x64 on: float32 arrays, per-step
  scalars in float64 (the precision layout of references that keep their
  statistics in Python floats, e.g. Prodigy's d).
  """
  case = load_golden(path)
  with jax.enable_x64(case.dtype == "float64" or x64_scalars):
    ours, ours_eval = replay_with_eval(case)
  for name, traj in ours.items():
    assert traj.dtype == np.dtype(case.dtype), (name, traj.dtype, case.dtype)
  error = worst_relative_error(ours, case)
  if case.eval_params is not None:  # Schedule-free x, averaged iterates: both must match.
    error = max(error, worst_relative_error(ours_eval, case, case.eval_params))
  return case, error


def tempdir(test) -> str:
  """A temporary directory removed after `test`.

  absltest's `create_tempdir` needs parsed flags, which pytest does not do.
  """
  path = tempfile.mkdtemp()
  test.addCleanup(shutil.rmtree, path, ignore_errors=True)
  return path


def bf16_against_float32(test, optimizer, steps):
  """bf16 parameters move and stay within bf16 rounding of the float32 run.

  The bf16 run gets the float32 gradient at its (rounded) parameters, rounded
  to bf16; its parameters are its float32 master weights rounded to bf16.
  Bound: 2 bf16 epsilons (2 * 2^-7) of max|x|: one for rounding the
  parameters, one for the gradients' rounding carried along the run
  (measured for DoG/LDoG: under 1 at every step). Asserts the last step;
  returns (max error per step, bound).
  """
  rng = np.random.default_rng(0)
  target = jnp.asarray(rng.normal(size=(16,)), jnp.float32)
  curvature = jnp.linspace(0.5, 2.0, 16)
  loss = lambda p: jnp.sum(curvature * (p["a"].astype(jnp.float32) - target) ** 2)
  params32 = {"a": jnp.asarray(rng.normal(size=(16,)), jnp.bfloat16).astype(jnp.float32)}
  params16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params32)

  def run(params):
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)
    out = []
    for _ in range(steps):
      g = jax.tree.map(lambda g, p: g.astype(p.dtype), jax.grad(loss)(params), params)
      updates, state = update(g, state, params)
      params = optax.apply_updates(params, updates)
      out.append(np.asarray(params["a"], np.float32))
    return np.array(out), state

  ours, _ = run(params16)
  reference, _ = run(params32)
  moved = np.abs(ours[-1] - np.asarray(params16["a"], np.float32)).max()
  test.assertGreater(moved, 0.5)  # Not frozen (the distance to the target is ~1).
  bound = 2 * float(jnp.finfo(jnp.bfloat16).eps) * np.abs(reference).max()
  error = np.abs(ours - reference).max(axis=1)
  test.assertLess(error[-1], bound)  # Where the run ends.
  return error, bound
