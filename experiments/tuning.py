"""Hyperparameter search spaces and quasi-random trial points (AlgoPerf rules).

A search space is JSON in one of two forms:

  * ranges and choices, sampled quasi-randomly:

      {"learning_rate": {"min": 1e-4, "max": 1e-2, "scaling": "log"},
       "b1": {"min": 0.8, "max": 0.99, "scaling": "linear"},
       "warmup_factor": {"feasible_points": [0.02, 0.05]}}

  * a list of complete points, used as given (trial i runs point i):

      [{"learning_rate": 1e-3, "b1": 0.9}, {"learning_rate": 3e-3, "b1": 0.95}]

Points of the first form come from a Halton sequence (one prime base per
hyperparameter, in sorted name order) shifted by a random vector drawn from
the seed, so each study tries a different, reproducible, evenly spread set.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from typing import Any, Mapping, Sequence, Union

from absl import logging
import numpy as np

_RANGE_KEYS = frozenset({"min", "max", "scaling"})
_CHOICE_KEYS = frozenset({"feasible_points"})
_SCALINGS = ("linear", "log")


@dataclasses.dataclass(frozen=True)
class Range:
  """A continuous hyperparameter in [min, max], uniform in `scaling` space."""

  min: float
  max: float
  scaling: str  # "linear" or "log"


@dataclasses.dataclass(frozen=True)
class Choice:
  """A hyperparameter taking one of `feasible_points`, each equally likely."""

  feasible_points: tuple[Any, ...]


@dataclasses.dataclass(frozen=True)
class SearchSpace:
  """A validated search space: `dims` to sample, or fixed `points`.

  Exactly one of the two is set. `dims` maps names to `Range`/`Choice` in
  sorted name order (the order Halton dimensions are assigned in).
  """

  dims: Mapping[str, Range | Choice] | None = None
  points: tuple[dict[str, Any], ...] | None = None


SpaceLike = Union[str, os.PathLike, Mapping[str, Any], Sequence[Mapping[str, Any]], SearchSpace]


def _is_number(x: Any) -> bool:
  return isinstance(x, (int, float)) and not isinstance(x, bool)


def _parse_dim(name: Any, spec: Any) -> Range | Choice:
  if not isinstance(name, str) or not name:
    raise ValueError(f"hyperparameter names must be non-empty strings, got {name!r}")
  if not isinstance(spec, Mapping):
    raise ValueError(
        f'hyperparameter "{name}": expected an object like {{"min": .., "max": ..,'
        f' "scaling": "linear"|"log"}} or {{"feasible_points": [..]}}, got {type(spec).__name__}'
    )
  keys = set(spec)
  if "feasible_points" in keys:
    if keys != _CHOICE_KEYS:
      raise ValueError(
          f'hyperparameter "{name}": "feasible_points" cannot be combined with other keys,'
          f" got {sorted(keys - _CHOICE_KEYS)}"
      )
    points = spec["feasible_points"]
    if not isinstance(points, (list, tuple)):
      raise ValueError(
          f'hyperparameter "{name}": "feasible_points" must be a list, got {type(points).__name__}'
      )
    if not points:
      raise ValueError(f'hyperparameter "{name}": "feasible_points" is empty')
    return Choice(tuple(points))
  unknown = keys - _RANGE_KEYS
  if unknown:
    raise ValueError(
        f'hyperparameter "{name}": unknown key(s) {sorted(unknown)}; expected'
        ' "min", "max", "scaling" or "feasible_points"'
    )
  missing = _RANGE_KEYS - keys
  if missing:
    raise ValueError(f'hyperparameter "{name}": missing key(s) {sorted(missing)}')
  lo, hi, scaling = spec["min"], spec["max"], spec["scaling"]
  for key, value in (("min", lo), ("max", hi)):
    if not _is_number(value) or not math.isfinite(value):
      raise ValueError(f'hyperparameter "{name}": "{key}" must be a finite number, got {value!r}')
  if scaling not in _SCALINGS:
    raise ValueError(f'hyperparameter "{name}": "scaling" must be "linear" or "log", got {scaling!r}')
  if lo >= hi:
    raise ValueError(f'hyperparameter "{name}": "min" ({lo}) must be less than "max" ({hi})')
  if scaling == "log" and lo <= 0:
    raise ValueError(f'hyperparameter "{name}": log scaling needs "min" > 0, got {lo}')
  return Range(float(lo), float(hi), scaling)


def _parse_points(points: Sequence[Any]) -> tuple[dict[str, Any], ...]:
  if not points:
    raise ValueError("search space: the list of points is empty")
  names = None
  for i, point in enumerate(points):
    if not isinstance(point, Mapping):
      raise ValueError(f"search space point {i}: expected an object of hyperparameters, got {type(point).__name__}")
    for key in point:
      if not isinstance(key, str) or not key:
        raise ValueError(f"search space point {i}: hyperparameter names must be non-empty strings, got {key!r}")
    if names is None:
      names = set(point)
    elif set(point) != names:
      raise ValueError(
          f"search space point {i}: has hyperparameters {sorted(point)}, but point 0 has"
          f" {sorted(names)}; every point must set the same ones"
      )
  return tuple(dict(p) for p in points)


def load_search_space(path_or_dict: SpaceLike) -> SearchSpace:
  """Parses and validates a search space from a JSON file path or its contents.

  Args:
    path_or_dict: a path to a JSON file, the decoded JSON (a dict of
      hyperparameter specs or a list of complete points), or a `SearchSpace`.

  Returns:
    A `SearchSpace`.

  Raises:
    ValueError: naming the hyperparameter (or point) and what is wrong with it.
  """
  if isinstance(path_or_dict, SearchSpace):
    return path_or_dict
  source = path_or_dict
  if isinstance(source, (str, os.PathLike)):
    try:
      with open(source, encoding="utf-8") as f:
        source = json.load(f)
    except FileNotFoundError:
      raise ValueError(f"search space file {os.fspath(path_or_dict)!r} does not exist") from None
    except json.JSONDecodeError as e:
      raise ValueError(f"search space {os.fspath(path_or_dict)!r} is not valid JSON: {e}") from None
  if isinstance(source, Mapping):
    if not source:
      raise ValueError("search space is empty: give at least one hyperparameter")
    return SearchSpace(dims={name: _parse_dim(name, source[name]) for name in sorted(source, key=str)})
  if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
    return SearchSpace(points=_parse_points(source))
  raise ValueError(
      f"search space must be an object of hyperparameters or a list of points, got {type(source).__name__}"
  )


def _first_primes(n: int) -> list[int]:
  primes: list[int] = []
  candidate = 2
  while len(primes) < n:
    if all(candidate % p for p in primes if p * p <= candidate):
      primes.append(candidate)
    candidate += 1
  return primes


def radical_inverse(indices: np.ndarray, base: int) -> np.ndarray:
  """phi_b(i) = sum_k d_k b^-(k+1) for i = sum_k d_k b^k: i's digits mirrored.

  E.g. base 2: 0, 1/2, 1/4, 3/4, 1/8, ...; base 3: 0, 1/3, 2/3, 1/9, 4/9, ...
  """
  i = np.array(indices, dtype=np.int64)
  result = np.zeros(i.shape, np.float64)
  scale = 1.0 / base
  while np.any(i > 0):
    i, digit = np.divmod(i, base)
    result += digit * scale
    scale /= base
  return result


def halton(num_points: int, dim: int, seed: int | None = None) -> np.ndarray:
  """The first `num_points` points of the `dim`-dimensional Halton sequence.

  Coordinate d of point i is the radical inverse of i in the d-th prime
  (2, 3, 5, 7, ...), starting at i = 0. Consecutive points fill [0, 1)^dim
  evenly (low discrepancy), which covers a space better than independent
  uniform draws for the handful of trials a study has.

  With a `seed`, every coordinate is shifted modulo 1 by a uniform offset
  drawn from `np.random.default_rng(seed)` (a Cranley-Patterson rotation,
  as AlgoPerf's randomly shifted Halton sequence): the point set stays
  evenly spread, but no longer starts at the origin (all hyperparameters at
  their minimum), and different seeds give different points. Deterministic
  for a given seed; `seed=None` gives the plain sequence.

  Returns:
    A float64 array of shape (num_points, dim) in [0, 1).
  """
  if not isinstance(num_points, (int, np.integer)) or num_points < 0:
    raise ValueError(f"num_points must be a non-negative integer, got {num_points!r}")
  if not isinstance(dim, (int, np.integer)) or dim < 1:
    raise ValueError(f"dim must be a positive integer, got {dim!r}")
  indices = np.arange(num_points)
  points = np.stack([radical_inverse(indices, b) for b in _first_primes(dim)], axis=1)
  if seed is not None:
    shift = np.random.default_rng(seed).uniform(size=dim)
    points = np.mod(points + shift, 1.0)
    points = np.minimum(points, np.nextafter(1.0, 0.0))  # Guard against rounding to 1.
  return points


def _map(dim: Range | Choice, u: float) -> Any:
  if isinstance(dim, Choice):
    n = len(dim.feasible_points)
    return copy.deepcopy(dim.feasible_points[min(int(math.floor(u * n)), n - 1)])
  if dim.scaling == "log":
    value = dim.min * (dim.max / dim.min) ** u  # = exp(log min + u (log max - log min)).
  else:
    value = dim.min + u * (dim.max - dim.min)
  return min(max(value, dim.min), dim.max)  # Rounding may step just outside.


def sample_points(space: SpaceLike, num_points: int, seed: int | None) -> list[dict[str, Any]]:
  """`num_points` hyperparameter points from `space`.

  Dict form: point i is Halton point i (shifted by `seed`, see `halton`)
  mapped per hyperparameter, in sorted name order: linear ranges to
  min + u (max - min), log ranges to exp(log min + u (log max - log min)),
  choices to feasible_points[floor(u n)].

  List form: the first `num_points` points as given (`seed` is unused: the
  list is the trial schedule, and every study runs the same one); fewer if
  the list is shorter, with a warning, as AlgoPerf.
  """
  space = load_search_space(space)
  if not isinstance(num_points, (int, np.integer)) or num_points < 0:
    raise ValueError(f"num_points must be a non-negative integer, got {num_points!r}")
  if space.points is not None:
    if num_points > len(space.points):
      # AlgoPerf's halton.generate_search truncates too (and says so in its log).
      logging.warning("asked for %d trials but the search space lists only %d points: running %d",
                      num_points, len(space.points), len(space.points))
    return [copy.deepcopy(p) for p in space.points[:num_points]]
  names = list(space.dims)
  if num_points == 0:
    return []
  u = halton(num_points, len(names), seed)
  return [{name: _map(space.dims[name], float(row[d])) for d, name in enumerate(names)} for row in u]


def study_seed(rng_seed: int, study: int) -> int:
  """A 32-bit seed for one study, mixed from (rng_seed, study) by SeedSequence."""
  for name, value in (("rng_seed", rng_seed), ("study", study)):
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
  return int(np.random.SeedSequence([int(rng_seed), int(study)]).generate_state(1)[0])


def trial_points(space: SpaceLike, num_trials: int, study: int, rng_seed: int) -> list[dict[str, Any]]:
  """The hyperparameter points of one study's trials, in trial order.

  Each study shifts the Halton sequence by its own seed, `study_seed(rng_seed,
  study)`, so studies are independent repetitions of the tuning procedure
  (what the median over studies needs) and rerunning gives the same points.
  A list-form space gives every study its first `num_trials` points.
  """
  return sample_points(space, num_trials, study_seed(rng_seed, study))
