"""The command line and the terminal chat of ``python -m trio_session``.

Nothing here is imported by ``import trio_session``: the package is loaded by
``__main__`` (and the ``trio-session`` script) only.

- ``_args``: the arguments, and the model ``--model`` names.
- ``_main``: `main`, which sets up the model and the store and runs the chat.
- ``_chat``: `Chat`, the chat loop and its trio wiring (input, Ctrl-C, one execution).
- ``_input``: the confirmation dialogue, a pure state machine.
- ``_render``: the event renderer, pure: events in, pieces of text out.
- ``_demo``: the offline demo agent, `DemoModel` and its tools.
"""

from __future__ import annotations

from ._chat import Chat as Chat, ChatOptions as ChatOptions
from ._demo import DemoModel as DemoModel, demo_agent as demo_agent
from ._main import main as main

__all__ = ["Chat", "ChatOptions", "DemoModel", "demo_agent", "main"]
