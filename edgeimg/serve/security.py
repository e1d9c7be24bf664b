"""Who may talk to the listener: calling AE allow list (optionally host-bound) and TLS."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class SecurityError(ValueError):
    """A security setting that cannot be used (bad allow entry, unreadable certificate)."""


@dataclass(frozen=True)
class AllowEntry:
    """One `AET[@HOST]` entry; no host means any host."""

    aet: str
    host: str | None = None

    def matches(self, aet: str, host: str) -> bool:
        return self.aet == aet.strip() and (self.host is None or self.host == host)


def parse_allow(values: Iterable[str]) -> list[AllowEntry]:
    """Parse `--allow` values; an empty list admits callers on this machine only."""
    entries = []
    for value in values:
        aet, _, host = value.strip().partition("@")
        if not aet or len(aet) > 16 or (not host and value.strip().endswith("@")):
            raise SecurityError(f"--allow {value!r}: expected AET or AET@HOST (AET of 1-16 chars)")
        entries.append(AllowEntry(aet, host or None))
    return entries


def is_loopback(host: str) -> bool:
    """A peer on this machine (127.0.0.0/8 or ::1)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_allowed(entries: list[AllowEntry], aet: str, host: str) -> bool:
    """True if the calling AE from `host` is listed; with no list, only local peers may call.

    Remote peers are denied unless listed: a box on a hospital network must not accept images
    from anyone who can reach its port just because the operator forgot `--allow`.
    """
    if not entries:
        return is_loopback(host)
    return any(entry.matches(aet, host) for entry in entries)


def server_tls_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """TLS 1.2+ server context; with `ca`, clients must present a certificate it signed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert), str(key))
        if ca is not None:
            context.load_verify_locations(cafile=str(ca))
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as error:
        raise SecurityError(f"cannot load TLS certificate/key: {error}") from None
    return context
