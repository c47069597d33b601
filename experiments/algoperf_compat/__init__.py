"""Run AlgoPerf submission files unchanged: an `algoperf` package of steplab's own.

AlgoPerf's JAX submissions import `algoperf.spec` (enums, `ShapeTuple`,
`TrainingCompleteError`), often `algoperf.jax_sharding_utils`, sometimes
`algoperf.random_utils`. `install()` makes those importable for a submission:

* if a real `algoperf` is installed, it is used and never shadowed;
* otherwise this package is registered as `algoperf` (and its modules as
  `algoperf.spec`, `algoperf.jax_sharding_utils`, `algoperf.random_utils`)
  in `sys.modules`.

AlgoPerf's workload registry, data pipelines and runner are not provided:
steplab's runner and workloads take their place.

Enums cross the boundary by name: with a real `algoperf`, the runner hands a
submission `ParameterType`/`LossType` members of the real `algoperf.spec`
(`to_spec_enums`), and steplab's workloads accept any `ForwardPassMode`
member by its name, so comparisons in a submission hold either way.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import sys
import types
from typing import Any

import jax

from experiments.algoperf_compat import jax_sharding_utils
from experiments.algoperf_compat import random_utils
from experiments.algoperf_compat import spec

MODULES = {"spec": spec, "jax_sharding_utils": jax_sharding_utils, "random_utils": random_utils}


def _is_ours(module: types.ModuleType) -> bool:
  return getattr(module, "__name__", "").startswith(__name__)


def install() -> types.ModuleType:
  """Makes `import algoperf` work; returns the `algoperf.spec` module in use.

  Idempotent. A real installation wins: it is imported, not replaced.

  Raises:
    ImportError: a real `algoperf` is installed but its `spec` fails to import
      (e.g. its PyTorch dependency is missing); steplab will not hide it.
  """
  existing = sys.modules.get("algoperf")
  if existing is not None and _is_ours(existing):
    return spec
  if existing is not None or importlib.util.find_spec("algoperf") is not None:
    try:
      return importlib.import_module("algoperf.spec")
    except ImportError as e:
      raise ImportError(
          f"an `algoperf` package is installed but `algoperf.spec` fails to import ({e});"
          " fix that installation or uninstall it to use steplab's compatible module."
      ) from e
  sys.modules["algoperf"] = sys.modules[__name__]
  for name, module in MODULES.items():
    sys.modules[f"algoperf.{name}"] = module
  return spec


def to_spec_enums(tree: Any, spec_module: types.ModuleType) -> Any:
  """`tree` with each enum leaf replaced by `spec_module`'s member of that name.

  A no-op with steplab's own spec. With a real AlgoPerf installation, steplab's
  `ParameterType.BIAS` becomes AlgoPerf's `spec.ParameterType.BIAS`, so a
  submission's `t == spec.ParameterType.BIAS` holds.
  """
  if spec_module is spec:
    return tree

  def convert(leaf):
    if isinstance(leaf, enum.Enum):
      return getattr(spec_module, type(leaf).__name__)[leaf.name]
    return leaf

  return jax.tree.map(convert, tree)
