"""The Google-style docstring parser behind tool descriptions.

Hand-written rather than ``docstring_parser``: the core may depend only on
trio, attrs and cattrs, and an optional use would make a tool's schema depend
on what else happens to be installed.
"""

from __future__ import annotations

import inspect
import re
import textwrap

__all__ = ["field_docs", "parse_docstring"]

_PARAM_SECTIONS = frozenset(
    {
        "args",
        "arguments",
        "parameters",
        "params",
        "keyword args",
        "keyword arguments",
        "other parameters",
    }
)
_OTHER_SECTIONS = frozenset(
    {
        "attributes",
        "example",
        "examples",
        "methods",
        "note",
        "notes",
        "raises",
        "references",
        "return",
        "returns",
        "see also",
        "todo",
        "warning",
        "warnings",
        "warns",
        "yield",
        "yields",
    }
)
_HEADER_RE = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_PARAM_RE = re.compile(r"^\*{0,2}([A-Za-z_][A-Za-z0-9_]*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, str, dict[str, str]]:
    """Split a Google-style docstring into its summary, description and parameters.

    Args:
        doc: The docstring (``fn.__doc__``); None gives empty results.

    Returns:
        ``(summary, description, params)``: the first paragraph joined into one
        line; the free text (summary included) with every section such as
        ``Args:``, ``Returns:`` or ``Example:`` removed; and the parameter
        descriptions of the ``Args:`` section, continuation lines joined.

    Example:
        >>> parse_docstring('''Get the weather for a city.
        ...
        ...     Args:
        ...         city: The city name.
        ... ''')
        ('Get the weather for a city.', 'Get the weather for a city.', {'city': 'The city name.'})
    """
    summary, description, sections = _split_docstring(doc)
    params: dict[str, str] = {}
    for name, body in sections:
        if name in _PARAM_SECTIONS:
            params.update(_parse_entries(body))
    return summary, description, params


def _split_docstring(doc: str | None) -> tuple[str, str, list[tuple[str, list[str]]]]:
    if not doc:
        return "", "", []
    lines = inspect.cleandoc(doc).splitlines()
    free: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = _HEADER_RE.match(line)
        name = match.group(1).strip().lower() if match else ""
        if name in _PARAM_SECTIONS or name in _OTHER_SECTIONS:
            body: list[str] = []
            i += 1
            # A section runs until the next line that is back at the margin.
            while i < len(lines) and (not lines[i].strip() or lines[i][:1] in (" ", "\t")):
                body.append(lines[i])
                i += 1
            sections.append((name, body))
            continue
        free.append(line.rstrip())
        i += 1
    paragraphs: list[list[str]] = [[]]
    for line in free:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    paragraphs = [p for p in paragraphs if p]
    summary = " ".join(line.strip() for line in paragraphs[0]) if paragraphs else ""
    description = "\n\n".join("\n".join(p) for p in paragraphs)
    return summary, description, sections


def _parse_entries(body: list[str]) -> dict[str, str]:
    entries: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in textwrap.dedent("\n".join(body)).splitlines():
        if not line.strip():
            continue
        match = None if line[:1] in (" ", "\t") else _PARAM_RE.match(line)
        if match:
            current = entries.setdefault(match.group(1), [])
            if match.group(2).strip():
                current.append(match.group(2).strip())
        elif current is not None:
            current.append(line.strip())
    return {name: " ".join(parts) for name, parts in entries.items()}


def field_docs(doc: str | None) -> tuple[str, dict[str, str]]:
    """A class docstring's free text, and its ``Args:`` / ``Attributes:`` entries.

    Example:
        >>> field_docs('''A point.
        ...
        ...     Attributes:
        ...         x: Across.
        ... ''')
        ('A point.', {'x': 'Across.'})
    """
    _, description, sections = _split_docstring(doc)
    docs: dict[str, str] = {}
    for name, body in sections:
        if name in _PARAM_SECTIONS or name == "attributes":
            docs.update(_parse_entries(body))
    return description, docs
