"""The README's Python example runs as written."""

from tests import test_util  # pylint: disable=unused-import  # Device set-up.

import os
import re

from absl.testing import absltest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


class ReadmeTest(absltest.TestCase):

  def test_python_blocks_run(self):
    with open(README, encoding="utf-8") as f:
      blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    self.assertNotEmpty(blocks)
    names = set()
    for block in blocks:  # Each block is self-contained.
      namespace = {}
      exec(compile(block, README, "exec"), namespace)  # pylint: disable=exec-used
      names |= set(namespace)
    self.assertIn("eval_params", names)


if __name__ == "__main__":
  absltest.main()
