"""The package is typed for its users: the wheel carries PEP 561's `py.typed` markers, and the
public client's results have precise types (checked with mypy's reveal_type)."""

from __future__ import annotations

import re
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


SNIPPET = """
import zkpy
import zkpy.sync


async def main(flag: bool) -> None:
    async with zkpy.connect("127.0.0.1:2181/app") as zk:
        reveal_type(await zk.create("/a"))
        reveal_type(await zk.create("/a", include_data=True))
        reveal_type(await zk.create("/a", include_data=flag))
        reveal_type(await zk.get_children("/"))
        reveal_type(await zk.get_children("/", include_data=True))
        reveal_type(await zk.get_children("/", include_data=flag))
        reveal_type(await zk.get("/a"))
        reveal_type(await zk.exists("/a"))
        reveal_type(await zkpy.Retry(max_tries=5)(zk.get, "/a"))
        reveal_type(await zkpy.Retry(max_tries=5)(zk.create, "/a", include_data=True))


def blocking(flag: bool) -> None:
    with zkpy.sync.connect("127.0.0.1:2181") as zk:
        reveal_type(zk.create("/a"))
        reveal_type(zk.create("/a", include_data=True))
        reveal_type(zk.create("/a", include_data=flag))
        reveal_type(zk.get_children("/"))
        reveal_type(zk.get_children("/", include_data=True))
        reveal_type(zk.get_children("/", include_data=flag))
        reveal_type(zk.get("/a"))
        reveal_type(zkpy.sync.Retry(max_tries=5).call_sync(zk.exists, "/a"))
        with zk.watch("/a") as events:
            for event in events:
                reveal_type(event)
"""

# mypy shows a NamedTuple as its fields with a fallback: say Stat instead
STAT_TUPLE = re.compile(r"tuple\[int(?:, int)*, fallback=zkpy\.core\.types\.Stat\]")
EXPECTED = [
    "str",
    "tuple[str, Stat]",
    "str | tuple[str, Stat]",
    "list[str]",
    "tuple[list[str], Stat]",
    "list[str] | tuple[list[str], Stat]",
    "tuple[bytes, Stat]",
    "Stat | None",
    "tuple[bytes, Stat]",
    "tuple[str, Stat]",
    "str",
    "tuple[str, Stat]",
    "str | tuple[str, Stat]",
    "list[str]",
    "tuple[list[str], Stat]",
    "list[str] | tuple[list[str], Stat]",
    "tuple[bytes, Stat]",
    "Stat | None",
    "zkpy.core.types.WatchedEvent",
]


def test_results_have_precise_types(tmp_path: Path) -> None:
    """What mypy infers for the public client's results, async and blocking: the overloads on
    `include_data` pick the shape, and `zkpy.Retry` keeps the wrapped call's type."""
    from mypy import api

    snippet = tmp_path / "snippet.py"
    snippet.write_text(SNIPPET)
    cache = tmp_path / "mypy-cache"
    flags = ["--strict", "--no-error-summary", "--config-file", "", "--cache-dir", str(cache)]
    # as for an installed package: zkpy's own modules are read for types, their errors (here
    # msgpack's missing stubs, which the project's config silences) are not the snippet's
    flags.append("--follow-imports=silent")
    out, err, _status = api.run([*flags, str(snippet)])
    revealed = [
        STAT_TUPLE.sub("Stat", line.split('Revealed type is "', 1)[1].rstrip('"'))
        for line in out.splitlines()
        if "Revealed type is" in line
    ]
    assert revealed == EXPECTED, out + err
    assert [line for line in out.splitlines() if ": error:" in line] == []
