"""MkDocs hook (mkdocs.yml `hooks`): the pages' links to the README point at the site's home page.

docs/*.md link `../README.md`, which resolves on GitHub and in tests/readme_test.py but lies
outside the site's docs_dir; on the site the home page (docs/index.md) takes its place.
"""

import re

_README_LINK = re.compile(r"\]\(\.\./README\.md(?:#[^)]*)?\)")


def on_page_markdown(markdown, page, config, files):  # pylint: disable=unused-argument
  prefix = "../" * page.file.src_uri.count("/")
  return _README_LINK.sub(f"]({prefix}index.md)", markdown)
