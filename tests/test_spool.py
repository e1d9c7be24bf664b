"""The spool writes atomically and durably and never takes a name from the dataset."""

from __future__ import annotations

import hashlib

import pytest

from edgeimg.serve import spool as spool_module
from edgeimg.serve.spool import INCOMING, TEMP_PREFIX, DiskFull, Spool


def test_write_is_atomic_and_returns_sha256(tmp_path):
    spool = Spool(tmp_path)
    path = spool.path_for("1.2.3", "1.2.3.4")
    digest = spool.write(path, [b"abc", b"def"], 6)
    assert path.read_bytes() == b"abcdef"
    assert digest == hashlib.sha256(b"abcdef").hexdigest()
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_staged_bytes_need_no_name_until_placed(tmp_path):
    spool = Spool(tmp_path)
    staged = spool.stage([b"DICM", b"data"], 8)
    assert staged.temp.parent == tmp_path / INCOMING and staged.temp.read_bytes() == b"DICMdata"
    path = spool.path_for("1.2", "1.2.3")
    spool.place(staged, path)
    assert path.read_bytes() == b"DICMdata" and not staged.temp.exists()
    spool.discard(spool.stage([b"refused"], 7))
    assert not list((tmp_path / INCOMING).iterdir())


def test_work_given_to_stage_runs_between_the_write_and_the_sync(tmp_path, monkeypatch):
    spool = Spool(tmp_path)
    seen = []
    monkeypatch.setattr(spool_module, "sync_descriptor", lambda _: seen.append("sync"))

    def while_syncing():
        (temp,) = (tmp_path / INCOMING).iterdir()
        seen.append(temp.read_bytes())

    spool.stage([b"DICM", b"data"], 8, while_syncing=while_syncing)
    assert seen == [b"DICMdata", "sync"]


def test_names_are_hashes_not_dataset_text(tmp_path):
    spool = Spool(tmp_path)
    path = spool.path_for("../../etc", "../passwd")
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert ".." not in path.relative_to(tmp_path).parts
    assert path.name == hashlib.sha256(b"../passwd").hexdigest() + ".dcm"


def test_watermark_refuses_before_writing(tmp_path):
    spool = Spool(tmp_path, min_free_mb=10**9)
    path = spool.path_for("1.2", "1.2.3")
    with pytest.raises(DiskFull):
        spool.write(path, [b"x" * 100], 100)
    assert not path.exists()
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_failed_write_leaves_no_temp_file(tmp_path):
    spool = Spool(tmp_path)
    path = spool.path_for("1.2", "1.2.3")

    def chunks():
        yield b"partial"
        raise OSError("disk went away")

    with pytest.raises(OSError):
        spool.write(path, chunks(), 7)
    assert not path.exists()
    assert not list(tmp_path.rglob(f"{TEMP_PREFIX}*"))


def test_remove_temp_files_after_a_crash(tmp_path):
    spool = Spool(tmp_path)
    kept = spool.path_for("1.2", "1.2.3")
    spool.write(kept, [b"ok"], 2)
    (kept.parent / f"{TEMP_PREFIX}abc").write_bytes(b"half")
    (tmp_path / INCOMING / f"{TEMP_PREFIX}def").write_bytes(b"half")
    assert spool.remove_temp_files() == 2
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]
    assert not list((tmp_path / INCOMING).iterdir())
