"""The package as an index shows it: the wheel and sdist build, pass `twine check`, carry LICENSE.

Needs the ``dev`` dependency group (``build``, ``twine``); `.ci/run` installs it and runs
this file again, so it is never skipped there.
"""

from __future__ import annotations

import email
import importlib.metadata
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import trio_session

ROOT = Path(__file__).resolve().parent.parent


def test_version_is_the_distributions() -> None:
    assert trio_session.__version__ == importlib.metadata.version("trio-session")


def test_wheel_and_sdist_build_and_pass_twine_check(tmp_path: Path) -> None:
    pytest.importorskip("build")
    pytest.importorskip("twine")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("*.whl")
    (sdist,) = tmp_path.glob("*.tar.gz")
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        (license_name,) = (n for n in names if n.endswith(".dist-info/licenses/LICENSE"))
        assert archive.read(license_name).decode() == license_text
        metadata = email.message_from_bytes(archive.read(metadata_name))
    assert metadata["License-Expression"] == "MIT"
    assert metadata["Version"] == trio_session.__version__
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls["Repository"] == "https://github.com/trio-session/trio-session"
    classifiers = metadata.get_all("Classifier", [])
    for minor in (11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    extras = metadata.get_all("Provides-Extra", [])
    assert {"cli", "openai", "anthropic", "test"} <= set(extras)
    # The developers' tools are a dependency group, not something users install.
    requires = " ".join(metadata.get_all("Requires-Dist", []))
    assert "ruff" not in requires and "mypy" not in requires
    with tarfile.open(sdist) as archive:
        top = archive.getnames()[0].split("/")[0]
        member = archive.extractfile(f"{top}/LICENSE")
        assert member is not None and member.read().decode() == license_text


def test_readme_links_are_absolute() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)]+)\)", readme)
    assert targets
    for target in targets:
        assert target.startswith("https://"), target
