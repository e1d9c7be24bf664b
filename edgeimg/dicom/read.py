"""Read DICOM files defensively: validate before decoding, decode to float32 frames.

Files from scanners, PACS and the network are trusted as little as possible. pydicom reads a
truncated file without complaint and pads or guesses when decoding, so every attribute that
drives decoding (size, bit depth, frame count, transfer syntax) is checked first, and every
failure becomes a `DicomInputError` whose message names the file and says what is wrong.

Value conventions for `Image.frames` (float32):

* greyscale: the modality LUT is applied (Rescale Slope/Intercept, per frame for enhanced
  multi-frame objects, or a Modality LUT Sequence), so CT frames are in HU.
* MONOCHROME1 is flipped within the range its stored values can take (mapped through the
  modality LUT), ``v -> lo + hi - v``: higher is brighter for every image, values stay in the
  same range, and the header's Window Center/Width no longer apply to the flipped data.
* colour (RGB, YBR_* and PALETTE COLOR) becomes RGB with a trailing axis of 3, no rescaling.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

from edgeimg.errors import EdgeimgError
from edgeimg.privacy import scrub

__all__ = [
    "DicomInputError",
    "Geometry",
    "Image",
    "check_dataset",
    "decode",
    "geometry",
    "read_header",
    "read_image",
]

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
_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
_SOF_MARKERS = frozenset(
    (*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF, 0xF7)
)
_ALL_PLUGINS_FAILED = "Unable to decode as exceptions were raised by all available plugins:"


class DicomInputError(EdgeimgError):
    """A DICOM input that cannot be used; `str()` is ``"<file>: <reason>"``."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(name, reason)
        self.name = name
        self.reason = scrub(reason)  # values quoted from the file or a library: never in a log

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class Geometry:
    """Where the frames of one instance are in patient space (LPS, mm)."""

    positions: tuple[tuple[float, float, float] | None, ...]
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None


@dataclass
class Image:
    """One decoded instance.

    `frames` is (F, R, C) float32 for greyscale or (F, R, C, 3) for RGB (see the module
    docstring for value conventions); `photometric` describes `frames` ("MONOCHROME2" or
    "RGB"), the original value is in `header`. `header` is the dataset without pixel data.
    `position` is frame 0's Image Position (Patient); `frame_positions` has one entry per frame
    (from per-frame functional groups or Grid Frame Offset Vector, else None past frame 0).
    """

    path: str | None
    header: Dataset
    frames: np.ndarray
    photometric: str
    modality: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    series_uid: str | None
    study_uid: str | None
    position: tuple[float, float, float] | None
    frame_positions: tuple[tuple[float, float, float] | None, ...]
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    instance_number: int | None


@dataclass(frozen=True)
class _PixelInfo:
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


def read_header(path: str | os.PathLike[str]) -> Dataset:
    """Read everything but the pixel data and check the UIDs used to file the instance."""
    name = os.fspath(path)
    ds = _dcmread(path, name, header_only=True)
    cut = _cut_element(ds, name)
    _check_uids(ds, name)
    if cut is not None:
        raise cut
    return ds


def read_image(
    path_or_dataset: str | os.PathLike[str] | Dataset, *, require_uids: bool = True
) -> Image:
    """Validate and decode one file or in-memory dataset into an `Image`.

    `require_uids=False` accepts instances without valid Study/Series/SOP Instance UIDs
    (e.g. hand-made test files); anything that is stored or sent on needs them.
    """
    if isinstance(path_or_dataset, Dataset):
        ds = path_or_dataset
        path = getattr(ds, "filename", None)
        path = path if isinstance(path, str) else None
        name = path or _dataset_name(ds)
    else:
        path = name = os.fspath(path_or_dataset)
        ds = _dcmread(path_or_dataset, name, header_only=False)
    cut = _cut_element(ds, name)
    info = _check_pixels(ds, name)
    if require_uids:
        _check_uids(ds, name)
    if cut is not None:
        raise cut
    frames = _decode(ds, name, info)
    geo = geometry(ds)
    return Image(
        path=path,
        header=_without_pixels(ds),
        frames=frames,
        photometric="RGB" if frames.ndim == 4 else "MONOCHROME2",
        modality=_str_or_none(ds, "Modality", name),
        sop_class_uid=_str_or_none(ds, "SOPClassUID", name),
        sop_instance_uid=_str_or_none(ds, "SOPInstanceUID", name),
        series_uid=_str_or_none(ds, "SeriesInstanceUID", name),
        study_uid=_str_or_none(ds, "StudyInstanceUID", name),
        position=geo.positions[0] if geo.positions else None,
        frame_positions=geo.positions,
        orientation=geo.orientation,
        pixel_spacing=geo.pixel_spacing,
        instance_number=_int_or_none(ds, "InstanceNumber"),
    )


