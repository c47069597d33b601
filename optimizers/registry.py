"""`optimizers.registry`: every optimizer by name, with what a runner needs.

An entry (`OptimizerSpec`) holds the factory, the reference defaults, an
AlgoPerf-style tuning search space, and metadata (paper, reference
implementation, optimizer-state bytes per float32 parameter). Later families
add rows with `registry.register(OptimizerSpec(...))`.

Search spaces use AlgoPerf's JSON form, `{"name": {"min", "max", "scaling"}}`
or `{"name": {"feasible_points": [...]}}`. A name `one_minus_<arg>` tunes
`1 - <arg>` (AlgoPerf's convention for betas, sampled on a log scale);
`OptimizerSpec.build` translates it.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import types
from typing import Any, Callable, Collection, Iterator, Mapping

import optax

from optimizers import _validation
# Functions, not modules: the package namespace maps each family's name to its
# alias function (`optimizers.radam` is the optimizer, not the module).
from optimizers.adabound import adabound
from optimizers.adam_mini import adam_mini
from optimizers.adabound import amsbound
from optimizers.adamod import adamod
from optimizers.adamp import adamp
from optimizers.adamp import sgdp
from optimizers.dog import dog
from optimizers.dog import ldog
from optimizers.induced_metric import induced_metric_log
from optimizers.induced_metric import induced_metric_rms
from optimizers.induced_metric import induced_metric_sgd
from optimizers.lion import lion
from optimizers.muon import muon
from optimizers.prodigy import prodigy
from optimizers.schedule_free import schedule_free_adamw
from optimizers.schedule_free import schedule_free_radam
from optimizers.schedule_free import schedule_free_sgd
from optimizers.radam import radam
from optimizers.sgd import sgd_momentum
from optimizers.sgd import sgd_nesterov

__all__ = ("OptimizerSpec", "Registry", "registry")

_ONE_MINUS = "one_minus_"


def _validated(factory: Callable[..., optax.GradientTransformation], name: str) -> Callable[..., Any]:
  """An optax alias (adamw, nadamw) with steplab's build-time validation.

  optax accepts b1 = 1.5, a negative, NaN or infinite learning rate and
  strings, and fails (or diverges) only at the first update. The wrapper has
  the factory's signature (so the registry sees the same arguments) and raises
  ValueError naming the argument, as every steplab optimizer does.
  """
  signature = inspect.signature(factory)

  @functools.wraps(factory)
  def build(*args, **kwargs):
    arguments = signature.bind(*args, **kwargs)
    arguments.apply_defaults()
    a = arguments.arguments
    _validation.check_learning_rate(name, a["learning_rate"])
    for beta in ("b1", "b2"):
      _validation.check_decay(name, beta, a[beta])
    for key in ("eps", "eps_root", "weight_decay"):
      if key in a:
        _validation.check_non_negative(name, key, a[key])
    _validation.check_mu_dtype(name, a.get("mu_dtype"))
    return factory(*args, **kwargs)

  build.__name__ = build.__qualname__ = name
  return build


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
  """One registry entry.

  Attributes:
    name: registry name (the public alias name).
    factory: `(learning_rate, ...) -> optax.GradientTransformation`.
    defaults: the reference implementation's defaults, learning rate included.
    search_space: AlgoPerf-style search space over factory arguments.
    paper: citation of the method.
    reference: the reference implementation the golden tests pin.
    state_bytes_per_param: optimizer-state bytes per float32 parameter
      (scalars such as step counters excluded).
    static_args: non-boolean arguments that shape the computation (e.g. a
      channel axis) and so must stay static under `optax.inject_hyperparams`
      (booleans always stay static there).
    sets_own_schedule: whether the method sets its own step-size schedule
      or replaces the schedule (DoG's and LDoG's step size, distance over
      gradients, is their schedule; schedule-free methods interpolate and
      average instead), so that its learning rate is a constant multiplier,
      not a rate to schedule. False for Prodigy: it estimates a step size,
      but its paper pairs it with a decaying schedule.
    needs_value: whether `update` needs the current loss as the extra
      argument `value=` (induced_metric_log); the runner passes it.
    global_step_size: whether one scalar step size serves the whole tree
      (DoG's, Prodigy's d, the induced metric's factor), so that masking or
      decaying one leaf changes every leaf's step.
    schedule_peak_args: arguments that must hold the learning rate's peak
      when the learning rate is a schedule (AdaBound's `base_learning_rate`:
      its bounds are `final_lr` relative to it, undefined for a warmup from
      0); a runner that schedules the learning rate sets them.
    test_problems: overrides of `defaults` at which the optimizer solves the
      invariant suite's two problems, {"quadratic": {...}, "rosenbrock":
      {...}} (tests/invariants_test.py); empty: the defaults do.
  """

  name: str
  factory: Callable[..., optax.GradientTransformation]
  defaults: Mapping[str, Any]
  search_space: Mapping[str, Mapping[str, Any]]
  paper: str
  reference: str
  state_bytes_per_param: int
  static_args: tuple[str, ...] = ()
  sets_own_schedule: bool = False
  needs_value: bool = False
  global_step_size: bool = False
  schedule_peak_args: tuple[str, ...] = ()
  test_problems: Mapping[str, Mapping[str, Any]] = dataclasses.field(
      default_factory=lambda: {"quadratic": {}, "rosenbrock": {}})

  def __post_init__(self):
    # Freeze the mappings so a caller cannot change the registry by accident.
    object.__setattr__(self, "defaults", types.MappingProxyType(dict(self.defaults)))
    object.__setattr__(
        self, "search_space", types.MappingProxyType(dict(self.search_space))
    )
    if set(self.test_problems) != {"quadratic", "rosenbrock"}:
      raise ValueError(f"OptimizerSpec {self.name!r}: test_problems needs the keys quadratic and rosenbrock,"
                       f" got {sorted(self.test_problems)}")
    object.__setattr__(self, "test_problems", types.MappingProxyType(
        {k: types.MappingProxyType(dict(v)) for k, v in self.test_problems.items()}))
    unknown = [
        key
        for key in [*self.defaults, *self.search_space, *self.schedule_peak_args,
                    *(k for v in self.test_problems.values() for k in v)]
        if argument_name(key, self.arguments) not in self.arguments
    ]
    if unknown:
      raise ValueError(
          f"OptimizerSpec {self.name!r}: {unknown} are not arguments of"
          f" {factory_name(self.factory)}; valid: {sorted(self.arguments)}"
      )

  @property
  def arguments(self) -> tuple[str, ...]:
    """The factory's argument names."""
    return tuple(inspect.signature(self.factory).parameters)

  def hyperparameters(self, **overrides: Any) -> dict[str, Any]:
    """Defaults updated by `overrides` (which may use AlgoPerf's names:
    `one_minus_<arg>`, `beta1`/`beta2`/`beta3`; see `translate_hyperparameter`).

    Raises:
      ValueError: for a name the factory does not take, listing valid names.
    """
    params = dict(self.defaults)
    for key, value in overrides.items():
      arg = argument_name(key, self.arguments)
      if arg not in self.arguments:
        raise ValueError(
            f"{self.name}: unknown hyperparameter {key!r}; valid names:"
            f" {sorted(self.arguments)} (or one_minus_<name>, beta1/beta2/beta3 for b1/b2/b3)."
        )
      arg, params[arg] = translate_hyperparameter(key, value, self.arguments)
    return params

  def build(self, **overrides: Any) -> optax.GradientTransformation:
    """The optimizer with the reference defaults updated by `overrides`."""
    return self.factory(**self.hyperparameters(**overrides))


