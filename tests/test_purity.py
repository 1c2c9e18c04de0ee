"""The pure core imports only what is on its list: pure standard-library modules, msgpack, and
its own packages.

The list says what the core MAY import, not what it may not: a module nobody thought to forbid
(a new I/O library, a clock hidden in a helper) fails here until someone decides it belongs. The
check parses source with `ast` (it never imports the modules), so a violation is found even in
code that is not executed, and the message names the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PURE_PACKAGES = ("zkpy/core", "zkpy/wire", "zkpy/zab")

# Standard-library modules that compute and nothing else: no files, sockets, clocks, randomness,
# threads or process state. A module is allowed with everything under it (collections.abc).
ALLOWED_STDLIB = frozenset(
    {
        "__future__",
        "abc",
        "base64",
        "binascii",
        "bisect",
        "collections",
        "dataclasses",
        "enum",
        "functools",
        "hashlib",
        "heapq",
        "hmac",
        "ipaddress",
        "itertools",
        "math",
        "operator",
        "re",
        "struct",
        "typing",
        "zlib",
    }
)
ALLOWED_THIRD_PARTY = frozenset({"msgpack"})  # bytes in, values out
ALLOWED_PACKAGES = ("zkpy.core", "zkpy.wire", "zkpy.zab")  # the pure core itself

HOW_TO_DECIDE = """\
The pure core (zkpy/core, zkpy/wire, zkpy/zab) imports only what tests/test_purity.py lists.
To decide about a new import:
- does it touch files, sockets, clocks, randomness, threads, processes or the environment, or is
  it part of the shell (zkpy.server, zkpy.client, zkpy.cli, zkpy._net, trio, lmdb)? Then keep it
  out: let the shell pass the value in (time as a number, a seeded random.Random, bytes), or move
  the code into the shell;
- is it plain computation on values (a standard-library module with no I/O and no global state,
  or a codec)? Then add it to ALLOWED_STDLIB or ALLOWED_THIRD_PARTY in tests/test_purity.py, in
  the same commit as the import, with the reason in the commit message."""


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def allowed(module: str) -> bool:
    """Whether the pure core may import `module` (a dotted absolute name)."""
    top = module.split(".", 1)[0]
    if top in ALLOWED_STDLIB or top in ALLOWED_THIRD_PARTY:
        return True
    return any(_within(module, package) for package in ALLOWED_PACKAGES)


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
        if not allowed(module)
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


def test_pure_core_imports_only_what_it_may() -> None:
    problems: list[str] = []
    for path in _pure_files():
        source = path.read_text(encoding="utf-8")
        problems += violations(source, str(path.relative_to(REPO)), _package_of(path))
    assert not problems, (
        "the pure core imports modules that are not on its list:\n"
        + "\n".join(problems)
        + "\n\n"
        + HOW_TO_DECIDE
    )


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
    ("source", "fragment"),
    [
        ("import ossify\n", "imports ossify"),  # merely starts with a known name: unknown
        ("import structure\n", "imports structure"),
        ("import msgpackx\n", "imports msgpackx"),
        ("from zkpy.clientele import x\n", "imports zkpy.clientele"),
        ("from zkpy.corex import x\n", "imports zkpy.corex"),
        ("import zkpy\n", "imports zkpy"),  # the package's __init__ pulls in the client
        ("from zkpy import _net\n", "imports zkpy._net"),
        ("import sqlite3\n", "imports sqlite3"),  # never forbidden by name, still not listed
        ("import datetime\n", "imports datetime"),
    ],
)
def test_checker_refuses_what_is_not_listed(source: str, fragment: str) -> None:
    found = violations(source, "zkpy/core/fake.py", "zkpy.core")
    assert any(fragment in item for item in found), found


@pytest.mark.parametrize(
    "source",
    [
        "import msgpack\nimport hashlib\n",
        "from collections import deque\n",
        "from collections.abc import Iterable\n",
        "from zkpy.core import paths\n",
        "from . import paths\n",
        "from ..zab import messages\n",
        "from zkpy.wire.frames import encode_frame\n",
        "from __future__ import annotations\n",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert violations(source, "zkpy/core/fake.py", "zkpy.core") == []


def test_a_refusal_says_how_to_decide() -> None:
    assert "ALLOWED_STDLIB" in HOW_TO_DECIDE
    assert "let the shell pass the value in" in HOW_TO_DECIDE
