"""The data directory's metadata file (logd/log/meta.py)."""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from logd.errors import StorageError
from logd.log import meta
from logd.log.file import FileLog
from logd.log.meta import META_FILE, Meta, MetaError

HISTORY = "1b4e28ba-2fa1-4d2a-883f-0016d3cca427"
EXAMPLE = Meta(1, HISTORY, "2026-12-01T22:30:00Z", "primary", ((1, 1),))
EXAMPLE_BYTES = (b'{"format": 1, "history": "1b4e28ba-2fa1-4d2a-883f-0016d3cca427", '
                 b'"created": "2026-12-01T22:30:00Z", "role": "primary", "epochs": [[1, 1]]}\n')


def doc(**changes: object) -> bytes:
    d: dict[str, object] = json.loads(EXAMPLE_BYTES)
    for key, value in changes.items():
        if value is ...:
            del d[key]
        else:
            d[key] = value
    return json.dumps(d).encode()


# -- the format -------------------------------------------------------------------------


def test_encode_is_the_documented_line() -> None:
    assert meta.encode(EXAMPLE) == EXAMPLE_BYTES
    assert meta.decode(EXAMPLE_BYTES) == EXAMPLE


def test_the_module_docstring_example_decodes() -> None:
    text = meta.__doc__ or ""
    start = text.index('{"format"')
    example = " ".join(text[start:text.index("}", start) + 1].split())
    assert meta.decode(example.encode()) == EXAMPLE


def test_new_is_format_1_with_a_uuid4_history() -> None:
    m = meta.new(datetime(2026, 12, 1, 22, 30, 0, 999999, tzinfo=timezone.utc))
    assert (m.format, m.created, m.role, m.epochs) == (1, "2026-12-01T22:30:00Z", "primary", ((1, 1),))
    assert uuid.UUID(m.history).version == 4 and str(uuid.UUID(m.history)) == m.history
    assert meta.new().history != meta.new().history
    assert meta.decode(meta.encode(m)) == m


def test_several_epochs_round_trip() -> None:
    m = Meta(1, HISTORY, "2026-12-01T22:30:00Z", "replica", ((1, 1), (2, 500), (4, 500)))
    assert meta.decode(meta.encode(m)) == m


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"\n", "empty"),
    (b"format=1\n", "not JSON"),
    (b"\xff\xfe{}", "not JSON"),
    (b"[1]\n", "not a JSON object"),
    (b"{}\n", "no format number"),
    (doc(format="1"), "no format number"),
    (doc(format=True), "no format number"),
    (doc(format=2), "format 2, but this logd reads only format 1 (written by a newer logd?)"),
    (doc(epochs=...), "no 'epochs'"),
    (doc(role=..., epochs=...), "no 'role', no 'epochs'"),
    (doc(leader="x"), "unknown key 'leader'"),
    (doc(history="not-a-uuid"), "history 'not-a-uuid' is not a UUID"),
    (doc(history=HISTORY.upper()), "is not a UUID"),
    (doc(history=7), "history 7 is not a UUID"),
    (doc(created="yesterday"), "created 'yesterday' is not an ISO 8601 UTC time"),
    (doc(created="2026-12-01T22:30:00"), "is not an ISO 8601 UTC time"),
    (doc(role="leader"), "role 'leader' is not one of primary, replica"),
    (doc(epochs=[]), "epochs must be"),
    (doc(epochs=[[1]]), "epochs must be"),
    (doc(epochs=[[0, 1]]), "epochs must be"),
    (doc(epochs=[[1, True]]), "epochs must be"),
    (doc(epochs=[[2, 1], [1, 5]]), "epochs must be"),
    (doc(epochs=[[1, 5], [2, 3]]), "epochs must be"),
    (doc(epochs={"1": 1}), "epochs must be"),
])
def test_bad_files_are_refused_with_the_reason_and_the_path(data: bytes, reason: str) -> None:
    with pytest.raises(MetaError) as info:
        meta.decode(data, "/data/meta")
    assert reason in info.value.problem
    assert str(info.value).startswith(f"metadata file /data/meta: {info.value.problem}; ")
    assert "never replaces it" in str(info.value)
    assert isinstance(info.value, StorageError)


def test_a_torn_file_is_never_accepted() -> None:
    # Atomic writes rule this out; a hand-edited or damaged file must still fail.
    for n in range(len(EXAMPLE_BYTES) - 1):  # every prefix short of the newline
        with pytest.raises(MetaError):
            meta.decode(EXAMPLE_BYTES[:n])


# -- load, save, adopt ------------------------------------------------------------------