# AlgoPerf's search spaces say beta1/beta2 where Optax says b1/b2.
ALGOPERF_ALIASES = types.MappingProxyType({"beta1": "b1", "beta2": "b2", "beta3": "b3"})


def factory_name(factory: Callable[..., Any]) -> str:
  """A factory's name for messages; `functools.partial`s (optax.nadamw) too."""
  while isinstance(factory, functools.partial):
    factory = factory.func
  return getattr(factory, "__name__", repr(factory))


def argument_name(key: str, arguments: Collection[str] = ()) -> str:
  """The factory argument a hyperparameter name sets.

  `one_minus_<name>` sets `<name>`; AlgoPerf's `beta1`/`beta2`/`beta3` set
  `b1`/`b2`/`b3` unless the factory itself takes an argument of that name,
  and `beta1` sets `momentum` for a factory with a momentum but no `b1`
  (AlgoPerf's momentum/nesterov baselines tune `one_minus_beta1`).
  """
  name = key[len(_ONE_MINUS):] if key.startswith(_ONE_MINUS) else key
  if name not in arguments and name in ALGOPERF_ALIASES:
    alias = ALGOPERF_ALIASES[name]
    if alias == "b1" and "b1" not in arguments and "momentum" in arguments:
      return "momentum"
    return alias
  return name


