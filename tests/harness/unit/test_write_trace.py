"""The embedded S3 server's write trace (buckets.WriteTrace): a folder of leveldb stores whose
journals and manifests change on every write; its signature must change whenever they do, and
never be taken for unchanged when it cannot be read."""

from __future__ import annotations

import os
from pathlib import Path

from realstack.buckets import WriteTrace


def _store(root: Path) -> Path:
    for shard in ("00", "01"):
        (root / shard).mkdir(parents=True)
        (root / shard / "000001.log").write_bytes(b"x")
        (root / shard / "MANIFEST-000000").write_bytes(b"m")
        (root / shard / "LOG").write_text("leveldb's own text log\n")
    return root


def test_an_append_to_a_journal_changes_the_signature(tmp_path: Path) -> None:
    trace = WriteTrace(str(_store(tmp_path / "filerldb2")))
    before = trace.signature()

    with open(tmp_path / "filerldb2" / "01" / "000001.log", "ab") as journal:
        journal.write(b"y")

    assert before is not None and trace.signature() != before


def test_a_new_journal_counts_even_once_the_manifest_named_it(tmp_path: Path) -> None:
    """A journal made after the last listing is written to; its folder's time tells."""
    store = _store(tmp_path / "filerldb2")
    trace = WriteTrace(str(store))
    trace.signature()
    (store / "00" / "000002.log").write_bytes(b"")
    os.utime(store / "00", ns=(1, 1))  # whatever the clock's granularity: the folder changed
    changed = trace.signature()

    with open(store / "00" / "000002.log", "ab") as journal:
        journal.write(b"a write into the new journal")

    assert trace.signature() != changed


def test_leveldbs_text_log_is_not_taken_for_a_write(tmp_path: Path) -> None:
    trace = WriteTrace(str(_store(tmp_path / "filerldb2")))
    before = trace.signature()

    with open(tmp_path / "filerldb2" / "00" / "LOG", "a") as log:
        log.write("compaction noise\n")

    assert trace.signature() == before


def test_a_journal_removed_changes_the_signature_and_a_missing_store_gives_none(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path / "filerldb2")
    trace = WriteTrace(str(store))
    before = trace.signature()

    (store / "00" / "000001.log").unlink()
    os.utime(store / "00", ns=(1, 1))

    assert before is not None and trace.signature() not in (before, None)
    assert WriteTrace(str(tmp_path / "nothing-here")).signature() is None
