"""The README is true: its snippets run, and CI runs its test command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PYTHON_BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
QUICK_START = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]


def test_readme_has_the_two_commands() -> None:
    commands = re.findall(r"```bash\n(.*?)```", QUICK_START, flags=re.S)
    assert len(commands) == 2
    demo, tests = (block.strip() for block in commands)
    assert demo.endswith("-m trio_session")
    assert "pytest" in tests and '".[test]"' in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert BASH_BLOCKS[1].strip() in ci.splitlines()


@pytest.mark.parametrize("index", range(len(PYTHON_BLOCKS)))
def test_readme_snippet_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"snippet_{index}.py"
    script.write_text(PYTHON_BLOCKS[index], encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the snippet printed nothing"


def test_scripted_demo_command() -> None:
    (command,) = (block for block in BASH_BLOCKS if block.startswith("printf"))
    command = command.replace("| .venv/bin/python ", f"| {sys.executable} ")
    done = subprocess.run(
        command, shell=True, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "6*7 = 42." in done.stdout
    assert "Saved note #1: buy milk" in done.stdout


def test_twenty_line_example_output() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PYTHON_BLOCKS[0]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.splitlines()
    assert lines[0] == "1 execution_start"
    assert lines[-2].endswith("execution_end")
    assert lines[-1] == "Sunny!"
