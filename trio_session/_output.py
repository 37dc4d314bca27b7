"""Typed output: the JSON a model is asked for, and the value its final answer becomes (SPEC §8).

Sans-I/O: `OutputSpec` builds the schema, the instructions and the correction message, and
checks a reply; the engine decides when to ask again.
"""

from __future__ import annotations

import json
import re
from typing import Any

import attrs

from ._arguments import structure_arguments
from ._jsonschema import type_schema
from ._validator import validate

__all__ = ["OutputSpec"]

# A reply may wrap its JSON in a Markdown code fence despite the instructions.
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n(.*?)\n?```\s*$", re.DOTALL)


@attrs.frozen
class OutputSpec:
    """The typed output an execution asks for.

    Attributes:
        type: The Python type of the output (an attrs class, a dataclass-like attrs class,
            ``list[int]``, ``Literal[...]``...).
        schema: Its self-contained JSON Schema.

    Example:
        >>> spec = OutputSpec.of(list[int])
        >>> spec.parse("[1, 2]")
        ([1, 2], [])
        >>> spec.parse('["a"]')[1]
        ['[0]: expected integer, got string']
    """

    type: Any
    schema: dict[str, Any]

    @classmethod
    def of(cls, output_type: Any) -> OutputSpec:
        """The spec of ``output_type``.

        Raises:
            TypeError: The type has no JSON Schema (a type the converter cannot structure).
        """
        try:
            schema = type_schema(output_type)
        except TypeError as exc:
            raise TypeError(f"output_type {exc}") from None
        return cls(output_type, schema)

    @property
    def name(self) -> str:
        """A name for the schema, as providers want one (``[A-Za-z0-9_-]{1,64}``)."""
        raw = getattr(self.type, "__name__", "output")
        return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:64] or "output"

    def instructions(self) -> str:
        """What a model without native JSON output is told, appended to the system prompt."""
        return (
            "Answer with only a JSON value (no prose, no code fence) that matches this JSON "
            f"Schema:\n{json.dumps(self.schema, ensure_ascii=False)}"
        )

    def correction(self, errors: list[str]) -> str:
        """The message that asks the model, once, to answer again."""
        listed = "\n".join(f"- {e}" for e in errors)
        return (
            "Your answer is not valid output:\n"
            f"{listed}\n"
            "Answer again with only a JSON value that matches the required schema."
        )

    def parse(self, text: str) -> tuple[Any, list[str]]:
        """The structured value of a reply, and every problem found (empty when valid)."""
        fenced = _FENCE.match(text)
        raw = fenced.group(1) if fenced else text
        try:
            data = json.loads(raw)
        except ValueError as exc:
            shown = raw.strip()[:200] or "(empty)"
            return None, [f"the answer is not JSON ({exc}): {shown}"]
        problems = [p.lstrip(": ") if p.startswith(":") else p for p in validate(self.schema, data)]
        if problems:
            return None, problems
        values, problems = structure_arguments({"value": self.type}, {"value": data})
        if problems:
            return None, [p.removeprefix("value").lstrip(": ") or p for p in problems]
        return values["value"], []
