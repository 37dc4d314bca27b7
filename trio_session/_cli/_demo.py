"""The offline demo agent of ``python -m trio_session``: `DemoModel` and its tools.

`DemoModel` is a `Model` that needs no key and no network: it reads the
conversation and decides by simple, deterministic rules what to say and which
tool to call, then streams its words one by one with a small delay, so that
streaming, tool calls, confirmations, spawning, abort and queued messages can
all be seen in a terminal. The tools are real: a safe calculator, a clock,
notes kept in the session ``state`` (saving one asks for confirmation), and
``research``, which spawns a child agent.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

import attrs
import trio

from .._agent import Agent
from .._messages import JsonBlock, TextBlock, ToolResultBlock, ToolUseBlock
from .._tools import Tool, ToolContext, tool
from ..models._base import (
    Model,
    ModelChunk,
    ModelRequest,
    Pacer,
    StopChunk,
    TextChunk,
    ToolCallChunk,
    ToolCallDeltaChunk,
    ToolCallStartChunk,
    estimate_usage,
    json_text,
)

__all__ = [
    "DEFAULT_DELAY",
    "DEMO_SYSTEM",
    "DEMO_TOOLS",
    "MARKDOWN_SAMPLE",
    "RESEARCHER_SYSTEM",
    "DemoModel",
    "DemoPlan",
    "calculator",
    "clock",
    "demo_agent",
    "evaluate",
    "notes",
    "research",
]

MARKDOWN_SAMPLE: Final = (
    "## Markdown\n\nThe chat renders **bold**, *italics* and `code` when the terminal can show "
    "them.\n\n- a list item\n- another one\n\n```python\nprint('hello')\n```\n"
)
"""What the demo answers when asked for markdown."""

DEFAULT_DELAY: Final = 0.03
"""Seconds between two streamed words of `DemoModel`."""

DEMO_SYSTEM: Final = (
    "You are the trio-session demo assistant. Be brief. Use the tools: calculator for "
    "arithmetic, clock for the date and time, notes to save a note (the user approves it) or "
    "to list the saved notes, and research to hand a question to a research assistant."
)

RESEARCHER_SYSTEM: Final = (
    "You are a research assistant. Answer the question you are given in two or three "
    "factual sentences."
)

# ---------------------------------------------------------------------------
# The calculator's evaluator
# ---------------------------------------------------------------------------

MAX_EXPRESSION_LENGTH: Final = 200
# Integers above this many bits are refused: without a bound, "9 ** 9 ** 9"
# would keep the event loop busy for minutes.
MAX_INTEGER_BITS: Final = 4096

_BINARY: Final[Mapping[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_ALLOWED = "only numbers, + - * / // % **, unary minus and parentheses are allowed"


def evaluate(expression: str) -> int | float:
    """Evaluate an arithmetic expression safely, without ``eval``.

    The expression is parsed with `ast`; only int and float literals, the
    binary operators ``+ - * / // % **``, unary minus and parentheses are
    accepted. Results are bounded, so no input can stall the process.

    Raises:
        TypeError: ``expression`` is not a str.
        ValueError: The expression is not arithmetic, uses anything else,
            divides by zero, or its result is too large or not real. The
            message says which.

    Example:
        >>> evaluate("12 * (3 + 4)")
        84
        >>> evaluate("7 / 2")
        3.5
        >>> evaluate("__import__('os')")
        Traceback (most recent call last):
            ...
        ValueError: a function call is not allowed: only numbers, + - * / // % **, unary minus and parentheses are allowed
    """  # noqa: E501 - a doctest's output is one line
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a str, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise ValueError("the expression is empty")
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise ValueError(
            f"the expression is {len(text)} characters long; the limit is {MAX_EXPRESSION_LENGTH}"
        )
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError) as exc:
        detail = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        raise ValueError(f"{text!r} is not an arithmetic expression ({detail})") from None
    return _evaluate(tree.body)


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, int | float) and not isinstance(value, bool):
            _check_size(value)
            return value
        raise ValueError(f"the constant {value!r} is not allowed: {_ALLOWED}")
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left = _evaluate(node.left)
        right = _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ValueError("division by zero") from None
        except OverflowError:
            raise ValueError("the result is too large") from None
        if isinstance(value, complex):
            raise ValueError("the result is not a real number")
        _check_size(value)
        return value  # type: ignore[no-any-return]
    raise ValueError(f"{_describe(node)} is not allowed: {_ALLOWED}")


def _check_power(base: int | float, exponent: int | float) -> None:
    # (bits - 1) * exponent is a lower bound of the result's size, known before computing it.
    if (
        isinstance(base, int)
        and isinstance(exponent, int)
        and exponent > 0
        and (abs(base).bit_length() - 1) * exponent > MAX_INTEGER_BITS
    ):
        raise ValueError("the result is too large")


def _check_size(value: int | float) -> None:
    if isinstance(value, int):
        if value.bit_length() > MAX_INTEGER_BITS:
            raise ValueError("the result is too large")
    elif not math.isfinite(value):
        raise ValueError("the result is too large")


def _describe(node: ast.expr) -> str:
    names = {
        ast.Call: "a function call",
        ast.Name: "a name",
        ast.Attribute: "an attribute",
        ast.Compare: "a comparison",
        ast.BoolOp: "a boolean operator",
        ast.Subscript: "a subscript",
        ast.Lambda: "a lambda",
    }
    for kind, description in names.items():
        if isinstance(node, kind):
            return description
    if isinstance(node, ast.BinOp | ast.UnaryOp):
        return f"the operator {type(node.op).__name__}"
    return f"the syntax {type(node).__name__}"


def format_number(value: int | float) -> str:
    """Show a calculator result: ints exactly, floats to 12 significant digits.

    Example:
        >>> format_number(0.1 + 0.2), format_number(6 / 3), format_number(2**70)
        ('0.3', '2', '1180591620717411303424')
    """
    if isinstance(value, int):
        return str(value)
    return format(value, ".12g")


# ---------------------------------------------------------------------------
# The tools
# ---------------------------------------------------------------------------


@tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression exactly.

    Args:
        expression: Numbers with + - * / // % ** and parentheses, such as "12 * (3 + 4)".
    """
    return format_number(evaluate(expression))


