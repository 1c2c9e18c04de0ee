"""Bridge from the chaos history records to the linearizability checker (filled in below)."""

from __future__ import annotations

from typing import Any


def check_registers(by_key: dict[str, list[dict[str, Any]]]) -> list[str]:
    return []
