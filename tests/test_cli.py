"""The command line as a package apart from the library: its seams, exit codes and packaging."""

from __future__ import annotations

import subprocess
import sys

import trio_session


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
