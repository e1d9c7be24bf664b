"""Our C-STORE response encoding against pynetdicom's own, byte for byte."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from edgeimg.serve.pynetdicom_adapter import FastStoreResponses
from edgeimg.serve.responses import LAST_COMMAND_FRAGMENT, encode_store_response

CT = "1.2.840.10008.5.1.4.1.1.2"


def _response(sop_uid: str | None, status: int, comment: str | None = None) -> C_STORE:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CT
    if sop_uid is not None:
        primitive.AffectedSOPInstanceUID = sop_uid
    primitive.Status = status
    if comment is not None:
        primitive.ErrorComment = comment
    return primitive


def _pynetdicom_command(primitive: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(primitive)
    (pdata,) = list(message.encode_msg(1, 16384))
    ((_, value),) = pdata.presentation_data_value_list
    return value[1:]


@pytest.mark.parametrize(
    ("sop_uid", "status", "comment"),
    [
        ("1.2.826.0.1.3680043.8.498.1", 0x0000, None),  # odd length: padded
        ("1.2.826.0.1.3680043.8.498.12", 0x0000, None),  # even length
        ("1.2.826.0.1.3680043.8.498.12", 0xA700, "free space below 512 MB"),  # odd comment
        ("1.2.826.0.1.3680043.8.498.1", 0xC000, "dataset is cut short"),  # even comment
        (None, 0xA900, "SOP Instance UID differs from the command"),
    ],
)
def test_store_response_matches_pynetdicom(sop_uid, status, comment):
    primitive = _response(sop_uid, status, comment)
    assert encode_store_response(primitive) == _pynetdicom_command(primitive)


def test_what_it_does_not_cover_goes_to_pynetdicom():
    offending = _response("1.2.3", 0xA900)
    offending.OffendingElement = [0x00080018]
    assert encode_store_response(offending) is None
    assert encode_store_response(_response("1.2.3", 0xA700, "café")) is None


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[P_DATA] = []

    def send_pdu(self, pdata: P_DATA) -> None:
        self.sent.append(pdata)


class _Assoc:
    def __init__(self, max_pdu: int) -> None:
        self.dul = _Recorder()
        self.acceptor = type("Acceptor", (), {"maximum_length": max_pdu})()
        self.requestor = type("Requestor", (), {"maximum_length": max_pdu})()
        self.is_acceptor, self.is_requestor = True, False


@pytest.mark.parametrize("max_pdu", [0, 16384])
def test_a_response_goes_out_as_one_command_pdv(max_pdu):
    assoc = _Assoc(max_pdu)
    provider = FastStoreResponses(assoc)
    primitive = _response("1.2.826.0.1.3680043.8.498.1", 0x0000)
    provider.send_msg(primitive, 3)
    (pdata,) = assoc.dul.sent
    assert pdata.presentation_data_value_list == [
        (3, LAST_COMMAND_FRAGMENT + _pynetdicom_command(primitive))
    ]
