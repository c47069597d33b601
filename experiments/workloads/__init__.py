"""Workloads for the AlgoPerf-style runner: `get_workload(name, **options)`.

| name | task | metric | budget |
|---|---|---|---|
| `mnist1d_mlp` | MNIST-1D, MLP | accuracy | 10 s, one CPU core |
| `mnist1d_cnn` | MNIST-1D, 1-D CNN | accuracy | 15 s, one CPU core |
| `logreg` | digits, convex softmax regression | loss | 10 s, one CPU core |
| `stdlib_lm` | bytes of Python's stdlib, Transformer | perplexity | 115 s, one CPU core |
| `cifar10_resnet` | CIFAR-10 (`data_dir`), ResNet-18 | accuracy | accelerator, provisional |
| `lm_transformer` | bytes of any text (`data_dir`), Transformer | perplexity | accelerator, placeholder |

Targets of the CPU workloads come from tuned AdamW runs through the runner itself
(tools/calibrate_targets.py): the worst of 5 seeds' best validation metric, so a
tuned AdamW reaches it every time, with a budget of twice its slowest time to it;
each `Targets.how_set` says so with the numbers.
"""

from __future__ import annotations

from experiments.workloads.base import ParameterType
from experiments.workloads.base import parameter_type
from experiments.workloads.base import Targets
from experiments.workloads.base import Workload
from experiments.workloads.cifar10 import Cifar10ResNet
from experiments.workloads.lm_transformer import LmTransformer
from experiments.workloads.logreg import Logreg
from experiments.workloads.mnist1d import Mnist1dCnn
from experiments.workloads.mnist1d import Mnist1dMlp
from experiments.workloads.stdlib_lm import StdlibLM

WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls
    for cls in (Mnist1dMlp, Mnist1dCnn, Logreg, StdlibLM, Cifar10ResNet, LmTransformer)
}


def get_workload(name: str, **kwargs) -> Workload:
  """The workload `name`, built with keyword options (e.g. data_dir, sizes)."""
  try:
    cls = WORKLOADS[name]
  except KeyError:
    raise ValueError(
        f"unknown workload {name!r}; valid names: {', '.join(sorted(WORKLOADS))}"
    ) from None
  return cls(**kwargs)


__all__ = ["ParameterType", "parameter_type", "Targets", "Workload", "WORKLOADS", "get_workload"]
