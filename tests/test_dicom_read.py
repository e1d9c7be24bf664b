"""DICOM decoding and validation: pydicom's bundled test files plus small synthetic datasets.

Only files shipped inside the pydicom package are used (`download=False`), so this runs offline.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom import config
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    MPEG2MPML,
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
)

from edgeimg.dicom.geometry import geometry
from edgeimg.dicom.preprocess import resize, to_model_input, window
from edgeimg.dicom.read import DicomInputError, decode, read_header, read_image
from edgeimg.dicom.validate import check_dataset

ROOT = "1.2.826.0.1.3680043.8.498.77"
# pydicom warns about the broken files these tests feed it on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")


def bundled(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"{name} is not shipped with this pydicom")
    return str(path)


def ct_dataset(
    rows: int = 8,
    columns: int = 8,
    frames: int = 1,
    *,
    photometric: str = "MONOCHROME2",
    signed: bool = True,
    bits_stored: int = 12,
    **attrs: object,
) -> Dataset:
    """A tiny, valid, uncompressed CT image held in memory."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = f"{ROOT}.3.1"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = f"{ROOT}.3.1"
    ds.SeriesInstanceUID = f"{ROOT}.2"
    ds.StudyInstanceUID = f"{ROOT}.1"
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, 10.0]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [0.5, 0.5]
    ds.Rows, ds.Columns = rows, columns
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = int(signed)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    pixels = (np.arange(rows * columns * frames) % 2**bits_stored).astype(
        "<u2" if not signed else "<i2"
    )
    ds.PixelData = pixels.tobytes()
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def raises(match: str):
    return pytest.raises(DicomInputError, match=match)


# --- decoding matrix over pydicom's bundled files -------------------------------------------

GREY = [
    ("CT_small.dcm", (1, 128, 128)),
    ("MR_small.dcm", (1, 64, 64)),
    ("MR_small_implicit.dcm", (1, 64, 64)),
    ("MR_small_bigendian.dcm", (1, 64, 64)),
    ("MR_small_expb.dcm", (1, 64, 64)),
    ("MR_small_RLE.dcm", (1, 64, 64)),
    ("MR_small_jp2klossless.dcm", (1, 64, 64)),
    ("MR_small_jpeg_ls_lossless.dcm", (1, 64, 64)),
    ("MR_small_padded.dcm", (1, 64, 64)),
    ("693_J2KI.dcm", (1, 512, 512)),
    ("J2K_pixelrep_mismatch.dcm", (1, 512, 512)),
    ("JPEG2000.dcm", (1, 1024, 256)),
    ("JPGExtended.dcm", (1, 1024, 256)),
    ("JPEGLSNearLossless_08.dcm", (1, 45, 10)),
    ("JPEGLSNearLossless_16.dcm", (1, 50, 10)),
    ("image_dfl.dcm", (1, 512, 512)),
    ("examples_overlay.dcm", (1, 300, 484)),
    ("liver_1frame.dcm", (1, 512, 512)),
    ("liver_expb_1frame.dcm", (1, 512, 512)),
    ("rtdose.dcm", (15, 10, 10)),
    ("rtdose_1frame.dcm", (1, 10, 10)),
    ("rtdose_expb.dcm", (15, 10, 10)),
    ("rtdose_expb_1frame.dcm", (1, 10, 10)),
    ("rtdose_rle.dcm", (15, 10, 10)),
    ("rtdose_rle_1frame.dcm", (1, 10, 10)),
]
SC_RGB_100 = [
    "SC_rgb_rle.dcm",
    "SC_rgb_rle_16bit.dcm",
    "SC_rgb_rle_32bit.dcm",
    "SC_rgb_dcmtk_+eb+cr.dcm",
    "SC_rgb_dcmtk_+eb+cy+n1.dcm",
    "SC_rgb_dcmtk_+eb+cy+n2.dcm",
    "SC_rgb_dcmtk_+eb+cy+np.dcm",
    "SC_rgb_dcmtk_+eb+cy+s2.dcm",
    "SC_rgb_dcmtk_+eb+cy+s4.dcm",
    "SC_rgb_gdcm_KY.dcm",
    "SC_rgb_jls_lossy_line.dcm",
    "SC_rgb_jls_lossy_sample.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "SC_rgb_jpeg_lossy_gdcm.dcm",
    "SC_ybr_full_422_uncompressed.dcm",
]
COLOUR = [
    *[(name, (1, 100, 100, 3)) for name in SC_RGB_100],
    ("SC_rgb_rle_2frame.dcm", (2, 100, 100, 3)),
    ("SC_rgb_rle_16bit_2frame.dcm", (2, 100, 100, 3)),
    ("SC_rgb_rle_32bit_2frame.dcm", (2, 100, 100, 3)),
    ("SC_rgb_small_odd.dcm", (1, 3, 3, 3)),
    ("SC_rgb_small_odd_big_endian.dcm", (1, 3, 3, 3)),
    ("SC_rgb_small_odd_jpeg.dcm", (1, 3, 3, 3)),
    ("SC_rgb_jpeg.dcm", (1, 256, 256, 3)),
    ("SC_rgb_jpeg_dcmd.dcm", (1, 256, 256, 3)),
    ("SC_rgb_jpeg_app14_dcmd.dcm", (1, 256, 256, 3)),
    ("SC_jpeg_no_color_transform.dcm", (1, 256, 256, 3)),
    ("SC_jpeg_no_color_transform_2.dcm", (1, 256, 256, 3)),
    ("ExplVR_BigEnd.dcm", (1, 60, 80, 3)),
    ("GDCMJ2K_TextGBR.dcm", (1, 400, 400, 3)),
    ("examples_jpeg2k.dcm", (1, 480, 640, 3)),
    ("examples_rgb_color.dcm", (1, 240, 320, 3)),
    ("examples_ybr_color.dcm", (30, 240, 320, 3)),
    ("examples_palette.dcm", (1, 350, 800, 3)),
]
MR_LOSSLESS = [name for name, _ in GREY[2:9]]


