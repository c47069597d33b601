"""Fused Pallas kernels for steplab's memory-bound optimizer updates.

The kernels (one pass over memory for moments and parameters, fused global
reductions) arrive with the kernels issue; until then every optimizer runs on
its XLA path, which stays the reference the kernels will be tested against.
This package is installed now so that the import path is stable.
"""
