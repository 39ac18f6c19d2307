"""The archive, the waiting queues and the group commit, with real files and real processes."""
from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
import sys
import threading

import pytest

from iofogd.bus import message as m
from iofogd.bus.archive import RECORD_SIZE, ROLL_OVER_BYTES, MessageArchive, archive_dir
from iofogd.bus.store import Store
from iofogd.bus.waiting import WaitingQueue, encode_entry, waiting_dir
from tests.daemon_process import REPO
from tests.vectors import IOMESSAGES


def msg(publisher: str, ts: int, body: bytes = b"x", mid: str = "") -> m.IoMessage:
    return m.IoMessage(id=mid or f"{ts:032x}", timestamp=ts, publisher=publisher, infotype="t",
                       infoformat="f", contentdata=body)


def test_layout_and_query(tmp_path: str) -> None:
    store = Store(str(tmp_path) + "/")
    store.start()
    try:
        for ts in range(1000, 1010):
            store.store(msg("pub", ts), ["rx"])
        store.store(msg("other", 1005), [])
    finally:
        store.stop()
    adir = archive_dir(str(tmp_path) + "/")
    assert sorted(os.listdir(adir)) == ["other_1005.idx", "other_1005.iomsg", "pub_1000.idx", "pub_1000.iomsg"]
    idx = open(os.path.join(adir, "pub_1000.idx"), "rb").read()
    data = open(os.path.join(adir, "pub_1000.iomsg"), "rb").read()
    assert len(idx) == 10 * RECORD_SIZE
    header, data0 = m.encode_parts(msg("pub", 1000))
    assert idx[:RECORD_SIZE] == header + struct.pack(">Q", 0)    # docs/iomessage.md#archive: header + 8-byte offset
    assert data.startswith(data0)
    archive = MessageArchive(adir)
    archive.load()
    got = archive.query("pub", 1003, 1006)
    assert [x.timestamp for x in got] == [1003, 1004, 1005, 1006]
    assert got[0] == msg("pub", 1003)
    assert archive.query("pub", 2000, 3000) == [] and archive.query("pub", 5, 1) == []
    archive.close()


def test_java_layout_files_load(tmp_path: str) -> None:
    """Pairs written as the Java agent writes them (docs/iomessage.md#binary vectors, docs/iomessage.md#archive records) are read."""
    adir = archive_dir(str(tmp_path) + "/")
    os.makedirs(adir)
    full = next(v for v in IOMESSAGES if v.name.startswith("agent: every field, fixed"))
    idx, data = b"", b""
    for _ in range(3):
        header, body = full.binary[:33], full.binary[33:]
        idx += header + struct.pack(">Q", len(data))
        data += body
    open(os.path.join(adir, "pub_1700000000000.idx"), "wb").write(idx)
    open(os.path.join(adir, "pub_1700000000000.iomsg"), "wb").write(data)
    archive = MessageArchive(adir)
    archive.load()
    assert archive.query("pub", 0, 2**62) == [m.IoMessage(**full.fields)] * 3
    # Reused (small), and appended to in the same format.
    archive.append_messages([msg("pub", 1700000000200)])
    archive.sync()
    assert len(archive.query("pub", 0, 2**62)) == 4
    assert sorted(os.listdir(adir)) == ["pub_1700000000000.idx", "pub_1700000000000.iomsg"]
    archive.close()


def test_java_records_with_non_ascii_text_are_kept(tmp_path: str) -> None:
    """The Java agent counted UTF-16 units in the header and wrote UTF-8 (docs/iomessage.md#binary): such a
    record looks shorter than it is. Reopening its pair must not cut anything."""
    adir = archive_dir(str(tmp_path) + "/")
    os.makedirs(adir)
    idx, data = b"", b""
    for n, infotype in enumerate(("caf\u00e9", "plain")):
        # Written the Java way: infotype length in UTF-16 units, its bytes in UTF-8.
        fields = m.IoMessage(id=f"{1000 + n:032x}", timestamp=1000 + n, publisher="pub", infotype=infotype,
                             infoformat="f", contentdata=b"payload")
        header, body = m.encode_parts(fields)
        header = header[:23] + bytes((len(infotype),)) + header[24:]
        idx += header + struct.pack(">Q", len(data))
        data += body
    open(os.path.join(adir, "pub_1000.idx"), "wb").write(idx)
    open(os.path.join(adir, "pub_1000.iomsg"), "wb").write(data)
    archive = MessageArchive(adir)
    archive.load()
    assert os.path.getsize(os.path.join(adir, "pub_1000.idx")) == len(idx)   # nothing cut
    assert os.path.getsize(os.path.join(adir, "pub_1000.iomsg")) == len(data)
    got = archive.query("pub", 0, 2000)
    assert len(got) == 2 and got[1].infotype == "plain" and got[1].contentdata == b"payload"
    archive.close()


