"""De-identification against PS3.15 Table E.1-1, attribute by attribute, and `edgeimg deid`."""

from __future__ import annotations

import io
import json
import stat
import traceback

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from edgeimg.cli import cli
from edgeimg.dicom.deid import DeidOptions, clean_text, deidentify, map_uid
from edgeimg.dicom.deid_profile import ACTION_CODES, BASIC_PROFILE, CLEAN_DESCRIPTORS
from tests.dciodvfy import dciodvfy_errors

KEY = bytes(range(32))
OPTIONS = DeidOptions(KEY)
CT = "1.2.840.10008.5.1.4.1.1.2"
SECRET = "Secret^Person"

SAMPLES = {
    "AE": "SECRETAE",
    "AS": "045Y",
    "AT": 0x00100010,
    "CS": "SECRET",
    "DA": "20200101",
    "DS": "1.5",
    "DT": "20200101120000",
    "FL": 1.5,
    "FD": 1.5,
    "IS": "7",
    "LO": "SECRET VALUE",
    "LT": "SECRET TEXT",
    "OB": b"\x01\x02",
    "OD": b"\x01" * 8,
    "OF": b"\x01" * 4,
    "OL": b"\x01" * 4,
    "OV": b"\x01" * 8,
    "OW": b"\x01\x02",
    "PN": SECRET,
    "SH": "SECRET",
    "SL": 7,
    "SS": 7,
    "ST": "SECRET TEXT",
    "SV": 7,
    "TM": "120000",
    "UC": "SECRET",
    "UI": "1.2.3.4.5.6.7",
    "UL": 7,
    "UN": b"\x01\x02",
    "UR": "http://example.org/secret",
    "US": 7,
    "UT": "SECRET TEXT",
    "UV": 7,
}

_ALLOWED = {
    "X": {"removed"},
    "Z": {"empty"},
    "D": {"dummy"},
    "K": {"kept"},
    "U": {"uid"},
    "Z/D": {"empty", "dummy"},
    "X/Z": {"removed", "empty"},
    "X/D": {"removed", "dummy"},
    "X/Z/D": {"removed", "empty", "dummy"},
    "X/Z/U*": {"removed", "empty", "uid"},
}
"""What each table code allows us to have done to an attribute; a mapped UID is a fine dummy."""
OUTCOMES = {
    code: allowed | ({"uid"} if "dummy" in allowed else set()) for code, allowed in _ALLOWED.items()
}


def _vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag).split(" or ")[0]
    except KeyError:
        return None


TABLE = [
    pytest.param(tag, code, id=f"{Tag(tag)}-{code}")
    for tag, code in BASIC_PROFILE.items()
    if _vr(tag) is not None and tag not in (0x00100010, 0x00100020)
]


