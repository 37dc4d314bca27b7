"""The command line as a package apart from the library: its seams, exit codes and packaging."""

from __future__ import annotations

import socket
import subprocess
import sys
import types

import pytest
from _servers import FakeServer, json_reply, server as server
from test_demo import clean_env, run_cli_async

import trio_session
from trio_session._cli import main


def test_import_trio_session_loads_no_cli_module() -> None:
    code = (
        "import sys, trio_session\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('trio_session._cli'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_demo_names_are_not_public() -> None:
    for name in ("DemoModel", "demo_agent"):
        assert name not in trio_session.__all__
        assert not hasattr(trio_session, name)
    from trio_session._cli import DemoModel, demo_agent

    assert demo_agent(DemoModel(delay=0)).model is not None


# -- exit codes and stderr, for scripts --------------------------------------------------------


async def piped(*args: str, input: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    env = env if env is not None else clean_env()
    return await run_cli_async("--speed", "0", *args, input=input, env=env)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


async def test_piped_refused_connection_fails_on_stderr() -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    code, out, err = await piped(
        "--model",
        "openai:m",
        "--base-url",
        base_url,
        input="hi\n",
        env=clean_env(OPENAI_API_KEY="k"),
    )
    assert code == 1
    assert out == ""
    assert err.startswith("error: ModelError: ")
    assert "connect" in err.lower()


@pytest.mark.parametrize(
    ("status", "message"), [(401, "Incorrect API key provided"), (429, "Rate limit reached")]
)
async def test_piped_http_errors_fail_on_stderr(
    server: FakeServer, status: int, message: str
) -> None:
    # The SDK retries a 429; retry-after-ms keeps its waits to a millisecond.
    body = {"error": {"message": message, "type": "x", "code": None}}
    server.push(*[json_reply(status, body, [("retry-after-ms", "1")])] * 3)
    code, out, err = await piped(
        "--model",
        "openai:m",
        "--base-url",
        server.base_url + "/v1",
        input="hi\n/sessions\n",
        env=clean_env(OPENAI_API_KEY="k"),
    )
    assert code == 1
    assert f"error: ModelError: HTTP {status}: {message}" in err
    # The rest of the input was still handled, on stdout.
    assert out.startswith("no stored sessions")


async def test_piped_success_exits_0() -> None:
    code, out, err = await piped(input="what is 6 * 7\n")
    assert (code, err) == (0, "")
    assert out.endswith("6 * 7 = 42.\n")


def test_help_documents_exit_codes_and_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "trio-session serve" in out
    for line in ("  0 ", "  1 ", "  2 "):
        assert line in out


# -- `serve` is the gateway's, loaded lazily ------------------------------------------------


def test_serve_without_the_server_extra_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # None in sys.modules makes the import fail as if the module were not installed.
    monkeypatch.setitem(sys.modules, "trio_session.server._cli", None)
    assert main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'trio-session[server]'" in err


def test_serve_dispatches_its_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(argv)
        return 7

    fake = types.ModuleType("trio_session.server._cli")
    fake.main = fake_main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "trio_session.server._cli", fake)
    if "trio_session.server" not in sys.modules:
        monkeypatch.setitem(sys.modules, "trio_session.server", types.ModuleType("x"))
    assert main(["serve", "--port", "8080"]) == 7
    assert seen == [["--port", "8080"]]