def check_dataset(ds: Dataset, name: str) -> None:
    """Validate a dataset received in memory (UIDs and pixel attributes) without decoding it."""
    _check_pixels(ds, name)
    _check_uids(ds, name)


def decode(ds: Dataset, name: str) -> np.ndarray:
    """Validate the pixel attributes of `ds` and return its frames as `Image.frames` would be."""
    return _decode(ds, name, _check_pixels(ds, name))


def geometry(ds: Dataset) -> Geometry:
    """Plane geometry from classic attributes or enhanced multi-frame functional groups.

    Malformed values (wrong count, not numbers, not finite) count as absent rather than
    failing, so that series assembly can report them instead of crashing.
    """
    frames = _int_or_none(ds, "NumberOfFrames") or 1
    frames = min(max(frames, 1), MAX_FRAMES)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _sequence(ds, "PerFrameFunctionalGroupsSequence")
    if len(per_frame) != frames:
        per_frame = []
    first = per_frame[0] if per_frame else None

    orientation = _functional(first, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
    orientation = _floats(orientation, 6) if orientation is not None else None
    if orientation is None:
        orientation = _floats(_get(ds, "ImageOrientationPatient"), 6)
    spacing = _functional(first, shared, "PixelMeasuresSequence", "PixelSpacing")
    spacing = _floats(spacing, 2) if spacing is not None else None
    if spacing is None:
        spacing = _floats(_get(ds, "PixelSpacing"), 2)

    positions: tuple = ()
    if per_frame:
        positions = tuple(
            _floats(_functional(item, shared, "PlanePositionSequence", "ImagePositionPatient"), 3)
            for item in per_frame
        )
    if not per_frame or (frames == 1 and positions[0] is None):
        positions = _classic_positions(ds, frames, orientation)
    return Geometry(positions=positions, orientation=orientation, pixel_spacing=spacing)


def _dcmread(path: str | os.PathLike[str], name: str, *, header_only: bool) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size is not None and size < 132:
            raise DicomInputError(name, f"not a DICOM file ({size} bytes, too short)") from None
        raise DicomInputError(
            name, "not a DICOM file (no 'DICM' prefix after the preamble)"
        ) from None
    except OSError as exc:
        raise DicomInputError(name, f"cannot read file: {exc.strerror or _clean(exc)}") from None
    except Exception as exc:
        raise DicomInputError(name, f"cannot parse DICOM: {_clean(exc)}") from None


def _cut_element(ds: Dataset, name: str) -> DicomInputError | None:
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


def _check_uids(ds: Dataset, name: str) -> None:
    for keyword in UID_KEYWORDS:
        value = _get(ds, keyword, name)
        if value is None or value == "":
            raise DicomInputError(name, f"{keyword} is missing")
        if isinstance(value, MultiValue) or not isinstance(value, str):
            raise DicomInputError(name, f"{keyword} must be a single UID, got {_short(value)}")
        if not UID(value).is_valid:
            raise DicomInputError(
                name,
                f"{keyword} {_short(value)} is not a valid UID "
                "(at most 64 characters, digits and dots only)",
            )


def _check_pixels(ds: Dataset, name: str) -> _PixelInfo:
    """Check everything decoding depends on, so that a bad file fails here and not in a codec."""
    if len(ds) == 0:
        raise DicomInputError(name, "no data elements after the file meta header (truncated?)")
    present = [kw for kw in PIXEL_KEYWORDS if kw in ds]
    if not present:
        raise DicomInputError(name, "no pixel data (not an image, or the file is truncated)")
    if len(present) > 1:
        raise DicomInputError(name, f"more than one pixel data element: {', '.join(present)}")
    keyword = present[0]

    rows = _required_int(ds, "Rows", name, 1, MAX_ROWS_COLUMNS)
    columns = _required_int(ds, "Columns", name, 1, MAX_ROWS_COLUMNS)
    frames = _optional_int(ds, "NumberOfFrames", name, 1, MAX_FRAMES)
    samples = _required_int(ds, "SamplesPerPixel", name, 1, 3)
    if samples not in (1, 3):
        raise DicomInputError(name, f"SamplesPerPixel is {samples}, expected 1 or 3")
    bits_allocated = _required_int(ds, "BitsAllocated", name, 1, 64)
    if bits_allocated not in BITS_ALLOCATED:
        raise DicomInputError(
            name, f"BitsAllocated is {bits_allocated}, expected one of {BITS_ALLOCATED}"
        )
    if keyword == "PixelData":
        bits_stored = _required_int(ds, "BitsStored", name, 1, 64)
        if bits_stored > bits_allocated:
            raise DicomInputError(
                name, f"BitsStored ({bits_stored}) exceeds BitsAllocated ({bits_allocated})"
            )
        signed = _required_int(ds, "PixelRepresentation", name, 0, 1) == 1
    else:
        expected_bits = 32 if keyword == "FloatPixelData" else 64
        if bits_allocated != expected_bits:
            raise DicomInputError(
                name, f"{keyword} needs BitsAllocated {expected_bits}, got {bits_allocated}"
            )
        bits_stored, signed = bits_allocated, True

    photometric = _get(ds, "PhotometricInterpretation", name)
    if not isinstance(photometric, str) or not photometric:
        raise DicomInputError(name, "PhotometricInterpretation is missing")
    photometric = photometric.strip().upper()
    if photometric not in _PHOTOMETRIC_SAMPLES:
        raise DicomInputError(name, f"unsupported PhotometricInterpretation {_short(photometric)}")
    if _PHOTOMETRIC_SAMPLES[photometric] != samples:
        raise DicomInputError(
            name, f"PhotometricInterpretation {photometric} with SamplesPerPixel {samples}"
        )
    if samples == 3:
        planar = _optional_int(ds, "PlanarConfiguration", name, 0, 1, default=0)
        if planar not in (0, 1):
            raise DicomInputError(name, f"PlanarConfiguration is {planar}, expected 0 or 1")

    decoded_bytes = rows * columns * frames * samples * max(bits_allocated // 8, 1)
    if decoded_bytes > MAX_PIXEL_BYTES:
        raise DicomInputError(
            name,
            f"{frames} frame(s) of {rows}x{columns}x{samples} at {bits_allocated} bits would "
            f"need {decoded_bytes / 2**30:.1f} GiB, above the {MAX_PIXEL_BYTES >> 30} GiB limit",
        )

    info = _PixelInfo(
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
    value = _get(ds, keyword, name)
    if not isinstance(value, bytes | bytearray) or not value:
        raise DicomInputError(name, f"{keyword} element is empty")
    if info.transfer_syntax.is_encapsulated:
        if keyword != "PixelData":
            raise DicomInputError(name, f"{keyword} cannot be compressed")
        _check_encapsulated(ds, name, value, info)
    else:
        _check_native_length(name, value, info)
    return info


def _transfer_syntax(ds: Dataset, name: str, keyword: str) -> UID:
    """The file meta's Transfer Syntax UID, else the encoding the dataset was read with."""
    meta = getattr(ds, "file_meta", None)
    uid = _get(meta, "TransferSyntaxUID", name) if meta is not None else None
    if uid:
        uid = UID(str(uid))
        if not uid.is_valid:
            raise DicomInputError(name, f"TransferSyntaxUID {_short(str(uid))} is not a valid UID")
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


def _check_native_length(name: str, value: bytes, info: _PixelInfo) -> None:
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


def _check_encapsulated(ds: Dataset, name: str, value: bytes, info: _PixelInfo) -> None:
    """Walk the item structure so that truncated or inconsistent fragments fail early."""
    items = _encapsulated_items(name, value)
    if not items:
        raise DicomInputError(name, "compressed pixel data has no Basic Offset Table item")
    (bot_start, bot_length), fragments = items[0], items[1:]
    if not fragments:
        raise DicomInputError(name, "compressed pixel data has no fragments")
    if len(fragments) < info.frames:
        raise DicomInputError(
            name,
            f"NumberOfFrames is {info.frames} but the compressed pixel data has only "
            f"{len(fragments)} fragment(s)",
        )
    if info.transfer_syntax == RLELossless and len(fragments) != info.frames:
        raise DicomInputError(
            name, f"RLE needs one fragment per frame: {info.frames} frame(s), {len(fragments)}"
        )
    if bot_length:
        if bot_length % 4 or bot_length // 4 != info.frames:
            raise DicomInputError(
                name,
                f"Basic Offset Table has {bot_length} bytes, expected 4 per frame for "
                f"{info.frames} frame(s)",
            )
        offsets = struct.unpack_from(f"<{info.frames}L", value, bot_start)
        span = fragments[-1][0] + fragments[-1][1] - fragments[0][0] + 8
        if offsets[0] != 0 or list(offsets) != sorted(offsets) or offsets[-1] >= span:
            raise DicomInputError(name, "Basic Offset Table offsets are inconsistent")
    start, length = fragments[0]
    size = _codestream_size(bytes(value[start : start + min(length, 65536)]))
    if size is not None and size != (info.rows, info.columns):
        raise DicomInputError(
            name,
            f"compressed frame is {size[0]}x{size[1]} but Rows/Columns say "
            f"{info.rows}x{info.columns}",
        )
    extended = ds.get("ExtendedOffsetTable")
    if extended is not None and len(extended) != 8 * info.frames:
        raise DicomInputError(
            name, f"Extended Offset Table has {len(extended)} bytes, expected {8 * info.frames}"
        )


def _encapsulated_items(name: str, value: bytes) -> list[tuple[int, int]]:
    """(start, length) of every item, checking that each lies inside the data."""
    items: list[tuple[int, int]] = []
    offset = 0
    while offset < len(value):
        if offset + 8 > len(value):
            raise DicomInputError(name, "compressed pixel data ends inside an item header")
        group, element, length = struct.unpack_from("<HHL", value, offset)
        if (group, element) == _SEQUENCE_DELIMITER:
            break
        if (group, element) != _ITEM:
            raise DicomInputError(
                name,
                f"unexpected tag ({group:04X},{element:04X}) at byte {offset} of the compressed "
                "pixel data",
            )
        if length == 0xFFFFFFFF:
            raise DicomInputError(name, "compressed pixel data item has undefined length")
        start = offset + 8
        if start + length > len(value):
            raise DicomInputError(
                name,
                f"compressed pixel data item {len(items)} declares {length} bytes but only "
                f"{len(value) - start} remain (file truncated?)",
            )
        items.append((start, length))
        offset = start + length
    return items


def _codestream_size(data: bytes) -> tuple[int, int] | None:
    """(rows, columns) from a JPEG, JPEG-LS or JPEG 2000 header; None when not recognised.

    Checked against Rows/Columns before decoding so that a codestream claiming a huge image
    is refused instead of being allocated.
    """
    if data.startswith(b"\xff\x4f\xff\x51") and len(data) >= 24:
        width, height, x_origin, y_origin = struct.unpack_from(">4L", data, 8)
        return height - y_origin, width - x_origin
    if not data.startswith(b"\xff\xd8"):
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:
            offset += 1
            continue
        if marker == 0xDA or marker == 0xD9:
            return None
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if marker in _SOF_MARKERS and offset + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return (height, width) if height else None
        offset += 2 + length
    return None


def _decode(ds: Dataset, name: str, info: _PixelInfo) -> np.ndarray:
    uid = info.transfer_syntax
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DicomInputError(name, f"unsupported transfer syntax {uid.name} ({uid})") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "no plugin available"
        raise DicomInputError(
            name, f"no decoder installed for transfer syntax {uid.name} ({uid}): {needs}"
        )
    try:
        arr, meta = decoder.as_array(ds, as_rgb=True)
    except Exception as exc:
        raise DicomInputError(name, f"cannot decode {uid.name} pixel data: {_clean(exc)}") from None

    color = info.samples == 3 or info.photometric == "PALETTE COLOR"
    expected = (info.frames, info.rows, info.columns) + (
        (info.samples,) if info.samples > 1 else ()
    )
    if arr.shape == expected[1:]:
        arr = arr[np.newaxis]
    if arr.shape != expected:
        raise DicomInputError(name, f"decoded shape {arr.shape} does not match header {expected}")

    if info.photometric == "PALETTE COLOR":
        try:
            return apply_color_lut(arr, ds).astype(np.float32)
        except Exception as exc:
            raise DicomInputError(name, f"cannot apply the palette: {_clean(exc)}") from None
    if color:
        decoded_as = str(meta.get("photometric_interpretation", info.photometric))
        if decoded_as in ("YBR_FULL", "YBR_FULL_422"):
            arr = convert_color_space(arr, decoded_as, "RGB")
        elif decoded_as != "RGB":
            raise DicomInputError(name, f"cannot convert {decoded_as} pixel data to RGB")
        return arr.astype(np.float32)
    return _modality(ds, name, arr, info)


def _modality(ds: Dataset, name: str, arr: np.ndarray, info: _PixelInfo) -> np.ndarray:
    """Apply the modality LUT per frame; flip MONOCHROME1 (see module docstring)."""
    if info.keyword == "PixelData":
        if info.signed:
            stored = np.array([-(2 ** (info.bits_stored - 1)), 2 ** (info.bits_stored - 1) - 1])
        else:
            stored = np.array([0, 2**info.bits_stored - 1])
    else:
        stored = np.array([np.nanmin(arr), np.nanmax(arr)]) if arr.size else np.zeros(2)

    rescale = _rescale_per_frame(ds, info.frames, name)
    try:
        if rescale is not None:
            slopes = np.array([s for s, _ in rescale], dtype=np.float32)
            intercepts = np.array([i for _, i in rescale], dtype=np.float32)
            out = arr.astype(np.float32)
            out *= slopes[:, None, None]
            out += intercepts[:, None, None]
            lo = np.minimum(slopes * stored[0], slopes * stored[1]) + intercepts
            hi = np.maximum(slopes * stored[0], slopes * stored[1]) + intercepts
        elif "ModalityLUTSequence" in ds and info.keyword == "PixelData":
            out = apply_modality_lut(arr, ds).astype(np.float32)
            ends = apply_modality_lut(stored, ds).astype(np.float32)
            lo = np.full(info.frames, ends.min(), np.float32)
            hi = np.full(info.frames, ends.max(), np.float32)
        else:
            out = arr.astype(np.float32)
            lo = np.full(info.frames, stored.min(), np.float32)
            hi = np.full(info.frames, stored.max(), np.float32)
    except Exception as exc:
        raise DicomInputError(name, f"cannot apply the modality LUT: {_clean(exc)}") from None
    if info.photometric == "MONOCHROME1":
        out = (lo + hi).astype(np.float32)[:, None, None] - out
    return out


def _rescale_per_frame(ds: Dataset, frames: int, name: str) -> list[tuple[float, float]] | None:
    """(slope, intercept) per frame, or None when no rescale applies (identity or a LUT).

    Empty values mean the identity; values that are not one number are refused, since a guess
    would shift every HU the model sees.
    """
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = _sequence(ds, "PerFrameFunctionalGroupsSequence")
    if len(per_frame) == frames:
        found = [_frame_rescale(item, shared, name) for item in per_frame]
        if any(f is not None for f in found):
            top = _rescale_of(ds, name) or (1.0, 0.0)
            return [f or top for f in found]
    elif shared is not None:
        item = _first_item(shared, "PixelValueTransformationSequence")
        found_shared = _rescale_of(item, name) if item is not None else None
        if found_shared is not None:
            return [found_shared] * frames
    top = _rescale_of(ds, name)
    return [top] * frames if top is not None else None


def _frame_rescale(item: Dataset, shared: Dataset | None, name: str) -> tuple[float, float] | None:
    for group in (item, shared):
        if group is None:
            continue
        transform = _first_item(group, "PixelValueTransformationSequence")
        if transform is not None and (found := _rescale_of(transform, name)) is not None:
            return found
    return None


def _rescale_of(ds: Dataset, name: str) -> tuple[float, float] | None:
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        return None
    return (
        _rescale_value(ds, "RescaleSlope", name, 1.0),
        _rescale_value(ds, "RescaleIntercept", name, 0.0),
    )


def _rescale_value(ds: Dataset, keyword: str, name: str, default: float) -> float:
    value = _get(ds, keyword, name)
    if value is None or value == "":
        return default
    number = _float_or_none(value)
    if number is None:
        raise DicomInputError(name, f"{keyword} {_short(value)} is not a single finite number")
    return number


def _classic_positions(
    ds: Dataset, frames: int, orientation: tuple[float, ...] | None
) -> tuple[tuple[float, float, float] | None, ...]:
    first = _floats(_get(ds, "ImagePositionPatient"), 3)
    rest: list[tuple[float, float, float] | None] = [None] * (frames - 1)
    offsets = _get(ds, "GridFrameOffsetVector")
    if first is not None and orientation is not None and frames > 1:
        values = _floats(offsets, frames)
        if values is not None:
            normal = np.cross(orientation[:3], orientation[3:])
            origin = np.array(first)
            rest = [_floats(origin + (off - values[0]) * normal, 3) for off in values[1:]]
    return (first, *rest)


def _functional(item: Dataset | None, shared: Dataset | None, sequence: str, keyword: str) -> Any:
    for group in (item, shared):
        if group is None:
            continue
        macro = _first_item(group, sequence)
        if macro is not None and keyword in macro:
            return _get(macro, keyword)
    return None


def _first_item(ds: Dataset | None, keyword: str) -> Dataset | None:
    items = _sequence(ds, keyword)
    return items[0] if items else None


def _sequence(ds: Dataset | None, keyword: str) -> Sequence[Dataset]:
    value = _get(ds, keyword) if ds is not None else None
    return value if isinstance(value, Sequence) and not isinstance(value, str | bytes) else []


def _without_pixels(ds: Dataset) -> Dataset:
    """A new dataset sharing every element but the pixel data (the caller's is not modified)."""
    header = Dataset({tag: elem for tag, elem in ds.items() if tag not in PIXEL_TAGS})
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is not None and little is not None:
        header.set_original_encoding(implicit, little, ds.original_character_set)
    if isinstance(getattr(ds, "filename", None), str):
        header.filename = ds.filename
    return header


def _get(ds: Dataset | None, keyword: str, name: str | None = None) -> Any:
    """Attribute value or None; a value pydicom cannot convert is an error only with `name`."""
    if ds is None:
        return None
    try:
        return ds.get(keyword)
    except Exception as exc:
        if name is None:
            return None
        raise DicomInputError(name, f"{keyword} cannot be read: {_clean(exc)}") from None


def _required_int(ds: Dataset, keyword: str, name: str, low: int, high: int) -> int:
    value = _get(ds, keyword, name)
    if value is None or value == "":
        raise DicomInputError(name, f"{keyword} is missing")
    return _bounded_int(value, keyword, name, low, high)


def _optional_int(
    ds: Dataset, keyword: str, name: str, low: int, high: int, default: int = 1
) -> int:
    value = _get(ds, keyword, name)
    if value is None or value == "":
        return default
    return _bounded_int(value, keyword, name, low, high)


def _bounded_int(value: Any, keyword: str, name: str, low: int, high: int) -> int:
    try:
        number = int(value)
        if number != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise DicomInputError(name, f"{keyword} {_short(value)} is not an integer") from None
    if not low <= number <= high:
        raise DicomInputError(name, f"{keyword} is {number}, outside {low}..{high}")
    return number


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    value = _get(ds, keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _str_or_none(ds: Dataset, keyword: str, name: str) -> str | None:
    value = _get(ds, keyword, name)
    return str(value) if value not in (None, "") else None


def _float_or_none(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _floats(value: Any, count: int) -> Any:
    """`count` finite floats as a tuple, or None."""
    if value is None or isinstance(value, str | bytes):
        return None
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        return None
    return numbers


def _dataset_name(ds: Dataset) -> str:
    uid = _get(ds, "SOPInstanceUID")
    if isinstance(uid, str) and UID(uid).is_valid:
        return f"<dataset {uid}>"
    return "<dataset>"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value if isinstance(value, str) else str(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean(exc: BaseException) -> str:
    """One line from a library exception, without the tracebacky multi-line layout."""
    text = str(exc).replace(_ALL_PLUGINS_FAILED, "")
    lines = [" ".join(line.split()) for line in text.splitlines()]
    text = "; ".join(line for line in lines if line) or type(exc).__name__
    return text if len(text) <= 400 else text[:397] + "..."
