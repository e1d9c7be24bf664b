"""Validation before trust, one module for the listener and `read`.

pydicom reads a truncated file without complaint and pads or guesses when decoding, so what
drives decoding (size, bit depth, frame count, transfer syntax) and what files an instance
(its UIDs) is checked here before anything is decoded, stored or sent on. `read` calls these
on files, the listener on what a C-STORE carried (`check_received`); both word a failure as a
`DicomInputError`, which the listener answers with a DIMSE status.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from edgeimg.dicom.attributes import DicomInputError, get_value, optional_int, required_int, short
from edgeimg.dicom.encapsulated import check_encapsulated

MAX_ROWS_COLUMNS = 16384
MAX_FRAMES = 10000
MAX_PIXEL_BYTES = 4 << 30
BITS_ALLOCATED = (1, 8, 16, 32, 64)
UID_KEYWORDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_TAGS = (0x7FE00001, 0x7FE00002, 0x7FE00008, 0x7FE00009, 0x7FE00010)
_PHOTOMETRIC_SAMPLES = {
    "MONOCHROME1": 1,
    "MONOCHROME2": 1,
    "PALETTE COLOR": 1,
    "RGB": 3,
    "YBR_FULL": 3,
    "YBR_FULL_422": 3,
    "YBR_ICT": 3,
    "YBR_RCT": 3,
}


@dataclass(frozen=True)
class PixelInfo:
    """The checked attributes that decoding one instance's pixel data depends on."""

    keyword: str
    transfer_syntax: UID
    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    signed: bool
    photometric: str


def check_dataset(ds: Dataset, name: str) -> None:
    """Validate a dataset received in memory (UIDs and pixel attributes) without decoding it."""
    check_pixels(ds, name)
    check_uids(ds, name)


def cut_element(ds: Dataset, name: str) -> DicomInputError | None:
    """The error for an element whose declared length runs past the end of the file, if any.

    pydicom hands back the bytes that were there, so a header claiming gigabytes (or a file cut
    inside the element) would otherwise pass as a short value. Called before anything converts
    the raw elements (their declared length is lost then); raised after the pixel checks, whose
    message says more when it is the pixel data that is short.
    """
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.value is None or raw.length == 0xFFFFFFFF:
            continue
        if len(raw.value) < raw.length:
            return DicomInputError(
                name,
                f"element {tag} declares {raw.length} bytes but the file ends after "
                f"{len(raw.value)} (truncated?)",
            )
    return None


def check_uids(ds: Dataset, name: str) -> None:
    """The UIDs that file an instance (study, series, instance) are each one valid UID."""
    for keyword in UID_KEYWORDS:
        problem = uid_problem(keyword, get_value(ds, keyword, name))
        if problem:
            raise DicomInputError(name, problem)


def uid_problem(keyword: str, value: Any) -> str | None:
    """Why `value` of `keyword` is not one valid UID, or None: the one test of a filing UID."""
    if value is None or value == "":
        return f"{keyword} is missing"
    if isinstance(value, MultiValue) or not isinstance(value, str):
        return f"{keyword} must be a single UID, got {short(value)}"
    if not UID(value).is_valid:
        return (
            f"{keyword} {short(value)} is not a valid UID "
            "(at most 64 characters, digits and dots only)"
        )
    return None


def check_received(ds: Dataset, sop_class: str, sop_uid: str) -> None:
    """Refuse a received dataset that contradicts its C-STORE command or its IOD.

    Raises `DicomInputError` (named by `sop_uid`) when the class or instance UID differs from
    the command, a filing UID is invalid, or the pixel attributes do not fit the pixel data.
    Any other exception means the dataset cannot be read at all. Reasons stay short: they go
    back to the sender as an Error Comment of at most 64 characters.
    """
    if str(ds.get("SOPClassUID", "")) != sop_class:
        raise DicomInputError(sop_uid, "SOP Class UID differs from the command")
    if str(ds.get("SOPInstanceUID", "")) != sop_uid:
        raise DicomInputError(sop_uid, "SOP Instance UID differs from the command")
    for keyword in UID_KEYWORDS:
        if uid_problem(keyword, ds.get(keyword)):
            raise DicomInputError(sop_uid, f"{keyword} is not a valid UID")
    if any(keyword in ds for keyword in PIXEL_KEYWORDS):
        check_pixels(ds, sop_uid)