@pytest.mark.parametrize(("name", "shape"), GREY + COLOUR, ids=[n for n, _ in GREY + COLOUR])
def test_decodes_to_expected_shape(name, shape):
    image = read_image(bundled(name), require_uids=False)
    assert image.frames.shape == shape
    assert image.frames.dtype == np.float32
    assert np.isfinite(image.frames).all()
    assert image.photometric == ("RGB" if len(shape) == 4 else "MONOCHROME2")
    assert "PixelData" not in image.header
    assert len(image.frame_positions) == shape[0]


@pytest.mark.parametrize("name", MR_LOSSLESS)
def test_lossless_mr_encodings_decode_identically(name):
    reference = read_image(bundled("MR_small.dcm"))
    image = read_image(bundled(name))
    np.testing.assert_array_equal(image.frames, reference.frames)
    assert image.position == reference.position == (-83.9063, -91.2, 6.6406)
    assert image.orientation == reference.orientation
    assert image.sop_instance_uid == reference.sop_instance_uid


@pytest.mark.parametrize("name", SC_RGB_100)
def test_colour_encodings_agree_with_lossless_rgb(name):
    reference = read_image(bundled("SC_rgb_rle.dcm")).frames
    frames = read_image(bundled(name), require_uids=False).frames
    scale = frames.max() / 255  # the 16 and 32 bit variants hold the same picture, scaled up
    assert np.abs(frames / scale - reference).mean() < 4  # lossy and chroma-subsampled ones
    np.testing.assert_allclose(frames[0, 5, 50] / scale, [255, 0, 0], atol=10)  # red band
    np.testing.assert_allclose(frames[0, 25, 50] / scale, [0, 255, 0], atol=10)  # green band


def test_ybr_jpeg_comes_out_as_rgb():
    frames = read_image(bundled("examples_ybr_color.dcm")).frames
    means = frames.reshape(-1, 3).mean(axis=0)
    # Mostly black ultrasound: in YBR the chroma channels would sit near 128.
    assert (means < 20).all()


def test_ct_is_in_hounsfield_units():
    path = bundled("CT_small.dcm")
    raw = pydicom.dcmread(path).pixel_array
    image = read_image(path)
    np.testing.assert_array_equal(image.frames[0], raw.astype(np.float32) - 1024)
    assert image.modality == "CT"
    assert image.pixel_spacing == pytest.approx((0.661468, 0.661468))
    assert image.instance_number == 1


def test_rtdose_encodings_agree_and_frames_follow_grid_offsets():
    images = [read_image(bundled(n)) for n in ("rtdose.dcm", "rtdose_rle.dcm", "rtdose_expb.dcm")]
    for other in images[1:]:
        np.testing.assert_array_equal(other.frames, images[0].frames)
    z = [p[2] for p in images[0].frame_positions]
    np.testing.assert_allclose(np.diff(z), 5.0)


