"""The Part 10 header (preamble, "DICM", group 0002) for a dataset received over the network.

The listener stores the bytes it received behind this header, never a re-encoded dataset.
Building the header through pydicom costs more than the rest of a C-STORE's bookkeeping
together, and it is the same eight elements every time, so they are packed here directly
(PS3.10 7.1: explicit VR little endian, values padded to even length).
"""

from __future__ import annotations

import struct

from edgeimg import __version__
from edgeimg.dicom.uids import uid_from

#: identifies edgeimg as the writer of the files in its spool (PS3.7 D.3.3.2)
IMPLEMENTATION_CLASS_UID = uid_from("implementation", "edgeimg")
IMPLEMENTATION_VERSION_NAME = f"EDGEIMG_{__version__}"[:16]
PREAMBLE = bytes(128) + b"DICM"
_VERSION = b"\x00\x01"


def _element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    if vr == b"OB":
        return struct.pack("<HH2s2xL", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_aet: str) -> bytes:
    """Preamble, prefix and group 0002 for one instance; `source_aet` is who sent it."""
    elements = [
        _element(0x0001, b"OB", _VERSION, b"\x00"),
        _element(0x0002, b"UI", sop_class.encode("ascii"), b"\x00"),
        _element(0x0003, b"UI", sop_instance.encode("ascii"), b"\x00"),
        _element(0x0010, b"UI", transfer_syntax.encode("ascii"), b"\x00"),
        _element(0x0012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii"), b"\x00"),
        _element(0x0013, b"SH", IMPLEMENTATION_VERSION_NAME.encode("ascii"), b" "),
    ]
    aet = source_aet.strip().encode("ascii", "replace")[:16]
    if aet:
        elements.append(_element(0x0016, b"AE", aet, b" "))
    body = b"".join(elements)
    length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body))
    return PREAMBLE + length + body