def ct_slice(number: int = 1, study: str | None = None, series: str | None = None) -> Dataset:
    """A small CT image with every type 1 and 2 attribute the CT Image IOD asks for."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CT, ds.file_meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID = "Doe^Johnathan", "PID-8675309"
    ds.PatientBirthDate, ds.PatientSex = "19700101", "M"
    ds.OtherPatientIDsSequence = [Dataset()]
    ds.OtherPatientIDsSequence[0].PatientID = "PID-8675309"
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.FrameOfReferenceUID = "1.2.826.0.1.3680043.8.498.1"
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20240101", "120000", "", ""
    ds.AccessionNumber, ds.StudyID = "ACC-55501", "STUDY-77"
    ds.ReferringPhysicianName, ds.OperatorsName = "Who^Doctor", "Op^Erator"
    ds.InstitutionName, ds.InstitutionAddress = "General Hospital", "1 Main Street"
    ds.StationName, ds.DeviceSerialNumber = "CT01", "SN-1234"
    ds.StudyDescription = "CT CHEST W CONTRAST Johnathan"
    ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = "CT", "ACME", 1, number
    ds.Laterality, ds.PatientPosition, ds.PositionReferenceIndicator = "", "HFS", ""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, number], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness, ds.KVP, ds.AcquisitionNumber = [1, 1], 1, 120, 1
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", 8, 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
    ds.PixelData = np.full((8, 8), number, np.uint16).tobytes()
    return ds


def _outcome(ds: Dataset, tag: int, original) -> str:
    if tag not in ds:
        return "removed"
    value = ds[tag].value
    if value is None or value == "" or value == b"" or (isinstance(value, Sequence) and not value):
        return "empty"
    if isinstance(original, str) and _vr(tag) == "UI":
        return "uid" if value == map_uid(original, KEY) else "other UI"
    return "kept" if value == original else "dummy"


def test_the_table_is_the_whole_profile() -> None:
    assert len(BASIC_PROFILE) >= 600
    assert set(BASIC_PROFILE.values()) <= ACTION_CODES
    assert len(TABLE) >= 550


@pytest.mark.parametrize(("tag", "code"), TABLE)
def test_table_action(tag: int, code: str) -> None:
    vr = _vr(tag)
    ds = Dataset()
    ds.SOPClassUID = CT
    if vr == "SQ":
        item = Dataset()
        item.PersonName, item.ReferencedSOPInstanceUID = SECRET, "1.2.3.4.5.6.7"
        ds.add_new(tag, "SQ", [item])
        result = deidentify(ds, OPTIONS).dataset
        if tag not in result or not result[tag].value:
            assert OUTCOMES[code] & {"removed", "empty"}
            return
        assert OUTCOMES[code] & {"dummy", "kept", "uid"}
        (kept,) = result[tag].value
        assert "Secret" not in str(kept)
        assert kept.ReferencedSOPInstanceUID == map_uid("1.2.3.4.5.6.7", KEY)
        return
    original = SAMPLES[vr]
    ds.add_new(tag, vr, original)
    result = deidentify(ds, OPTIONS).dataset
    assert _outcome(result, tag, original) in OUTCOMES[code]


def test_compound_codes_follow_the_iod() -> None:
    """CT Image: ContentDate (Z/D) is type 2 there, AcquisitionDateTime (X/Z/D) type 3."""
    ds = ct_slice()
    ds.ContentDate, ds.AcquisitionDateTime = "20240101", "20240101120000"
    out = deidentify(ds, OPTIONS).dataset
    assert out.ContentDate in (None, "") and "AcquisitionDateTime" not in out


def test_patient_pseudonym_and_method() -> None:
    ds = ct_slice()
    result = deidentify(ds, OPTIONS)
    out = result.dataset
    assert out.PatientName == out.PatientID != ds.PatientID
    assert out.PatientID == deidentify(ct_slice(2), OPTIONS).dataset.PatientID
    assert out.PatientIdentityRemoved == "YES"
    assert [item.CodeValue for item in out.DeidentificationMethodCodeSequence] == ["113100"]
    assert ds.PatientName == "Doe^Johnathan", "the input must not change"
    assert not result.burned_in_risk


def test_no_identifier_anywhere_in_the_output_bytes() -> None:
    ds = ct_slice()
    buffer = io.BytesIO()
    deidentify(ds, OPTIONS).dataset.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    for secret in (
        "Johnathan",
        "PID-8675309",
        "ACC-55501",
        "General Hospital",
        "SN-1234",
        "19700101",
        "Who^Doctor",
        ds.SOPInstanceUID,
        ds.StudyInstanceUID,
    ):
        assert secret.encode() not in data, secret


def test_nested_sequences_are_de_identified() -> None:
    ds = ct_slice()
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", "Chest"
    inner = Dataset()
    inner.PersonName, inner.PatientID = SECRET, "PID-8675309"
    inner.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    region.ContentSequence = [inner]
    ds.AnatomicRegionSequence = [region]
    request = Dataset()
    request.RequestedProcedureID = "RP-1"
    ds.RequestAttributesSequence = [request]
    out = deidentify(ds, OPTIONS).dataset
    assert "RequestAttributesSequence" not in out
    (kept,) = out.AnatomicRegionSequence
    assert kept.CodeValue == "T-D3000"
    (nested,) = kept.ContentSequence
    assert nested.PersonName != SECRET and nested.PatientID in (None, "", "ANONYMIZED")
    assert nested.ReferencedSOPInstanceUID == map_uid(ds.SOPInstanceUID, KEY)


def test_private_tags_removed_unless_kept() -> None:
    ds = ct_slice()
    block = ds.private_block(0x0009, "ACME SECRET", create=True)
    block.add_new(0x01, "LO", "Doe^Johnathan")
    assert not any(elem.tag.is_private for elem in deidentify(ds, OPTIONS).dataset)
    kept = deidentify(ds, DeidOptions(KEY, keep_private=True))
    assert any(elem.tag.is_private for elem in kept.dataset)
    assert any("private" in warning for warning in kept.warnings)


def test_curves_and_overlays_removed() -> None:
    ds = ct_slice()
    ds.add_new(0x60003000, "OW", b"\x00" * 8)
    ds.add_new(0x60004000, "LT", "overlay note")
    ds.add_new(0x60000010, "US", 8)
    ds.add_new(0x50000010, "US", 1)
    out = deidentify(ds, OPTIONS).dataset
    assert not {0x60000010, 0x60003000, 0x60004000, 0x50000010} & {int(elem.tag) for elem in out}


def test_uids_consistent_across_a_series_and_references_follow() -> None:
    first = ct_slice(1)
    second = ct_slice(2, first.StudyInstanceUID, first.SeriesInstanceUID)
    reference = Dataset()
    reference.ReferencedSOPClassUID = CT
    reference.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = [reference]
    a, b = deidentify(first, OPTIONS).dataset, deidentify(second, OPTIONS).dataset
    assert a.StudyInstanceUID == b.StudyInstanceUID != first.StudyInstanceUID
    assert a.SeriesInstanceUID == b.SeriesInstanceUID != first.SeriesInstanceUID
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPInstanceUID == a.SOPInstanceUID
    assert b.ReferencedImageSequence[0].ReferencedSOPClassUID == CT
    assert a.file_meta.MediaStorageSOPInstanceUID == a.SOPInstanceUID
    for uid in (a.StudyInstanceUID, a.SOPInstanceUID):
        assert uid.startswith("2.25.") and UID(uid).is_valid


@given(st.from_regex(r"[1-9][0-9]{0,5}(\.(0|[1-9][0-9]{0,8})){1,12}", fullmatch=True))
def test_mapped_uids_are_valid_and_stable(uid: str) -> None:
    mapped = map_uid(uid, KEY)
    assert UID(mapped).is_valid and mapped.startswith("2.25.") and len(mapped) <= 64
    assert mapped == map_uid(uid, KEY) != map_uid(uid, bytes(reversed(KEY)))


def test_standard_uids_are_not_mapped() -> None:
    assert map_uid(CT, KEY) == CT


def test_retain_uids_option() -> None:
    ds = ct_slice()
    out = deidentify(ds, DeidOptions(KEY, retain_uids=True)).dataset
    assert (out.StudyInstanceUID, out.SOPInstanceUID) == (ds.StudyInstanceUID, ds.SOPInstanceUID)
    codes = [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110"]


def test_different_keys_give_different_uids() -> None:
    ds = ct_slice()
    one = deidentify(ds, DeidOptions(KEY)).dataset
    two = deidentify(ds, DeidOptions(bytes(reversed(KEY)))).dataset
    assert one.StudyInstanceUID != two.StudyInstanceUID and one.PatientID != two.PatientID


def test_short_key_refused() -> None:
    with pytest.raises(ValueError):
        DeidOptions(b"short")


def test_clean_descriptors_option() -> None:
    ds = ct_slice()
    assert "StudyDescription" not in deidentify(ds, OPTIONS).dataset
    assert 0x00081030 in CLEAN_DESCRIPTORS
    out = deidentify(ds, DeidOptions(KEY, clean_descriptors=True)).dataset
    assert out.StudyDescription == "CT CHEST W CONTRAST"
    assert "113105" in [item.CodeValue for item in out.DeidentificationMethodCodeSequence]
    assert clean_text("Head 5mm Smith 20240101 MRN123456") == "Head 5mm"
    assert clean_text("(Chest) 123-45-6789 01/02/1970 1.25mm") == "Chest 1.25mm"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"BurnedInAnnotation": "YES"}, "BurnedInAnnotation"),
        ({"SOPClassUID": "1.2.840.10008.5.1.4.1.1.7"}, "Secondary Capture"),
        ({"Modality": "US"}, "modality US"),
        ({"ImageType": ["DERIVED", "SECONDARY"]}, "SECONDARY"),
    ],
)
def test_burned_in_risk_flagged(change: dict, reason: str) -> None:
    ds = ct_slice()
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    result = deidentify(ds, OPTIONS)
    assert result.burned_in_risk and reason in result.burned_in_reason
    assert result.dataset.BurnedInAnnotation == "YES"
    assert any("burned-in" in warning for warning in result.warnings)


def test_output_valid_as_input(tmp_path) -> None:
    ds = ct_slice()
    ds.save_as(tmp_path / "in.dcm", enforce_file_format=True)
    for options in (OPTIONS, DeidOptions(KEY, retain_uids=True, clean_descriptors=True)):
        deidentify(ds, options).dataset.save_as(tmp_path / "out.dcm", enforce_file_format=True)
        before, after = dciodvfy_errors(tmp_path / "in.dcm"), dciodvfy_errors(tmp_path / "out.dcm")
        assert len(after) <= len(before), after


def _tree(root):
    first = ct_slice(1)
    second = ct_slice(2, first.StudyInstanceUID, first.SeriesInstanceUID)
    (root / "series" / "deep").mkdir(parents=True)
    first.save_as(root / "series" / "a.dcm", enforce_file_format=True)
    second.save_as(root / "series" / "deep" / "b.dcm", enforce_file_format=True)
    (root / "series" / "notes.txt").write_text("not dicom")
    return first, second


def _deid(*args: str):
    result = CliRunner().invoke(cli, ["deid", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), "".join(
        traceback.format_exception(result.exception)
    )
    return result


def test_cli_mirrors_tree_and_reports(tmp_path) -> None:
    first, _ = _tree(tmp_path / "in")
    key = tmp_path / "keys" / "deid.key"
    result = _deid(str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key), "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    assert report["key_file"] == str(key) and report["key_created"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert [item["source"].endswith("notes.txt") for item in report["failed"]] == [True]
    outputs = sorted((tmp_path / "out").rglob("*.dcm"))
    assert [path.parent.relative_to(tmp_path / "out").as_posix() for path in outputs] in (
        ["series", "series/deep"],
        ["series/deep", "series"],
    )
    for path in outputs:
        ds = dcmread(path)
        assert path.name == f"{ds.SOPInstanceUID}.dcm"
        assert b"Johnathan" not in path.read_bytes()
    again = _deid(str(tmp_path / "in"), str(tmp_path / "again"), "--key-file", str(key), "--json")
    assert not json.loads(again.stdout)["key_created"]
    assert sorted(path.name for path in (tmp_path / "again").rglob("*.dcm")) == sorted(
        path.name for path in outputs
    )
    assert first.SOPInstanceUID not in {path.stem for path in outputs}


def test_cli_human_summary_and_retain_uids(tmp_path) -> None:
    first, second = _tree(tmp_path / "in")
    key = tmp_path / "deid.key"
    result = _deid(
        str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(key), "--retain-uids"
    )
    assert result.exit_code == 1
    assert "notes.txt" in result.output and "Traceback" not in result.output
    assert str(key) in result.output and "2 de-identified, 1 failed" in result.output
    names = {path.stem for path in (tmp_path / "out").rglob("*.dcm")}
    assert names == {first.SOPInstanceUID, second.SOPInstanceUID}


def test_cli_refuses_out_inside_in(tmp_path) -> None:
    _tree(tmp_path / "in")
    result = _deid(
        str(tmp_path / "in"), str(tmp_path / "in" / "out"), "--key-file", str(tmp_path / "k")
    )
    assert result.exit_code == 2 and "OUT" in result.output


def test_cli_reports_duplicate_instances(tmp_path) -> None:
    ds = ct_slice()
    (tmp_path / "in").mkdir()
    for name in ("a.dcm", "copy-of-a.dcm"):
        ds.save_as(tmp_path / "in" / name, enforce_file_format=True)
    result = _deid(
        str(tmp_path / "in"), str(tmp_path / "out"), "--key-file", str(tmp_path / "k"), "--json"
    )
    report = json.loads(result.stdout)
    assert result.exit_code == 1 and len(report["written"]) == 1
    assert "same SOP Instance UID" in report["failed"][0]["error"]
