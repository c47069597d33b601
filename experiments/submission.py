"""AlgoPerf's submission API, and a generic adapter for registry optimizers.

A submission is a Python module (or any object) with AlgoPerf's functions:

    get_batch_size(workload_name) -> int
    init_optimizer_state(workload, model_params, model_state, hyperparameters, rng)
        -> optimizer_state
    update_params(workload, current_param_container, current_params_types,
                  model_state, hyperparameters, batch, loss_type,
                  optimizer_state, eval_results, global_step, rng,
                  train_state=None) -> (optimizer_state, params, model_state)
    data_selection(workload, input_queue, optimizer_state,
                   current_param_container, model_state, hyperparameters,
                   global_step, rng) -> batch
    prepare_for_eval(workload, current_param_container, current_params_types,
                     model_state, hyperparameters, loss_type, optimizer_state,
                     eval_results, global_step, rng)
        -> (optimizer_state, params, model_state)          # optional

Files written for AlgoPerf run unchanged: `load_submission` first makes
`algoperf.spec` & co. importable (`experiments.algoperf_compat.install`; a
real AlgoPerf installation is used as it is). As in AlgoPerf's JAX
submissions, `optimizer_state` is a pair `(opt_state, update_fn)`; only
`opt_state` (a pytree of arrays) is checkpointed, and `update_fn` is
re-attached on resume. `update_params` gets `train_state` only when its
signature names it, as AlgoPerf does.

`hyperparameters` is what AlgoPerf passes: a namedtuple `Hyperparameters`
built from one search-space point (`make_hyperparameters`), or None under the
self-tuning ruleset. `registry_submission(name)` turns any
`optimizers.registry` entry into a submission that speaks AlgoPerf's API
only (so it also runs in AlgoPerf's own runner, see
`experiments.export_submission`); its `prepare_for_eval` hands out
`optimizers.eval_params` (x for schedule-free, the average for averaging
methods) and keeps the training parameters in its state, since the runner
continues from what `prepare_for_eval` returns.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import inspect
import importlib.util
import keyword
import os
import sys
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
import optax

from experiments import algoperf_compat
from experiments import schedule_config
from experiments import sharding
import optimizers
from optimizers import schedules
from optimizers.registry import factory_name
from optimizers.registry import translate_hyperparameter

REQUIRED = ("get_batch_size", "init_optimizer_state", "update_params", "data_selection")
SEARCH_SPACE_FILE = "tuning_search_space.json"  # AlgoPerf's name, beside submission.py.


@dataclasses.dataclass(frozen=True)
class Submission:
  """The functions of a submission, plus its name and default search space.

  `search_space`: the default tuning search space, a dict or list (the
  module's `SEARCH_SPACE`) or the path of a JSON file (`tuning_search_space.json`
  beside the submission file, as AlgoPerf lays submissions out).
  `path`: the file it was loaded from, if any.
  """

  name: str
  get_batch_size: Callable[..., int]
  init_optimizer_state: Callable[..., Any]
  update_params: Callable[..., Any]
  data_selection: Callable[..., Any]
  prepare_for_eval: Callable[..., Any] | None = None
  search_space: Any = None
  path: str | None = None

  @property
  def needs_train_state(self) -> bool:
    """Whether `update_params` takes `train_state` (AlgoPerf passes it only then)."""
    try:
      return "train_state" in inspect.signature(self.update_params).parameters
    except (TypeError, ValueError):  # No signature (e.g. some builtins): do not pass it.
      return False


def make_hyperparameters(point: Mapping[str, Any] | None) -> Any:
  """What AlgoPerf passes as `hyperparameters`: a namedtuple, or None.

  A namedtuple (`collections.namedtuple("Hyperparameters", names)`) as
  AlgoPerf's `halton.generate_search` makes, so it is a pytree and a jit
  argument; None (self-tuning, no point) stays None.

  Raises:
    ValueError: a name that cannot be an attribute (not an identifier).
  """
  if point is None:
    return None
  bad = [k for k in point if not (isinstance(k, str) and k.isidentifier() and not keyword.iskeyword(k))]
  if bad:
    raise ValueError(f"hyperparameter names must be Python identifiers (AlgoPerf reads them as attributes): {bad}")
  return collections.namedtuple("Hyperparameters", list(point))(**point)


def hyperparameters_dict(hyperparameters: Any) -> dict[str, Any]:
  """A submission's `hyperparameters` (namedtuple, mapping, namespace or None) as a dict."""
  if hyperparameters is None:
    return {}
  if hasattr(hyperparameters, "_asdict"):
    return dict(hyperparameters._asdict())
  if isinstance(hyperparameters, Mapping):
    return dict(hyperparameters)
  return dict(vars(hyperparameters))