def translate_hyperparameter(key: str, value: Any, arguments: Collection[str] = ()) -> tuple[str, Any]:
  """(argument, value) for a search-space name: `one_minus_<arg>` gives
  (arg, 1 - value), AlgoPerf's beta names map to Optax's (`argument_name`)."""
  arg = argument_name(key, arguments)
  return arg, (1.0 - value if key.startswith(_ONE_MINUS) else value)


class Registry(collections.abc.Mapping):
  """A read-only name -> `OptimizerSpec` mapping with clear lookup errors."""

  def __init__(self):
    self._specs: dict[str, OptimizerSpec] = {}

  def register(self, spec: OptimizerSpec) -> OptimizerSpec:
    if spec.name in self._specs:
      raise ValueError(f"registry: {spec.name!r} is already registered.")
    self._specs[spec.name] = spec
    return spec

  def __getitem__(self, name: str) -> OptimizerSpec:
    try:
      return self._specs[name]
    except KeyError:
      raise KeyError(
          f"unknown optimizer {name!r}; registered: {', '.join(sorted(self))}"
      ) from None

  def __iter__(self) -> Iterator[str]:
    return iter(self._specs)

  def __len__(self) -> int:
    return len(self._specs)


registry = Registry()


def _log(low: float, high: float) -> dict[str, Any]:
  return {"min": low, "max": high, "scaling": "log"}


def _linear(low: float, high: float) -> dict[str, Any]:
  return {"min": low, "max": high, "scaling": "linear"}


# The adaptive-moment search space shared by the Adam family: AlgoPerf's
# NAdamW baseline space (learning rate, 1 - b1, 1 - b2, weight decay),
# widened to cover each method's reference defaults and the small workloads'
# tuned learning rates (3e-2 for AdamW on MNIST-1D).
_ADAM_SPACE = {
    "learning_rate": _log(1e-4, 1e-1),
    "one_minus_b1": _log(3e-2, 0.3),
    "one_minus_b2": _log(1e-3, 0.1),
    "weight_decay": _log(1e-5, 1e-1),
}

_ADABOUND_DEFAULTS = dict(
    learning_rate=1e-3, b1=0.9, b2=0.999, final_lr=0.1, gamma=1e-3, eps=1e-8,
    weight_decay=0.0,
)
_ADABOUND_SPACE = {**_ADAM_SPACE, "final_lr": _log(1e-2, 1.0), "gamma": _log(1e-4, 1e-2)}

