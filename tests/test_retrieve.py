"""`run --from AET@HOST:PORT --query`: a study that exists only in Orthanc, by C-GET and C-MOVE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from edgeimg.net import parse_peer, send
from edgeimg.retrieve import QueryError, level, parse_query
from edgeimg.synth.dicom import write_study
from testsupport.pacs import Orthanc
from testsupport.peers import free_port

needs_orthanc = pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    """Orthanc holding two studies edgeimg never saw (sent, then the files deleted); it knows
    our AE title EDGEIMG for C-MOVE at a port the tests give to --move-port, and STRANGER at a
    port where nothing listens."""
    move_port = free_port()
    modalities = {
        "EDGEIMG": ("EDGEIMG", "127.0.0.1", move_port),
        "STRANGER": ("STRANGER", "127.0.0.1", free_port()),
    }
    with Orthanc(modalities=modalities) as server:
        folder = tmp_path_factory.mktemp("sent")
        studies = []
        for seed, date in ((5, "20260115"), (6, "20250301")):
            study = folder / str(seed)
            write_study(study, series=1, slices=4, size=64, seed=seed)
            for path in study.rglob("*.dcm"):
                _set_date(path, date)
            assert all(result.ok for result in send(parse_peer(server.address), [study]))
            studies.append(_study_uid(study))
            for path in study.rglob("*.dcm"):
                path.unlink()
        server.move_port = move_port
        server.studies = studies
        yield server


def _set_date(path: Path, date: str) -> None:
    import pydicom

    ds = pydicom.dcmread(path)
    ds.StudyDate = date
    ds.save_as(path)


def _study_uid(folder: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(next(folder.rglob("*.dcm"))).StudyInstanceUID)


def run(*args: str):
    return CliRunner().invoke(cli, ["run", *args], catch_exceptions=False)


def test_query_keys_are_dicom_keywords_with_dcmtk_ranges():
    assert parse_query(["StudyDate=20260101-20260131", "Modality=CT"]) == {
        "StudyDate": "20260101-20260131",
        "Modality": "CT",
    }
    assert level({"StudyDate": "20260101-"}) == "STUDY"
    assert level({"Modality": "CT"}) == "SERIES"
    with pytest.raises(QueryError, match="'StudyDay': not a DICOM keyword"):
        parse_query(["StudyDay=20260101"])
    with pytest.raises(QueryError, match="expected a value or a range"):
        parse_query(["StudyDate=2026"])
    with pytest.raises(QueryError, match="expected KEY=VALUE"):
        parse_query(["Modality"])


def test_unknown_keyword_is_a_usage_error_naming_it(tmp_path):
    done = run("cnn", "--from", "PACS@127.0.0.1:1", "--query", "Modalty=CT")
    assert done.exit_code == 2 and "'Modalty': not a DICOM keyword" in done.output
    assert run("cnn", "--from", "PACS@127.0.0.1:1").exit_code == 2
    assert run("cnn", str(tmp_path), "--query", "Modality=CT").exit_code == 2


def test_an_unreachable_peer_is_one_line_naming_it():
    port = free_port()
    done = run("cnn", "--from", f"PACS@127.0.0.1:{port}", "--query", "Modality=CT")
    assert done.exit_code == 1
    last = done.output.strip().splitlines()[-1]
    assert last == f"Error: cannot connect to PACS@127.0.0.1:{port}: connection refused"


@pytest.mark.integration
@needs_orthanc
@pytest.mark.parametrize("method", ["auto", "get", "move"])
def test_run_processes_a_study_that_exists_only_in_orthanc(method, pacs, engines, tmp_path):
    """auto without --move-port can only succeed by C-GET (Orthanc could not reach a free port)."""
    study = pacs.studies[0]
    out = tmp_path / "out"
    move = ["--move-port", str(pacs.move_port)] if method != "auto" else []
    done = run(
        "cnn",
        "--from",
        pacs.address,
        "--query",
        f"StudyInstanceUID={study}",
        "--retrieve",
        method,
        *move,
        "--out",
        str(out),
        "--engines-dir",
        str(engines),
        "--json",
    )
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert summary["counts"]["ok"] == 4 and summary["series"] == 1 and not summary["failures"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert {row["study_uid"] for row in rows if row["status"] == "ok"} == {study}
    assert list(out.glob("*.dcm"))


@pytest.mark.integration
@needs_orthanc
def test_a_date_range_matches_one_study_and_a_failed_retrieve_is_listed(pacs, engines, tmp_path):
    """C-MOVE to an AE whose port Orthanc cannot reach fails: the study is listed, exit 1."""
    out = tmp_path / "out"
    done = run(
        "cnn",
        "--from",
        pacs.address,
        "--query",
        "StudyDate=20260101-20260131",
        "--retrieve",
        "move",
        "--aet",
        "STRANGER",
        "--out",
        str(out),
        "--engines-dir",
        str(engines),
        "--json",
    )
    assert done.exit_code == 1, done.output
    (failure,) = json.loads(done.stdout)["failures"]
    assert failure["study_uid"] == pacs.studies[0]
    assert failure["error"].startswith("retrieve failed: C-MOVE: status 0x")
    assert "does the peer know our AE title STRANGER" in failure["error"]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert rows == [failure]
