"""Argo's ``{{...}}`` variable substitution, applied to plain manifest data.

As in Argo, a tag is trimmed before lookup (``{{ inputs.parameters.x }}`` works), and only
tags under Argo's own prefixes (``inputs.``, ``outputs.``, ``workflow.``, ``tasks.``,
``steps.``, ``pod.``, ``node.``, ``item``) must resolve; any other ``{{...}}`` is left as it
is, exactly as Argo leaves it. ``{{=expression}}`` tags are evaluated by :mod:`.expr`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from .expr import render

_TAG = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_CHECKED_PREFIXES = ("inputs.", "outputs.", "workflow.", "tasks.", "steps.", "pod.", "node.")


class UnresolvedVariableError(Exception):
    """A ``{{...}}`` variable under an Argo prefix had no value in the current scope."""

    def __init__(self, variable: str) -> None:
        super().__init__(f"failed to resolve {{{{{variable}}}}}")
        self.variable = variable


def is_argo_variable(tag: str) -> bool:
    """Return whether Argo itself owns ``tag`` (and so must be able to resolve it)."""
    return tag == "item" or tag.startswith("item.") or tag.startswith(_CHECKED_PREFIXES)


def to_argo_string(value: Any) -> str:
    """Render a YAML/JSON value the way Argo turns it into a parameter string."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, separators=(",", ":"))


def substitute(text: str, scope: Mapping[str, str]) -> str:
    """Replace every resolvable ``{{...}}`` tag in ``text``.

    Raises:
        UnresolvedVariableError: an Argo variable has no value in ``scope``.
        ExpressionError: a ``{{=expression}}`` fails (see :mod:`.expr`).
    """
    if "{{" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        tag = match.group(1).strip()
        if tag.startswith("="):  # an expression template, evaluated as Argo's expr-lang does
            return render(tag[1:], scope)
        if tag in scope:
            return scope[tag]
        if is_argo_variable(tag):
            raise UnresolvedVariableError(tag)
        return match.group(0)

    return _TAG.sub(replace, text)


def substitute_all(value: Any, scope: Mapping[str, str]) -> Any:
    """Return a copy of ``value`` with :func:`substitute` applied to every string in it."""
    if isinstance(value, str):
        return substitute(value, scope)
    if isinstance(value, list):
        return [substitute_all(v, scope) for v in value]
    if isinstance(value, dict):
        return {k: substitute_all(v, scope) for k, v in value.items()}
    return value


def variables_in(value: Any) -> Iterator[str]:
    """Yield every ``{{...}}`` tag (trimmed) found in the strings of ``value``."""
    if isinstance(value, str):
        for match in _TAG.finditer(value):
            yield match.group(1).strip()
    elif isinstance(value, list):
        for item in value:
            yield from variables_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from variables_in(item)
