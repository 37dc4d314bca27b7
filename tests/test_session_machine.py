"""A hypothesis state machine driving one session with random user actions.

One trio run lives in a background thread for the whole test case, so the
session and its executions persist across rules; rules call into it with
`trio.from_thread.run`. The clock is a `MockClock` that only moves when the
`advance` rule says so, and every rule ends with `wait_all_tasks_blocked`,
so each step leaves the session quiescent before the invariants are checked.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

import trio
import trio.testing
from _helpers import assert_transcript_integrity, narrow
from _profiles import examples
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_session import (
    Agent,
    ExecutionEnd,
    MessageDelivered,
    MessageQueued,
    ModelRequest,
    Reply,
    ScriptedModel,
    Session,
    SessionClosed,
    SessionExecutionHandle,
    StreamEvent,
    ToolConfirmationRequired,
    ToolConfirmationResult,
    UnknownToolUse,
    open_session,
    tool,
    user,
)


@tool
def lookup(key: str) -> str:
    """Look something up."""
    return f"value of {key}"


@tool(requires_confirmation=True)
def launch(target: str) -> str:
    """Launch something (needs approval)."""
    return f"launched {target}"


def _reply(request: ModelRequest) -> Reply:
    """Deterministic replies: tools after user turns, text after tool turns."""
    last = request.messages[-1] if request.messages else None
    n = len(request.messages)
    if last is not None and last.role == "user":
        if n % 3 == 0:
            return Reply("Launching.", tool_calls=[("launch", {"target": f"t{n}"})])
        if n % 3 == 1:
            return Reply("Looking.", tool_calls=[("lookup", {"key": f"k{n}"}), ("lookup", {})])
    return Reply(f"Answer number {n}, in a few words.")


class _TrioThread:
    """A trio run in a thread, with a MockClock that moves only when told."""

    def __init__(self) -> None:
        self.clock = trio.testing.MockClock()
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self.token: trio.lowlevel.TrioToken | None = None
        self.nursery: trio.Nursery | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self) -> None:
        try:
            trio.run(self._main, clock=self.clock)
        except BaseException as exc:  # reported by close()
            self.error = exc

    async def _main(self) -> None:
        self._stop = trio.Event()
        self.token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    def run(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        async def step() -> Any:
            result = await fn(*args)
            await trio.testing.wait_all_tasks_blocked()
            return result

        return trio.from_thread.run(step, trio_token=self.token)

    def close(self) -> None:
        assert self._stop is not None
        trio.from_thread.run_sync(self._stop.set, trio_token=self.token)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        if self.error is not None:
            raise self.error


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.trio = _TrioThread()
        self.handles: list[SessionExecutionHandle] = []
        self.terminal: dict[int, str] = {}
        self.readers: list[tuple[SessionExecutionHandle, list[StreamEvent]]] = []
        self.session_reader: list[StreamEvent] = []
        self.sent: list[str] = []  # ids of every message given to the session
        self.closed = False
        self.session: Session = self.trio.run(self._open)

    async def _open(self) -> Session:
        opened: list[Session] = []
        ready = trio.Event()
        assert self.trio.nursery is not None

        async def hold() -> None:
            model = ScriptedModel([_reply] * 10_000, chunk_size=7, delay=1.0)
            agent = Agent(model, tools=[lookup, launch], max_ticks=4)
            async with open_session(agent) as session:
                opened.append(session)
                subscription = session.subscribe()
                ready.set()
                async for event in subscription:
                    self.session_reader.append(event)

        self.trio.nursery.start_soon(hold)
        await ready.wait()
        return opened[0]

    @property
    def current(self) -> SessionExecutionHandle | None:
        return self.handles[-1] if self.handles else None

    # -- rules --------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(text=st.sampled_from(["hi", "what now?", "go on", "stop"]))
    def send(self, text: str) -> None:
        message = user(text)
        self.sent.append(message.id)

        async def act() -> None:
            handle = await self.session.send(message)
            if not self.handles or handle is not self.handles[-1]:
                self.handles.append(handle)

        self.trio.run(act)

    @precondition(lambda self: not self.closed and self.current is not None)
    @rule(text=st.sampled_from(["also this", "and that"]))
    def queue_message(self, text: str) -> None:
        handle = self.current
        assert handle is not None
        message = user(text)
        self.sent.append(message.id)

        async def act() -> None:
            handle.queue_message(message)

        self.trio.run(act)

    @precondition(lambda self: not self.closed)
    @rule()
    def queue(self) -> None:
        message = user("queued while idle or running")
        self.sent.append(message.id)

        async def act() -> None:
            self.session.queue(message)

        self.trio.run(act)

    @precondition(lambda self: not self.closed and self.current is not None)
    @rule()
    def abort(self) -> None:
        handle = self.current
        assert handle is not None

        async def act() -> None:
            handle.abort("rule")

        self.trio.run(act)

    @precondition(lambda self: not self.closed)
    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 20.0]))
    def advance(self, seconds: float) -> None:
        async def act() -> None:
            self.trio.clock.jump(seconds)

        self.trio.run(act)

    @precondition(lambda self: not self.closed and self.current is not None)
    @rule(approved=st.booleans(), always=st.booleans())
    def answer_confirmation(self, approved: bool, always: bool) -> None:
        handle = self.current
        assert handle is not None
        asked = [e for e in handle.events.history if isinstance(e, ToolConfirmationRequired)]
        answered = {e.tool_use_id for e in handle.events.history
                    if isinstance(e, ToolConfirmationResult)}
        waiting = [e for e in asked if e.tool_use_id not in answered]

        async def act() -> None:
            for event in waiting:
                handle.submit_tool_result(event.tool_use_id, approved=approved, always=always)
            if not waiting:
                try:
                    handle.submit_tool_result("no-such-call", approved=True)
                except UnknownToolUse:
                    pass
                else:
                    raise AssertionError("an unknown id was accepted")

        self.trio.run(act)

    @precondition(lambda self: self.current is not None)
    @rule()
    def late_reader(self) -> None:
        handle = self.current
        assert handle is not None
        seen: list[StreamEvent] = []
        self.readers.append((handle, seen))
        assert self.trio.nursery is not None

        async def read() -> None:
            async for event in handle.events.subscribe():
                seen.append(event)

        async def act() -> None:
            assert self.trio.nursery is not None
            self.trio.nursery.start_soon(read)

        self.trio.run(act)

    @precondition(lambda self: not self.closed and len(self.handles) >= 3)
    @rule()
    def close(self) -> None:
        async def act() -> None:
            await self.session.aclose()

        self.trio.run(act)
        self.closed = True
        assert self.session.status == "closed"

    @precondition(lambda self: self.closed)
    @rule(text=st.sampled_from(["late", "too late"]))
    def use_after_close(self, text: str) -> None:
        async def refused() -> None:
            try:
                await self.session.send(text)
            except SessionClosed:
                pass
            else:
                raise AssertionError("send after close was accepted")
            try:
                self.session.queue(text)
            except SessionClosed:
                return
            raise AssertionError("queue after close was accepted")

        self.trio.run(refused)
        assert self.session.status == "closed"

    # -- invariants -----------------------------------------------------------

    @invariant()
    def every_execution_ends_exactly_once_and_last(self) -> None:
        for handle in self.handles:
            history = handle.events.history
            assert history[0].type == "execution_start"
            ends = [i for i, e in enumerate(history) if e.type == "execution_end"]
            if handle.events.closed:
                assert ends == [len(history) - 1]
                assert narrow(history[-1], ExecutionEnd).status == handle.status
            else:
                assert ends == []

    @invariant()
    def seq_is_gapless(self) -> None:
        seqs = sorted(e.seq for h in self.handles for e in h.events.history)
        assert seqs == list(range(1, len(seqs) + 1))

    @invariant()
    def terminal_status_never_changes(self) -> None:
        for i, handle in enumerate(self.handles):
            if handle.done:
                first = self.terminal.setdefault(i, handle.status)
                assert handle.status == first

    @invariant()
    def subscribers_see_the_same_sequence(self) -> None:
        for handle, seen in self.readers:
            history = handle.events.history
            assert [e.seq for e in seen] == [e.seq for e in history[: len(seen)]]
        all_events = sorted(
            (e for h in self.handles for e in h.events.history), key=lambda e: e.seq
        )
        assert [e.seq for e in self.session_reader] == [
            e.seq for e in all_events[: len(self.session_reader)]
        ]

    @invariant()
    def timeline_never_holds_an_unanswered_tool_use(self) -> None:
        assert_transcript_integrity(self.session.timeline)

    @invariant()
    def no_queued_message_is_lost(self) -> None:
        committed = {m.id for m in self.session.timeline}
        waiting = {m.id for m in self.session.queued_messages}
        in_flight: set[str] = set()
        current = self.current
        if current is not None and not current.events.closed:
            history = current.events.history
            in_flight = {e.message.id for e in history if isinstance(e, MessageQueued)} - {
                e.message_id for e in history if isinstance(e, MessageDelivered)
            }
        for message_id in self.sent:
            assert message_id in committed | waiting | in_flight, f"lost {message_id}"

    def teardown(self) -> None:
        if not self.closed:
            async def act() -> None:
                await self.session.aclose()

            self.trio.run(act)
        self.trio.close()
        for handle in self.handles:
            assert handle.events.history[-1].type == "execution_end"


SessionMachine.TestCase.settings = settings(
    max_examples=examples(100), stateful_step_count=40, deadline=None
)
test_session_state_machine = SessionMachine.TestCase