def submission_name(path: str) -> str:
  """A submission's name from its path: the file's stem, or its folder's
  name when the file is AlgoPerf's conventional `submission.py`."""
  path = os.path.abspath(path)
  stem = os.path.splitext(os.path.basename(path))[0]
  if stem == "submission":
    return os.path.basename(os.path.dirname(path)) or stem
  return stem


def load_submission(path_or_module: str, name: str | None = None) -> Submission:
  """Loads a submission from a `.py` file path or a dotted module name.

  `algoperf` is made importable first (see the module docstring). The name
  (used in log paths) is `name`, else the module's `NAME`, else
  `submission_name(path)`.

  Raises:
    ValueError: if it cannot be found or lacks one of the required functions.
  """
  algoperf_compat.install()
  if path_or_module.endswith(".py"):
    if not os.path.exists(path_or_module):
      raise ValueError(f"--submission_path: no such file {path_or_module!r}.")
    default_name = submission_name(path_or_module)
    module_name = f"steplab_submission_{default_name}"
    spec = importlib.util.spec_from_file_location(module_name, path_or_module)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # As an import would (pickle, dataclasses need it).
    try:
      spec.loader.exec_module(module)
    except BaseException:
      del sys.modules[module_name]
      raise
  else:
    try:
      module = importlib.import_module(path_or_module)
    except ImportError as e:
      raise ValueError(f"--submission_path: cannot import {path_or_module!r}: {e}") from None
    default_name = path_or_module.rsplit(".", 1)[-1]
  missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
  if missing:
    raise ValueError(
        f"submission {path_or_module!r} lacks {missing}; a submission defines"
        f" {list(REQUIRED)} and optionally prepare_for_eval."
    )
  search_space = getattr(module, "SEARCH_SPACE", None)
  if search_space is None and path_or_module.endswith(".py"):
    # AlgoPerf keeps a submission's search space beside it.
    beside = os.path.join(os.path.dirname(os.path.abspath(path_or_module)), SEARCH_SPACE_FILE)
    if os.path.exists(beside):
      search_space = beside
  return Submission(
      name=name or getattr(module, "NAME", default_name),
      get_batch_size=module.get_batch_size,
      init_optimizer_state=module.init_optimizer_state,
      update_params=module.update_params,
      data_selection=module.data_selection,
      prepare_for_eval=getattr(module, "prepare_for_eval", None),
      search_space=search_space,
      path=path_or_module if path_or_module.endswith(".py") else None,
  )


# --- The generic adapter -------------------------------------------------------

# Hyperparameters the adapter consumes itself; the rest go to the optimizer.
# `schedule_<option>` keys are options of the named schedule. The workload-
# level keys are AlgoPerf's: label smoothing and dropout rates go to the
# workload's loss and model, `grad_clip` clips the gradient's global norm
# before the optimizer (as AlgoPerf's baselines).
SCHEDULE_KEYS = ("schedule", "warmup_factor", "step_hint_factor")
SCHEDULE_OPTION_PREFIX = "schedule_"
LOSS_KEYS = ("label_smoothing",)
WORKLOAD_KEYS = ("label_smoothing", "dropout_rate", "aux_dropout_rate", "grad_clip")


def _is_adapter_key(key: str) -> bool:
  return key in SCHEDULE_KEYS or key in WORKLOAD_KEYS or key.startswith(SCHEDULE_OPTION_PREFIX)