for _spec in (
    OptimizerSpec(
        name="adamw",
        factory=_validated(optax.adamw, "adamw"),
        defaults=dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
        search_space=_ADAM_SPACE,
        paper="Loshchilov & Hutter, Decoupled Weight Decay Regularization, ICLR 2019",
        reference="optax.adamw (baseline)",
        state_bytes_per_param=8,
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2, weight_decay=0.0)),
    ),
    OptimizerSpec(
        name="nadamw",
        factory=_validated(optax.nadamw, "nadamw"),
        defaults=dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=1e-4),
        search_space=_ADAM_SPACE,
        paper="Dozat, Incorporating Nesterov Momentum into Adam, ICLR 2016 workshop",
        reference="optax.nadamw (AlgoPerf baseline)",
        state_bytes_per_param=8,
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2, weight_decay=0.0)),
    ),
    OptimizerSpec(
        name="radam",
        factory=radam,
        defaults=dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0),
        search_space=_ADAM_SPACE,
        paper="Liu et al., On the Variance of the Adaptive Learning Rate and Beyond, ICLR 2020",
        reference=("torch.optim.RAdam (torch 2.13.0); degenerated_to_sgd=False: pytorch_optimizer.RAdam"
                   " (4.1.0, a port of the original code)"),
        state_bytes_per_param=8,
        # Before rectification torch's RAdam takes raw momentum-SGD steps, which
        # diverge on Rosenbrock's large gradients; the original's no-step fallback does not.
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2, degenerated_to_sgd=False)),
    ),
    OptimizerSpec(
        name="adabound",
        factory=adabound,
        defaults=_ADABOUND_DEFAULTS,
        search_space=_ADABOUND_SPACE,
        paper="Luo et al., Adaptive Gradient Methods with Dynamic Bound of Learning Rate, ICLR 2019",
        reference="adabound 0.0.5 (Luolc/AdaBound)",
        state_bytes_per_param=8,
        schedule_peak_args=("base_learning_rate",),
        # AdaBound ends as SGD with final_lr: it must be stable for Rosenbrock.
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2, final_lr=1e-3)),
    ),
    OptimizerSpec(
        name="amsbound",
        factory=amsbound,
        defaults=_ADABOUND_DEFAULTS,
        search_space=_ADABOUND_SPACE,
        paper="Luo et al., Adaptive Gradient Methods with Dynamic Bound of Learning Rate, ICLR 2019",
        reference="adabound 0.0.5 (AdaBound(amsbound=True))",
        state_bytes_per_param=12,
        schedule_peak_args=("base_learning_rate",),
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2, final_lr=1e-3)),
    ),
    OptimizerSpec(
        name="adamod",
        factory=adamod,
        defaults=dict(learning_rate=1e-3, b1=0.9, b2=0.999, b3=0.999, eps=1e-8, weight_decay=0.0),
        search_space={**_ADAM_SPACE, "one_minus_b3": _log(1e-4, 1e-1)},
        paper="Ding et al., An Adaptive and Momental Bound Method for Stochastic Learning, 2019",
        reference="adamod 0.0.3 (lancopku/AdaMod)",
        state_bytes_per_param=12,
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=3e-2)),
    ),
    OptimizerSpec(
        name="adamp",
        factory=adamp,
        defaults=dict(
            learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
            delta=0.1, wd_ratio=0.1, nesterov=False,
        ),
        search_space={**_ADAM_SPACE, "nesterov": {"feasible_points": [False, True]}},
        paper="Heo et al., AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights, ICLR 2021",
        reference="adamp 0.3.0 (clovaai/AdamP)",
        state_bytes_per_param=8,
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2)),
        static_args=("channel_axis",),
    ),
    OptimizerSpec(
        name="sgdp",
        factory=sgdp,
        # The reference has no default learning rate; 0.1 is SGD's usual.
        defaults=dict(
            learning_rate=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0,
            nesterov=False, eps=1e-8, delta=0.1, wd_ratio=0.1,
        ),
        search_space={
            "learning_rate": _log(1e-3, 1.0),
            "one_minus_momentum": _log(1e-2, 0.5),
            "weight_decay": _log(1e-6, 1e-2),
            "nesterov": {"feasible_points": [False, True]},
        },
        paper="Heo et al., AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights, ICLR 2021",
        reference="adamp 0.3.0 (adamp.SGDP)",
        state_bytes_per_param=4,
        test_problems=dict(quadratic=dict(learning_rate=0.1, momentum=0.9), rosenbrock=dict(learning_rate=1e-3, momentum=0.9)),
        static_args=("channel_axis",),
    ),
):
  registry.register(_spec)
del _spec


