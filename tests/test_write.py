"""DICOM result writers: valid (dciodvfy), readable (highdicom), referenced, deterministic."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dciodvfy import dciodvfy_errors
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.pixels import apply_modality_lut
from pydicom.sr.coding import Code
from pydicom.uid import (
    Comprehensive3DSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from edgeimg.dicom import write
from edgeimg.dicom.derived import write_derived
from edgeimg.dicom.library import SharedConcept
from edgeimg.dicom.seg import resample_mask, write_seg
from edgeimg.dicom.sr import write_sr
from edgeimg.dicom.uids import check_uid
from edgeimg.plugins import load_registry
from edgeimg.sdk.model import ModelSpec

ROWS = COLS = 64
MODEL = ModelSpec(
    name="lesion-test",
    version="1.2",
    task="classify",
    summary="test model",
    implementation="edgeimg_test:model",
)
ENGINE = "torch-cpu-fp32-0123abcd"


def ct_image(index: int, study: str, series: str, frame: str) -> Dataset:
    """One valid single-frame CT Image: a water-like square in air, 2.5 mm slices."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientName = "Test^Phantom"
    ds.PatientID = "EDGE-0001"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study
    ds.StudyDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.ContentTime = "120000"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "A1"
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series
    ds.SeriesNumber = 3
    ds.Laterality = ""
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = frame
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "Synthetic"
    ds.InstanceNumber = index + 1
    ds.AcquisitionNumber = 1
    ds.PatientOrientation = ""
    ds.PixelSpacing = [0.7, 0.7]
    ds.SliceThickness = 2.5
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-22.4, -22.4, -2.5 * index]
    ds.SliceLocation = -2.5 * index
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = ROWS, COLS
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    pixels = np.full((ROWS, COLS), 24, np.int16)
    pixels[16:48, 16:48] = 1024 + 10 * index
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.fixture
def sources() -> list[Dataset]:
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    return [ct_image(index, study, series, frame) for index in range(3)]


def findings(sources: list[Dataset]) -> list[dict]:
    first, second, third = (ds.SOPInstanceUID for ds in sources)
    return [
        {"sop_instance_uid": first, "probability": 0.93, "label": True},
        {"sop_instance_uid": second, "probability": 0.12, "label": False},
        {"level": "series", "probability": 0.71, "label": True},
        {"sop_instance_uid": third, "boxes": [[10, 12, 30, 40, 0.8], [40.5, 41, 50, 60, 0.35]]},
        {"sop_instance_uid": second, "boxes": []},
    ]


def masks() -> np.ndarray:
    small = np.zeros((3, 32, 32), np.uint8)
    small[1, 8:24, 8:24] = 1
    small[2, 10:12, 10:20] = 1
    return resample_mask(small, (ROWS, COLS))


def hu(sources: list[Dataset]) -> np.ndarray:
    return np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in sources]) * 0.9 + 0.3


Writer = Callable[..., list[Path]]
WRITERS: dict[str, Writer] = {
    "sr": lambda src, **kw: [write_sr(src, findings(src), **kw)],
    "seg": lambda src, **kw: [write_seg(src, masks(), **kw)],
    "derived": lambda src, **kw: write_derived(src, hu(src), **kw),
}
KINDS = sorted(WRITERS)


def run(kind: str, sources: list[Dataset], out_dir: Path, **changes) -> list[Path]:
    options = {"model": MODEL, "engine_key": ENGINE, "out_dir": out_dir, **changes}
    return WRITERS[kind](sources, **options)


def test_source_series_passes_dciodvfy(sources, tmp_path):
    path = tmp_path / "source.dcm"
    sources[0].save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


@pytest.mark.parametrize("kind", KINDS)
def test_output_passes_dciodvfy(kind, sources, tmp_path):
    for path in run(kind, sources, tmp_path):
        assert dciodvfy_errors(path) == [], path


@pytest.mark.parametrize("kind", KINDS)
def test_output_is_in_source_study_new_series_not_for_clinical_use(kind, sources, tmp_path):
    for path in run(kind, sources, tmp_path):
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == sources[0].StudyInstanceUID
        assert ds.SeriesInstanceUID != sources[0].SeriesInstanceUID
        assert "not for clinical use" in ds.SeriesDescription
        assert path.name == f"{ds.SOPInstanceUID}.dcm"