def build_optimizer(
    factory: Callable[..., optax.GradientTransformation],
    point: Mapping[str, Any],
    step_hint: int,
    defaults: Mapping[str, Any] = (),
    schedule_context: Mapping[str, Any] = (),
) -> optax.GradientTransformation:
  """The optimizer for one search-space point.

  The learning rate becomes a schedule when the point names one or sets
  `warmup_factor` (AlgoPerf's baseline hyperparameter):

  * `schedule`: a name of `experiments.schedule_config.SCHEDULE_NAMES` (default
    "cosine": linear warmup, then cosine decay to zero), with the point's
    `learning_rate` as its peak;
  * `step_hint_factor` (default 1): the schedule ends at
    `step_hint_factor * step_hint` steps (AlgoPerf's baselines tune it);
  * `warmup_factor` (default 0): warmup over that fraction of the schedule;
  * `schedule_<option>`: the schedule's own options, e.g.
    `{"schedule": "wsd", "schedule_decay_fraction": 0.2,
    "schedule_decay_shape": "1-sqrt"}`. With "one_cycle",
    `schedule_cycle_momentum: true` also cycles the optimizer's `b1`
    (torch's OneCycleLR momentum) through `optax.inject_hyperparams`.

  Arguments the optimizer reads as its constant rate (AdaBound's
  `base_learning_rate`) default to the peak (`_schedule_peak_args`).
  Without either key the rate is constant. `one_minus_<name>` sets
  `<name> = 1 - value`; AlgoPerf's `beta1`/`beta2` set `b1`/`b2`;
  `grad_clip` puts `optax.clip_by_global_norm` first; the other
  `WORKLOAD_KEYS` are ignored here (the loss and model take them). `schedule_context` fills schedule options the point
  leaves out (the runner passes `batch_size` and `tokens_per_step` for the
  power schedule).
  """
  merged = {**dict(defaults), **dict(point)}
  kwargs = {}
  for key, value in merged.items():
    if _is_adapter_key(key):
      continue
    arg, arg_value = translate_hyperparameter(key, value, _arguments(factory))
    kwargs[arg] = arg_value
  unknown = sorted(set(kwargs) - set(_arguments(factory)))
  if unknown:
    raise ValueError(
        f"hyperparameters {unknown} are not arguments of {factory_name(factory)};"
        f" valid: {sorted(_arguments(factory))} (plus {list(SCHEDULE_KEYS + WORKLOAD_KEYS)},"
        f" {SCHEDULE_OPTION_PREFIX}<option>, one_minus_<name> and AlgoPerf's beta1/beta2)."
    )
  if "schedule" in merged or "warmup_factor" in merged:
    if "learning_rate" not in kwargs:
      raise ValueError(f"a learning-rate schedule needs a learning_rate (the peak) for {factory_name(factory)}.")
    peak = kwargs["learning_rate"]
    kwargs["learning_rate"], momentum = _schedule(merged, step_hint, dict(schedule_context))
    for arg in _schedule_peak_args(factory):
      kwargs.setdefault(arg, peak)
    if momentum is not None:
      if "b1" not in _arguments(factory):
        raise ValueError(f"schedule_cycle_momentum: {factory_name(factory)} has no b1 to cycle.")
      kwargs["b1"] = momentum
      return _clipped(optax.inject_hyperparams(factory)(**kwargs), merged)
  return _clipped(factory(**kwargs), merged)


def _clipped(optimizer: optax.GradientTransformation, point: Mapping[str, Any]) -> optax.GradientTransformation:
  clip = point.get("grad_clip")
  if clip is None:
    return optimizer
  if not clip > 0:
    raise ValueError(f"grad_clip must be positive, got {clip!r}")
  # optax.chain's state is a tuple: eval_params and estimated_d find their
  # marked states inside it as before.
  return optax.chain(optax.clip_by_global_norm(clip), optimizer)


def _schedule(point: Mapping[str, Any], step_hint: int, context: dict[str, Any]):
  """(learning-rate schedule, b1 schedule or None) for a point with a schedule."""
  name = point.get("schedule", "cosine")
  total = max(1, int(round(float(point.get("step_hint_factor", 1.0)) * step_hint)))
  warmup = int(float(point.get("warmup_factor", 0.0)) * total)
  if name == "cosine":  # AlgoPerf's baseline: at least one warmup step.
    warmup = max(1, warmup)
    total = max(total, warmup + 1)
  options = {key[len(SCHEDULE_OPTION_PREFIX):]: value for key, value in point.items()
             if key.startswith(SCHEDULE_OPTION_PREFIX)}
  cycle_momentum = bool(options.pop("cycle_momentum", False))
  if cycle_momentum and name != "one_cycle":
    raise ValueError(f"schedule_cycle_momentum needs schedule 'one_cycle', got {name!r}.")
  if name == "power":
    for key in ("batch_size", "tokens_per_step"):
      if key in context:
        options.setdefault(key, context[key])
  lr = schedule_config.schedule_from_config(
      name, learning_rate=point["learning_rate"], total_steps=total, warmup_steps=warmup, **options)
  if not cycle_momentum:
    return lr, None
  momentum_options = {k: options[k] for k in ("pct_start", "anneal_strategy", "three_phase") if k in options}
  return lr, schedules.one_cycle_momentum_schedule(total, **momentum_options)


