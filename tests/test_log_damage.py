"""Damage to a member's log or checkpoint: a restarted member has every acknowledged write with
its exact value, or refuses to start; never anything in between, and in an ensemble a damaged
member never pulls the healthy ones back.

The property test writes through the real log and storage code, damages what is on disk at a
random place (bit flips, zeroed sectors, truncation, changed record lengths in the segments;
flipped bits in the checkpoint's records and metadata), and reopens. Damage to LMDB's own page
structures is left out: LMDB has no checksums of its own and may crash the process on it, which
is no silent loss but cannot run in the test's process.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import zkpy.server.wal as wal_module
from tests.ensemble_harness import Ensemble, connect_to, read_tree
from zkpy.server.storage import Storage, StorageFormatError

SEGMENT = 4096  # a few dozen records per segment: damage lands in first, middle and last ones
MARK = b"\xc1zkr"  # what starts every record header in a segment


@dataclass
class Written:
    """What was acknowledged: the records, the checkpoint, and the last batch's size."""

    records: list[tuple[int, bytes]] = field(default_factory=list)
    last_batch: int = 0
    checkpoint: int = 0
    floor: int = 0
    nodes: list[tuple[str, bytes]] = field(default_factory=list)
    sessions: list[tuple[int, bytes]] = field(default_factory=list)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[tuple[int, bytes]]], int, int]:
    """Batches of records (zxids following each other, now and then into a new epoch), and
    where to checkpoint (the index of a record) and which records to keep before it."""
    batches: list[list[tuple[int, bytes]]] = []
    zxid = 0
    for _ in range(draw(st.integers(1, 12))):
        if zxid and draw(st.integers(0, 5)) == 0:
            zxid = ((zxid >> 32) + 1) << 32  # the next record starts a new epoch
        batch = []
        for _ in range(draw(st.integers(1, 8))):
            zxid += 1
            batch.append((zxid, os.urandom(draw(st.integers(0, 400)))))
        batches.append(batch)
    count = sum(len(batch) for batch in batches)
    at = draw(st.integers(0, count))  # 0: no checkpoint
    keep = draw(st.integers(0, at))
    return batches, at, keep


def write(data_dir: Path, batches: list[list[tuple[int, bytes]]], at: int, keep: int) -> Written:
    written = Written()
    with Storage.open(data_dir, sync=False, segment_bytes=SEGMENT) as storage:
        for batch in batches:
            storage.append(batch)
            written.records += batch
        written.last_batch = len(batches[-1])
        if at:
            zxids = [zxid for zxid, _ in written.records]
            written.checkpoint = zxids[at - 1]
            written.floor = zxids[keep - 1] if keep else 0
            written.nodes = [(f"/node-{i}", os.urandom(24 + 40 * i)) for i in range(5)]
            written.sessions = [(0x10 + i, os.urandom(20)) for i in range(3)]
            storage.checkpoint(
                written.checkpoint, written.nodes, [], written.sessions, [], written.floor
            )
    return written


def unseal_last_segment(data_dir: Path) -> None:
    """The last segment as a crash leaves it: without the seal a clean close writes."""
    path = data_dir / "wal" / sorted(os.listdir(data_dir / "wal"))[-1]
    data = bytearray(path.read_bytes())
    _magic, generation, seq, size = wal_module._SEGMENT_HEADER.unpack_from(data)
    data[: wal_module._HEADER_SIZE] = wal_module._header(generation, seq, size, (0, 0, 0))
    path.write_bytes(bytes(data))


