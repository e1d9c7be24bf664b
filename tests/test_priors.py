"""Priors in `serve`: a model that declares `priors = 1` gets the patient's most recent earlier
study of the same modality from a real Orthanc (C-FIND, then C-GET) before its job runs; while
the priors source is down, the job waits (pending, with backoff) and runs once when it is up.

The model is a third-party plugin installed as pip would (an entry point on sys.path): the cnn's
network and weights, with a `compare` that names the prior series and the change in its finding.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from edgeimg.cli import cli
from edgeimg.net import parse_peer, send
from edgeimg.sdk.model import ModelSpec
from edgeimg.serve.queue import Instance, Queue
from edgeimg.serve.routing import RoutingError, SeriesFacts, parse_routing
from edgeimg.synth.dicom import write_study
from tests.conftest import run_edgeimg, write_distribution
from tests.dciodvfy import dciodvfy_errors
from testsupport.pacs import Orthanc
from testsupport.peers import Relay, free_port, start_serve, stop

needs_orthanc = pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))
PLUGIN = """
from pathlib import Path

from edgeimg import hookimpl
from edgeimg.sdk.model import InputSpec, ModelSpec


@hookimpl
def register_models(register):
    import edgeimg_cnn

    weights = Path(edgeimg_cnn.__file__).parent / "weights" / "cnn.safetensors"
    register(ModelSpec(name="cnn-priors", version="0.1.0", task="classify",
                       summary="cnn, compared with the patient's last prior",
                       implementation="priors_model:PriorsCNN", weights=str(weights),
                       input=InputSpec(size=(96, 96)), outputs=("sr", "json"), priors=1))
"""
MODEL = """
from edgeimg_cnn.model import CNNModel


class PriorsCNN(CNNModel):
    def compare(self, current, priors):
        top = lambda line: max(item["probability"] for item in line["results"])
        return {"prior_series": [line["series_uid"] for line in priors],
                "change": [top(current) - top(line) for line in priors]}
"""
CURRENT, PRIOR, OLDER, OTHER = "20260115", "20250601", "20240101", "20251201"


def test_a_route_may_name_its_own_priors_source_and_priors_from_is_the_default():
    tables = {
        "route": [
            {"model": "a", "modality": "CT", "priors_from": "PACS@10.0.0.5:104"},
            {"model": "b"},
        ]
    }
    routing = parse_routing(tables, "serve.toml").with_flags([], [], None, "Q@127.0.0.1:4242")
    assert routing.priors_source("a", SeriesFacts(modality="CT")) == "PACS@10.0.0.5:104"
    assert routing.priors_source("b", SeriesFacts(modality="CT")) == "Q@127.0.0.1:4242"
    with pytest.raises(RoutingError, match=r"serve.toml: \[\[route\]\] #1: priors_from: "):
        parse_routing({"route": [{"model": "a", "priors_from": "nowhere"}]}, "serve.toml")
    bad = CliRunner().invoke(cli, ["serve", "--aet", "X", "--priors-from", "nowhere"])
    assert bad.exit_code == 2 and "expected AET@HOST:PORT" in bad.output
    with pytest.raises(ValueError, match="priors must be a whole number"):
        ModelSpec("m", "1", "classify", "s", "module:Class", priors=-1)


def test_the_serve_config_file_takes_priors_from(tmp_path):
    config = tmp_path / "serve.toml"
    config.write_text('[serve]\naet = "X"\npriors_from = "nowhere"\n')
    bad = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert bad.exit_code == 2 and "'nowhere': expected AET@HOST:PORT" in bad.output


def test_a_waiting_job_is_not_claimed_before_its_time_and_queue_says_why(tmp_path):
    queue = Queue(tmp_path / "queue.db")
    queue.add_instance(
        Instance(
            "1.2.3",
            "1.2.4",
            "1.2.5",
            "1.2.840.10008.5.1.4.1.1.2",
            "CT",
            "x.dcm",
            1,
            "0",
            "SCANNER",
            "127.0.0.1",
        )
    )
    queue.complete(["1.2.4"])
    queue.claim_series()
    queue.add_jobs("1.2.4", ["m"])
    job = queue.next_job()
    queue.defer_job(job["id"], "waiting for priors: source down", time.time() + 60)
    assert queue.next_job() is None
    (waiting,) = queue.waiting()
    assert waiting["reason"] == "waiting for priors: source down" and waiting["attempts"] == 1
    assert queue.series_summary()[0]["state"] == "pending"
    queue.defer_job(job["id"], "waiting for priors: source down", 0)
    assert queue.next_job()["attempts"] == 2


@pytest.fixture
def plugin(site_dir: Path) -> None:
    write_distribution(site_dir, "edgeimg-priors-test", "priors-test", "priors_plugin", PLUGIN)
    (site_dir / "priors_model.py").write_text(MODEL)


@pytest.fixture(scope="module")
def patient(tmp_path_factory) -> dict[str, Path]:
    """Four small CT studies: the current one, two earlier ones of the same patient, and a
    study of another patient dated between them."""
    root = tmp_path_factory.mktemp("studies")
    folders = {}
    for seed, name in ((31, "current"), (32, "prior"), (33, "older"), (34, "other")):
        write_study(root / name, series=1, slices=4, size=64, seed=seed)
        folders[name] = root / name / "series-001"
    who = pydicom.dcmread(next(folders["current"].glob("*.dcm")))
    same = {key: who.get(key) for key in ("PatientID", "PatientName", "PatientBirthDate")}
    for name, date in (("current", CURRENT), ("prior", PRIOR), ("older", OLDER), ("other", OTHER)):
        _stamp(folders[name], StudyDate=date, **(same if name != "other" else {}))
    return folders


def _stamp(folder: Path, **values: object) -> None:
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        for key, value in values.items():
            setattr(ds, key, value)
        ds.save_as(path)


def _uid(folder: Path, keyword: str) -> str:
    return str(pydicom.dcmread(next(folder.glob("*.dcm"))).get(keyword))


@pytest.fixture(scope="module")
def pacs(patient):
    """Orthanc holding all four studies (the current one too, as a PACS would); it knows our
    AE title, so it answers our C-FIND and C-GET."""
    modalities = {"EDGEIMG": ("EDGEIMG", "127.0.0.1", free_port())}
    with Orthanc(modalities=modalities) as server:
        assert all(result.ok for result in send(parse_peer(server.address), patient.values()))
        yield server


def _serve(tmp_path: Path, priors_from: str) -> tuple[object, int]:
    port = free_port()
    server = start_serve(
        "--aet",
        "EDGEIMG",
        "--host",
        "127.0.0.1",
        "--spool",
        str(tmp_path / "spool"),
        "--model",
        "cnn-priors",
        "--priors-from",
        priors_from,
        "--complete-on-release",
        "--allow",
        "SCANNER@127.0.0.1",
        port=port,
        cwd=tmp_path,
    )
    return server, port


def _scan(port: int, folder: Path) -> None:
    """The scanner sends the current study over a real association."""
    results = send(parse_peer(f"EDGEIMG@127.0.0.1:{port}"), [folder], calling="SCANNER")
    assert results and all(result.ok for result in results)


def _queue(spool: Path) -> dict:
    done = run_edgeimg("queue", "--spool", str(spool), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _wait(predicate, server, timeout: float = 240):
    """Poll until `predicate()` is truthy (serve builds the model's engine first)."""
    deadline = time.monotonic() + timeout
    while not (found := predicate()):
        assert server.poll() is None, "serve exited"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)
    return found


