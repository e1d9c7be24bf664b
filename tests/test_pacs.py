"""The private Orthanc really is a PACS: it answers C-ECHO, keeps what C-STORE sends, and goes."""

from __future__ import annotations

import copy
import io
import socket
import tempfile
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from testsupport import pacs as pacs_module
from testsupport.pacs import Orthanc, OrthancError

needs_orthanc = pytest.mark.skipif(Orthanc.available() is not None, reason=str(Orthanc.available()))


def ct_dataset(series_uid: str) -> Dataset:
    """A 16x16 int16 CT slice, round-tripped through bytes so it compares equal to a re-read."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "PHANTOM-1"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 16
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.PixelData = b"".join(
        (value - 128).to_bytes(2, "little", signed=True) for value in range(16 * 16)
    )
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def c_echo(pacs: Orthanc) -> int:
    ae = AE(ae_title="EDGEIMG")
    ae.add_requested_context(Verification)
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.aet)
    assert assoc.is_established
    try:
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def c_store(pacs: Orthanc, *datasets: Dataset) -> list[int]:
    """Statuses, one per dataset, over one association as the listener's forwarder sends them."""
    ae = AE(ae_title="EDGEIMG")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(pacs.host, pacs.port, ae_title=pacs.aet)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(ds).Status for ds in datasets]
    finally:
        assoc.release()


@pytest.fixture(scope="module")
def pacs():
    with Orthanc() as server:
        yield server


def test_available_says_how_to_install(monkeypatch):
    monkeypatch.setattr(pacs_module.shutil, "which", lambda name: None)
    monkeypatch.setattr(pacs_module, "FALLBACK_EXECUTABLE", "/nonexistent/Orthanc")
    assert Orthanc.available() == "Orthanc not found: apt-get install orthanc"
    with pytest.raises(OrthancError, match="apt-get install orthanc"):
        Orthanc().start()


@pytest.mark.integration
@needs_orthanc
def test_echo_store_and_find_returns_what_was_sent(pacs):
    assert pacs.address == f"PACS@127.0.0.1:{pacs.port}"
    assert c_echo(pacs) == 0x0000
    series_uid = generate_uid()
    sent = ct_dataset(series_uid)
    assert c_store(pacs, sent) == [0x0000]

    (instance_id,) = pacs.wait_for(lambda: pacs.find(sop_instance_uid=sent.SOPInstanceUID))
    assert pacs.find(series_uid=series_uid, modality="CT") == [instance_id]
    assert pacs.find(series_uid=series_uid, modality="MR") == []
    assert instance_id in pacs.instances()
    assert pacs.instance_tags(instance_id)["SOPInstanceUID"] == sent.SOPInstanceUID

    stored = dcmread(io.BytesIO(pacs.instance_file(instance_id)))
    assert stored.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert stored == sent
    assert stored.pixel_array.tolist() == sent.pixel_array.tolist()


@pytest.mark.integration
@needs_orthanc
def test_storing_an_instance_again_keeps_one_copy(pacs):
    """OverwriteInstances is false: a re-send succeeds but the first copy stays."""
    sent = ct_dataset(generate_uid())
    changed = copy.deepcopy(sent)
    changed.InstanceNumber = 2
    assert c_store(pacs, sent, sent, changed) == [0x0000] * 3

    (instance_id,) = pacs.wait_for(lambda: pacs.find(sop_instance_uid=sent.SOPInstanceUID))
    assert pacs.find(series_uid=sent.SeriesInstanceUID) == [instance_id]
    assert dcmread(io.BytesIO(pacs.instance_file(instance_id))) == sent


@pytest.mark.integration
@needs_orthanc
def test_stops_cleanly_and_leaves_nothing_behind():
    with Orthanc(aet="RESULTS") as server:
        directory, port, http_port = server.directory, server.port, server.http_port
        assert directory.is_dir()
        assert server.count_by_sop_class() == {}
        assert c_store(server, ct_dataset(generate_uid())) == [0x0000]
        assert server.count_by_sop_class() == {CTImageStorage: 1}
        process = server._process
    assert process is not None and process.returncode == 0
    assert not server.running
    assert not Path(directory).exists()
    for free in (port, http_port):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", free))  # nothing listens there any more


@pytest.mark.integration
@needs_orthanc
def test_failed_start_reports_the_log_and_cleans_up(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    server = Orthanc(aet="X" * 17)
    with pytest.raises(OrthancError, match="longer than 16 characters"):
        server.start()
    assert not server.running
    assert list(tmp_path.iterdir()) == []