def test_roll_over(tmp_path: str) -> None:
    adir = archive_dir(str(tmp_path) + "/")
    archive = MessageArchive(adir)
    archive.load()
    body = b"b" * 300_000
    for ts in range(1, 8):
        archive.append_messages([msg("pub", ts, body)])
    archive.sync()
    names = sorted(n for n in os.listdir(adir) if n.endswith(".iomsg"))
    assert names == ["pub_1.iomsg", "pub_4.iomsg", "pub_7.iomsg"]
    assert all(os.path.getsize(os.path.join(adir, n)) < ROLL_OVER_BYTES for n in names)
    assert [x.timestamp for x in archive.query("pub", 2, 6)] == [2, 3, 4, 5, 6]
    archive.close()


def test_roll_over_inside_one_batch_syncs_both_pairs(tmp_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that fills a pair and starts the next: sync flushes the old pair's files too, through
    descriptors that are still its own (it used to close them first: EBADF, or a re-used number)."""
    adir = archive_dir(str(tmp_path) + "/")
    archive = MessageArchive(adir)
    archive.load()
    archive.append_messages([msg("pub", 1, b"a" * 100)])
    archive.sync()
    synced = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        synced.append(os.fstat(fd).st_ino)   # EBADF here if the descriptor was closed
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    archive.append_messages([msg("pub", ts, b"b" * 400_000) for ts in range(2, 6)])
    archive.sync()
    inodes = {os.stat(os.path.join(adir, n)).st_ino: n for n in os.listdir(adir)}
    assert sorted(inodes[i] for i in synced) == [
        "pub_1.idx", "pub_1.iomsg", "pub_4.idx", "pub_4.iomsg"]
    assert [x.timestamp for x in archive.query("pub", 1, 5)] == [1, 2, 3, 4, 5]
    archive.close()


def test_torn_end_is_cut_back(tmp_path: str, caplog: pytest.LogCaptureFixture) -> None:
    adir = archive_dir(str(tmp_path) + "/")
    archive = MessageArchive(adir)
    archive.load()
    archive.append_messages([msg("pub", ts) for ts in (1, 2, 3)])
    archive.sync()
    archive.close()
    with open(os.path.join(adir, "pub_1.idx"), "ab") as f:
        f.write(m.encode_parts(msg("pub", 4))[0] + struct.pack(">Q", 10**6)[:5])   # torn record
    with open(os.path.join(adir, "pub_1.iomsg"), "ab") as f:
        f.write(b"half a message")
    archive = MessageArchive(adir)
    with caplog.at_level(logging.WARNING):
        archive.load()
    assert "cut back" in caplog.text
    archive.append_messages([msg("pub", 5)])
    archive.sync()
    assert [x.timestamp for x in archive.query("pub", 0, 10)] == [1, 2, 3, 5]
    archive.close()


def test_storage_limit_removes_oldest_pairs(tmp_path: str, caplog: pytest.LogCaptureFixture) -> None:
    adir = archive_dir(str(tmp_path) + "/")
    archive = MessageArchive(adir, limit_bytes=lambda: 2_500_000)
    archive.load()
    body = b"b" * 400_000
    with caplog.at_level(logging.WARNING):
        for ts in range(1, 11):
            archive.append_messages([msg("pub", ts, body)])
            archive.sync()
            archive.enforce_limit()
    assert "over its limit" in caplog.text
    assert archive.usage <= 2_500_000
    remaining = [x.timestamp for x in archive.query("pub", 0, 100)]
    assert remaining[-1] == 10 and remaining[0] > 1
    assert archive.usage == sum(os.path.getsize(os.path.join(adir, n)) for n in os.listdir(adir))
    archive.close()


def test_waiting_queue_read_consume_compact_reopen(tmp_path: str) -> None:
    wdir = str(tmp_path)
    q = WaitingQueue(wdir, "rx/odd id")
    payloads = [os.urandom(n % 700 + 1) for n in range(5000)]
    q.append(b"".join(encode_entry(p) for p in payloads))
    q.sync()
    q.publish()
    window = q.read(q.consumed, 100)
    assert [e.data for e in window] == payloads[:100]
    pos, seen = q.consumed, []
    while True:
        batch = q.read(pos, 256, 64 << 10)
        if not batch:
            break
        seen += [e.data for e in batch]
        pos = batch[-1].end
        q.consume_to(pos)
        if len(seen) >= 4500:
            break
    assert seen == payloads[: len(seen)]
    files = [n for n in os.listdir(wdir) if n.endswith(".q")]
    assert len(files) == 1 and not files[0].endswith(".0.q")   # compacted: a new base
    q.close()
    q = WaitingQueue(wdir, "rx/odd id")
    rest = []
    pos = q.consumed
    while True:
        batch = q.read(pos, 1000)
        if not batch:
            break
        rest += [e.data for e in batch]
        pos = batch[-1].end
    assert seen + rest == payloads
    q.close()


def test_waiting_queue_torn_tail(tmp_path: str) -> None:
    q = WaitingQueue(str(tmp_path), "rx")
    q.append(encode_entry(b"one") + encode_entry(b"two"))
    q.sync()
    q.publish()
    q.close()
    (name,) = [n for n in os.listdir(tmp_path) if n.endswith(".q")]
    with open(os.path.join(tmp_path, name), "ab") as f:
        f.write(encode_entry(b"three")[:-2])
    q = WaitingQueue(str(tmp_path), "rx")
    assert [e.data for e in q.read(0, 10)] == [b"one", b"two"]
    q.close()


def test_group_commit_batches(tmp_path: str) -> None:
    store = Store(str(tmp_path) + "/")
    store.start()
    try:
        done = threading.Semaphore(0)
        errors = []

        def finished(error: object) -> None:
            errors.append(error)
            done.release()

        for n in range(2000):
            store.submit(msg("pub", 1000 + n), ["rx"], finished)
        for _ in range(2000):
            assert done.acquire(timeout=30)
        assert errors == [None] * 2000
        assert store.batches < 2000   # several messages per fsync round
        q = store.existing_queue("rx")
        assert q is not None and len(q.read(0, 5000)) == 2000
    finally:
        store.stop()


def _child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.bus.burst_writer", *args], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)


def _delivered(directory: str, receiver: str) -> list[bytes]:
    q = WaitingQueue(waiting_dir(directory), receiver)
    try:
        return [m.decode(e.data).id.encode() for e in q.read(0, 10**6, 1 << 30)]
    finally:
        q.close()


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_mid_burst_loses_no_acknowledged_message(tmp_path: str, round_: int) -> None:
    directory = str(tmp_path) + "/"
    child = _child([directory, "4000", "4"])
    acked = []
    assert child.stdout is not None
    stop_after = 1000 + 700 * round_
    for line in child.stdout:
        if line.startswith("ok "):
            acked.append(line.split()[1])
            if len(acked) == stop_after:
                child.send_signal(signal.SIGKILL)
                break
    child.wait()
    assert child.returncode == -signal.SIGKILL
    archive = MessageArchive(archive_dir(directory))
    archive.load()
    archived = {x.id for p in ("pubA", "pubB") for x in archive.query(p, 0, 2**62)}
    archive.close()
    assert set(acked) <= archived
    rx1 = _delivered(directory, "rx1")
    rx2 = _delivered(directory, "rx2")
    assert len(rx2) == len(set(rx2))
    for mid in acked:
        n = int(mid[2:])
        assert mid.encode() in rx2
        assert (n % 2 == 1) or mid.encode() in rx1
    # The archive is whole again and takes more: a second run appends after the crash.
    child = _child([directory, "200", "2"])
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip().endswith("done 0")


def test_full_disk_is_a_clear_error_and_the_archive_stays_whole(tmp_path: str) -> None:
    directory = str(tmp_path) + "/"
    child = _child([directory, "3000", "3", "200000"])   # files may not grow past 200 kB
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    ok = [line.split()[1] for line in out.splitlines() if line.startswith("ok ")]
    refused = [line for line in out.splitlines() if line.startswith("refused ")]
    assert ok and refused
    assert all("ArchiveFull" in line and "no space left" in line for line in refused)
    archive = MessageArchive(archive_dir(directory))
    archive.load()
    archived = {x.id for p in ("pubA", "pubB") for x in archive.query(p, 0, 2**62)}
    archive.close()
    assert set(ok) <= archived
    refused_ids = {line.split()[1] for line in refused}
    assert not (refused_ids & archived)   # nothing half-written: refused means absent
    assert not (refused_ids & {x.decode() for x in _delivered(directory, "rx2")})


def test_waiting_messages_of_a_receiver_that_never_reads_are_bounded(
    tmp_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    limit = 2_000_000
    store = Store(str(tmp_path) + "/", limit_bytes=lambda: limit)
    store.start()
    try:
        with caplog.at_level(logging.WARNING):
            for n in range(12_000):
                store.store(msg("pub", n, b"p" * 300), ["never-reads"])
    finally:
        store.stop()
    assert "exceed the message storage limit" in caplog.text
    q = WaitingQueue(waiting_dir(str(tmp_path) + "/"), "never-reads")
    try:
        assert q.waiting_bytes() <= limit
        entries = q.read(q.consumed, 100_000, 1 << 30)
        stamps = [m.decode(e.data).timestamp for e in entries]
        assert stamps == list(range(stamps[0], 12_000)) and stamps[0] > 0   # the oldest went, in order
        on_disk = sum(os.path.getsize(os.path.join(waiting_dir(str(tmp_path) + "/"), f))
                      for f in os.listdir(waiting_dir(str(tmp_path) + "/")) if f.endswith(".q"))
        assert on_disk <= 2 * limit   # compacted, not just skipped
    finally:
        q.close()
