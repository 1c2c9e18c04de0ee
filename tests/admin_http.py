"""Helpers for the admin port tests: a raw HTTP GET, and a strict parser of Prometheus's text
exposition format (version 0.0.4) that fails on anything a scraper would reject."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import trio

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)")
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

Labels = tuple[tuple[str, str], ...]


@dataclass
class Family:
    """One metric family: its type, help, and samples by (sample name, labels)."""

    name: str
    type: str = "untyped"
    help: str = ""
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)


async def http_request(port: int, raw: bytes, *, limit: int = 1 << 22) -> tuple[int, bytes]:
    """Send `raw` to 127.0.0.1:`port`, read the response to its end: (status, body)."""
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(raw)
            data = bytearray()
            while chunk := await stream.receive_some(1 << 16):
                data += chunk
                assert len(data) < limit, "response too large"
    head, _sep, body = bytes(data).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode()
    version, code, _reason = status_line.split(" ", 2)
    assert version == "HTTP/1.1", status_line
    headers = dict(line.decode().split(": ", 1) for line in head.split(b"\r\n")[1:] if line.strip())
    assert int(headers["Content-Length"]) == len(body) or raw.startswith(b"HEAD"), headers
    return int(code), body


async def get(port: int, path: str) -> tuple[int, str]:
    """GET `path` from the admin port: (status, body text)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    code, body = await http_request(port, request.encode())
    return code, body.decode()


def parse_prometheus(text: str) -> dict[str, Family]:
    """Parse the text format strictly: every sample belongs to a declared family, a name is
    declared once, values are numbers, histograms have cumulative buckets ending in +Inf that
    equal their _count."""
    families: dict[str, Family] = {}
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            _parse_comment(line, families)
        elif line.startswith("#") or not line:
            continue
        else:
            _parse_sample(line, families)
    for family in families.values():
        if family.type == "histogram":
            _check_histogram(family)
    return families


def _parse_comment(line: str, families: dict[str, Family]) -> None:
    _hash, kind, name, *rest = line.split(" ", 3)
    assert METRIC_NAME.fullmatch(name), line
    family = families.setdefault(name, Family(name))
    if kind == "TYPE":
        assert rest, line
        assert rest[0] in TYPES, line
        assert not family.samples, f"TYPE after samples: {line}"
        family.type = rest[0]
    else:
        family.help = rest[0] if rest else ""


def _parse_sample(line: str, families: dict[str, Family]) -> None:
    match = SAMPLE.fullmatch(line)
    assert match, f"not a sample line: {line!r}"
    name, label_text, value_text = match.groups()
    labels: Labels = ()
    if label_text:
        inner = label_text[1:-1]
        found = LABEL.findall(inner)
        rebuilt = ",".join(f'{k}="{v}"' for k, v in found)
        assert rebuilt == inner.rstrip(","), f"bad labels: {line!r}"
        labels = tuple(sorted(found))
    value = float(value_text)  # raises on anything that is not a number, +Inf, -Inf or NaN
    family = families.get(name)
    if family is None:
        base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        family = families.get(base) if base else None
        assert family is not None, f"undeclared: {line!r}"
        assert family.type == "histogram", f"undeclared: {line!r}"
    key = (name, labels)
    assert key not in family.samples, f"duplicate sample: {line!r}"
    family.samples[key] = value


def _check_histogram(family: Family) -> None:
    series: dict[Labels, list[tuple[float, float]]] = {}
    counts: dict[Labels, float] = {}
    for (name, labels), value in family.samples.items():
        if name.endswith("_bucket"):
            le = dict(labels)["le"]
            rest = tuple(pair for pair in labels if pair[0] != "le")
            series.setdefault(rest, []).append((float(le), value))
        elif name.endswith("_count"):
            counts[labels] = value
    assert set(series) == set(counts), family.name
    for labels, buckets in series.items():
        bounds = [bound for bound, _count in buckets]
        assert bounds == sorted(bounds), (family.name, bounds)
        assert bounds[-1] == math.inf, (family.name, bounds)
        values = [count for _bound, count in buckets]
        assert values == sorted(values), f"{family.name} buckets are not cumulative"
        assert values[-1] == counts[labels], family.name


def sample(families: dict[str, Family], name: str, **labels: str) -> float:
    """The value of sample `name` with exactly `labels` (0 if absent from a known family)."""
    base = next((name[: -len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), name)
    family = families.get(name) or families[base]
    return family.samples.get((name, tuple(sorted(labels.items()))), 0.0)