def _arguments(factory) -> tuple[str, ...]:
  return tuple(inspect.signature(factory).parameters)


def _schedule_peak_args(factory) -> tuple[str, ...]:
  """Arguments set to the schedule's peak when the learning rate becomes one.

  Those an optimizer reads as "the" learning rate while the schedule moves
  (AdaBound's bounds are `final_lr` relative to it, undefined for a warmup
  from 0): the registry entry's `schedule_peak_args` for this factory, none
  for a factory outside the registry. A point or the defaults may still set
  them.
  """
  for spec in optimizers.registry.values():
    if spec.factory is factory:
      return tuple(spec.schedule_peak_args)
  return ()


# Bounds of the caches keyed by workload (and optimizer) objects here and in
# `experiments.probes`. An entry holds the workload (its data) and jitted
# functions with their compiled programs, so an unbounded cache kept every
# trial of a sweep alive. A trial looks each key up once and keeps what it
# gets until it ends (the step inside its optimizer state, the diagnostics in
# their objects), so eviction never recompiles within a trial. Keys per
# trial: the step and its loss; the diagnostics' loss (no dropout arguments);
# the step-cost baseline's step and loss.
LOSS_CACHE_SIZE = 8  # A trial's <= 3 losses, and room for earlier trials' diagnostics to be reused.
STEP_CACHE_SIZE = 4  # A trial's <= 2 steps; a fresh optimizer per trial, so no reuse across trials.


@functools.lru_cache(maxsize=LOSS_CACHE_SIZE)
def training_loss(workload, label_smoothing: float = 0.0, dropout_rate: float | None = None,
                  aux_dropout_rate: float | None = None) -> Callable[..., Any]:
  """The training objective the registry adapter differentiates.

  `loss(params, model_state, batch, rng) -> (mean loss, new model state)`:
  the workload's `model_fn` in `ForwardPassMode.TRAIN` (batch statistics
  updated, dropout drawn from `rng`; dropout rates the workload's unless
  given), its summed `loss_fn` over the valid examples divided by their
  number. Only AlgoPerf's workload API is used, so it also trains AlgoPerf's
  own workloads. Cached per arguments (`LOSS_CACHE_SIZE`), so functions
  jitted on it compile once (the probes and the trainer's diagnostics use it
  too).
  """
  train_mode = algoperf_compat.install().ForwardPassMode.TRAIN
  dropout = {k: v for k, v in (("dropout_rate", dropout_rate), ("aux_dropout_rate", aux_dropout_rate))
             if v is not None}

  def loss(params, model_state, batch, rng):
    logits, new_model_state = workload.model_fn(
        params, batch, model_state, train_mode, rng, update_batch_norm=True, **dropout
    )
    losses = workload.loss_fn(batch["targets"], logits, batch.get("weights"), label_smoothing)
    return losses["summed"] / losses["n_valid_examples"], new_model_state

  return loss


@functools.lru_cache(maxsize=STEP_CACHE_SIZE)
def train_step(workload, optimizer: optax.GradientTransformation, label_smoothing: float = 0.0,
               needs_value: bool = False, dropout_rate: float | None = None,
               aux_dropout_rate: float | None = None):
  """The jitted step: loss, gradients, optimizer update, new params.

  `step(params, model_state, opt_state, batch, rng) -> (params, model_state,
  opt_state, loss)`. With `needs_value` the optimizer also gets the batch loss
  as `value=`.
  """
  loss_fn = training_loss(workload, label_smoothing, dropout_rate, aux_dropout_rate)

  @jax.jit
  def step(params, model_state, opt_state, batch, rng):
    (loss, model_state), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, model_state, batch, rng
    )
    extra = dict(value=loss) if needs_value else {}
    updates, opt_state = optimizer.update(grads, opt_state, params, **extra)
    return optax.apply_updates(params, updates), model_state, opt_state, loss

  return step