@pytest.mark.parametrize("kind", KINDS)
def test_clinical_model_output_drops_the_notice(kind, sources, tmp_path):
    clinical = dataclasses.replace(MODEL, clinical_use=True)
    for path in run(kind, sources, tmp_path, model=clinical):
        assert "clinical" not in pydicom.dcmread(path).SeriesDescription


@pytest.mark.parametrize("kind", KINDS)
def test_uids_are_deterministic_per_engine(kind, sources, tmp_path):
    def uids(out_dir: Path, engine_key: str = ENGINE) -> list[tuple[str, str]]:
        datasets = [pydicom.dcmread(p) for p in run(kind, sources, out_dir, engine_key=engine_key)]
        return [(ds.SeriesInstanceUID, ds.SOPInstanceUID) for ds in datasets]

    first = uids(tmp_path / "a")
    assert uids(tmp_path / "b") == first
    other = uids(tmp_path / "c", engine_key="onnxruntime-cuda-fp16-89ef")
    assert not {uid for pair in other for uid in pair} & {uid for pair in first for uid in pair}
    for series, instance in first:
        assert check_uid(series).startswith("2.25.") and check_uid(instance).startswith("2.25.")


@pytest.mark.parametrize("kind", KINDS)
def test_write_leaves_no_temp_files(kind, sources, tmp_path):
    paths = run(kind, sources, tmp_path)
    assert sorted(tmp_path.iterdir()) == sorted(paths)


