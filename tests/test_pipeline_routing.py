"""Routing, per-destination de-identification and the audit trail, against real listeners.

edgeimg's own listener plays the scanner-facing server and, twice more, the two destinations
(a plain PACS and a research archive that gets de-identified copies); results travel by real
C-STORE over loopback and are checked where they arrive.
"""

from __future__ import annotations

import json
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydicom import dcmread

from edgeimg.audit import AuditLog, read
from edgeimg.commands.serve import tomllib
from edgeimg.dicom.deid import map_uid, pseudonym
from edgeimg.net import parse_peer, send
from edgeimg.serve.config import ServeConfig
from edgeimg.serve.listener import Listener
from edgeimg.serve.pipeline import Worker
from edgeimg.serve.routing import parse_routing
from edgeimg.synth.dicom import write_study
from tests.dciodvfy import dciodvfy_errors
from testsupport.peers import ct_instance, dataset_bytes, free_port, poll, start_serve, stop, write

pytestmark = pytest.mark.integration
SR = "1.2.840.10008.5.1.4.1.1.88.34"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"


@contextmanager
def listener(spool: Path, aet: str, **options) -> Iterator[Listener]:
    """An in-process edgeimg listener on a free loopback port."""
    config = ServeConfig(
        aet=aet,
        port=0,
        host="127.0.0.1",
        spool=spool,
        min_free_mb=0,
        acse_timeout=5,
        network_timeout=10,
        **options,
    )
    server = Listener(config)
    _, config.port = server.start()
    try:
        yield server
    finally:
        server.stop(drain_timeout=5)


def received(server: Listener) -> dict[str, Path]:
    """SOP class → stored file of what a destination listener holds (one per class here)."""
    rows = server.queue._db().execute("SELECT sop_class, path FROM instances").fetchall()
    assert len(rows) == len({row["sop_class"] for row in rows})
    return {row["sop_class"]: Path(row["path"]) for row in rows}


CONFIG = """
[[destination]]
name = "plain"
peer = "PLAIN@127.0.0.1:{plain}"
[[destination]]
name = "research"
peer = "RESEARCH@127.0.0.1:{research}"
deid = {{clean_descriptors = true}}
[[route]]
model = "cnn"
modality = "CT"
min_slices = 4
[[route]]
model = "unet"
modality = "CT"
body_part = "abdomen"
destinations = ["plain"]
[[route]]
model = "gru"
modality = "MR"
"""


