"""C-STORE responses encoded directly, not through pydicom.

pynetdicom encodes every DIMSE command set by building a pydicom Dataset and writing it: about
half a millisecond for a C-STORE response of seven fixed elements, paid once per instance while
a serial sender waits. The response command set (PS3.7 9.3.1.2) is small and fixed, so
`encode_store_response` writes it in implicit VR little endian itself; anything it does not
cover (an offending element, text that is not ASCII) goes the usual way.
"""

from __future__ import annotations

import struct
from typing import Any

C_STORE_RSP = 0x8001
NO_DATA_SET = 0x0101
#: PS3.8 E.2 message control header: a command fragment, the last one
LAST_COMMAND_FRAGMENT = b"\x03"


def _element(element: int, value: bytes) -> bytes:
    """One command element (group 0000) in implicit VR little endian."""
    return struct.pack("<HHL", 0, element, len(value)) + value


def _text(value: str, padding: bytes) -> bytes:
    data = value.encode("ascii")
    return data + padding if len(data) % 2 else data


def _ushort(value: int) -> bytes:
    return struct.pack("<H", value)


def encode_store_response(primitive: Any) -> bytes | None:
    """The command set of a C-STORE response (a pynetdicom C_STORE primitive), or None where
    pynetdicom must encode it; `pynetdicom_adapter.FastStoreResponses` sends it."""
    if primitive.OffendingElement is not None:
        return None
    sop_class, sop_uid = primitive.AffectedSOPClassUID, primitive.AffectedSOPInstanceUID
    try:
        elements = [
            _element(0x0002, _text(sop_class, b"\0")) if sop_class else b"",
            _element(0x0100, _ushort(C_STORE_RSP)),
            _element(0x0120, _ushort(primitive.MessageIDBeingRespondedTo)),
            _element(0x0800, _ushort(NO_DATA_SET)),
            _element(0x0900, _ushort(primitive.Status)),
            _element(0x0902, _text(primitive.ErrorComment, b" "))
            if primitive.ErrorComment
            else b"",
            _element(0x1000, _text(sop_uid, b"\0")) if sop_uid else b"",
        ]
    except (UnicodeEncodeError, struct.error, TypeError):
        return None
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body
