"""Process environment for the tests, set before JAX starts (imports nothing heavy).

* 8 simulated CPU devices (sharding and data-parallel tests).
* JAX's persistent compilation cache, shared by the test processes of one
  checkout (pytest workers, the runner's subprocesses, Ray workers; under
  Bazel each test's private temporary directory): the runner tests compile
  the same programs once per trial (a new optimizer object each time), and
  a cache hit skips XLA's compile (one runner test: 48 s -> 26 s cold,
  10 s warm). It caches compiled code by its HLO and options only: what a
  test computes is unchanged. STEPLAB_TEST_JAX_CACHE=off disables it.
"""

import os
import tempfile

DEVICES_FLAG = "--xla_force_host_platform_device_count=8"


def setup() -> None:
  if DEVICES_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + DEVICES_FLAG).strip()
  cache = os.environ.get("STEPLAB_TEST_JAX_CACHE") or os.path.join(
      tempfile.gettempdir(), f"steplab-test-jax-cache-{os.getuid()}")
  if cache != "off":
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", cache)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
