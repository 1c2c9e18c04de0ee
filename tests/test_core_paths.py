"""zkpy.core.paths: validation, parent / basename / join / ancestors, sequential names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from zkpy.core import paths
from zkpy.core.errors import BadArgumentsError, Code

VALID = [
    "/",
    "/a",
    "/a/b",
    "/a/b/c",
    "/zookeeper",
    "/with space",
    "/dots.in.name",
    "/...",
    "/.a",
    "/a./b",
    "/ünïcödé/日本",
    "/a-b_c:d@e",
]


@pytest.mark.parametrize("path", VALID)
def test_valid_paths_are_returned_unchanged(path: str) -> None:
    assert paths.validate(path) == path


@pytest.mark.parametrize(
    "path",
    [
        "",  # empty
        "a",  # relative
        "a/b",  # relative
        "/a/",  # trailing slash
        "/a/b/",
        "//",
        "//a",  # empty segment
        "/a//b",
        "/.",
        "/..",
        "/a/.",
        "/a/..",
        "/a/./b",
        "/a/../b",
        "/a\x00b",  # NUL
        "/a\x01",
        "/a\x1f",
        "/a\nb",
        "/a\x7f",  # DEL
        "/a\x85",  # C1 control
        "/a\ud800",  # lone surrogate
        "/a\ue000",  # private use area
        "/a\ufff0",  # specials block
        "/a\uffff",
    ],
)
def test_invalid_paths_raise_bad_arguments(path: str) -> None:
    with pytest.raises(BadArgumentsError) as info:
        paths.validate(path)
    assert info.value.code == Code.BAD_ARGUMENTS


@pytest.mark.parametrize("value", [None, 1, b"/a", ["/a"], 1.5, object()])
def test_non_string_paths_raise_bad_arguments(value: object) -> None:
    with pytest.raises(BadArgumentsError):
        paths.validate(value)


def test_length_limit_is_in_utf8_bytes() -> None:
    at_limit = "/" + "a" * (paths.MAX_PATH_BYTES - 1)
    assert paths.validate(at_limit) == at_limit
    with pytest.raises(BadArgumentsError):
        paths.validate(at_limit + "a")
    # 'é' is two bytes in UTF-8: a path short in characters can still be too long in bytes
    wide = "/" + "é" * (paths.MAX_PATH_BYTES // 2)
    assert len(wide) <= paths.MAX_PATH_BYTES
    with pytest.raises(BadArgumentsError):
        paths.validate(wide)


def test_sequential_allows_a_trailing_slash_only_there() -> None:
    assert paths.validate("/queue/", sequential=True) == "/queue/"
    assert paths.validate("/a/b/", sequential=True) == "/a/b/"
    assert paths.validate("/lock-", sequential=True) == "/lock-"
    with pytest.raises(BadArgumentsError):
        paths.validate("/queue/")
    # the rest of the rules still apply to sequential paths
    for bad in ("queue/", "/a//", "//", "/a/../", "/./", "/a\x00/"):
        with pytest.raises(BadArgumentsError):
            paths.validate(bad, sequential=True)


@pytest.mark.parametrize(
    ("path", "parent", "name"),
    [
        ("/a", "/", "a"),
        ("/a/b", "/a", "b"),
        ("/a/b/c", "/a/b", "c"),
        ("/x/lock-0000000007", "/x", "lock-0000000007"),
    ],
)
def test_parent_and_basename(path: str, parent: str, name: str) -> None:
    assert paths.parent(path) == parent
    assert paths.basename(path) == name
    assert paths.join(parent, name) == path


def test_join_handles_the_root_and_trailing_slash() -> None:
    assert paths.join("/", "a") == "/a"
    assert paths.join("/a", "b") == "/a/b"
    assert paths.join("/a/", "b") == "/a/b"


def test_ancestors_from_the_root_down_excluding_root_and_self() -> None:
    assert paths.ancestors("/") == []
    assert paths.ancestors("/a") == []
    assert paths.ancestors("/a/b") == ["/a"]
    assert paths.ancestors("/a/b/c/d") == ["/a", "/a/b", "/a/b/c"]


def test_with_sequence_is_ten_digits() -> None:
    assert paths.with_sequence("lock-", 7) == "lock-0000000007"
    assert paths.with_sequence("/x/lock-", 7) == "/x/lock-0000000007"
    assert paths.with_sequence("/q/", 0) == "/q/0000000000"
    assert paths.with_sequence("/q/", 2**31 - 1) == "/q/2147483647"
    # the suffix sorts in creation order as text, which is what lock recipes rely on
    names = [paths.with_sequence("n-", i) for i in (9, 10, 99, 100, 12345)]
    assert names == sorted(names)


def test_is_within() -> None:
    assert paths.is_within("/a", "/")
    assert paths.is_within("/a", "/a")
    assert paths.is_within("/a/b", "/a")
    assert not paths.is_within("/ab", "/a")
    assert not paths.is_within("/", "/a")


_segment = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="/"),
    min_size=1,
    max_size=8,
).filter(lambda s: s not in (".", ".."))


@given(st.lists(_segment, min_size=1, max_size=6))
def test_generated_paths_validate_and_decompose(segments: list[str]) -> None:
    path = "/" + "/".join(segments)
    assert paths.validate(path) == path
    assert paths.basename(path) == segments[-1]
    assert paths.parent(path) == ("/" + "/".join(segments[:-1]) if len(segments) > 1 else "/")
    assert paths.join(paths.parent(path), paths.basename(path)) == path
    assert paths.ancestors(path) == ["/" + "/".join(segments[:i]) for i in range(1, len(segments))]
    for ancestor in paths.ancestors(path):
        assert paths.is_within(path, ancestor)


@given(
    st.text(alphabet=["/", ".", "a", "é", "\x00", "\x7f", "\ud800", "\ufff0", "\U0001f600"]),
    st.booleans(),
)
def test_the_fast_path_accepts_only_what_the_detailed_checks_accept(
    path: str, sequential: bool
) -> None:
    """`validate` accepts most paths with one regex; it must agree with the step-by-step checks
    (which say what is wrong), never accepting a path they refuse."""
    try:
        expected: str | None = paths._checked(path, sequential)
    except BadArgumentsError:
        expected = None
    try:
        got: str | None = paths.validate(path, sequential=sequential)
    except BadArgumentsError:
        got = None
    assert got == expected