class AdapterState(NamedTuple):
  """The registry adapter's optimizer state (the checkpointed half of its pair).

  `train_params` is None for optimizers that evaluate where they train. For
  the others (schedule-free, averaging) it holds the training parameters
  while the runner holds the evaluation parameters `prepare_for_eval`
  returned (`holding_eval` = 1); the next update resumes from them. AlgoPerf's
  schedule-free submissions do the same with an `is_holding_x` flag and an
  inverse map; keeping y needs no inverse, so it serves every eval rule.
  """

  opt_state: Any
  train_params: Any
  holding_eval: Any  # int32 scalar, 0 or 1.

  def holds_eval_params(self) -> bool:
    """Whether the runner holds eval params and `train_params` the training ones."""
    return self.train_params is not None and bool(int(np.asarray(self.holding_eval)))


_eval_params = jax.jit(optimizers.eval_params)


def training_params(optimizer_state: Any, params: Any) -> Any:
  """The parameters the next update trains from.

  `params` itself, except for the registry adapter holding its training
  parameters while the runner holds the evaluation point (see
  `AdapterState`). The trainer's diagnostics take gradients there.
  """
  state = optimizer_state[0] if isinstance(optimizer_state, tuple) and optimizer_state else None
  if isinstance(state, AdapterState) and state.holds_eval_params():
    return state.train_params
  return params


def _fsdp_mesh(params: Any) -> jax.sharding.Mesh | None:
  """The mesh `params` are FSDP-sharded over (`experiments.sharding`), or None."""
  leaves = jax.tree.leaves(params)
  mesh = getattr(getattr(leaves[0], "sharding", None), "mesh", None) if leaves else None
  return mesh if isinstance(mesh, jax.sharding.Mesh) and mesh.shape.get("fsdp", 1) > 1 else None


def _has_eval_rule(opt_state: Any, params: Any) -> bool:
  """Whether the optimizer evaluates somewhere other than its training point
  (`optimizers.eval_params` returns `params` itself when it does not)."""
  return optimizers.eval_params(opt_state, params) is not params


