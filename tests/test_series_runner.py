"""One series runner for `run` and `serve`, and a serve worker that builds its jobs from queue
rows: routing and series grouping read no file header, and an older spool still runs."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

import edgeimg.dicom.read
import edgeimg.pipeline
from edgeimg.cli import cli
from edgeimg.dicom.series import group_series
from edgeimg.serve.pipeline import Worker
from edgeimg.serve.queue import Queue, database
from edgeimg.serve.routing import Route, Routing
from edgeimg.serve.rows import header_of, instance_of
from edgeimg.synth.dicom import write_study

ROUTING = Routing((Route("cnn", modality=frozenset({"CT"}), body_part=frozenset({"ABDOMEN"})),))


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runner-study")
    write_study(out, series=1, slices=6, size=64, seed=5)
    return out / "series-001"


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runner-enhanced")
    write_study(out, series=1, slices=5, size=32, seed=6, enhanced=True)
    return out / "series-001"


def _rows(folder: Path, layouts: bool = True) -> list[dict]:
    """Queue rows for every file of `folder`, as the listener makes them (or an older one)."""
    rows = []
    for path in sorted(folder.glob("*.dcm")):
        instance = instance_of(pydicom.dcmread(path), str(path), 1, "0", "SCANNER", "127.0.0.1")
        if not layouts:
            instance = replace(instance, body_part=None, layout=None)
        rows.append(instance)
    return rows


def _queue(tmp_path: Path, folder: Path, layouts: bool = True) -> Queue:
    queue = Queue(tmp_path / "queue.db")
    instances = _rows(folder, layouts)
    queue.add_instances(instances)
    queue.complete([instances[0].series_uid])
    return queue


def _series(series):
    return [
        (s.uid, [i.SOPInstanceUID for i in s.instances], s.slice_positions, s.slice_spacing)
        for s in series
    ]


@pytest.mark.parametrize("kind", ["study", "enhanced"])
def test_headers_rebuilt_from_rows_group_as_the_files_do(kind, request, tmp_path):
    folder = request.getfixturevalue(kind)
    queue = _queue(tmp_path, folder)
    rows = queue.series_rows(_rows(folder)[0].series_uid)
    from_rows = group_series([header_of(row) for row in reversed(rows)])
    from_files = group_series(pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm")))
    assert _series(from_rows) == _series(from_files)
    assert [s.issues for s in from_rows] == [s.issues for s in from_files]
    assert "PatientID" not in str(rows) and "PatientName" not in str(rows)


class _HeaderReads:
    """Counts header-only reads (`read_header`, `dcmread(stop_before_pixels=True)`)."""

    def __init__(self, monkeypatch) -> None:
        self.paths: list[str] = []
        real_dcmread, real_read_header = pydicom.dcmread, edgeimg.dicom.read.read_header

        def dcmread(path, *args, **kwargs):
            if kwargs.get("stop_before_pixels"):
                self.paths.append(str(path))
            return real_dcmread(path, *args, **kwargs)

        def read_header(path):
            self.paths.append(str(path))
            return real_read_header(path)

        monkeypatch.setattr(pydicom, "dcmread", dcmread)
        monkeypatch.setattr(edgeimg.dicom.read, "dcmread", dcmread)
        for module in ("edgeimg.dicom.read", "edgeimg.serve.rows", "edgeimg.pipeline.headers"):
            monkeypatch.setattr(f"{module}.read_header", read_header)


def _run_jobs(queue: Queue, tmp_path: Path, engines: Path) -> Worker:
    worker = Worker(queue, tmp_path / "results", ROUTING, engines_dir=engines)
    worker.warm()
    while worker.step():
        pass
    return worker


def test_a_serve_job_reads_no_header_to_route_or_group(study, engines, tmp_path, monkeypatch):
    queue = _queue(tmp_path, study)
    reads = _HeaderReads(monkeypatch)
    _run_jobs(queue, tmp_path, engines)
    [job] = queue._db().execute("SELECT state, outputs FROM jobs").fetchall()
    assert job["state"] == "done" and json.loads(job["outputs"])
    assert reads.paths == []  # the pixels were decoded, but no header was read on its own


def test_an_older_spool_without_layouts_still_runs(study, engines, tmp_path, monkeypatch):
    path = tmp_path / "queue.db"
    db = sqlite3.connect(path)
    with db:
        db.executescript(database._SCHEMA)  # the first schema, without the added columns
    db.close()
    queue = _queue(tmp_path, study, layouts=False)
    assert {row["layout"] for row in queue.series_rows(_rows(study)[0].series_uid)} == {None}
    reads = _HeaderReads(monkeypatch)
    _run_jobs(queue, tmp_path, engines)
    [job] = queue._db().execute("SELECT state, outputs FROM jobs").fetchall()
    assert job["state"] == "done" and len(json.loads(job["outputs"])) == 1
    assert set(reads.paths) == {str(p) for p in study.glob("*.dcm")}  # the fallback: files


def test_run_and_serve_go_through_the_same_runner(study, engines, tmp_path, monkeypatch):
    calls = []
    real = edgeimg.pipeline.run_series

    def spy(inferencer, jobs, out_dir, **options):
        calls.append(len(jobs))
        return real(inferencer, jobs, out_dir, **options)

    monkeypatch.setattr(edgeimg.pipeline, "run_series", spy)
    args = ["run", "cnn", str(study), "--out", str(tmp_path / "out"), "--json"]
    done = CliRunner().invoke(cli, [*args, "--engines-dir", str(engines), "--workers", "0"])
    assert done.exit_code == 0, done.output
    _run_jobs(_queue(tmp_path, study), tmp_path, engines)
    assert calls == [1, 1]  # once by `run`, once by the serve worker


def test_the_serve_worker_loads_the_int8_engine_calibrated_on_the_data_it_is_given(study, tmp_path):
    """`serve --calib` finds the engine `build-engine --calib` built, rather than building one
    calibrated on synthetic data (calibration is part of the key)."""
    engines = tmp_path / "engines"
    int8 = ["--backend", "openvino", "--precision", "int8", "--engines-dir", str(engines)]
    built = CliRunner().invoke(cli, ["build-engine", "cnn", *int8, "--calib", str(study)])
    assert built.exit_code == 0, built.output
    worker = Worker(
        Queue(tmp_path / "queue.db"),
        tmp_path / "results",
        ROUTING,
        backend="openvino",
        precision="int8",
        calib=[study],
        engines_dir=engines,
    )
    worker.warm()
    assert len(list(engines.rglob("manifest.json"))) == 1  # nothing built beside it