def test_load_without_a_file_is_none(tmp_path: Path) -> None:
    assert meta.load(str(tmp_path)) is None
    assert meta.load(str(tmp_path / "missing")) is None  # a reader may look before any writer
    assert os.listdir(tmp_path) == []  # and load writes nothing


def test_load_names_the_file(tmp_path: Path) -> None:
    (tmp_path / META_FILE).write_bytes(b"garbage")
    with pytest.raises(MetaError, match=f"^metadata file {tmp_path}/meta: not JSON;"):
        meta.load(str(tmp_path))
    (tmp_path / META_FILE).write_bytes(b" " * (70 * 1024))
    with pytest.raises(MetaError, match="larger than 65536 bytes"):
        meta.load(str(tmp_path))
    (tmp_path / META_FILE).unlink()
    (tmp_path / META_FILE).mkdir()
    with pytest.raises(MetaError, match="meta: Is a directory"):
        meta.load(str(tmp_path))


def test_save_and_load(tmp_path: Path) -> None:
    meta.save(str(tmp_path), EXAMPLE)
    assert (tmp_path / META_FILE).read_bytes() == EXAMPLE_BYTES
    assert meta.load(str(tmp_path)) == EXAMPLE
    assert sorted(os.listdir(tmp_path)) == [META_FILE]


def test_save_refuses_what_load_would_refuse(tmp_path: Path) -> None:
    meta.save(str(tmp_path), EXAMPLE)
    with pytest.raises(MetaError, match="role 'leader'"):
        meta.save(str(tmp_path), Meta(1, HISTORY, EXAMPLE.created, "leader", ((1, 1),)))
    assert meta.load(str(tmp_path)) == EXAMPLE


def test_adopt_creates_once(tmp_path: Path) -> None:
    first = meta.adopt(str(tmp_path))
    assert (tmp_path / META_FILE).read_bytes() == meta.encode(first)
    assert meta.adopt(str(tmp_path)) == first  # never a second history


def test_adopt_never_replaces_a_bad_file(tmp_path: Path) -> None:
    bad = doc(format=2)
    (tmp_path / META_FILE).write_bytes(bad)
    with pytest.raises(MetaError, match="format 2"):
        meta.adopt(str(tmp_path))
    assert (tmp_path / META_FILE).read_bytes() == bad


def test_adopt_that_cannot_write_is_a_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=f"cannot write metadata file {tmp_path}/gone/meta"):
        meta.adopt(str(tmp_path / "gone"))


# -- FileLog opens through adopt --------------------------------------------------------


def test_a_new_log_gets_an_identity_that_lasts(tmp_path: Path) -> None:
    d = str(tmp_path / "d")
    flog = FileLog(d, fsync=False)
    created = flog.meta
    flog.append([b"a", b"b"])
    flog.close()
    assert meta.load(d) == created
    again = FileLog(d, fsync=False)
    assert again.meta == created and again.head() == 2
    again.close()


def test_a_directory_from_before_the_meta_file_is_adopted(tmp_path: Path) -> None:
    d = tmp_path / "d"
    flog = FileLog(str(d), fsync=False)
    flog.append([b"a", b"b", b"c"])
    flog.close()
    (d / META_FILE).unlink()  # what today's logd leaves: partitions, lock, marks, no meta
    before = {p.name: p.read_bytes() for p in d.iterdir() if p.suffix in (".log", ".idx")}
    flog = FileLog(str(d), fsync=False)
    assert meta.load(str(d)) == flog.meta
    assert [r.body for r in flog.read(1, 4)] == [b"a", b"b", b"c"]
    assert flog.recovered_clean  # adoption does not cost the clean-restart shortcut
    flog.close()
    assert {n: (d / n).read_bytes() for n in before} == before  # partitions and indexes untouched


def test_a_bad_meta_file_stops_the_open_before_any_repair(tmp_path: Path) -> None:
    d = tmp_path / "d"
    flog = FileLog(str(d), fsync=False)
    flog.append([b"a"])
    flog.close()
    (d / META_FILE).write_bytes(b"{not json")
    with open(next(d.glob("*.log")), "ab") as f:
        f.write(b"+2 3 0 torn")  # a torn tail that an open would cut
    files = {p.name: p.read_bytes() for p in d.iterdir() if p.name != "lock"}
    with pytest.raises(MetaError, match=f"metadata file {d}/meta: not JSON"):
        FileLog(str(d), fsync=False)
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name != "lock"} == files
    assert (d / "lock").read_bytes() == b""  # and the lock was let go