# Parameter-free: DoG's learning rate is a multiplier c of its own step size,
# 1 by design (the self-tuning default); the external space searches c within
# a factor of 3 either way and the initial distance over the range the paper
# discusses (1e-6 default, 1e-4 with batch norm).
_DOG_DEFAULTS = dict(learning_rate=1.0, reps_rel=1e-6, eps=1e-8, weight_decay=0.0)
_DOG_SPACE = {"learning_rate": _log(0.3, 3.0), "reps_rel": _log(1e-8, 1e-4)}

for _factory, _cls in ((dog, "DoG"), (ldog, "LDoG")):
  registry.register(
      OptimizerSpec(
          name=_factory.__name__,
          factory=_factory,
          defaults=_DOG_DEFAULTS,
          search_space=_DOG_SPACE,
          paper=(
              "Ivgi, Hinder & Carmon, DoG is SGD's Best Friend: A Parameter-Free Dynamic Step"
              " Size Schedule, ICML 2023"
          ),
          reference=f"dog-optimizer 1.0.3 (dog.{_cls})",
          state_bytes_per_param=4,  # x_0.
          sets_own_schedule=True,
          global_step_size=_factory is dog,  # LDoG's step size is per layer.
      )
  )
del _factory, _cls


# Prodigy estimates the step size; its learning rate is a multiplier of d,
# 1 by design (the self-tuning default). The external space searches that
# multiplier within a factor of 3, Adam's 1 - b2, and decoupled weight decay,
# the knobs the paper's experiments vary. It does not set its own schedule
# (the paper pairs Prodigy with cosine annealing), so the runner's warmup +
# cosine stays on.
registry.register(
    OptimizerSpec(
        name="prodigy",
        factory=prodigy,
        defaults=dict(learning_rate=1.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, d0=1e-6),
        search_space={
            "learning_rate": _log(0.3, 3.0),
            "one_minus_b2": _log(1e-3, 0.1),
            "weight_decay": _log(1e-5, 1e-1),
        },
        paper="Mishchenko & Defazio, Prodigy: An Expeditiously Adaptive Parameter-Free Learner, ICML 2024",
        reference="prodigyopt 1.1.2 (prodigyopt.Prodigy)",
        state_bytes_per_param=16,  # m, v, x0 and s (slice_p = 1).
        global_step_size=True,
        # Without a decaying schedule d (set by the first distances) is too large for
        # Rosenbrock's narrow valley at lr 1.
        test_problems=dict(quadratic=dict(), rosenbrock=dict(learning_rate=0.1)),
        static_args=("slice_p",),
    )
)


# Schedule-free methods replace the schedule: the runner keeps their rate
# constant (warmup_steps is their own). The space follows AlgoPerf's
# schedule-free AdamW submission: learning rate, 1 - b1 (the interpolation
# weight), 1 - b2, weight decay and a warmup of a few percent of step_hint.
_SF_PAPER = "Defazio et al., The Road Less Scheduled, NeurIPS 2024"
_SF_SPACE = {
    "learning_rate": _log(1e-4, 1e-1),
    "one_minus_b1": _log(1e-2, 0.3),
    "weight_decay": _log(1e-5, 1e-1),
}
for _spec in (
    OptimizerSpec(
        name="schedule_free_sgd",
        factory=schedule_free_sgd,
        defaults=dict(learning_rate=1.0, b1=0.9, weight_decay=0.0, r=0.0, weight_lr_power=2.0),
        search_space={**_SF_SPACE, "learning_rate": _log(1e-3, 10.0)},
        paper=_SF_PAPER,
        reference="schedulefree 1.4.1 (SGDScheduleFree)",
        state_bytes_per_param=4,  # z.
        test_problems=dict(quadratic=dict(learning_rate=0.5), rosenbrock=dict(learning_rate=3e-3)),
        static_args=("warmup_steps",),
        sets_own_schedule=True,
    ),
):
  registry.register(_spec)
