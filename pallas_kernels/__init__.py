"""Fused Pallas kernels for steplab's memory-bound optimizer updates.

`adam_family`: one kernel for the Adam family's moments and direction (Adam,
RAdam), dispatched per leaf or packed for small leaves, with TPU (Mosaic),
GPU (Triton) and CPU (interpret) versions chosen by the platform. Optimizers
select it with `backend="pallas"`; the XLA path (`backend="xla"`, the default)
stays the reference the kernels are tested against.
"""

from pallas_kernels import adam_family
from pallas_kernels import elementwise
from pallas_kernels.transforms import scale_by_adam
from pallas_kernels.transforms import adamw

__all__ = ("adam_family", "adamw", "elementwise", "scale_by_adam")
