"""The engine: one execution of a session, tick by tick.

An `Execution` is one ``send``/``render``/``spawn``: a task in its session's
nursery (or, for a child spawned by a tool, in the parent execution's nursery)
with its own nursery and cancel scope (the handle's). Each tick compiles the
model input, streams the model's reply into events, runs the requested tools
concurrently, commits the tick atomically, and decides whether to go on.

The engine knows its session only through `ExecutionHost`; it never imports
the session module. Its modules:

- ``_execution``: the lifecycle (run, settle, end events, salvage) and the tick loop.
- ``_assembler``: sans-I/O: model chunks in, events and the assistant message out.
- ``_tool_calls``: the tool calls of one tick; ``_confirm``: their confirmation flow.
- ``_spawn``: a child execution in its parent's nursery, its events forwarded.
- ``_hooks``: calling hooks; the tool call in progress (for ``spawn`` from a tool).
- ``_unwrap``: which error leaves a nursery, and bounded cleanup under a shield.
"""

from ._assembler import Assembled as Assembled, Assembler as Assembler
from ._execution import Execution as Execution, ExecutionHost as ExecutionHost
from ._hooks import call_hook as call_hook, current_tool_call as current_tool_call
from ._unwrap import (
    CLEANUP_TIMEOUT as CLEANUP_TIMEOUT,
    InternalError as InternalError,
    bounded as bounded,
    reraise as reraise,
    unwrap as unwrap,
)