@tool
def clock(timezone: Literal["local", "utc"] = "local") -> str:
    """Tell the current date and time.

    Args:
        timezone: "local" for this computer's time zone, or "utc".
    """
    now = datetime.now(UTC) if timezone == "utc" else datetime.now().astimezone()
    return now.strftime("%A %d %B %Y, %H:%M:%S %Z")


def _saving(arguments: Mapping[str, Any]) -> bool:
    return bool(arguments.get("action", "add") != "list")


def _confirmation(arguments: Mapping[str, Any]) -> str:
    return f'Save the note "{arguments.get("text", "")}" in this session?'


def _saved_notes(state: dict[str, Any]) -> list[str]:
    saved = state.get("notes")
    if not isinstance(saved, list) or not all(isinstance(n, str) for n in saved):
        saved = state["notes"] = []
    return saved


@tool(name="notes", requires_confirmation=_saving, confirmation_message=_confirmation)
def notes(ctx: ToolContext, action: Literal["add", "list"] = "add", text: str = "") -> str:
    """Save a note in this session (the user approves it first), or list the saved notes.

    Args:
        action: "add" saves text as a new note; "list" reads every saved note.
        text: The note to save.
    """
    saved = _saved_notes(ctx.state)
    if action == "list":
        if not saved:
            return "No notes yet."
        return "; ".join(f"{i}. {note}" for i, note in enumerate(saved, 1))
    note = text.strip()
    if not note:
        raise ValueError("the note is empty: pass the text to save")
    saved.append(note)
    return f"Saved note #{len(saved)}: {note}"


@tool
async def research(ctx: ToolContext, question: str) -> str:
    """Hand a question to a research assistant (a child agent) and return its answer.

    Args:
        question: What to find out.
    """
    model: Model = ctx.session.agent.model
    # The child uses the same provider; the demo model plays a researcher.
    child_model = model.researcher() if isinstance(model, DemoModel) else model
    child = await ctx.spawn(
        Agent(child_model, system=RESEARCHER_SYSTEM, name="researcher", max_ticks=2), question
    )
    response: str = (await child.result).response
    return response or "(the research assistant had nothing to say)"


DEMO_TOOLS: Final[tuple[Tool, ...]] = (calculator, clock, notes, research)
"""The demo agent's tools."""


