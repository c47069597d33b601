"""steplab optimizers: the recent learning-rate literature as Optax transformations.

Every optimizer comes as a building block `scale_by_<name>` and a full
optimizer `<name>(learning_rate, ...)` built as one `optax.chain`, with the
reference implementation's defaults. `registry` lists them all with tuning
search spaces; `eval_params` gives the parameters to evaluate at. `schedules`
holds learning-rate (and momentum) schedules from the literature as Optax
schedules (the runner builds them by name: `experiments.schedule_config`).

The package exports the public names of every module in it: each module lists
them in its `__all__` (modules whose name starts with `_` are private), so a
new optimizer family's module is exported as soon as it exists. As in Optax,
`optimizers.radam` is the optimizer, not its module (`optimizers.registry`:
the registry).
"""

import importlib as _importlib
import pkgutil as _pkgutil

from optimizers._eval import estimated_d
from optimizers._eval import eval_params
from optimizers._eval import HasEvalParams


def _export_modules() -> tuple[str, ...]:
  names = ["estimated_d", "eval_params", "HasEvalParams"]
  for info in sorted(_pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if info.name.startswith("_"):
      continue
    module = _importlib.import_module(f"{__name__}.{info.name}")
    if not hasattr(module, "__all__"):
      raise ImportError(f"optimizers.{info.name} lists no __all__: name its public names")
    for name in module.__all__:
      if name in names:
        raise ImportError(f"optimizers.{info.name} exports {name!r}, which another module exports too")
      globals()[name] = getattr(module, name)
      names.append(name)
  return tuple(names)


__all__ = _export_modules()
