"""`edgeimg run` over synthetic CT and pydicom's own files: outputs, skips, errors, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from pydicom.data import get_testdata_file

from edgeimg.cli import cli
from edgeimg.dicom.read import DicomInputError
from edgeimg.inference import DECODE_CHUNK, decode_all, decoder_pool
from edgeimg.plugins import get_registry
from edgeimg.synth.dicom import write_study
from tests.dciodvfy import dciodvfy_errors


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    write_study(out, series=2, slices=6, size=128, seed=3)
    return out


@pytest.fixture(scope="module")
def engines(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("engines")


def run(*args: str):
    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


def results(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("model", ["cnn", "unet", "detector"])
def test_run_writes_valid_dicom_results(model, study, engines, tmp_path):
    out = tmp_path / "out"
    done = run(model, str(study), "--out", str(out), "--engines-dir", str(engines), "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["counts"] == {"ok": 2, "skipped": 3, "error": 0}
    lines = [line for line in results(out) if line["status"] == "ok"]
    for line in lines:
        assert len(line["results"]) == 6 and line["engine"] == summary["engine"]
        for path in line["outputs"]:
            assert dciodvfy_errors(Path(path)) == []
            written = pydicom.dcmread(path)
            assert written.StudyInstanceUID == line["study_uid"]
            assert "not for clinical use" in written.SeriesDescription


def test_rerun_gives_the_same_output_uids(study, engines, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        assert (
            run("cnn", str(study), "--out", str(out), "--engines-dir", str(engines)).exit_code == 0
        )
    names = [sorted(p.name for p in out.glob("*.dcm")) for out in (first, second)]
    assert names[0] == names[1] and names[0]


def test_outputs_written_in_workers_match_those_written_here(study, engines, tmp_path):
    """--workers 0 writes in this process; otherwise the pool writes: the same objects."""
    here, pooled = tmp_path / "here", tmp_path / "pooled"
    for out, workers in ((here, "0"), (pooled, "2")):
        args = ("cnn", str(study), "--out", str(out), "--engines-dir", str(engines))
        assert run(*args, "--workers", workers).exit_code == 0
    outputs = [sorted(Path(p).name for line in results(out) for p in line.get("outputs", []))
               for out in (here, pooled)]  # fmt: skip
    assert outputs[0] == outputs[1] and outputs[0]


def test_a_writer_failure_in_the_pool_becomes_an_error_line():
    from concurrent.futures import Future

    from edgeimg.commands.run import _finish_writing

    writes: Future = Future()
    writes.set_exception(ValueError("no findings to report"))
    line = {"status": "ok", "series_uid": "1.2.3", "files": ["a.dcm"], "results": []}
    _finish_writing(line, writes)
    assert line == {
        "status": "error",
        "series_uid": "1.2.3",
        "files": ["a.dcm"],
        "error": "no findings to report",
    }


def test_real_files_from_pydicom(engines, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"):
        shutil.copy(get_testdata_file(name), inputs / name)
    other = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.99.1"
    other.save_as(inputs / "CT_cut.dcm")
    whole = (inputs / "CT_cut.dcm").read_bytes()
    (inputs / "CT_cut.dcm").write_bytes(whole[: len(whole) - 3000])
    (inputs / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    done = run("cnn", str(inputs), "--out", str(out), "--engines-dir", str(engines), "--json")
    assert done.exit_code == 1
    assert "Traceback" not in done.output
    by_status: dict[str, list[dict]] = {}
    for line in results(out):
        by_status.setdefault(line["status"], []).append(line)
    (ok,) = by_status["ok"]
    assert ok["files"][0].endswith("CT_small.dcm") and len(ok["results"]) == 1
    reasons = {
        Path(name).name: line["reason"] for line in by_status["skipped"] for name in line["files"]
    }
    assert reasons["notes.txt"] == "not a DICOM file"
    assert "modality MR" in reasons["MR_small.dcm"]
    assert "modality" in reasons["JPEG2000.dcm"]
    (error,) = by_status["error"]
    assert "CT_cut.dcm" in error["error"]
    assert json.loads(done.stdout)["failures"][0]["error"] == error["error"]


def test_unknown_model_is_a_usage_error(study):
    done = CliRunner().invoke(cli, ["run", "resnet", str(study)])
    assert done.exit_code == 2
    assert "available:" in done.output and "cnn" in done.output


def test_missing_path_is_a_usage_error():
    assert CliRunner().invoke(cli, ["run", "cnn", "/no/such/folder"]).exit_code == 2


def test_pool_decodes_in_chunks_and_keeps_file_order(tmp_path):
    written = write_study(tmp_path / "study", series=1, slices=2 * DECODE_CHUNK + 3, size=32)
    paths = sorted((written.out_dir / "series-001").glob("*.dcm"))
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not DICOM")
    paths.insert(DECODE_CHUNK + 1, broken)
    spec = get_registry().model("cnn")
    pool = decoder_pool(2)
    try:
        pooled = list(decode_all(paths, spec, pool))
    finally:
        pool.shutdown()
    here = list(decode_all(paths, spec, None))
    assert [getattr(item, "path", None) for item in pooled] == [
        getattr(item, "path", None) for item in here
    ]
    assert isinstance(pooled[DECODE_CHUNK + 1], DicomInputError)
    decoded = [(a, b) for a, b in zip(pooled, here, strict=True) if not isinstance(a, Exception)]
    assert all((a.inputs == b.inputs).all() for a, b in decoded)