def test_segmentation_bits_unpack_to_zero_and_one():
    frames = read_image(bundled("liver_1frame.dcm")).frames
    assert set(np.unique(frames)) == {0.0, 1.0}


def test_read_header_skips_pixels_and_keeps_uids():
    header = read_header(bundled("CT_small.dcm"))
    assert "PixelData" not in header
    assert UID(header.SOPInstanceUID).is_valid


# --- files that must be refused, with the reason ------------------------------------------


def test_truncated_mr_names_file_and_sizes():
    with raises("MR_truncated.dcm") as caught:
        read_image(bundled("MR_truncated.dcm"))
    message = str(caught.value)
    assert "pixel data is 8130 bytes, expected 8192 for 64x64x1 frame(s) of 16 bits" in message
    assert "\n" not in message and "Traceback" not in message


@pytest.mark.parametrize(
    "name",
    ["rtplan.dcm", "rtplan_truncated.dcm", "test-SR.dcm", "waveform_ecg.dcm", "reportsi.dcm"],
)
def test_objects_without_pixels(name):
    with raises(f"{name}: no pixel data"):
        read_image(bundled(name))


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("JPEG-lossy.dcm", "cannot decode JPEG Extended"),
        ("JPEG2000-embedded-sequence-delimiter.dcm", "compressed frame is 1024x3722445056"),
        ("badVR.dcm", "NumberOfFrames '1A' is not an integer"),
        ("no_meta.dcm", "not a DICOM file"),
    ],
)
def test_undecodable_files(name, reason):
    with raises(reason) as caught:
        read_image(bundled(name))
    assert str(caught.value).startswith(bundled(name))
    assert "\n" not in str(caught.value)


def test_missing_file_and_empty_file(tmp_path):
    with raises("nope.dcm: cannot read file"):
        read_image(tmp_path / "nope.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with raises("empty.dcm: not a DICOM file"):
        read_header(tmp_path / "empty.dcm")


def _cuts(data: bytes) -> dict[str, int]:
    pixel_tag = data.index(b"\xe0\x7f\x10\x00")
    delimiter = data.rfind(b"\xfe\xff\xdd\xe0")
    pixels_end = delimiter if delimiter > pixel_tag else len(data)
    return {
        "preamble": 64,
        "file-meta": 150,
        "mid-header": (200 + pixel_tag) // 2,
        "before-pixel-tag": pixel_tag,
        "inside-pixel-header": pixel_tag + 6,
        "first-pixels": pixel_tag + 20,
        "mid-pixels": (pixel_tag + len(data)) // 2,
        "last-pixel-byte": pixels_end - 1,
    }


@pytest.mark.parametrize("where", list(_cuts(b"\xe0\x7f\x10\x00" * 100)))
@pytest.mark.parametrize("source", ["synthetic", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_truncation_is_caught(tmp_path, source, where):
    if source == "synthetic":
        data = to_bytes(ct_dataset(rows=32, columns=32))
    else:
        data = Path(bundled(source)).read_bytes()
        data = data[: data.rindex(b"\xfe\xff\xdd\xe0") + 8]  # drop trailing non-pixel elements
    path = tmp_path / f"cut-{where}.dcm"
    path.write_bytes(data[: _cuts(data)[where]])
    with raises(f"cut-{where}.dcm: "):
        read_image(path)


def test_header_of_a_file_cut_in_its_pixels_still_reads(tmp_path):
    data = to_bytes(ct_dataset(rows=32, columns=32))
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[:-100])
    assert read_header(path).Rows == 32
    with raises("cut.dcm: pixel data is 1948 bytes, expected 2048"):
        read_image(path)


# --- validation of in-memory datasets -------------------------------------------------------


def test_synthetic_dataset_passes_and_is_not_modified():
    ds = ct_dataset()
    check_dataset(ds, "ok.dcm")
    image = read_image(ds)
    assert "PixelData" in ds and "PixelData" not in image.header
    assert image.frames[0, 0, 0] == -1024 and image.frames[0, 0, 5] == -1019
    np.testing.assert_array_equal(decode(ds, "ok.dcm"), image.frames)


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"BitsAllocated": 12}, "BitsAllocated is 12, expected one of"),
        ({"BitsAllocated": 32}, "pixel data is 128 bytes, expected 256"),
        ({"BitsAllocated": 8, "BitsStored": 8}, "pixel data is 128 bytes, expected 64"),
        ({"BitsStored": 17}, r"BitsStored \(17\) exceeds BitsAllocated \(16\)"),
        ({"Rows": 0}, r"Rows is 0, outside 1\.\.16384"),
        ({"Rows": 20000}, "Rows is 20000"),
        ({"Columns": 65535}, "Columns is 65535"),
        ({"NumberOfFrames": 0}, "NumberOfFrames is 0"),
        ({"NumberOfFrames": 10001}, "NumberOfFrames is 10001"),
        ({"Rows": 16384, "Columns": 16384, "NumberOfFrames": 9000}, "9000 frame.* GiB limit"),
        ({"Rows": 9}, "pixel data is 128 bytes, expected 144"),
        ({"SamplesPerPixel": 2}, "SamplesPerPixel is 2"),
        ({"SamplesPerPixel": 3}, "PhotometricInterpretation MONOCHROME2 with SamplesPerPixel 3"),
        ({"PhotometricInterpretation": "HSV"}, "unsupported PhotometricInterpretation 'HSV'"),
        ({"PixelRepresentation": 2}, "PixelRepresentation is 2"),
    ],
)
def test_tampered_attributes_are_refused(attrs, reason):
    ds = ct_dataset(**attrs)
    with raises(f"^tampered.dcm: {reason}"):
        check_dataset(ds, "tampered.dcm")


