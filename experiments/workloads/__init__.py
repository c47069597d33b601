"""Workloads for the AlgoPerf-style runner: `get_workload(name, **options)`.

| name | task | metric | budget |
|---|---|---|---|
| `mnist1d_mlp` | MNIST-1D, MLP | accuracy | 2200 steps |
| `mnist1d_mlp_tanh` | variant: tanh instead of ReLU | accuracy | 2200 steps |
| `mnist1d_cnn` | MNIST-1D, 1-D CNN | accuracy | 3300 steps |
| `mnist1d_cnn_ln` | variant: LayerNorm after each convolution | accuracy | 3300 steps |
| `logreg` | digits, convex softmax regression | loss | 550 steps |
| `logreg_raw` | variant: raw (unstandardised) pixels | loss | 550 steps |
| `stdlib_lm` | bytes of Python's stdlib, Transformer | perplexity | 1320 steps |
| `stdlib_lm_post_ln` | variant: post-LN Transformer blocks | perplexity | 1320 steps |
| `cifar10_resnet` | CIFAR-10 (`data_dir`), ResNet-18 | accuracy | accelerator, provisional |
| `lm_transformer` | bytes of any text (`data_dir`), Transformer | perplexity | accelerator, placeholder |

The CPU workloads are measured in cost-adjusted steps (`Targets.measure ==
"steps"`, see `experiments/step_cost.py`): the budget is `max_steps`, at most
10% past the `step_hint` at which the baseline's schedule ends, with an
evaluation every `max_steps // 50` steps; `max_allowed_runtime_sec` is the
wall-clock budget for `--measure=wallclock` only.

Their targets come from tuned AdamW runs through the runner itself
(tools/calibrate_targets.py): AdamW's learning rate tuned over a small grid, then
20 seeds (0-9, and 1000-1009 as a check) run for the step budget; the validation
target is the best validation metric that 19 of the 20 seeds reach, the test
target the worst test metric at the evaluation where a seed first reached it.
Each `Targets.how_set` says so with the numbers; `Targets.tuned_baseline` is the
tuned point.

Variants (AlgoPerf's robustness check, as its `imagenet_resnet_silu` or
`wmt_post_ln`): the same task with one model or data detail changed, selected
by name, with targets calibrated the same way and the base workload's step
budget. Each is a subclass of its base that flips one class attribute.
"""

from __future__ import annotations

from experiments.workloads.base import ParameterType
from experiments.workloads.base import parameter_type
from experiments.workloads.base import Targets
from experiments.workloads.base import Workload
from experiments.workloads.cifar10 import Cifar10ResNet
from experiments.workloads.lm_transformer import LmTransformer
from experiments.workloads.logreg import Logreg
from experiments.workloads.logreg import LogregRaw
from experiments.workloads.mnist1d import Mnist1dCnn
from experiments.workloads.mnist1d import Mnist1dCnnLn
from experiments.workloads.mnist1d import Mnist1dMlp
from experiments.workloads.mnist1d import Mnist1dMlpTanh
from experiments.workloads.stdlib_lm import StdlibLM
from experiments.workloads.stdlib_lm import StdlibLMPostLN

# Variant -> the base workload whose task it shares (one detail changed).
_VARIANT_OF: dict[type[Workload], type[Workload]] = {
    Mnist1dMlpTanh: Mnist1dMlp, Mnist1dCnnLn: Mnist1dCnn, LogregRaw: Logreg,
    StdlibLMPostLN: StdlibLM,
}
WORKLOADS: dict[str, type[Workload]] = {
    cls.name: cls
    for cls in (Mnist1dMlp, Mnist1dMlpTanh, Mnist1dCnn, Mnist1dCnnLn, Logreg, LogregRaw, StdlibLM,
                StdlibLMPostLN, Cifar10ResNet, LmTransformer)
}
VARIANTS: dict[str, str] = {cls.name: base.name for cls, base in _VARIANT_OF.items()}


def get_workload(name: str, **kwargs) -> Workload:
  """The workload `name`, built with keyword options (e.g. data_dir, sizes)."""
  try:
    cls = WORKLOADS[name]
  except KeyError:
    raise ValueError(
        f"unknown workload {name!r}; valid names: {', '.join(sorted(WORKLOADS))}"
    ) from None
  return cls(**kwargs)


__all__ = ["ParameterType", "parameter_type", "Targets", "Workload", "WORKLOADS", "VARIANTS",
           "get_workload"]