del _spec
for _factory, _cls in ((schedule_free_adamw, "AdamWScheduleFree"), (schedule_free_radam, "RAdamScheduleFree")):
  registry.register(
      OptimizerSpec(
          name=_factory.__name__,
          factory=_factory,
          defaults=dict(learning_rate=0.0025, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, r=0.0,
                        weight_lr_power=2.0),
          search_space={**_SF_SPACE, "one_minus_b2": _log(1e-3, 0.1)},
          paper=_SF_PAPER,
          reference=f"schedulefree 1.4.1 ({_cls})",
          state_bytes_per_param=8,  # z, v.
          static_args=("warmup_steps",) if _factory is schedule_free_adamw else (),
          sets_own_schedule=True,
          test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2)),
      )
  )
del _factory, _cls


# Induced-metric optimisers: the author's defaults (current code). The paper's
# sweeps tune xi over many decades (its best values on real networks are
# 1e-8 .. 1e-5), so the space does too. The log variant needs the loss.
_IM_DEFAULTS = dict(learning_rate=0.1, momentum=0.9, xi=0.1, beta=0.8, weight_decay=0.0)
_IM_SPACE = {
    "learning_rate": _log(1e-3, 1.0),
    "xi": _log(1e-8, 1.0),
    "weight_decay": _log(1e-6, 1e-2),
}
for _factory, _cls, _bytes, _extra, _tests in (
    (induced_metric_sgd, "CustomSGD", 4, {}, dict(quadratic={}, rosenbrock=dict(learning_rate=1e-3))),  # m.
    (induced_metric_rms, "CustomSGDRMS", 8, dict(b_rms=0.99, eps=1e-8),  # m, v.
     dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2))),
    (induced_metric_log, "CustomSGDLog", 4, {}, dict(quadratic={}, rosenbrock=dict(learning_rate=1e-3))),  # m.
):
  registry.register(
      OptimizerSpec(
          name=_factory.__name__,
          factory=_factory,
          defaults={**_IM_DEFAULTS, **_extra},
          search_space=_IM_SPACE,
          paper="Harvey, Induced metric optimisers, arXiv:2509.03594",
          reference=f"NumPy transcription tools/induced_metric_reference.py (author's {_cls})",
          state_bytes_per_param=_bytes,
          needs_value=_factory is induced_metric_log,
          global_step_size=True,  # The metric factor is one scalar.
          test_problems=_tests,
      )
  )
del _factory, _cls, _bytes, _extra, _tests


# Adam-mini: the reference's defaults; AdamW's space. The head counts shape
# the partition, so they stay static under inject_hyperparams.
registry.register(
    OptimizerSpec(
        name="adam_mini",
        factory=adam_mini,
        defaults=dict(learning_rate=1e-3, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0),
        search_space={**_ADAM_SPACE, "weight_decay": _log(1e-5, 1e-1)},
        paper="Zhang et al., Adam-mini: Use Fewer Learning Rates To Gain More, ICLR 2025",
        reference="adam-mini 1.1.1 (adam_mini.Adam_mini)",
        # m, plus one v per block: a small fraction of a parameter (measured by
        # tools/bench_memory.py; per-element on biases).
        state_bytes_per_param=4,
        test_problems=dict(quadratic=dict(learning_rate=0.05), rosenbrock=dict(learning_rate=1e-2)),
        static_args=("num_heads", "num_kv_heads", "partition"),
    )
)


# AlgoPerf's momentum-SGD baselines (archived_paper_baselines/momentum and
# nesterov): optax.sgd after coupled L2 decay, with their
# tuning_search_space.json (learning rate, 1 - momentum (their
# one_minus_beta1, which the registry also accepts), weight decay; their
# warmup_factor 0.05 is the runner's). Their schedule decays linearly to
# end_factor (1e-3 or 1e-2) of the peak at 0.9 step_hint; the runner puts its
# warmup + cosine on them instead, as on every entry that does not set its own
# schedule.
_SGD_SPACE = {
    "learning_rate": _log(2e-2, 5.0),
    "one_minus_momentum": _log(5e-3, 0.3),
    "weight_decay": _log(1e-7, 5e-5),
}
for _factory, _baseline, _paper in (
    (sgd_momentum, "momentum", "Polyak, Some methods of speeding up the convergence of iteration methods, 1964"),
    (sgd_nesterov, "nesterov",
     "Nesterov, A method for solving the convex programming problem with convergence rate O(1/k^2), 1983;"
     " Sutskever et al., On the importance of initialization and momentum in deep learning, ICML 2013"),
):
  registry.register(
      OptimizerSpec(
          name=_factory.__name__,
          factory=_factory,
          defaults=dict(learning_rate=0.1, momentum=0.9, weight_decay=0.0),
          search_space=_SGD_SPACE,
          paper=_paper,
          reference=(
              f"optax.sgd (optax 0.2.8) after optax.add_decayed_weights, as AlgoPerf's"
              f" archived_paper_baselines/{_baseline}"
          ),
          state_bytes_per_param=4,  # The momentum trace.
          test_problems=dict(quadratic={}, rosenbrock=dict(learning_rate=1e-3)),
      )
  )