def test_missing_pixel_data_and_missing_rows():
    ds = ct_dataset()
    del ds.Rows
    with raises("x.dcm: Rows is missing"):
        decode(ds, "x.dcm")
    del ds.PixelData
    with raises("x.dcm: no pixel data"):
        check_dataset(ds, "x.dcm")


def test_odd_length_pad_byte_and_zero_padding_allowed_but_not_junk():
    ds = ct_dataset(rows=3, columns=3, BitsAllocated=8, BitsStored=8, HighBit=7)
    ds.PixelRepresentation = 0
    for payload in (bytes(range(9)), bytes(range(9)) + b"\x07", bytes(range(9)) + b"\0\0"):
        ds.PixelData = payload
        assert decode(ds, "odd.dcm").shape == (1, 3, 3)
    ds.PixelData = bytes(range(9)) + b"\x01\x02"
    with raises("odd.dcm: pixel data is 11 bytes, expected 9"):
        decode(ds, "odd.dcm")
    padded = pydicom.dcmread(bundled("MR_small.dcm"))
    padded.PixelData += b"\x01" * 128
    with raises("MR: pixel data is 8320 bytes, expected 8192"):
        decode(padded, "MR")


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("SOPInstanceUID", "1.2.../../x"),
        ("SOPInstanceUID", "1.2.3;rm -rf"),
        ("SeriesInstanceUID", "../etc/passwd"),
        ("StudyInstanceUID", "1.2.03"),
        ("StudyInstanceUID", "1." + "2" * 63),
        ("SeriesInstanceUID", "1.2.3 $(reboot)"),
        ("SOPInstanceUID", ""),
    ],
)
def test_invalid_uids_are_refused(keyword, value):
    ds = ct_dataset()
    setattr(ds, keyword, value)
    with raises(f"bad.dcm: {keyword} .*(not a valid UID|missing)"):
        check_dataset(ds, "bad.dcm")


def test_read_header_refuses_invalid_uid_on_disk(tmp_path, monkeypatch):
    monkeypatch.setattr(config.settings, "writing_validation_mode", config.IGNORE)
    ds = ct_dataset(SOPInstanceUID="1.2.3;rm -rf /")
    path = tmp_path / "evil.dcm"
    ds.save_as(path, enforce_file_format=True)
    with raises("evil.dcm: SOPInstanceUID '1.2.3;rm -rf /' is not a valid UID"):
        read_header(path)
    ds.SOPInstanceUID = f"{ROOT}.3.9"
    del ds.StudyInstanceUID
    ds.save_as(path, enforce_file_format=True)
    with raises("evil.dcm: StudyInstanceUID is missing"):
        read_image(path)
    assert read_image(path, require_uids=False).frames.shape == (1, 8, 8)


def test_error_is_picklable_and_structured():
    error = DicomInputError("a.dcm", "no pixel data")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.name, copy.reason, str(copy)) == ("a.dcm", "no pixel data", "a.dcm: no pixel data")


# --- encapsulated pixel data ----------------------------------------------------------------


def test_rle_frame_count_must_match_fragments():
    ds = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    ds.NumberOfFrames = 3
    with raises("NumberOfFrames is 3 but the compressed pixel data has only 1 fragment"):
        check_dataset(ds, "rle.dcm")


