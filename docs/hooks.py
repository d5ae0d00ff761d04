"""MkDocs hook (``hooks:`` in mkdocs.yml): README.md is the site's home page.

The README links the pages as ``docs/<page>.md`` (right on the repository's front page); on the
site they are ``<page>.md``. Anything else the README links must exist on the site, or
``mkdocs build --strict`` fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files


def on_files(files: Files, config: Any) -> Files:
    """Add ``index.md``: the README, its ``docs/`` links made relative to the site."""
    readme = Path(config.config_file_path).parent / "README.md"
    text = readme.read_text(encoding="utf-8").replace("](docs/", "](")
    files.append(File.generated(config, "index.md", content=text))
    return files
