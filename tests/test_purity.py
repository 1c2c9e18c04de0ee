"""The pure core imports no I/O, clock, randomness or threads, and nothing of the shell.

The check parses source with `ast` (it never imports the modules), so a violation is found even
in code that is not executed, and the message names the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("zkpy/core", "zkpy/wire", "zkpy/zab")

FORBIDDEN_MODULES = frozenset(
    {
        "trio",
        "lmdb",
        "socket",
        "os",
        "time",
        "random",
        "threading",
        "asyncio",
        "select",
        "selectors",
        "subprocess",
    }
)
FORBIDDEN_PACKAGES = ("zkpy.server", "zkpy.client", "zkpy.cli")


def _forbidden(module: str) -> bool:
    if module.split(".", 1)[0] in FORBIDDEN_MODULES:
        return True
    return any(module == pkg or module.startswith(pkg + ".") for pkg in FORBIDDEN_PACKAGES)


def _resolve_relative(package: str, module: str | None, level: int) -> str:
    """The absolute module of ``from <level dots><module> import ...`` inside `package`."""
    parts = package.split(".") if package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    if module:
        parts.append(module)
    return ".".join(parts)


def imported_modules(source: str, package: str = "") -> list[tuple[int, str]]:
    """Every module a source text imports, as (line, absolute dotted name).

    ``from a import b`` yields both ``a`` and ``a.b`` (b may be a submodule). Calls of
    ``__import__("x")`` and ``importlib.import_module("x")`` with a constant name count too.
    """
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(package, node.module, node.level)
                if node.level
                else node.module or ""
            )
            found.append((node.lineno, base))
            found.extend((node.lineno, f"{base}.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else None
            )
            if (
                name in ("__import__", "import_module")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((node.lineno, node.args[0].value))
    return found


def violations(source: str, filename: str, package: str = "") -> list[str]:
    return [
        f"{filename}:{line} imports {module}"
        for line, module in imported_modules(source, package)
        if _forbidden(module)
    ]


def _pure_files() -> list[Path]:
    files: list[Path] = []
    for folder in PURE_PACKAGES:
        files.extend(sorted((REPO / folder).rglob("*.py")))
    return files


def _package_of(path: Path) -> str:
    # the package a module's relative imports start from (for __init__.py: the package itself)
    return ".".join(path.relative_to(REPO).parts[:-1])


def test_pure_packages_exist_and_are_checked() -> None:
    files = _pure_files()
    names = {str(f.relative_to(REPO)) for f in files}
    # the checker must actually see the modules it guards
    for expected in ("zkpy/core/tree.py", "zkpy/core/prep.py", "zkpy/wire/client.py"):
        assert expected in names
    assert "zkpy/zab/replica.py" in names


def test_pure_core_imports_nothing_impure() -> None:
    problems: list[str] = []
    for path in _pure_files():
        source = path.read_text(encoding="utf-8")
        problems += violations(source, str(path.relative_to(REPO)), _package_of(path))
    assert not problems, "the pure core imports forbidden modules:\n" + "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("import os\n", "imports os"),
        ("import os.path as p\n", "imports os.path"),
        ("from time import monotonic\n", "imports time"),
        ("import random\n", "imports random"),
        ("def f():\n    import trio\n", ":2 imports trio"),
        ("from zkpy.server.node import Member\n", "imports zkpy.server"),
        ("from zkpy import client\n", "imports zkpy.client"),
        ("import zkpy.cli\n", "imports zkpy.cli"),
        ("from ...server import storage\n", "imports zkpy.server"),
        ("import importlib\nm = importlib.import_module('socket')\n", "imports socket"),
        ("__import__('lmdb')\n", "imports lmdb"),
        ("try:\n    import asyncio\nexcept ImportError:\n    pass\n", "imports asyncio"),
    ],
)
def test_checker_catches_a_violation(source: str, fragment: str) -> None:
    found = violations(source, "zkpy/core/fake.py", "zkpy.core.sub")
    assert found, f"checker missed a forbidden import in {source!r}"
    assert any("zkpy/core/fake.py:" in item and fragment in item for item in found), found


@pytest.mark.parametrize(
    "source",
    [
        "import msgpack\nimport hashlib\n",
        "from collections import deque\n",
        "from zkpy.core import paths\n",
        "from . import paths\n",
        "import ossify\n",  # a name that merely starts with a forbidden one
        "import timeit_like\n",
        "from zkpy.clientele import x\n",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert violations(source, "zkpy/core/fake.py", "zkpy.core") == []