def occurrences(data: bytearray, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at >= 0:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def record_ends(data: bytes) -> list[tuple[int, int]]:
    """(zxid, offset just past the record) of each record of an undamaged segment."""
    found, offset = [], wal_module._HEADER_SIZE
    while data.startswith(MARK, offset):
        _mark, length, _batch, zxid, _crc = wal_module._RECORD_HEADER.unpack_from(data, offset)
        offset += 24 + length
        found.append((zxid, offset))
    return found


def damage_segment(data_dir: Path, data_: st.DataObject) -> set[int]:
    """Damage a segment; return the records that damage makes look like a torn write after a
    crash: a zeroed sector in the last segment hides the records it holds and every one after
    it (a sector of the last batch that never reached the disk looks the same), as long as no
    record of a later batch verifies after it."""
    draw = data_.draw
    names = sorted(os.listdir(data_dir / "wal"))
    path = data_dir / "wal" / draw(st.sampled_from(names))
    data = bytearray(path.read_bytes())
    hidden: set[int] = set()
    # the records and a little more, within the file (a segment may end soon after its records)
    used = min(max(data.rfind(MARK) + 24 + 500, wal_module._HEADER_SIZE), len(data) - 1)
    kind = draw(st.sampled_from(["flip", "sector", "truncate", "length"]))
    if kind == "truncate":
        os.truncate(path, draw(st.integers(0, min(used, len(data) - 1))))
        return hidden
    if kind == "flip":
        at = draw(st.integers(0, used))
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif kind == "sector":
        at = draw(st.integers(0, used)) // 512 * 512
        if path.name == names[-1]:
            hidden = {zxid for zxid, end in record_ends(bytes(data)) if end > at}
        data[at : at + 512] = bytes(512)
    else:
        headers = occurrences(data, MARK)
        if not headers:
            return hidden
        at = draw(st.sampled_from(headers))
        data[at + 4 : at + 8] = draw(st.integers(0, (1 << 32) - 1)).to_bytes(4, "big")
    path.write_bytes(bytes(data))
    return hidden


def damage_checkpoint(data_dir: Path, written: Written, data_: st.DataObject) -> None:
    """A flipped bit in one stored copy of a node's or session's value, or in a meta value."""
    draw = data_.draw
    values = [value for _, value in written.nodes + written.sessions]
    kind = draw(st.sampled_from(["record", "meta"]))
    if kind == "record":
        data = bytearray((data_dir / "data.mdb").read_bytes())
        value = draw(st.sampled_from(values))
        copies = occurrences(data, value)
        at = draw(st.sampled_from(copies)) + draw(st.integers(0, len(value) - 1))
        data[at] ^= 1 << draw(st.integers(0, 7))
        (data_dir / "data.mdb").write_bytes(bytes(data))
        return
    env = lmdb.open(str(data_dir), max_dbs=8, subdir=True)
    try:
        meta = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            keys = [key for key, _ in txn.cursor(meta)]
            key = draw(st.sampled_from(keys))
            raw = bytearray(txn.get(key, b"", db=meta))
            raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
            txn.put(key, bytes(raw), db=meta)
    finally:
        env.close()


def check_reopened(data_dir: Path, written: Written, crashed: bool, hidden: set[int]) -> None:
    """Every record and the exact checkpoint, or a refusal; after a crash the log may also end
    early in its last batch, or where damage looks like a torn write of it (`hidden`)."""
    try:
        with Storage.open(data_dir, sync=False, segment_bytes=SEGMENT) as storage:
            recovered = storage.load()
            visible = storage.read_log(0)
    except StorageFormatError:
        return
    assert recovered.checkpoint_zxid == written.checkpoint
    assert recovered.log_floor == written.floor
    assert sorted(recovered.nodes) == sorted(written.nodes)
    assert sorted(recovered.sessions) == sorted(written.sessions)
    expected = [record for record in written.records if record[0] > written.floor]
    assert visible == expected[: len(visible)], "a record changed"
    lost = {zxid for zxid, _ in expected[len(visible) :]}
    last_batch = {zxid for zxid, _ in written.records[len(written.records) - written.last_batch :]}
    may_lose = last_batch | hidden if crashed else set()
    assert lost <= may_lose, "acknowledged records went missing"
    assert recovered.retained + recovered.log == visible


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    history=histories(),
    crashed=st.booleans(),
    target=st.sampled_from(["log", "lmdb"]),
    data=st.data(),
)
def test_damage_is_refused_or_harmless(
    history: tuple[list[list[tuple[int, bytes]]], int, int],
    crashed: bool,
    target: str,
    data: st.DataObject,
) -> None:
    batches, at, keep = history
    with tempfile.TemporaryDirectory(prefix="zkpy-damage-") as tmp:
        data_dir = Path(tmp)
        written = write(data_dir, batches, at, keep)
        if crashed:
            unseal_last_segment(data_dir)
        hidden: set[int] = set()
        if target == "lmdb" and written.nodes:
            damage_checkpoint(data_dir, written, data)
        else:
            hidden = damage_segment(data_dir, data)
        check_reopened(data_dir, written, crashed, hidden)


async def test_a_member_with_a_damaged_checkpoint_zxid_never_pulls_the_others_back(
    tmp_path: Path,
) -> None:
    """One bit raised in one stopped member's checkpoint_zxid would have it claim a later last
    zxid than anyone (a higher epoch here), win the election and sync the healthy members down
    to its state. It must refuse to start instead, and the others keep every write."""
    with Ensemble(tmp_path, checkpoint_every=100) as ens:
        leader = await ens.start_serving()
        async with connect_to(leader) as zk:
            await zk.create("/d", b"")
            for index in range(400):
                await zk.create(f"/d/n{index}", b"value %d" % index)
        await ens.wait_converged()
        damaged = leader
        for member in ens.voters:
            assert await member.stop() == 0
        env = lmdb.open(str(damaged.data_dir), max_dbs=8, subdir=True)
        try:
            meta = env.open_db(b"meta", create=False)
            with env.begin(write=True) as txn:
                raw = txn.get(b"checkpoint_zxid", db=meta)
                assert raw is not None
                assert int.from_bytes(raw, "big") > 0, "no checkpoint was taken"
                raised = bytes([raw[0], raw[1], raw[2] | 0x01, *raw[3:]])  # epoch + 256
                txn.put(b"checkpoint_zxid", raised, db=meta)
        finally:
            env.close()

        ens.start_all()
        assert await damaged.wait_exit(timeout=30) != 0
        assert "damaged" in damaged.log()
        assert "checksum" in damaged.log()
        healthy = [member for member in ens.voters if member is not damaged]
        await ens.wait_all_serving()
        await ens.wait_converged()
        for member in healthy:
            tree = await read_tree(member, "/d")
            assert len(tree) == 401, f"member {member.id} lost writes"
            assert all(tree[f"/d/n{index}"] == b"value %d" % index for index in range(400))
