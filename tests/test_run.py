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
from edgeimg.pipeline import DECODE_CHUNK, decode_all, decoder_pool
from edgeimg.plugins import get_registry
from edgeimg.synth.dicom import write_study
from tests.dciodvfy import dciodvfy_errors


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    write_study(out, series=2, slices=6, size=128, seed=3)
    return out


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
    assert summary["counts"] == {"ok": 12, "skipped": 3, "duplicate": 0, "error": 0}
    assert summary["series"] == 2
    lines = [line for line in results(out) if line["status"] == "ok"]
    assert len({line["file"] for line in lines}) == 12
    for line in lines:
        assert len(line["results"]) == 1 and line["engine"] == summary["engine"]
        for path in line["outputs"]:
            assert dciodvfy_errors(Path(path)) == []
            written = pydicom.dcmread(path)
            assert written.StudyInstanceUID == line["study_uid"]
            assert "not for clinical use" in written.SeriesDescription


def test_a_batch_past_the_default_profile_gets_an_engine_built_for_it(study, engines, tmp_path):
    """TensorRT refuses a batch past its profile's max, so `--batch 12` may not reuse the
    engine built for 8; a smaller batch does."""
    keys = {}
    for batch in ("4", "8", "12"):
        args = ("cnn", str(study), "--out", str(tmp_path / batch), "--engines-dir", str(engines))
        options = ("--backend", "onnxruntime", "--precision", "fp32", "--batch", batch, "--json")
        done = run(*args, *options)
        assert done.exit_code == 0, done.output
        keys[batch] = json.loads(done.stdout)["engine"]
    assert keys["4"] == keys["8"] != keys["12"]
    manifest = json.loads((engines / "cnn" / keys["12"] / "manifest.json").read_text())
    assert [shape[0] for shape in manifest["profiles"]["image"]] == [1, 12, 12]  # min, opt, max


def test_an_int8_engine_calibrated_on_the_user_s_data_is_the_one_run_loads(study, tmp_path):
    """`run --calib` names the engine `build-engine --calib` built (calibration is in the key)
    instead of building one calibrated on synthetic data."""
    engines = tmp_path / "engines"
    int8 = ("--backend", "openvino", "--precision", "int8", "--engines-dir", str(engines))
    built = CliRunner().invoke(
        cli,
        ["build-engine", "cnn", *int8, "--calib", str(study), "--json"],
        catch_exceptions=False,
    )
    assert built.exit_code == 0, built.output
    key = json.loads(built.stdout)["key"]
    done = run("cnn", str(study), "--out", str(tmp_path / "out"), *int8, "--calib", str(study))
    assert done.exit_code == 0, done.output
    assert {line["engine"] for line in results(tmp_path / "out") if line["status"] == "ok"} == {key}
    assert [path.parent.name for path in engines.rglob("manifest.json")] == [key]


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
    outputs = [
        sorted(Path(p).name for line in results(out) for p in line.get("outputs", []))
        for out in (here, pooled)
    ]
    assert outputs[0] == outputs[1] and outputs[0]


def _finish_writing(writes):
    """The line `run` keeps for a series whose outputs were being written in `writes`."""
    from types import SimpleNamespace

    from edgeimg.commands.run import _finish
    from edgeimg.pipeline.runner import SeriesResult, SeriesRun

    line = {"status": "ok", "series_uid": "1.2.3", "files": ["a.dcm"], "results": []}
    job = SimpleNamespace(series=SimpleNamespace(uid="1.2.3"))
    decoded = [SimpleNamespace(path="a.dcm")]
    series = SeriesRun(job, decoded, result=SeriesResult(line, decoded, []), writing=writes)
    _finish(series, line)
    return line


def test_a_writer_failure_in_the_pool_becomes_an_error_line():
    from concurrent.futures import Future

    from edgeimg.dicom.write import OutputRefused

    writes: Future = Future()
    writes.set_exception(OutputRefused("a.dcm: SliceThickness (0018,0050) is empty"))
    line = _finish_writing(writes)
    assert line == {
        "status": "error",
        "series_uid": "1.2.3",
        "files": ["a.dcm"],
        "error": "a.dcm: SliceThickness (0018,0050) is empty",
    }