def test_truncated_fragment_in_memory():
    ds = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    ds.PixelData = ds.PixelData[:-500]
    with raises("rle.dcm: compressed pixel data item 1 declares .* bytes but only"):
        check_dataset(ds, "rle.dcm")


def test_garbage_in_encapsulation():
    ds = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    data = bytearray(ds.PixelData)
    data[12:16] = b"\x10\x00\x10\x00"
    ds.PixelData = bytes(data)
    with raises(r"unexpected tag \(0010,0010\) at byte 12"):
        check_dataset(ds, "rle.dcm")


def test_basic_offset_table_must_match_frames():
    ds = pydicom.dcmread(bundled("examples_ybr_color.dcm"))
    ds.NumberOfFrames = 29
    with raises("Basic Offset Table has 120 bytes, expected 4 per frame for 29 frame"):
        check_dataset(ds, "us.dcm")


def test_codestream_size_must_match_rows_and_columns():
    ds = pydicom.dcmread(bundled("JPGExtended.dcm"))
    ds.Rows = 512
    with raises("compressed frame is 1024x256 but Rows/Columns say 512x256"):
        decode(ds, "jpg.dcm")


def test_unsupported_transfer_syntax():
    ds = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    with raises(r"rle.dcm: unsupported transfer syntax MPEG2 Main Profile / Main Level \("):
        decode(ds, "rle.dcm")


def test_missing_decoder_names_transfer_syntax(monkeypatch):
    class Unavailable:
        is_available = False
        missing_dependencies = ["pylibjpeg - requires pylibjpeg-openjpeg"]

    monkeypatch.setattr("edgeimg.dicom.pixels.get_decoder", lambda uid: Unavailable())
    with raises("no decoder installed for transfer syntax JPEG 2000 Image Compression .*openjpeg"):
        decode(pydicom.dcmread(bundled("MR_small_jp2klossless.dcm")), "j2k.dcm")


def test_missing_transfer_syntax_falls_back_to_read_encoding():
    ds = pydicom.dcmread(bundled("MR_small_bigendian.dcm"))
    del ds.file_meta.TransferSyntaxUID
    reference = read_image(bundled("MR_small.dcm")).frames
    np.testing.assert_array_equal(decode(ds, "mr.dcm"), reference)
    compressed = pydicom.dcmread(bundled("MR_small_RLE.dcm"))
    del compressed.file_meta.TransferSyntaxUID
    with raises("no TransferSyntaxUID says how it is compressed"):
        decode(compressed, "rle.dcm")


# --- value conventions ----------------------------------------------------------------------


def test_monochrome1_is_flipped_within_its_range():
    plain = read_image(ct_dataset(signed=False)).frames
    inverted = read_image(ct_dataset(signed=False, photometric="MONOCHROME1")).frames
    low, high = 0 - 1024, 4095 - 1024
    np.testing.assert_array_equal(inverted, low + high - plain)
    assert inverted[0, 0, 0] == high  # stored 0 is white in MONOCHROME1


def test_modality_lut_sequence():
    ds = ct_dataset(signed=False)
    del ds.RescaleSlope, ds.RescaleIntercept
    item = Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.ModalityLUTType = "US"
    item.LUTData = [2 * i for i in range(4096)]
    ds.ModalityLUTSequence = Sequence([item])
    frames = read_image(ds).frames
    assert frames[0, 0, 7] == 14


def test_float_pixel_data():
    ds = ct_dataset(rows=2, columns=3)
    del ds.PixelData, ds.BitsStored, ds.HighBit, ds.PixelRepresentation
    del ds.RescaleSlope, ds.RescaleIntercept
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.linspace(-1, 1, 6, dtype="<f4").tobytes()
    np.testing.assert_allclose(read_image(ds).frames.ravel(), np.linspace(-1, 1, 6))


def enhanced_ct(per_frame_rescale: bool) -> Dataset:
    frames = 3
    ds = ct_dataset(frames=frames, SOPClassUID=EnhancedCTImageStorage)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(ds, keyword)
    del ds.RescaleSlope, ds.RescaleIntercept
    shared = Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing = [0.7, 0.8]
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
    if not per_frame_rescale:
        shared.PixelValueTransformationSequence = [_transform(1, -1024)]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for index in range(frames):
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0, 5.0 * index, 0]
        if per_frame_rescale:
            item.PixelValueTransformationSequence = [_transform(index + 1, -1000 * index)]
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    return ds