def optimizer_submission(
    name: str,
    factory: Callable[..., optax.GradientTransformation],
    *,
    defaults: Mapping[str, Any] = (),
    search_space: Mapping[str, Any] | None = None,
    batch_sizes: Mapping[str, int] | None = None,
    needs_value: bool = False,
) -> Submission:
  """A submission that trains with `factory(**defaults, **point)`.

  It uses only AlgoPerf's workload API (`step_hint`, `model_fn` with
  `ForwardPassMode`, `loss_fn`), so it runs in steplab's runner and in
  AlgoPerf's. Under self-tuning (`hyperparameters` None) it trains at
  `defaults`.

  Args:
    name: the submission's name (used in log paths).
    factory: an optimizer factory taking `learning_rate` and friends.
    defaults: hyperparameters a point does not set.
    search_space: the default tuning search space.
    batch_sizes: per-workload batch size; default: a steplab workload's
      `default_batch_size`. Other names raise ValueError (the runner then
      asks for the workload's AlgoPerf base workload, as AlgoPerf does).
    needs_value: pass the batch loss to `update` as `value=` (optimizers
      that need it, e.g. induced_metric_log).
  """

  def get_batch_size(workload_name: str) -> int:
    from experiments import workloads  # pylint: disable=g-import-not-at-top
    if batch_sizes and workload_name in batch_sizes:
      return batch_sizes[workload_name]
    if workload_name not in workloads.WORKLOADS:
      raise ValueError(f"unsupported workload name {workload_name!r}; known: "
                       f"{sorted(set(workloads.WORKLOADS) | set(batch_sizes or ()))}")
    return workloads.WORKLOADS[workload_name].default_batch_size  # No data loading.

  def init_optimizer_state(workload, model_params, model_state, hyperparameters, rng):
    del model_state, rng
    point = hyperparameters_dict(hyperparameters)
    # The power schedule's batch size and tokens per step, where known.
    workload_name = getattr(workload, "name", None)
    if batch_sizes and workload_name in batch_sizes:
      batch_size = batch_sizes[workload_name]
    else:
      batch_size = getattr(workload, "default_batch_size", None)
    context = {} if batch_size is None else dict(
        batch_size=batch_size, tokens_per_step=batch_size * getattr(workload, "context_length", 1))
    optimizer = build_optimizer(factory, point, workload.step_hint, defaults, context)
    merged = {**dict(defaults), **point}
    update_fn = train_step(
        workload, optimizer, float(merged.get("label_smoothing", 0.0)), needs_value,
        merged.get("dropout_rate"), merged.get("aux_dropout_rate"))
    mesh = _fsdp_mesh(model_params)
    if mesh is None:
      opt_state = jax.jit(optimizer.init)(model_params)
    else:  # Moments born sharded like their parameters, never whole on a device.
      opt_state = sharding.init_state(optimizer, model_params, mesh)
    train_params = model_params if _has_eval_rule(opt_state, model_params) else None
    return AdapterState(opt_state, train_params, np.int32(0)), update_fn

  def update_params(workload, current_param_container, current_params_types, model_state,
                    hyperparameters, batch, loss_type, optimizer_state, eval_results,
                    global_step, rng, train_state=None):
    del workload, current_params_types, hyperparameters, loss_type, eval_results
    del global_step, train_state
    state, update_fn = optimizer_state
    params = current_param_container
    if state.holds_eval_params():
      params = state.train_params  # The runner holds eval params; train from y.
    params, model_state, opt_state, _ = update_fn(params, model_state, state.opt_state, batch, rng)
    held = params if state.train_params is not None else None
    return (AdapterState(opt_state, held, np.int32(0)), update_fn), params, model_state

  def data_selection(workload, input_queue, optimizer_state, current_param_container,
                     model_state, hyperparameters, global_step, rng):
    del workload, optimizer_state, current_param_container, model_state
    del hyperparameters, global_step, rng
    return next(input_queue)

  def prepare_for_eval(workload, current_param_container, current_params_types, model_state,
                       hyperparameters, loss_type, optimizer_state, eval_results,
                       global_step, rng):
    del workload, current_params_types, hyperparameters, loss_type, eval_results
    del global_step, rng
    state, update_fn = optimizer_state
    if state.train_params is None or state.holds_eval_params():
      return optimizer_state, current_param_container, model_state  # Already the eval point.
    eval_params = _eval_params(state.opt_state, current_param_container)
    held = AdapterState(state.opt_state, current_param_container, np.int32(1))
    return (held, update_fn), eval_params, model_state

  return Submission(
      name=name,
      get_batch_size=get_batch_size,
      init_optimizer_state=init_optimizer_state,
      update_params=update_params,
      data_selection=data_selection,
      prepare_for_eval=prepare_for_eval,
      search_space=dict(search_space) if search_space is not None else None,
  )


# The schedule registry submissions train with, as AlgoPerf's baselines (and
# the workloads' target calibration): linear warmup over 5% of step_hint, then
# cosine decay to zero at step_hint.
REGISTRY_WARMUP_FACTOR = 0.05


def registry_submission(name: str, batch_sizes: Mapping[str, int] | None = None) -> Submission:
  """A submission for `optimizers.registry[name]` (its defaults and space).

  The learning rate follows AlgoPerf's baseline schedule (warmup over
  `warmup_factor` = 5% of the workload's `step_hint`, then cosine decay to
  zero at `step_hint`) unless the method sets its own schedule
  (`spec.sets_own_schedule`: DoG and LDoG set their step size, schedule-free
  methods replace the schedule), whose learning rate is a constant
  multiplier. A point may set `warmup_factor` to change the schedule, or, for
  a method that sets its own, to switch one on.
  """
  spec = optimizers.registry[name]
  defaults = dict(spec.defaults)
  if not spec.sets_own_schedule:  # AlgoPerf's warmup + cosine on the learning rate.
    defaults["warmup_factor"] = REGISTRY_WARMUP_FACTOR
  return optimizer_submission(
      name, spec.factory, defaults=defaults, search_space=spec.search_space,
      batch_sizes=batch_sizes, needs_value=spec.needs_value,
  )


def as_module_api(sub: Submission) -> dict[str, Any]:
  """The module-level names a submission file exports (see submissions/)."""
  return dict(
      NAME=sub.name,
      SEARCH_SPACE=sub.search_space,
      get_batch_size=sub.get_batch_size,
      init_optimizer_state=sub.init_optimizer_state,
      update_params=sub.update_params,
      data_selection=sub.data_selection,
      prepare_for_eval=sub.prepare_for_eval,
  )
