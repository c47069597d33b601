"""README and docs/: Python examples run as written, links resolve, the optimizer table lists the registry."""

from tests import test_util  # pylint: disable=unused-import  # Device set-up.

import glob
import importlib
import importlib.util
import os
import re

from absl.testing import absltest

import optimizers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
PAGES = sorted(glob.glob(os.path.join(DOCS, "**", "*.md"), recursive=True))  # docs/ and docs/api/.


class ReadmeTest(absltest.TestCase):

  def test_python_blocks_run(self):
    names = set()
    for path in [README] + PAGES:
      with open(path, encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
      for block in blocks:  # Each block is self-contained.
        namespace = {}
        exec(compile(block, path, "exec"), namespace)  # pylint: disable=exec-used
        names |= set(namespace)
    self.assertIn("eval_params", names)

  def test_links_to_files_resolve(self):
    for path in [README] + PAGES:
      with open(path, encoding="utf-8") as f:
        text = f.read()
      for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", text):  # Relative links, not URLs.
        self.assertTrue(os.path.exists(os.path.join(os.path.dirname(path), target)), f"{path}: {target}")

  def test_optimizer_table_lists_the_registry(self):
    with open(README, encoding="utf-8") as f:
      section = f.read().split("## Optimizers", 1)[1]
    rows = [line for line in section[:section.index("\n\n", section.index("| name |"))].splitlines()
            if line.startswith("| `")]
    names = {row: set(re.findall(r"`(\w+)`", row.split("|")[1])) for row in rows}
    listed = set().union(*names.values())
    self.assertEqual(listed - set(optimizers.registry), {"polynomial_decay_averaging"})  # Not a registry entry.
    self.assertEmpty(set(optimizers.registry) - listed, "add the optimizer to README's table")
    for name, spec in optimizers.registry.items():  # The row names its reference package.
      row = next(r for r, n in names.items() if name in n)
      self.assertIn(spec.reference.split()[0].split(".")[0], row, name)

  def test_api_page_lists_every_export(self):
    # The docs site (mkdocs.yml) renders docs/api/optimizers.md, whose entries docs/hooks.py generates
    # from the modules' __all__ (read from the sources: griffe does not import, so an entry names the
    # defining module). Every export must get exactly one entry, under the module that defines it.
    spec = importlib.util.spec_from_file_location("docs_hooks", os.path.join(DOCS, "hooks.py"))
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    with open(os.path.join(DOCS, "api", "optimizers.md"), encoding="utf-8") as f:
      self.assertIn(hooks.OPTIMIZERS_API_MARKER, f.read())
    entries = re.findall(r"^::: optimizers\.(\w+)\.(\w+)$", hooks.optimizers_api_markdown(ROOT), flags=re.M)
    for module, name in entries:
      self.assertIs(getattr(importlib.import_module(f"optimizers.{module}"), name), getattr(optimizers, name))
    self.assertCountEqual([name for _, name in entries], optimizers.__all__)

if __name__ == "__main__":
  absltest.main()
