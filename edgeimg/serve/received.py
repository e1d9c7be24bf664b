"""A received instance judged: decoded, validated and hashed off the C-STORE thread.

What the sender is told comes from here too: a refusal (`Rejected`) carries the PS3.4 status
its cause earns (A700 out of resources, A900 data that contradicts its command or IOD, C000
data that cannot be read, 0122 an unsupported class). The checks themselves are
`edgeimg.dicom.framing` and `edgeimg.dicom.validate`, shared with `read`.
"""

from __future__ import annotations

import functools
import hashlib
from concurrent.futures import Future, ThreadPoolExecutor

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID
from pynetdicom.events import Event

from edgeimg.dicom.attributes import DicomInputError
from edgeimg.dicom.framing import framing_error
from edgeimg.dicom.validate import check_received
from edgeimg.serve.spool import DiskFull

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122


class Rejected(Exception):
    """A received instance we answer with a failure status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class ReceivedChecks:
    """Decoding, checking and hashing one received dataset on the publisher threads.

    `start` submits them (the listener calls it while the data syncs); `wait` starts them if a
    failed write came first, and raises `Rejected` for refused data.
    """

    dataset: Dataset
    series_uid: str

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        event: Event,
        raw: bytes,
        syntax: UID,
        sop_class: str,
        sop_uid: str,
        header: bytes,
    ) -> None:
        self._pool = pool
        self._check_args = (event, raw, syntax, sop_class, sop_uid)
        self._hash_args = (header, raw)
        self._checked: Future | None = None
        self._hashed: Future

    def start(self) -> None:
        self._checked = self._pool.submit(_checked, *self._check_args)
        self._hashed = self._pool.submit(_sha256, *self._hash_args)

    def wait(self) -> None:
        if self._checked is None:
            self.start()
        self.dataset, self.series_uid = self._checked.result()

    def sha256(self) -> str:
        """The digest; only after `wait`, which has started the hashing."""
        return self._hashed.result()


def write_refused(error: OSError) -> Rejected:
    """The A700 that a full or failing disk earns."""
    if isinstance(error, DiskFull):
        return Rejected(OUT_OF_RESOURCES, str(error))
    return Rejected(OUT_OF_RESOURCES, f"cannot write: {error.strerror}")


def status_dataset(code: int, comment: str | None = None) -> Dataset:
    """The C-STORE response status; an Error Comment holds at most 64 characters."""
    status = Dataset()
    status.Status = code
    if comment:
        status.ErrorComment = comment[:64]
    return status


def _checked(
    event: Event, raw: bytes, syntax: UID, sop_class: str, sop_uid: str
) -> tuple[Dataset, str]:
    """The decoded dataset and its series UID (valid: `check_received` checked it), or `Rejected`.

    A900 when the dataset contradicts its command or its IOD (class or instance UID differ,
    invalid UIDs, pixel data that does not fit the geometry); C000 when it cannot be read at all.
    """
    ds = _decoded(event, raw, syntax)
    try:
        check_received(ds, sop_class, sop_uid)
    except DicomInputError as error:
        raise Rejected(DOES_NOT_MATCH_SOP_CLASS, error.reason) from None
    except Exception:
        raise Rejected(CANNOT_UNDERSTAND, "dataset cannot be decoded") from None
    return ds, str(ds.SeriesInstanceUID)


def _decoded(event: Event, raw: bytes, syntax: UID) -> Dataset:
    """The received dataset (`raw`), decoded lazily; C000 if its framing is broken."""
    problem = framing_error(raw, syntax)
    if problem:
        raise Rejected(CANNOT_UNDERSTAND, problem)
    try:
        ds = event.dataset
    except Exception:
        raise Rejected(CANNOT_UNDERSTAND, "dataset cannot be decoded") from None
    ds.file_meta = _file_meta_of(syntax)
    return ds


def _sha256(*chunks: bytes) -> str:
    """Hex digest of `chunks`; hashlib drops the GIL, so this runs beside the checks."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _file_meta_of(syntax: str) -> FileMetaDataset:
    """What validation reads from the file meta of a received dataset: its transfer syntax."""
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    return meta
