"""Griffe extensions (``extensions:`` of mkdocstrings in mkdocs.yml) for the API reference.

- Each object is documented once, where it is defined: a package's ``__init__`` re-exports its
  modules' classes (``moext.tasks.MoExtClassifyTask`` is
  ``moext.tasks.moext_classify.MoExtClassifyTask``), and those names are not rendered again.
- The docstrings' Sphinx roles (``:class:`~moext.tasks.base.BaseTask```) read as code
  (``BaseTask``): mkdocstrings does not interpret them.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

#: ``:role:`target``` (``~`` before the target: show only its last component).
SPHINX_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`(~?)([^`]+)`")


def role_as_code(match: re.Match[str]) -> str:
    """The code span a Sphinx role reads as."""
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class DocumentWhereDefined(griffe.Extension):
    """Imported names (aliases) are never rendered, ``__all__`` or not."""

    def on_alias(self, *, alias: griffe.Alias, **kwargs: Any) -> None:
        """Mark an imported name private (an inherited member stays as its class has it)."""
        if not alias.inherited:
            alias.public = False


class SphinxRolesAsCode(griffe.Extension):
    """Every docstring's Sphinx roles become code spans."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        """Rewrite the docstring of each object as it is loaded."""
        if obj.docstring is not None:
            obj.docstring.value = SPHINX_ROLE.sub(role_as_code, obj.docstring.value)