def test_failed_write_leaves_nothing(sources, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(write, "write_part10", broken)
    with pytest.raises(OSError, match="disk full"):
        run("seg", sources, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_sr_reads_back_with_findings_and_references(sources, tmp_path):
    (path,) = run("sr", sources, tmp_path)
    sr = hd.sr.srread(path)
    assert sr.SOPClassUID == Comprehensive3DSRStorage
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    referenced = {item.ReferencedSOPInstanceUID for item in evidence.ReferencedSOPSequence}
    assert referenced == {ds.SOPInstanceUID for ds in sources}

    groups = sr.content.get_image_measurement_groups()
    assert [group.finding_type.value for group in groups] == ["52988006"] * 4
    probabilities = [[m.value for m in group.get_measurements()] for group in groups]
    assert probabilities == [[0.93], [0.12], [0.71], []]
    presence = [group.get_qualitative_evaluations()[0].value.meaning for group in groups]
    assert presence == ["Present", "Absent", "Present", "Absent"]
    image_refs = [[s.referenced_sop_instance_uid for s in g.source_images] for g in groups]
    assert image_refs[0] == [sources[0].SOPInstanceUID]
    assert image_refs[2] == [ds.SOPInstanceUID for ds in sources]

    boxes = sr.content.get_planar_roi_measurement_groups()
    assert [group.get_measurements()[0].value for group in boxes] == [0.8, 0.35]
    region = boxes[0].roi
    assert region.value.tolist() == [[10, 12], [30, 12], [30, 40], [10, 40], [10, 12]]
    (source,) = region.ContentSequence
    assert source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == sources[2].SOPInstanceUID


def test_sr_image_library_lists_only_referenced_images(sources, tmp_path):
    """A series finding resting on one slice names it; the library stays small, the evidence
    still lists every source."""
    first, _, third = (ds.SOPInstanceUID for ds in sources)
    named = [
        {"level": "series", "probability": 0.9, "label": True, "sop_instance_uids": [third]},
        {"sop_instance_uid": first, "probability": 0.8, "label": True},
    ]
    path = write_sr(sources, named, model=MODEL, engine_key=ENGINE, out_dir=tmp_path)
    sr = hd.sr.srread(path)
    (series_group, _) = sr.content.get_image_measurement_groups()
    assert [s.referenced_sop_instance_uid for s in series_group.source_images] == [third]
    library = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for container in sr.ContentSequence
        if container.ConceptNameCodeSequence[0].CodeValue == "111028"
        for group in container.ContentSequence
        for item in group.ContentSequence
        if item.ValueType == "IMAGE"
    ]
    assert library == [first, third]
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    assert len(evidence.ReferencedSOPSequence) == len(sources)
    assert dciodvfy_errors(path) == []


def test_sr_finding_naming_an_unknown_image_is_an_error(sources, tmp_path):
    unknown = [{"level": "series", "probability": 0.5, "sop_instance_uids": ["1.2"]}]
    with pytest.raises(ValueError, match="names no source image"):
        write_sr(sources, unknown, model=MODEL, engine_key=ENGINE, out_dir=tmp_path)


@pytest.mark.parametrize("change", ["absent", "empty"])
def test_sr_library_leaves_out_the_geometry_a_source_does_not_give(change, sources, tmp_path):
    """Image Library descriptors are optional (TID 1602): an entry keeps what its source says
    and the SR stays valid, where highdicom's own library fails on a missing or empty value."""
    flat = [ds.copy() for ds in sources]
    for keyword in ("PixelSpacing", "SliceThickness"):
        if change == "absent":
            delattr(flat[0], keyword)
        else:
            setattr(flat[0], keyword, None)
    finding = [{"sop_instance_uid": flat[0].SOPInstanceUID, "probability": 0.9, "label": True}]
    path = write_sr(flat, finding, model=MODEL, engine_key=ENGINE, out_dir=tmp_path)
    names = {item.ConceptNameCodeSequence[0].CodeMeaning for item in _described(path)}
    assert "Image Position (Patient) X" in names
    assert not names & {"Horizontal Pixel Spacing", "Slice Thickness"}
    assert dciodvfy_errors(path) == []
    hd.sr.srread(path)


def _library_groups(sr: pydicom.Dataset) -> list[pydicom.Dataset]:
    root = sr.ContentSequence
    library = next(i for i in root if i.ConceptNameCodeSequence[0].CodeMeaning == "Image Library")
    return list(library.ContentSequence)


def _described(path: Path) -> list[pydicom.Dataset]:
    """The descriptors that apply to the first library entry: its group's and its own."""
    (group,) = _library_groups(pydicom.dcmread(path))
    said = [item for item in group.ContentSequence if item.ValueType != "IMAGE"]
    entry = next(item for item in group.ContentSequence if item.ValueType == "IMAGE")
    return [*said, *entry.get("ContentSequence", [])]


def test_sr_library_says_once_on_the_group_what_its_entries_share(sources, tmp_path):
    """TID 1600 lets a group carry the descriptors common to its entries: a series' size,
    spacing, orientation and X, Y position; an entry keeps its own Z."""
    named = [{"sop_instance_uids": [ds.SOPInstanceUID for ds in sources], "probability": 0.9}]
    path = write_sr(sources, named, model=MODEL, engine_key=ENGINE, out_dir=tmp_path)
    (group,) = _library_groups(pydicom.dcmread(path))
    on_group = {
        item.ConceptNameCodeSequence[0].CodeMeaning
        for item in group.ContentSequence
        if item.ValueType != "IMAGE"
    }
    assert {
        "Image Position (Patient) X",
        "Image Position (Patient) Y",
        "Pixel Data Rows",
    } <= on_group
    entries = [item for item in group.ContentSequence if item.ValueType == "IMAGE"]
    own = [
        [
            (i.ConceptNameCodeSequence[0].CodeMeaning, i.MeasuredValueSequence[0].NumericValue)
            for i in entry.ContentSequence
        ]
        for entry in entries
    ]
    assert own == [[("Image Position (Patient) Z", -2.5 * index)] for index in range(3)]
    assert dciodvfy_errors(path) == []
    hd.sr.srread(path)


@pytest.mark.parametrize("kind", KINDS)
def test_sources_without_type2_patient_and_study_attributes_still_give_valid_outputs(
    kind, sources, tmp_path
):
    """A scanner may leave type 2 attributes out; the outputs carry them empty, and the
    caller's datasets are not changed."""
    bare = [ds.copy() for ds in sources]
    for ds in bare:
        del ds.PatientBirthDate, ds.ReferringPhysicianName, ds.AccessionNumber
    for path in run(kind, bare, tmp_path):
        assert dciodvfy_errors(path) == [], path
        assert pydicom.dcmread(path).PatientBirthDate == ""
    assert all("PatientBirthDate" not in ds for ds in bare)


def test_seg_reads_back_with_mask_lesion_code_and_references(sources, tmp_path):
    (path,) = run("seg", sources, tmp_path)
    seg = hd.seg.segread(path)
    assert seg.SegmentationType == "BINARY"
    (segment,) = seg.SegmentSequence
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    assert segment.SegmentAlgorithmType == "AUTOMATIC"
    assert segment.SegmentAlgorithmName == MODEL.name
    uids = [ds.SOPInstanceUID for ds in sources]
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(uids)
    pixels = seg.get_pixels_by_source_instance(uids, segment_numbers=[1])
    np.testing.assert_array_equal(pixels[..., 0], masks())


def test_seg_on_a_multiframe_source_references_its_frames(sources, tmp_path):
    enhanced = hd.legacy.LegacyConvertedEnhancedCTImage(
        sources,
        series_instance_uid=generate_uid(),
        series_number=4,
        sop_instance_uid=generate_uid(),
        instance_number=1,
    )
    path = write_seg([enhanced], masks(), model=MODEL, engine_key=ENGINE, out_dir=tmp_path)
    assert dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert {uid for _, _, uid in seg.get_source_image_uids()} == {enhanced.SOPInstanceUID}
    pixels = seg.get_pixels_by_source_frame(
        enhanced.SOPInstanceUID, source_frame_numbers=[1, 2, 3], segment_numbers=[1]
    )
    np.testing.assert_array_equal(pixels[..., 0], masks())


def test_derived_reads_back_with_hu_rescale_and_source_reference(sources, tmp_path):
    paths = run("derived", sources, tmp_path)
    for path, source, image in zip(paths, sources, hu(sources), strict=True):
        derived = hd.imread(path)
        assert derived.SOPClassUID == source.SOPClassUID
        assert list(derived.ImageType[:2]) == ["DERIVED", "SECONDARY"]
        assert (derived.RescaleSlope, derived.RescaleIntercept) == (1, -1024)
        assert derived.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert derived.ImagePositionPatient == source.ImagePositionPatient
        stored = pydicom.dcmread(path).pixel_array
        assert stored.dtype == np.int16
        np.testing.assert_allclose(apply_modality_lut(stored, derived), image, atol=0.5)


def test_resample_mask_is_nearest_neighbour():
    mask = np.array([[0, 1], [2, 3]], np.uint8)
    np.testing.assert_array_equal(resample_mask(mask, (4, 4)), mask.repeat(2, 0).repeat(2, 1))
    assert resample_mask(np.zeros((5, 7, 9), np.uint8), (3, 2)).shape == (5, 3, 2)


def test_inputs_that_do_not_fit_are_refused(sources, tmp_path):
    with pytest.raises(ValueError, match="resample_mask"):
        write_seg(
            sources,
            np.zeros((3, 32, 32), np.uint8),
            model=MODEL,
            engine_key=ENGINE,
            out_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="names no source image"):
        write_sr(
            sources,
            [{"sop_instance_uid": "1.2.3", "probability": 0.5}],
            model=MODEL,
            engine_key=ENGINE,
            out_dir=tmp_path,
        )
    with pytest.raises(ValueError, match="not a valid DICOM UID"):
        check_uid("../1.2")


@pytest.mark.parametrize(
    ("kind", "accepts"),
    [("sr", "slice-finding"), ("seg", "mask"), ("derived", "image"), ("json", "")],
)
def test_writers_are_registered(kind, accepts):
    from edgeimg.writers import builtin

    writer = load_registry().writer(kind)
    assert writer.load() is getattr(builtin, f"write_{kind}")
    assert (accepts in writer.accepts) if accepts else writer.accepts == ()


@pytest.mark.parametrize("kind", KINDS)
def test_japanese_studies_get_their_outputs(kind, sources, tmp_path):
    """`\\ISO 2022 IR 87` (an empty first value: the default repertoire) is legal and common in
    Japan; highdicom refuses the empty value, so the writers spell it out."""
    name = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    for ds in sources:
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = name
    for path in run(kind, sources, tmp_path):
        written = pydicom.dcmread(path)
        assert str(written.PatientName) == name
        assert dciodvfy_errors(path) == [], path


def test_a_shared_concept_hashes_and_compares_as_highdicom_s():
    shared = SharedConcept("260753009", "SCT", "Source")
    built = hd.sr.CodedConcept("260753009", "SCT", "Source")
    assert hash(shared) == hash(shared) == hash(built) and shared == built
    lookup = {built: "found"}
    assert lookup[shared] == "found"
    from_code = SharedConcept.from_code(Code("1", "UCUM", "no units"))
    assert isinstance(from_code, SharedConcept)
    assert from_code == hd.sr.CodedConcept("1", "UCUM", "no units")
