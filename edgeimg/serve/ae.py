"""The AE the listener runs as: what it accepts, and the association requests it refuses.

Verification and every Storage SOP class, in the transfer syntaxes scanners send; the called
AE title must be ours. `refusal` adds the PS3.8 rejections pynetdicom does not make itself.
"""

from __future__ import annotations

from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, StoragePresentationContexts

from edgeimg.serve.config import ServeConfig

VERIFICATION = "1.2.840.10008.1.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1.99",  # deflated explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian (retired, still sent by old scanners)
    "1.2.840.10008.1.2.5",  # RLE lossless
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
]


def make_ae(config: ServeConfig) -> AE:
    """An AE with `config`'s title, limits and timeouts, accepting the classes above."""
    ae = AE(ae_title=config.aet)
    ae.require_called_aet = True
    ae.maximum_associations = config.max_associations
    ae.maximum_pdu_size = config.max_pdu
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    ae.add_supported_context(VERIFICATION)
    classes = {cx.abstract_syntax for cx in AllStoragePresentationContexts}
    classes |= {cx.abstract_syntax for cx in StoragePresentationContexts}
    for sop_class in sorted(classes):
        ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
    return ae


def refusal(request: Any) -> tuple[int, str] | None:
    """PS3.8 rejections pynetdicom does not make itself: (reason, why), or None to go on."""
    if str(request.application_context_name) != APPLICATION_CONTEXT:
        return 2, "application context name not supported"
    if not request.presentation_context_definition_list:
        return 1, "no presentation contexts"
    return None