def _results(spool: Path) -> list[dict]:
    path = spool / "results" / "results.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _check_result(line: dict, patient: dict[str, Path], spool: Path, log: str) -> None:
    prior = _uid(patient["prior"], "StudyInstanceUID")
    assert line["study_uid"] == _uid(patient["current"], "StudyInstanceUID")
    assert line["priors"] == [{"study_uid": prior}]  # no study date: it is patient data
    assert line["comparison"]["prior_series"] == [_uid(patient["prior"], "SeriesInstanceUID")]
    (sr_path,) = line["outputs"]
    sr = pydicom.dcmread(sr_path)
    assert [item.StudyInstanceUID for item in sr.PertinentOtherEvidenceSequence] == [prior]
    assert dciodvfy_errors(Path(sr_path)) == []
    assert not any((spool / "priors").glob("*/*")), "the per-job copy of the priors is removed"
    patient_id = _uid(patient["current"], "PatientID")
    assert patient_id not in log and "SYNTH^" not in log


@pytest.mark.integration
@needs_orthanc
def test_a_job_gets_the_most_recent_prior_and_its_result_names_it(
    plugin, patient, pacs, engines, tmp_path, monkeypatch
):
    monkeypatch.setenv("EDGEIMG_ENGINES", str(engines))
    spool = tmp_path / "spool"
    server, port = _serve(tmp_path, pacs.address)
    try:
        _scan(port, patient["current"])
        (line,) = _wait(lambda: _results(spool), server)
    finally:
        assert stop(server) == 0
    _check_result(line, patient, spool, (tmp_path / "serve.log").read_text())
    assert '"event": "priors_fetched"' in (tmp_path / "serve.log").read_text()


@pytest.mark.integration
@needs_orthanc
def test_a_job_waits_while_the_priors_source_is_down_and_runs_once_it_is_up(
    plugin, patient, pacs, engines, tmp_path, monkeypatch
):
    monkeypatch.setenv("EDGEIMG_ENGINES", str(engines))
    spool = tmp_path / "spool"
    relay_port = free_port()  # nothing listens here until the relay starts
    server, port = _serve(tmp_path, f"{pacs.aet}@127.0.0.1:{relay_port}")
    relay = None
    try:
        _scan(port, patient["current"])
        state = _wait(lambda: (queue := _queue(spool))["waiting"] and queue, server)
        (job,) = state["waiting"]
        assert job["reason"] == (
            f"waiting for priors: cannot connect to {pacs.aet}@127.0.0.1:{relay_port}: "
            "connection refused"
        )
        assert state["failures"] == [] and state["series"][0]["state"] == "pending"
        shown = run_edgeimg("queue", "--spool", str(spool)).stdout
        assert f"waiting job:{job['id']}" in shown and "waiting for priors" in shown
        assert _results(spool) == []
        relay = Relay(relay_port, pacs.port)
        (line,) = _wait(lambda: _results(spool), server)
        state = _wait(lambda: (q := _queue(spool))["series"][0]["state"] == "done" and q, server)
    finally:
        assert stop(server) == 0
        if relay is not None:
            relay.close()
    assert state["series"][0]["jobs"] == {"done": 1} and state["waiting"] == []
    assert len(_results(spool)) == 1
    _check_result(line, patient, spool, (tmp_path / "serve.log").read_text())
