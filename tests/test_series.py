"""Series assembly from headers: ordering along the slice normal and the issues it reports."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from edgeimg.dicom.read import read_header, read_image
from edgeimg.dicom.series import group_series

ROOT = "1.2.826.0.1.3680043.8.498.78"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def header(
    number: int,
    position: tuple[float, float, float] | None,
    *,
    orientation: tuple[float, ...] | None = AXIAL,
    series: int = 1,
    size: tuple[int, int] = (4, 4),
    spacing: tuple[float, float] = (0.5, 0.5),
    sop: str | None = None,
) -> Dataset:
    """A CT slice header; with_pixels() turns it into a decodable image."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop or f"{ROOT}.{series}.{number}"
    ds.SeriesInstanceUID = f"{ROOT}.{series}"
    ds.StudyInstanceUID = ROOT
    ds.SeriesNumber = series
    ds.Modality = "CT"
    ds.InstanceNumber = number
    if position is not None:
        ds.ImagePositionPatient = [round(v, 6) for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [round(v, 8) for v in orientation]
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = size
    return ds


def with_pixels(ds: Dataset) -> Dataset:
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.full(ds.Rows * ds.Columns, ds.InstanceNumber, "<i2").tobytes()
    return ds


def axial_stack(count: int, step: float = 2.5, start: float = -100.0) -> list[Dataset]:
    return [header(i + 1, (10.0, -20.0, start + i * step)) for i in range(count)]


def shuffled(items: list, seed: int = 7) -> list:
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


def numbers(series) -> list[int]:
    return [int(ds.InstanceNumber) for ds in series.instances]


def only(items):
    assert len(items) == 1
    return items[0]


def test_shuffled_axial_stack_is_ordered_and_complete():
    series = only(group_series(shuffled(axial_stack(12))))
    assert numbers(series) == list(range(1, 13))
    np.testing.assert_allclose(series.slice_positions, [-100 + 2.5 * i for i in range(12)])
    assert series.slice_spacing == pytest.approx(2.5)
    assert series.issues == [] and series.complete
    assert (series.uid, series.study_uid, series.modality) == (f"{ROOT}.1", ROOT, "CT")


def test_feet_first_orders_by_position_not_instance_number():
    stack = [header(i + 1, (0.0, 0.0, -3.0 * i)) for i in range(6)]
    series = only(group_series(shuffled(stack)))
    assert numbers(series) == [6, 5, 4, 3, 2, 1]
    assert series.complete


def rotation(seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return q * np.sign(np.linalg.det(q))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_oblique_stack_orders_along_its_normal(seed):
    matrix = rotation(seed)
    row, col = matrix[:, 0], matrix[:, 1]
    normal = np.cross(row, col)
    origin = np.array([-120.0, 35.0, 80.0])
    rng = np.random.default_rng(seed)
    stack = []
    for index in range(10):
        shift = rng.normal(scale=5.0, size=2)  # in-plane offsets must not affect the order
        position = origin + 1.25 * index * normal + shift[0] * row + shift[1] * col
        stack.append(header(index + 1, tuple(position), orientation=(*row, *col)))
    series = only(group_series(shuffled(stack, seed)))
    assert numbers(series) == list(range(1, 11))
    assert series.slice_spacing == pytest.approx(1.25, abs=1e-4)
    assert series.complete, series.issues


def test_gantry_tilt_orders_and_detects_gaps():
    tilt = math.radians(20)
    orientation = (1.0, 0.0, 0.0, 0.0, math.cos(tilt), math.sin(tilt))
    # The table moves along z; the tilted planes are sheared, not stacked along their normal.
    stack = [header(i + 1, (0.0, 0.0, 3.0 * i), orientation=orientation) for i in range(15)]
    series = only(group_series(shuffled(stack)))
    assert numbers(series) == list(range(1, 16))
    assert series.slice_spacing == pytest.approx(3.0 * math.cos(tilt), abs=1e-4)
    assert series.complete
    gapped = only(group_series(shuffled(stack[:6] + stack[8:])))
    assert not gapped.complete
    assert any("about 2 slice(s) missing between instance 6" in i for i in gapped.issues)


def test_gap_reports_how_many_and_where():
    stack = axial_stack(20)
    del stack[6:9]  # instances 7, 8, 9
    series = only(group_series(shuffled(stack)))
    assert not series.complete
    [issue] = series.issues
    assert issue.startswith("gap: about 3 slice(s) missing between instance 6 (-87.50 mm)")
    assert "instance 10 (-77.50 mm)" in issue and "usual 2.50 mm" in issue


def test_duplicate_sop_instance_is_dropped_and_reported():
    stack = axial_stack(5)
    resent = header(3, (10.0, -20.0, -95.0))
    series = only(group_series(shuffled([*stack, resent])))
    assert numbers(series) == [1, 2, 3, 4, 5]
    assert series.complete
    [issue] = series.issues
    assert issue.startswith("duplicates: 1 extra copy(ies) of 1 SOP Instance UID(s) dropped")
    assert f"{ROOT}.1.3" in issue


def test_two_slices_at_one_position_are_reported():
    stack = axial_stack(5)
    stack.append(header(6, (10.0, -20.0, -95.0), sop=f"{ROOT}.9.9"))
    series = only(group_series(shuffled(stack)))
    assert len(series.instances) == 6 and not series.complete
    assert any(
        "1 pair(s) of slices share a position: instance 3 and instance 6" in i
        for i in series.issues
    )


def test_mixed_geometry_is_reported():
    stack = axial_stack(8)
    stack[2] = header(3, (10.0, -20.0, -95.0), size=(8, 8))
    stack[4] = header(5, (10.0, -20.0, -90.0), spacing=(0.7, 0.7))
    stack.append(header(9, (0.0, 0.0, 0.0), orientation=(0, 1, 0, 0, 0, -1)))  # localizer
    series = only(group_series(shuffled(stack)))
    assert not series.complete
    text = "\n".join(series.issues)
    assert "mixed geometry: image sizes 4x4 (n=8), 8x8 (n=1)" in text
    assert "1 of 9 instance(s) have a different ImageOrientationPatient (instance 9)" in text
    assert "1 instance(s) have a different PixelSpacing (instance 5); most have 0.5x0.5 mm" in text
    assert numbers(series) == list(range(1, 10))  # the localizer sits at z=0, above the stack


def test_missing_position_falls_back_to_instance_number():
    stack = axial_stack(5)
    stack[1] = header(2, None)
    series = only(group_series(shuffled(stack)))
    assert numbers(series) == [1, 2, 3, 4, 5]
    assert series.slice_positions is None and not series.complete
    assert series.issues == [
        "missing position: 1 of 5 instance(s) have no usable "
        "ImagePositionPatient/ImageOrientationPatient; ordered by InstanceNumber"
    ]


def test_no_position_and_no_instance_number_falls_back_to_file_name():
    stack = []
    for index, name in enumerate(["c.dcm", "a.dcm", "b.dcm"]):
        ds = header(index + 1, None, orientation=None)
        del ds.InstanceNumber
        ds.filename = f"/spool/{name}"
        stack.append(ds)
    series = only(group_series(stack))
    assert [ds.filename for ds in series.instances] == [
        "/spool/a.dcm",
        "/spool/b.dcm",
        "/spool/c.dcm",
    ]
    assert "ordered by file name" in series.issues[0]


def test_single_instance_without_position_is_complete():
    series = only(group_series([header(1, None, orientation=None)]))
    assert series.complete and series.issues == [] and series.slice_positions is None


def test_interleaved_series_are_grouped_and_sorted():
    first = axial_stack(4)
    second = [header(i + 1, (0.0, 0.0, 5.0 * i), series=2) for i in range(3)]
    result = group_series(shuffled(second + first))
    assert [s.uid for s in result] == [f"{ROOT}.1", f"{ROOT}.2"]
    assert [len(s.instances) for s in result] == [4, 3]
    assert all(s.complete for s in result)


def test_files_headers_and_images_give_the_same_order(tmp_path):
    paths = []
    for ds in shuffled(axial_stack(6)):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        with_pixels(ds).save_as(path, enforce_file_format=True)
        paths.append(path)
    from_headers = only(group_series(read_header(p) for p in paths))
    from_images = only(group_series(read_image(p) for p in paths))
    assert numbers(from_headers) == list(range(1, 7))
    assert [int(i.frames[0, 0, 0]) + 1024 for i in from_images.instances] == list(range(1, 7))
    assert from_images.slice_positions == from_headers.slice_positions
    assert from_images.complete and from_headers.complete


def test_enhanced_multiframe_header_uses_first_frame_position():
    ds = header(1, None, orientation=None)
    del ds.PixelSpacing
    shared = Dataset()
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(AXIAL)
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for z in (4.0, 6.0):
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, z]
        frames.append(item)
    ds.NumberOfFrames = 2
    ds.PerFrameFunctionalGroupsSequence = frames
    series = only(group_series([ds]))
    assert series.slice_positions == [4.0] and series.complete


def test_rejects_other_objects():
    with pytest.raises(TypeError):
        group_series(["not a dataset"])  # type: ignore[list-item]
