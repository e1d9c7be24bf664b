"""Encapsulated (compressed) pixel data checked before a codec sees it.

The item structure is walked so that truncated or inconsistent fragments fail with a clear
message, and the first codestream's header is read so that a frame claiming a huge image is
refused before it is allocated.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.uid import RLELossless

from edgeimg.dicom.attributes import DicomInputError

if TYPE_CHECKING:
    from edgeimg.dicom.validate import PixelInfo

_ITEM = (0xFFFE, 0xE000)
_SEQUENCE_DELIMITER = (0xFFFE, 0xE0DD)
_SOF_MARKERS = frozenset(
    (*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), 0xCD, 0xCE, 0xCF, 0xF7)
)


def check_encapsulated(ds: Dataset, name: str, value: bytes, info: PixelInfo) -> None:
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