def test_routes_destinations_deid_and_audit(tmp_path, engines) -> None:
    study = write_study(tmp_path / "study", series=1, slices=6, size=64, seed=5)
    head = [ct_instance(series_uid="1.2.826.0.1.3680043.99.1", index=i) for i in (1, 2, 3)]
    for index, ds in enumerate(head):
        ds.BodyPartExamined = "HEAD"
        write(ds, tmp_path / "head" / f"{index}.dcm")
    key = bytes(range(32))
    audit = AuditLog(tmp_path / "spool" / "audit.jsonl")
    with (
        listener(tmp_path / "plain", "PLAIN") as plain,
        listener(tmp_path / "research", "RESEARCH") as research,
        listener(tmp_path / "spool", "EDGE", complete_on_release=True) as edge,
    ):
        edge.audit = audit  # as `edgeimg serve` does: the listener records what it receives
        ports = {"plain": plain.config.port, "research": research.config.port}
        routing = parse_routing(tomllib.loads(CONFIG.format(**ports)), "test.toml")
        worker = Worker(
            edge.queue,
            tmp_path / "spool" / "results",
            routing,
            engines_dir=engines,
            audit=audit,
            deid_key=key,
        )
        peer = parse_peer(f"EDGE@127.0.0.1:{edge.config.port}")
        for folder in (study.out_dir / "series-001", tmp_path / "head"):
            assert all(result.ok for result in send(peer, [folder], calling="SCANNER"))
        assert poll(lambda: edge.queue.totals()["series"] == {"complete": 2})
        while worker.step():
            pass
        jobs = edge.queue._db().execute("SELECT series_uid, model, state FROM jobs").fetchall()
        assert sorted(tuple(row) for row in jobs) == [
            (study.series[0].series_uid, "cnn", "done"),
            (study.series[0].series_uid, "unet", "done"),
        ]  # the 3-slice HEAD series matched no route: no job, and done
        assert {s["series_uid"]: s["state"] for s in edge.queue.series_summary()} == {
            study.series[0].series_uid: "done",
            head[0].SeriesInstanceUID: "done",
        }
        assert edge.queue.totals()["forwards"] == {"done": 3}
        assert worker.latency().keys() == {"cnn", "unet"}
        plain_files = received(plain)
        research_files = received(research)
    audit.close()

    # The plain destination got both results, byte for byte as the spool holds them.
    results = {dcmread(p).SOPClassUID: p for p in (tmp_path / "spool" / "results").rglob("*.dcm")}
    assert plain_files.keys() == results.keys() == {SR, SEG}
    for sop_class, path in results.items():
        assert dataset_bytes(plain_files[sop_class]) == dataset_bytes(path)
    # The research destination got only cnn's SR, de-identified, still a valid SR.
    assert research_files.keys() == {SR}
    original, sent = dcmread(results[SR]), dcmread(research_files[SR])
    assert str(original.PatientName) == "SYNTH^PATIENT5"
    assert sent.PatientName == sent.PatientID == pseudonym(study.patient_id, key)
    assert sent.PatientIdentityRemoved == "YES"
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert sent[keyword].value == map_uid(original[keyword].value, key)
    folder = study.out_dir / "series-001"
    sources = [dcmread(path, stop_before_pixels=True) for path in folder.glob("*.dcm")]
    assert sent.StudyInstanceUID == map_uid(sources[0].StudyInstanceUID, key)
    evidence = sent.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert evidence.SeriesInstanceUID == map_uid(sources[0].SeriesInstanceUID, key)
    referenced = sorted(item.ReferencedSOPInstanceUID for item in evidence.ReferencedSOPSequence)
    assert referenced == sorted(map_uid(ds.SOPInstanceUID, key) for ds in sources)
    assert dciodvfy_errors(research_files[SR]) == []
    deid_dir = tmp_path / "spool" / "deid" / "research" / "cnn"
    assert [path.name for path in deid_dir.iterdir()] == [f"{sent.SOPInstanceUID}.dcm"]

    # The audit trail: which model and engine made what, where it went, and no patient identity.
    events = list(read(tmp_path / "spool" / "audit.jsonl"))
    done = {e["model"]: e for e in events if e["event"] == "job_done"}
    assert done.keys() == {"cnn", "unet"} and all(e["engine_key"] for e in done.values())
    assert {o["sop_instance_uid"] for e in done.values() for o in e["outputs"]} == {
        str(dcmread(p).SOPInstanceUID) for p in results.values()
    }
    forwarded = {e["destination"]: e for e in events if e["event"] == "forwarded"}
    assert forwarded["plain"]["deid"] is False and len(forwarded["plain"]["sop_instance_uids"]) == 2
    assert forwarded["research"]["deid"] is True
    assert forwarded["research"]["sop_instance_uids"] == [sent.SOPInstanceUID]
    text = (tmp_path / "spool" / "audit.jsonl").read_text()
    for secret in (study.patient_name, study.patient_id, "Secret^Patient", "SECRET-ID-42"):
        assert secret not in text


def test_serve_config_deid_key_and_audit_across_restarts(tmp_path, engines, monkeypatch) -> None:
    """`edgeimg serve --config` as a user runs it: the key is made once (0600) in the spool and
    reused after a restart, so a second series of the study maps to the same study UID."""
    monkeypatch.setenv("EDGEIMG_ENGINES", str(engines))
    study = write_study(tmp_path / "study", series=2, slices=4, size=64, seed=8)
    config = tmp_path / "serve.toml"
    spool = tmp_path / "spool"
    with listener(tmp_path / "research", "RESEARCH") as research:
        port = research.config.port
        config.write_text(
            '[serve]\naet = "EDGE"\nhost = "127.0.0.1"\ncomplete-on-release = true\n'
            f'spool = "{spool}"\nmin-free-mb = 0\n'
            f'[[destination]]\nname = "research"\npeer = "RESEARCH@127.0.0.1:{port}"\n'
            'deid = true\n[[route]]\nmodel = "cnn"\n'
        )
        for number, series in enumerate(study.series, 1):
            port = free_port()
            server = start_serve("--config", str(config), port=port, cwd=tmp_path)
            try:
                folder = study.out_dir / series.folder
                peer = parse_peer(f"EDGE@127.0.0.1:{port}")
                assert all(result.ok for result in send(peer, [folder], calling="SCANNER"))
                assert poll(lambda n=number: research.queue.totals()["instances"] == n, timeout=120)
            finally:
                assert stop(server, signal.SIGTERM) == 0
        rows = research.queue._db().execute("SELECT path FROM instances").fetchall()
        sent = [dcmread(row["path"]) for row in rows]
    key_file = spool / "deid.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = bytes.fromhex(key_file.read_text().strip())
    assert {ds.StudyInstanceUID for ds in sent} == {map_uid(study.study_uid, key)}
    assert {ds.PatientID for ds in sent} == {pseudonym(study.patient_id, key)}
    events = [e["event"] for e in read(spool / "audit.jsonl")]
    assert events.count("job_done") == 2 and events.count("forwarded") == 2
    log = (tmp_path / "serve.log").read_text()
    assert study.patient_name not in log and study.patient_id not in log
    assert all(json.loads(line) for line in log.splitlines() if line.startswith("{"))
