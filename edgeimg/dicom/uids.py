"""Deterministic output UIDs, so that a re-run after a crash re-sends the same objects.

pydicom's `generate_uid(prefix=None, entropy_srcs=...)` ignores the entropy and returns a random
UUID, and `generate_uid("2.25.", entropy_srcs=...)` yields a number too large for a 2.25 UID.
A name-based UUID (RFC 4122 version 5) under the 2.25 root is both deterministic and valid.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:edgeimg:dicom-out")
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")


def uid_from(*parts: str | list[str]) -> str:
    """A 2.25 UID that depends only on `parts` (JSON-encoded, so the parts cannot run together)."""
    return f"2.25.{uuid.uuid5(NAMESPACE, json.dumps(parts)).int}"


def check_uid(value: str) -> str:
    """Return `value` if it is a valid DICOM UID; it is also used as a file name."""
    if len(value) > 64 or not _UID.match(value):
        raise ValueError(f"not a valid DICOM UID: {value!r}")
    return value


@dataclass(frozen=True)
class OutputUIDs:
    """UIDs of one output series: the same kind, sources, model and engine give the same UIDs."""

    kind: str
    model: str
    version: str
    engine_key: str
    sources: tuple[str, ...]

    def uid(self, *role: str) -> str:
        return uid_from(
            self.kind, self.model, self.version, self.engine_key, list(self.sources), *role
        )

    @property
    def series(self) -> str:
        return self.uid("series")

    def instance(self, *role: str) -> str:
        return self.uid("instance", *role)

    @property
    def device(self) -> str:
        """The model run by this engine, as an SR observer device: the same for every study."""
        return uid_from("device", self.model, self.version, self.engine_key)


def output_uids(
    kind: str, source_uids: Iterable[str], model: str, version: str, engine_key: str
) -> OutputUIDs:
    """UIDs for `kind` output of `model` on the given source SOP Instance UIDs (order ignored)."""
    return OutputUIDs(kind, model, version, engine_key, tuple(sorted(set(source_uids))))
