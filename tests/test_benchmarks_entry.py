"""`python -m benchmarks COMMAND`: the one entry point reaches every benchmark."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from benchmarks.__main__ import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_names_a_module_with_a_main(name: str) -> None:
    module = importlib.import_module(COMMANDS[name][0])
    assert callable(module.main)


def test_without_a_command_it_lists_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in COMMANDS)


def test_an_unknown_command_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err


@pytest.mark.parametrize(("command", "option"), [("micro", "--only"), ("timeline", "--dir")])
def test_a_command_gets_its_own_options(command: str, option: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", command, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0
    assert f"python -m benchmarks {command}" in done.stdout
    assert option in done.stdout
