"""``serve``: one line on stdout, a working gateway, exit 0 after SIGINT / SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio
from _gateway_helpers import HTTPX_GENERATORS

from trio_session.server._cli import main

pytestmark = [pytest.mark.slow, *HTTPX_GENERATORS]

COMMAND = [
    sys.executable,
    "-c",
    "import sys; from trio_session.server._cli import main; sys.exit(main(sys.argv[1:]))",
]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_serve_prints_one_line_and_exits_cleanly(tmp_path: Path, signum: int) -> None:
    db = tmp_path / "chat.db"
    process = await trio.lowlevel.open_process(
        [*COMMAND, "--port", "0", "--db", str(db), "--token", "tok", "--speed", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        assert chunk, "serve exited before printing its URL"
        line += chunk
    prefix = "trio-session serving on "
    text = line.decode()
    assert text.startswith(prefix)
    url = text[len(prefix) :].strip()
    assert url.endswith("/?token=tok")
    base = url.split("?")[0]
    async with httpx.AsyncClient(base_url=base, headers={"authorization": "Bearer tok"}) as c:
        created = await c.post("/sessions", json={"session_id": "cli"})
        assert created.status_code == 201
        sent = await c.post("/sessions/cli/messages", json={"message": "what is 2 + 3?"})
        assert sent.status_code == 202
        async with c.stream("GET", "/sessions/cli/events") as events:
            lines = events.aiter_lines()
            async for data in lines:
                if data.startswith("event: execution_end"):
                    break
            await lines.aclose()  # type: ignore[attr-defined]
        assert (await c.get("/")).status_code == 200
    process.send_signal(signum)
    rest = b""
    while chunk := await process.stdout.receive_some():
        rest += chunk
    assert await process.wait() == 0
    assert rest == b""  # nothing else on stdout; logs went to stderr
    assert db.exists()


def test_usage_errors() -> None:
    assert main(["--port", "nope"]) == 2  # usage errors exit 2, as the terminal CLI
    assert main(["--help"]) == 0
    assert main(["--model", "nonsense:"]) == 2