def test_a_library_failure_is_reported_by_type_and_place_not_by_its_text():
    """A library's message may quote the values it choked on; the error line never does."""
    from concurrent.futures import Future

    writes: Future = Future()
    try:
        raise TypeError('The string "DOE JOHN" is unlikely to represent a person name')
    except TypeError as error:
        writes.set_exception(error)
    line = _finish_writing(writes)
    assert line["status"] == "error" and "DOE" not in line["error"]
    assert line["error"].startswith("internal error while writing the outputs: TypeError at ")


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
    assert ok["file"].endswith("CT_small.dcm") and len(ok["results"]) == 1
    reasons = {Path(line["file"]).name: line["reason"] for line in by_status["skipped"]}
    assert reasons["notes.txt"] == "not a DICOM file"
    assert "modality MR" in reasons["MR_small.dcm"]
    assert "modality" in reasons["JPEG2000.dcm"]
    (error,) = by_status["error"]
    assert "CT_cut.dcm" in error["error"]
    assert json.loads(done.stdout)["failures"][0]["error"] == error["error"]
    assert {Path(line["file"]).name for line in results(out)} == {
        path.name for path in inputs.iterdir()
    }


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


def _ct_small(folder: Path, name: str = "CT_small.dcm", **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    for keyword, value in changes.items():
        setattr(ds, keyword, value)
    ds.save_as(folder / name)
    return folder / name


def test_files_sharing_an_instance_uid_run_once_and_the_rest_are_named_duplicates(
    engines, tmp_path
):
    first = _ct_small(tmp_path / "in", "a.dcm")
    second = _ct_small(tmp_path / "in", "b.dcm", InstanceNumber=2)
    out = tmp_path / "out"
    done = run("cnn", str(tmp_path / "in"), "--out", str(out), "--engines-dir", str(engines))
    assert done.exit_code == 0, done.output
    rows = {Path(row["file"]).name: row for row in results(out)}
    assert rows["a.dcm"]["status"] == "ok"
    assert rows["b.dcm"]["status"] == "duplicate"
    assert rows["b.dcm"]["duplicate_of"] == str(first) != str(second)
    assert "duplicate" in done.output and "b.dcm" in done.output


@pytest.mark.parametrize("contents", ["empty", "no DICOM"])
def test_a_folder_with_nothing_to_run_says_what_it_found_and_fails(contents, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    if contents == "no DICOM":
        (folder / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    done = run("cnn", str(folder), "--out", str(out), "--json")
    assert done.exit_code == 1
    summary = json.loads(done.stdout)
    expected = 0 if contents == "empty" else 1
    assert summary["note"].startswith(f"scanned {expected} file(s): 0 DICOM image(s)")
    assert summary["note"].endswith("nothing to run")
    assert len(results(out)) == expected


def test_a_refused_series_is_named_and_the_batch_goes_on(study, engines, tmp_path):
    """A legal CT with an empty SliceThickness, alone in its series, cannot give a valid SEG:
    it is refused by file and attribute while the other series get theirs."""
    inputs = tmp_path / "in"
    shutil.copytree(study, inputs)
    odd = _ct_small(inputs / "odd", SliceThickness=None)
    out = tmp_path / "out"
    done = run("unet", str(inputs), "--out", str(out), "--engines-dir", str(engines), "--json")
    assert done.exit_code == 1 and "Traceback" not in done.output
    rows = {row["file"]: row for row in results(out)}
    assert rows[str(odd)]["error"].startswith(f"{odd}: SliceThickness (0018,0050) is empty")
    ok = [row for row in rows.values() if row["status"] == "ok"]
    assert len(ok) == 12 and all(row["outputs"] for row in ok)


def test_the_table_shows_findings(study, engines, tmp_path, monkeypatch):
    import io

    from rich.console import Console

    import edgeimg.commands.run

    screen = io.StringIO()
    monkeypatch.setattr(edgeimg.commands.run, "out", Console(file=screen, width=250))
    done = run("cnn", str(study), "--out", str(tmp_path / "out"), "--engines-dir", str(engines))
    assert done.exit_code == 0
    found = [line for line in screen.getvalue().splitlines() if "lesion on" in line]
    assert len(found) == 2 and all("/6 slices (max p=" in line for line in found)


def test_ctrl_c_keeps_the_series_that_finished(study, engines, tmp_path, monkeypatch):
    import edgeimg.pipeline.runner

    real = edgeimg.pipeline.runner.decode_series

    def interrupted_after_one(jobs, spec, pool):
        iterator = real(jobs, spec, pool)
        yield next(iterator)
        raise KeyboardInterrupt

    monkeypatch.setattr(edgeimg.pipeline.runner, "decode_series", interrupted_after_one)
    out = tmp_path / "out"
    args = ("cnn", str(study), "--out", str(out), "--engines-dir", str(engines), "--json")
    done = run(*args, "--workers", "0")
    assert done.exit_code == 130
    summary = json.loads(done.stdout)
    assert summary["note"].startswith("interrupted")
    assert summary["counts"]["ok"] == 6 and summary["series"] == 1
    assert len([row for row in results(out) if row["status"] == "ok"]) == 6
