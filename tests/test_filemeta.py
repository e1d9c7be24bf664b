"""The Part 10 header the listener puts in front of the bytes it received."""

from __future__ import annotations

import io
import shutil
import subprocess

import pytest
from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from edgeimg.dicom.filemeta import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, file_meta
from testsupport.peers import ct_instance

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.mark.parametrize("sop_uid", ["1.2.3", "1.2.34"])  # odd and even lengths
@pytest.mark.parametrize("aet", ["SCANNER", "CT1", ""])
def test_header_reads_back_with_pydicom(tmp_path, sop_uid, aet):
    path = tmp_path / "x.dcm"
    path.write_bytes(file_meta(CT, sop_uid, ImplicitVRLittleEndian, aet))
    meta = read_file_meta_info(path)
    assert meta.MediaStorageSOPClassUID == CT
    assert meta.MediaStorageSOPInstanceUID == sop_uid
    assert meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.get("SourceApplicationEntityTitle", "") == aet
    assert meta.FileMetaInformationGroupLength == path.stat().st_size - 128 - 4 - 12


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_header_and_received_bytes_make_a_file_pydicom_and_dcmtk_read(tmp_path, syntax):
    ct = ct_instance()
    raw = encode(ct, syntax.is_implicit_VR, True)
    path = tmp_path / "ct.dcm"
    path.write_bytes(file_meta(ct.SOPClassUID, ct.SOPInstanceUID, syntax, "SCANNER") + raw)
    read = dcmread(path)
    assert read.SOPInstanceUID == ct.SOPInstanceUID
    assert read.PixelData == ct.PixelData
    assert dcmread(io.BytesIO(path.read_bytes())).file_meta.TransferSyntaxUID == syntax
    if shutil.which("dcmdump"):
        dumped = subprocess.run(["dcmdump", "-E", str(path)], capture_output=True, text=True)
        assert dumped.returncode == 0, dumped.stderr
        assert "W:" not in dumped.stderr and "E:" not in dumped.stderr