del _factory, _baseline, _paper


# Muon on weight matrices, Adam on the rest (optimizers/muon.py). Defaults:
# Keller Jordan's Muon and MuonWithAuxAdam. Space, log-uniform: Muon's
# learning rate around his 0.02 up to modded-nanogpt's 0.05 with room above
# (0.2 diverges on mnist1d_mlp); weight decay from 0 in his code to 0.1 in Liu et
# al.'s (his README example: 0.01); the Adam group's learning-rate ratio from
# his README's 3e-4 / 0.02 = 0.015 to modded-nanogpt's scalar group (0.04 /
# 0.05). He finds momentum 0.95, Nesterov and 5 Newton-Schulz steps need no
# tuning ("only the learning rate and weight decay must be tuned"), so the
# space leaves them at the defaults. Declared state: the momentum (4 bytes)
# on Muon matrices; Adam leaves keep 8 (a small share of a network).
registry.register(
    OptimizerSpec(
        name="muon",
        factory=muon,
        defaults=dict(
            learning_rate=0.02, beta=0.95, ns_steps=5, eps=1e-8, weight_decay=0.0,
            adam_lr_ratio=0.015, adam_b1=0.9, adam_b2=0.95, adam_eps=1e-10,
        ),
        search_space={
            "learning_rate": _log(3e-3, 0.1),
            "weight_decay": _log(1e-4, 1e-1),
            "adam_lr_ratio": _log(1e-2, 1.0),
        },
        paper=(
            "Jordan et al., Muon: An optimizer for hidden layers in neural networks, 2024"
            " (kellerjordan.github.io/posts/muon)"
        ),
        reference="optax.contrib.scale_by_muon (optax 0.2.8); defaults: KellerJordan/Muon (MuonWithAuxAdam)",
        state_bytes_per_param=4,
        # The bias, the scalar and Rosenbrock's vector take the Adam fallback, here at Muon's rate.
        test_problems=dict(quadratic=dict(adam_lr_ratio=1.0), rosenbrock=dict(learning_rate=1e-2, adam_lr_ratio=1.0)),
        static_args=("ns_steps", "dimension_numbers"),
    )
)


# Lion: the reference's defaults. The paper's advice (its Section 5): a
# learning rate 3-10x smaller than AdamW's and a weight decay 3-10x larger,
# and b2 0.99 (0.98 for stability at large scale); the space spans that
# around AdamW's.
registry.register(
    OptimizerSpec(
        name="lion",
        factory=lion,
        defaults=dict(learning_rate=1e-4, b1=0.9, b2=0.99, weight_decay=0.0),
        search_space={
            "learning_rate": _log(1e-5, 1e-3),
            "one_minus_b2": _log(3e-3, 3e-2),
            "weight_decay": _log(1e-4, 1.0),
        },
        paper="Chen et al., Symbolic Discovery of Optimization Algorithms, NeurIPS 2023",
        reference="lion-pytorch 0.2.5 (lion_pytorch.Lion)",
        state_bytes_per_param=4,  # m.
        # Sign steps of size lr: the quadratic settles within lr of its minimum.
        test_problems=dict(quadratic=dict(learning_rate=3e-3), rosenbrock=dict(learning_rate=1e-3)),
    )
)
