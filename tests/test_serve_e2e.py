"""The main job end to end: storescu as the scanner, edgeimg serve, Orthanc as the PACS."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgeimg.synth.dicom import write_study
from tests.dciodvfy import dciodvfy_errors
from tests.enhanced import write_legacy_enhanced
from testsupport.pacs import Orthanc
from testsupport.peers import free_port, needs_dcmtk, start_serve, stop

pytestmark = [
    pytest.mark.integration,
    needs_dcmtk,
    pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available())),
]
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def pacs():
    with Orthanc("PACS") as server:
        yield server


def storescu(port: int, folder: Path) -> None:
    """Send a folder as a scanner would, proposing the SOP classes of its files (-R): dcmtk's
    default list lacks the legacy converted enhanced classes."""
    files = sorted(str(p) for p in folder.glob("*.dcm"))
    subprocess.run(
        ["storescu", "-R", "-aet", "SCANNER", "-aec", "EDGEIMG", "127.0.0.1", str(port), *files],
        check=True,
        capture_output=True,
        timeout=120,
        env={"TCP_NODELAY": "1"},
    )


def queue(spool: Path) -> list[dict]:
    done = subprocess.run(
        [sys.executable, "-m", "edgeimg", "queue", "--spool", str(spool), "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)["series"]


def classic_series(root: Path) -> tuple[Path, int]:
    write_study(root, series=1, slices=40, size=128, seed=11)
    return root / "series-001", 40


def legacy_enhanced_series(root: Path) -> tuple[Path, int]:
    return write_legacy_enhanced(root, slices=12, size=128, seed=11), 1


def enhanced_series(root: Path) -> tuple[Path, int]:
    write_study(root, series=1, slices=12, size=128, seed=11, enhanced=True)
    return root / "series-001", 1


@pytest.mark.parametrize("make_series", [classic_series, legacy_enhanced_series, enhanced_series])
def test_series_to_sr_and_seg_at_the_pacs(make_series, pacs, engines, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEIMG_ENGINES", str(engines))
    folder, instances = make_series(tmp_path / "study")
    port = free_port()
    server = start_serve(
        "--aet",
        "EDGEIMG",
        "--host",
        "127.0.0.1",
        "--spool",
        str(tmp_path / "spool"),
        "--model",
        "cnn",
        "--model",
        "unet",
        "--forward",
        pacs.address,
        "--complete-on-release",
        "--allow",
        "SCANNER@127.0.0.1",
        port=port,
        cwd=tmp_path,
    )
    try:
        storescu(port, folder)

        def arrived():
            counts = pacs.count_by_sop_class()
            return counts if counts.get(COMPREHENSIVE_3D_SR) and counts.get(SEG) else None

        counts = pacs.wait_for(arrived, timeout=240)
    finally:
        assert stop(server, signal.SIGTERM) == 0
    assert counts == {COMPREHENSIVE_3D_SR: 1, SEG: 1}
    for sop_class in (COMPREHENSIVE_3D_SR, SEG):
        (instance,) = [
            i for i in pacs.instances() if pacs.instance_tags(i).get("SOPClassUID") == sop_class
        ]
        path = tmp_path / f"{sop_class}.dcm"
        path.write_bytes(pacs.instance_file(instance))
        assert dciodvfy_errors(path) == []
    (series,) = queue(tmp_path / "spool")
    assert series["instances"] == instances and series["state"] == "done"
    assert series["forwards"] == {"done": 2}
    log = (tmp_path / "serve.log").read_text()
    assert "SYNTH^" not in log and "PatientName" not in log
