"""What `edgeimg serve` is configured with: one value the command builds and the listener reads."""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from edgeimg.net import Peer
from edgeimg.serve.preassociation import ARTIM, PENDING_PER_HOST, PENDING_TOTAL
from edgeimg.serve.security import AllowEntry
from edgeimg.serve.spool import DEFAULT_SPOOL

#: the largest P-DATA PDU we accept: a sender that uses it sends a 512 x 512 CT slice in one PDU
#: rather than eight, and pynetdicom spends less per instance on each PDU it reads
MAX_PDU = 1 << 20


@dataclass
class ServeConfig:
    """Everything `edgeimg serve` needs; the pipeline reads `models` and `forwards`."""

    aet: str
    port: int = 11112
    host: str = "0.0.0.0"
    spool: Path = DEFAULT_SPOOL
    models: list[str] = field(default_factory=list)
    forwards: list[Peer | str] = field(default_factory=list)
    allow: list[AllowEntry] = field(default_factory=list)
    series_timeout: float = 10
    complete_on_release: bool = False
    max_associations: int = 8
    min_free_mb: float = 512
    tls: ssl.SSLContext | None = None
    acse_timeout: float = 30
    dimse_timeout: float = 60
    network_timeout: float = 60
    max_pdu: int = MAX_PDU
    #: seconds a connection has to send its A-ASSOCIATE-RQ before it is closed
    artim: float = ARTIM
    #: connections without an A-ASSOCIATE-RQ yet, from one host and in all
    #: (edgeimg.serve.preassociation)
    pending_per_host: int = PENDING_PER_HOST
    pending_total: int = PENDING_TOTAL
