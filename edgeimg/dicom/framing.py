"""Whether an encoded dataset's element headers tile it exactly, read before pydicom decodes it.

pydicom reads an element whose value runs past the end without complaint (it just returns
fewer bytes), so a truncated instance would pass as valid. The listener walks what a C-STORE
carried with `framing_error` before decoding it; `validate.cut_element` is the same guard for
files, which pydicom has already parsed.
"""

from __future__ import annotations

import struct
import zlib

from pydicom.uid import UID


def framing_error(raw: bytes, syntax: UID) -> str | None:
    """Why the element headers of `raw`, encoded in `syntax`, do not tile it exactly, or None."""
    if syntax.is_deflated:
        inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        try:
            raw = inflater.decompress(raw)
        except zlib.error:
            return "deflated dataset cannot be inflated"
        if not inflater.eof:
            return "deflated dataset is cut short"
    walker = _Walker(raw, syntax.is_implicit_VR, "<" if syntax.is_little_endian else ">")
    try:
        walker.elements(0, until=None)
    except ValueError as error:
        return str(error)
    except RecursionError:
        return "sequences nested too deeply"
    return None


_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ SV UC UN UR UT UV".split())
_SHORT_VRS = b"AE AS AT CS DA DS DT FD FL IS LO LT PN SH SL SS ST TM UI UL US"
_VRS = _LONG_VRS | frozenset(_SHORT_VRS.split())


class _Walker:
    """Follows element, item and delimiter headers without decoding any value."""

    def __init__(self, data: bytes, implicit: bool, order: str) -> None:
        self.data, self.implicit, self.order = data, implicit, order

    def _unpack(self, fmt: str, pos: int) -> tuple:
        if pos + struct.calcsize(self.order + fmt) > len(self.data):
            raise ValueError(f"dataset is cut short in an element header at byte {pos}")
        return struct.unpack_from(self.order + fmt, self.data, pos)

    def _header(self, pos: int) -> tuple[int, int, int]:
        group, element = self._unpack("HH", pos)
        tag = group << 16 | element
        if group == 0xFFFE or self.implicit:
            return tag, self._unpack("L", pos + 4)[0], pos + 8
        vr = self.data[pos + 4 : pos + 6]
        if vr not in _VRS:
            raise ValueError(f"invalid VR {bytes(vr)!r} at byte {pos + 4}")
        if vr in _LONG_VRS:
            return tag, self._unpack("L", pos + 8)[0], pos + 12
        return tag, self._unpack("H", pos + 6)[0], pos + 8

    def _skip(self, tag: int, length: int, pos: int) -> int:
        if pos + length > len(self.data):
            raise ValueError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is cut short")
        return pos + length

    def elements(self, pos: int, until: int | None) -> int:
        while pos < len(self.data):
            tag, length, pos = self._header(pos)
            if tag == until:
                return pos
            if tag in (_ITEM, _ITEM_END, _SEQUENCE_END):
                raise ValueError(f"unexpected item or delimiter at byte {pos - 8}")
            pos = self.items(pos) if length == _UNDEFINED else self._skip(tag, length, pos)
        if until is not None:
            raise ValueError("dataset ends inside a sequence item")
        return pos

    def items(self, pos: int) -> int:
        while True:
            tag, length, pos = self._header(pos)
            if tag == _SEQUENCE_END:
                return pos
            if tag != _ITEM:
                raise ValueError(f"expected a sequence item at byte {pos - 8}")
            if length == _UNDEFINED:
                pos = self.elements(pos, until=_ITEM_END)
            else:
                pos = self._skip(tag, length, pos)