def _transform(slope: float, intercept: float) -> Dataset:
    item = Dataset()
    item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "HU"
    return item


def test_enhanced_multiframe_per_frame_rescale_and_geometry():
    ds = enhanced_ct(per_frame_rescale=True)
    raw = np.frombuffer(ds.PixelData, "<i2").reshape(3, 8, 8).astype(np.float32)
    image = read_image(ds)
    for index in range(3):
        np.testing.assert_array_equal(image.frames[index], raw[index] * (index + 1) - 1000 * index)
    assert image.frame_positions == ((0, 0, 0), (0, 5, 0), (0, 10, 0))
    assert image.position == (0, 0, 0)
    assert image.orientation == (1, 0, 0, 0, 0, -1)
    assert image.pixel_spacing == (0.7, 0.8)
    assert geometry(ds).positions == image.frame_positions


def test_enhanced_multiframe_shared_rescale():
    ds = enhanced_ct(per_frame_rescale=False)
    raw = np.frombuffer(ds.PixelData, "<i2").reshape(3, 8, 8).astype(np.float32)
    np.testing.assert_array_equal(read_image(ds).frames, raw - 1024)


# --- preprocessing --------------------------------------------------------------------------


def test_window_maps_to_unit_range():
    hu = np.array([-1000, -160, 40, 240, 3000], dtype=np.float32)
    out = window(hu, 40, 400)
    np.testing.assert_allclose(out, [0, 0, 0.5, 1, 1])
    assert out.dtype == np.float32
    with pytest.raises(ValueError):
        window(hu, 40, 0)


def test_resize_block_average_for_integer_factors():
    img = np.random.default_rng(0).random((2, 512, 512), dtype=np.float32)
    out = resize(img, (128, 128))
    assert out.shape == (2, 128, 128) and out.dtype == np.float32
    np.testing.assert_allclose(out[1, 3, 5], img[1, 12:16, 20:24].mean(), rtol=1e-5)


def test_resize_bilinear_keeps_linear_ramps_and_constants():
    ramp = np.tile(np.arange(10, dtype=np.float32), (6, 1))
    out = resize(ramp, (4, 15))
    assert out.shape == (4, 15)
    inner = out[:, 1:-1]
    np.testing.assert_allclose(np.diff(inner, axis=1), 10 / 15, rtol=1e-5)
    np.testing.assert_allclose(resize(np.full((7, 9), 3.0), (5, 4)), 3.0)


def test_resize_bilinear_matches_torch():
    torch = pytest.importorskip("torch")
    img = np.random.default_rng(1).random((3, 50, 70), dtype=np.float32)
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(img)[None], size=(33, 101), mode="bilinear", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(resize(img, (33, 101)), expected, atol=1e-4)


def test_model_input_grey_windows_and_channels():
    image = read_image(bundled("CT_small.dcm"))
    single = to_model_input(image, size=64, window=(40, 400), channels=1)
    assert single.shape == (1, 1, 64, 64) and single.dtype == np.float32
    np.testing.assert_allclose(single[0, 0], resize(window(image.frames[0], 40, 400), (64, 64)))
    repeated = to_model_input(image, size=(32, 48), window=(40, 400), channels=3)
    assert repeated.shape == (1, 3, 32, 48)
    np.testing.assert_array_equal(repeated[:, 0], repeated[:, 2])
    windows = [(40, 80), (40, 400), (500, 2000)]
    multi = to_model_input(image, size=None, window=windows, channels=3)
    for channel, (center, width) in enumerate(windows):
        np.testing.assert_allclose(multi[0, channel], window(image.frames[0], center, width))
    auto = to_model_input(image, channels=1)
    assert auto.min() == 0 and auto.max() == 1
    with pytest.raises(ValueError):
        to_model_input(image, window=windows, channels=1)
    with pytest.raises(ValueError):
        to_model_input(image, channels=2)


def test_model_input_rgb():
    image = read_image(bundled("SC_rgb_rle_2frame.dcm"))
    rgb = to_model_input(image, size=50, channels=3)
    assert rgb.shape == (2, 3, 50, 50)
    np.testing.assert_allclose(rgb[0, :, 2, 25], [1, 0, 0])  # red band, scaled by 255
    grey = to_model_input(image, size=50, channels=1)
    assert grey.shape == (2, 1, 50, 50)
    assert grey[0, 0, 2, 25] == pytest.approx(0.299)
