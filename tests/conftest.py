"""pytest set-up shared by every test module.

Simulated CPU devices and the compilation cache must be requested before JAX
initialises its backend, so this runs before any test module imports jax.
Under Bazel, where each test file is its own process, `tests/test_util.py`
does the same on import.
"""

from tests import test_env

test_env.setup()
