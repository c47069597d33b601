"""pytest set-up shared by every test module.

Simulated CPU devices must be requested before JAX initialises its backend,
so this runs before any test module imports jax. Under Bazel, where each test
file is its own process, `tests/test_util.py` does the same on import.
"""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