def demo_agent(model: Model | None = None, *, delay: float = DEFAULT_DELAY) -> Agent:
    """The agent of the terminal demo: a model with the demo tools.

    Args:
        model: The model; a `DemoModel` streaming with ``delay`` when None.
        delay: Seconds between streamed words of the default `DemoModel`.

    Example:
        >>> import trio
        >>> from trio_session import open_session
        >>> async def main():
        ...     async with open_session(demo_agent(delay=0)) as session:
        ...         return (await session.send("what is 6 * 7?").result).response
        >>> trio.run(main)
        '6 * 7 = 42.'
    """
    return Agent(
        model if model is not None else DemoModel(delay=delay),
        system=DEMO_SYSTEM,
        tools=DEMO_TOOLS,
        name="demo",
        max_ticks=8,
    )


# ---------------------------------------------------------------------------
# DemoModel
# ---------------------------------------------------------------------------

_FAIL = re.compile(r"\bfail", re.IGNORECASE)
_RESEARCH = re.compile(
    r"^(?:.*?\b)?(?:research|find out(?: about)?|look up)\b[\s:,]*(?P<question>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_NOTES_LIST = re.compile(r"\bnotes\b", re.IGNORECASE)
_NOTES_LIST_VERB = re.compile(r"\b(?:my|list|show|what|read|all)\b", re.IGNORECASE)
_NOTE = re.compile(
    r"^(?:.*?\b)?(?:please\s+)?(?:remember|(?:make|take|save|add) a note|note(?: down)?|"
    r"write down)\b(?:\s+(?:that|to)\b)?[\s:,]*(?P<text>.*)$",
    re.IGNORECASE | re.DOTALL,
)
_CLOCK = re.compile(r"\b(?:time|date|clock|today|day is it)\b", re.IGNORECASE)
_MARKDOWN = re.compile(r"\bmarkdown\b", re.IGNORECASE)
_STORY = re.compile(r"\b(?:story|long (?:answer|text))\b", re.IGNORECASE)
_GREETING = re.compile(r"^\W*(?:hi|hello|hey|help)\b|what can you do", re.IGNORECASE)
_TIMES = re.compile(r"(?<=[\d)])\s*[x\u00d7]\s*(?=[\d(])")
_CANDIDATE = re.compile(r"[\d.()+\-*/%\s]+")
_OPERATION = re.compile(r"[\d.)]\s*(?:\*\*|//|[+\-*/%])\s*[-(\d.]")
_WORD = re.compile(r"\S+\s*|\s+")
_ENGINE_PREFIX = re.compile(r"^Tool '[^']*' failed: \w+: ")
_DENIED = re.compile(r"^The user denied the call to '[^']*'(?:: (?P<why>.*?))?\.?$", re.DOTALL)

STORY: Final = (
    "Once upon a time, a small task lived in a nursery. It streamed its words one by one, "
    "calm and unhurried, because it knew that whoever held its cancel scope could stop it "
    "at any moment, and that its nursery would wait for it to finish properly. Every event "
    "it emitted was numbered, replayed to every reader, and never lost. When a new message "
    "arrived in the middle of its sentence, it did not start a second story in secret: it "
    "answered in the same execution, at the next tick. And they all lived happily ever after."
)

CAPABILITIES: Final = (
    "I am the offline demo agent. Try: what is 12 * (3 + 4) | what time is it | "
    "remember to buy milk | show my notes | research structured concurrency | "
    "tell me a story | fail (a tool error)."
)

_FACTS: Final[tuple[tuple[str, str], ...]] = (
    (
        "structured concurrency",
        "Structured concurrency ties every task to a scope, a nursery in trio, that "
        "cannot end before its tasks do, so errors propagate and cancellation reaches "
        "everything that was started.",
    ),
    (
        "trio",
        "Trio is a Python library for async I/O built on structured concurrency: tasks "
        "live in nurseries, timeouts and cancellation are cancel scopes, and every "
        "async function is a checkpoint.",
    ),
    (
        "python",
        "Python is a general-purpose programming language first released by Guido van "
        "Rossum in 1991; its reference implementation is CPython.",
    ),
    (
        "eiffel",
        "The Eiffel Tower in Paris is about 330 metres tall and was completed in 1889.",
    ),
)


@attrs.frozen
class DemoPlan:
    """What `DemoModel` says and which tools it calls in one reply.

    Attributes:
        text: The words to stream.
        calls: The tool calls, as ``(name, arguments)``.
    """

    text: str
    calls: tuple[tuple[str, dict[str, Any]], ...] = ()


class DemoModel:
    """An offline, deterministic model for the terminal demo; no key, no network.

    It answers the messages after its last reply, by these rules, tried in
    order on each user line (a rule whose tool is not in the request is
    skipped):

    1. "fail": a calculator call that must fail ("1 / 0"), to show a tool error.
    2. "research", "find out", "look up": the ``research`` tool, which spawns a
       child agent; the child's `DemoModel` (see `researcher`) answers from a
       few built-in facts.
    3. "notes" with "my", "list", "show"...: ``notes`` with ``action="list"``.
    4. "remember", "note", "write down"...: ``notes`` with ``action="add"`` and
       the rest of the line as the text (this asks for confirmation).
    5. Arithmetic in the text ("6 * 7", "(1 + 2) x 3"): ``calculator``.
    6. "time", "date", "clock", "today": ``clock`` ("utc" when the line says so).
    7. "story", "long answer": a long story (only for the latest line), handy for
       trying Ctrl-C and queued messages.
    8. A greeting or "help": what it can do; anything else is echoed back with
       the same hint.

    After tool results it answers with text that uses them ("6 * 7 = 42.").
    Text streams one word per chunk with ``trio.sleep(delay)`` in between, and
    every reply reports a usage estimate (about four characters per token).

    Args:
        delay: Seconds between two streamed words (with 0, cancellation is still
            checked at every word).
        persona: ``"assistant"`` (the rules above) or ``"researcher"`` (answers
            the latest user message from its facts, never calls tools).

    Example:
        >>> import trio
        >>> from trio_session import Agent, open_session
        >>> async def main():
        ...     async with open_session(Agent(DemoModel(delay=0))) as session:
        ...         return (await session.send("hello").result).response
        >>> trio.run(main).startswith("Hello! I am the offline demo agent.")
        True
    """

    def __init__(
        self,
        *,
        delay: float = DEFAULT_DELAY,
        persona: Literal["assistant", "researcher"] = "assistant",
    ) -> None:
        if isinstance(delay, bool) or not isinstance(delay, int | float):
            raise TypeError(f"DemoModel delay must be a number, got {type(delay).__name__}")
        if not math.isfinite(delay) or delay < 0:
            raise ValueError(f"DemoModel delay must be a finite number >= 0, got {delay!r}")
        if persona not in ("assistant", "researcher"):
            raise ValueError(
                f"DemoModel persona must be 'assistant' or 'researcher', got {persona!r}"
            )
        self.delay = float(delay)
        self.persona: Literal["assistant", "researcher"] = persona
        self.name = "demo" if persona == "assistant" else "demo-researcher"

    def __repr__(self) -> str:
        return f"DemoModel(delay={self.delay!r}, persona={self.persona!r})"

    def researcher(self) -> DemoModel:
        """A `DemoModel` with the same delay that plays the research assistant."""
        return DemoModel(delay=self.delay, persona="researcher")

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Stream the reply to ``request``: words, then tool calls, usage and the stop reason."""
        plan = self.plan(request)
        pause = Pacer(self.delay)

        for match in _WORD.finditer(plan.text):
            await pause()
            yield TextChunk(match.group())
        for name, arguments in plan.calls:
            await pause()
            call_id = f"call_{uuid.uuid4().hex[:16]}"
            yield ToolCallStartChunk(call_id, name)
            yield ToolCallDeltaChunk(call_id, json_text(arguments))
            yield ToolCallChunk(call_id, name, arguments)
        if not pause.used:
            await trio.lowlevel.checkpoint()
        yield estimate_usage(request, plan.text, (a for _, a in plan.calls))
        yield StopChunk("tool_use" if plan.calls else "end_turn")

    def plan(self, request: ModelRequest) -> DemoPlan:
        """Decide the reply to ``request`` (pure: no I/O, no randomness)."""
        messages = request.messages
        start = len(messages)
        while start > 0 and messages[start - 1].role != "assistant":
            start -= 1
        recent = messages[start:]
        lines = [m.text.strip() for m in recent if m.role == "user" and m.text.strip()]
        if self.persona == "researcher":
            question = lines[-1] if lines else ""
            return DemoPlan(_findings(question))
        calls_by_id = {
            block.tool_use_id: block for message in messages for block in message.tool_uses
        }
        sentences = [
            _about_result(result, calls_by_id.get(result.tool_use_id))
            for message in recent
            for result in message.tool_results
        ]
        available = {spec.name for spec in request.tools}
        calls: list[tuple[str, dict[str, Any]]] = []
        for i, line in enumerate(lines):
            text, call = _answer(line, available, latest=i == len(lines) - 1)
            if text:
                sentences.append(text)
            if call is not None:
                calls.append(call)
        if not sentences:
            sentences.append(CAPABILITIES)
        return DemoPlan(" ".join(sentences), tuple(calls))


def _answer(
    line: str, available: set[str], *, latest: bool
) -> tuple[str, tuple[str, dict[str, Any]] | None]:
    """The words and the tool call (if any) that answer one user line."""
    if "calculator" in available and _FAIL.search(line):
        return (
            "Let me try a calculation that cannot work, to show a tool error.",
            ("calculator", {"expression": "1 / 0"}),
        )
    if "research" in available and (found := _RESEARCH.match(line)):
        question = found.group("question").strip(" ?.!") or line
        return "I'll ask my research assistant.", ("research", {"question": question})
    if "notes" in available:
        if _NOTES_LIST.search(line) and _NOTES_LIST_VERB.search(line):
            return "Let me look at your notes.", ("notes", {"action": "list"})
        if found := _NOTE.match(line):
            text = found.group("text").strip() or line
            return (
                "I'll save that as a note, once you approve.",
                ("notes", {"action": "add", "text": text}),
            )
    if "calculator" in available and (expression := _arithmetic(line)) is not None:
        return "Let me calculate that.", ("calculator", {"expression": expression})
    if "clock" in available and _CLOCK.search(line):
        zone = "utc" if re.search(r"\butc\b", line, re.IGNORECASE) else "local"
        return "Let me check the clock.", ("clock", {"timezone": zone})
    if _MARKDOWN.search(line):
        return MARKDOWN_SAMPLE, None
    if _STORY.search(line):
        return (STORY if latest else f'(I skipped "{line}": ask again if you still want it.)'), None
    if _GREETING.search(line):
        return f"Hello! {CAPABILITIES}", None
    return f'You said "{line}". {CAPABILITIES}' if latest else f'You also said "{line}".', None


def _arithmetic(line: str) -> str | None:
    """The first arithmetic expression in a line of text, if any."""
    text = _TIMES.sub(" * ", line).replace("\u00f7", "/").replace("^", "**")
    for match in _CANDIDATE.finditer(text):
        candidate = match.group().strip()
        # Brackets that a sentence opened or closed around the expression.
        while candidate.count("(") > candidate.count(")") and candidate.startswith("("):
            candidate = candidate[1:].strip()
        while candidate.count(")") > candidate.count("(") and candidate.endswith(")"):
            candidate = candidate[:-1].strip()
        candidate = candidate.rstrip(".")
        if _OPERATION.search(candidate):
            return candidate
    return None


def _result_text(result: ToolResultBlock) -> str:
    parts = []
    for block in result.content:
        if isinstance(block, TextBlock):
            parts.append(block.text)
        elif isinstance(block, JsonBlock):
            parts.append(json.dumps(block.data, ensure_ascii=False))
    return " ".join(parts).strip()


def _about_result(result: ToolResultBlock, call: ToolUseBlock | None) -> str:
    """A sentence that uses one tool result."""
    text = _result_text(result)
    arguments: Mapping[str, Any] = call.input if call is not None else {}
    if result.is_error:
        if denied := _DENIED.match(text):
            why = f" ({denied.group('why')})" if denied.group("why") else ""
            return f"OK, I did not run {result.name}{why}."
        # The engine's wording ("Tool 'x' failed: ValueError: ...") is for models.
        detail = _ENGINE_PREFIX.sub("", text)
        return (
            f"The {result.name} tool reported an error ({detail.rstrip('.')}); "
            "a failing tool is just a result I can read, so we can go on."
        )
    if result.name == "calculator":
        return f"{arguments.get('expression', 'That')} = {text}."
    if result.name == "clock":
        return f"It is {text}."
    if result.name == "notes":
        if arguments.get("action") == "list":
            return f"Your notes: {text}" if text != "No notes yet." else "You have no notes yet."
        return f"Done. {text}."
    if result.name == "research":
        return f"My research assistant says: {text}"
    return f"{result.name} returned: {text}"


def _findings(question: str) -> str:
    lowered = question.lower()
    for key, fact in _FACTS:
        if key in lowered:
            return fact
    topic = question.strip(" ?.!") or "that"
    return (
        f'I have no network in this demo, so about "{topic}" I can only say: it deserves a '
        "real search."
    )