def check_pixels(ds: Dataset, name: str) -> PixelInfo:
    """Check everything decoding depends on, so that a bad file fails here and not in a codec."""
    if len(ds) == 0:
        raise DicomInputError(name, "no data elements after the file meta header (truncated?)")
    present = [kw for kw in PIXEL_KEYWORDS if kw in ds]
    if not present:
        raise DicomInputError(name, "no pixel data (not an image, or the file is truncated)")
    if len(present) > 1:
        raise DicomInputError(name, f"more than one pixel data element: {', '.join(present)}")
    keyword = present[0]

    rows = required_int(ds, "Rows", name, 1, MAX_ROWS_COLUMNS)
    columns = required_int(ds, "Columns", name, 1, MAX_ROWS_COLUMNS)
    frames = optional_int(ds, "NumberOfFrames", name, 1, MAX_FRAMES)
    samples = required_int(ds, "SamplesPerPixel", name, 1, 3)
    if samples not in (1, 3):
        raise DicomInputError(name, f"SamplesPerPixel is {samples}, expected 1 or 3")
    bits_allocated = required_int(ds, "BitsAllocated", name, 1, 64)
    if bits_allocated not in BITS_ALLOCATED:
        raise DicomInputError(
            name, f"BitsAllocated is {bits_allocated}, expected one of {BITS_ALLOCATED}"
        )
    if keyword == "PixelData":
        bits_stored = required_int(ds, "BitsStored", name, 1, 64)
        if bits_stored > bits_allocated:
            raise DicomInputError(
                name, f"BitsStored ({bits_stored}) exceeds BitsAllocated ({bits_allocated})"
            )
        signed = required_int(ds, "PixelRepresentation", name, 0, 1) == 1
    else:
        expected_bits = 32 if keyword == "FloatPixelData" else 64
        if bits_allocated != expected_bits:
            raise DicomInputError(
                name, f"{keyword} needs BitsAllocated {expected_bits}, got {bits_allocated}"
            )
        bits_stored, signed = bits_allocated, True

    photometric = get_value(ds, "PhotometricInterpretation", name)
    if not isinstance(photometric, str) or not photometric:
        raise DicomInputError(name, "PhotometricInterpretation is missing")
    photometric = photometric.strip().upper()
    if photometric not in _PHOTOMETRIC_SAMPLES:
        raise DicomInputError(name, f"unsupported PhotometricInterpretation {short(photometric)}")
    if _PHOTOMETRIC_SAMPLES[photometric] != samples:
        raise DicomInputError(
            name, f"PhotometricInterpretation {photometric} with SamplesPerPixel {samples}"
        )
    if samples == 3:
        planar = optional_int(ds, "PlanarConfiguration", name, 0, 1, default=0)
        if planar not in (0, 1):
            raise DicomInputError(name, f"PlanarConfiguration is {planar}, expected 0 or 1")

    decoded_bytes = rows * columns * frames * samples * max(bits_allocated // 8, 1)
    if decoded_bytes > MAX_PIXEL_BYTES:
        raise DicomInputError(
            name,
            f"{frames} frame(s) of {rows}x{columns}x{samples} at {bits_allocated} bits would "
            f"need {decoded_bytes / 2**30:.1f} GiB, above the {MAX_PIXEL_BYTES >> 30} GiB limit",
        )

    info = PixelInfo(
        keyword=keyword,
        transfer_syntax=_transfer_syntax(ds, name, keyword),
        rows=rows,
        columns=columns,
        frames=frames,
        samples=samples,
        bits_allocated=bits_allocated,
        bits_stored=bits_stored,
        signed=signed,
        photometric=photometric,
    )
    value = get_value(ds, keyword, name)
    if not isinstance(value, bytes | bytearray) or not value:
        raise DicomInputError(name, f"{keyword} element is empty")
    if info.transfer_syntax.is_encapsulated:
        if keyword != "PixelData":
            raise DicomInputError(name, f"{keyword} cannot be compressed")
        check_encapsulated(ds, name, value, info)
    else:
        _check_native_length(name, value, info)
    return info


def _transfer_syntax(ds: Dataset, name: str, keyword: str) -> UID:
    """The file meta's Transfer Syntax UID, else the encoding the dataset was read with."""
    meta = getattr(ds, "file_meta", None)
    uid = get_value(meta, "TransferSyntaxUID", name) if meta is not None else None
    if uid:
        uid = UID(str(uid))
        if not uid.is_valid:
            raise DicomInputError(name, f"TransferSyntaxUID {short(str(uid))} is not a valid UID")
        if not uid.is_transfer_syntax:
            raise DicomInputError(name, f"unsupported transfer syntax {uid}")
        return uid
    if getattr(ds[keyword], "is_undefined_length", False):
        raise DicomInputError(
            name, "compressed pixel data but no TransferSyntaxUID says how it is compressed"
        )
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None or little is None:
        raise DicomInputError(name, "TransferSyntaxUID is missing and the encoding is unknown")
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _check_native_length(name: str, value: bytes, info: PixelInfo) -> None:
    """Native pixel data must be exactly as long as the attributes say.

    Allowed: the pad byte that makes an odd length even, and zero-filled trailing padding
    shorter than one frame (pydicom's MR_small_padded.dcm has 128 bytes of it). Anything else
    means truncation or a header that does not describe the data.
    """
    if info.bits_allocated == 1:
        frame_bits = info.rows * info.columns * info.samples
        expected = math.ceil(frame_bits * info.frames / 8)
        frame_bytes = math.ceil(frame_bits / 8)
    else:
        samples = 2 if info.photometric == "YBR_FULL_422" else info.samples
        frame_bytes = info.rows * info.columns * samples * info.bits_allocated // 8
        expected = frame_bytes * info.frames
    actual = len(value)
    if actual == expected or (expected % 2 and actual == expected + 1):
        return
    excess = actual - expected
    if 0 < excess < frame_bytes and not any(memoryview(value)[expected:]):
        return
    raise DicomInputError(
        name,
        f"pixel data is {actual} bytes, expected {expected} for {info.rows}x{info.columns}"
        f"x{info.frames} frame(s) of {info.bits_allocated} bits"
        + (f" with {info.samples} samples" if info.samples > 1 else "")
        + (" (file truncated?)" if actual < expected else ""),
    )
