"""Query/retrieve as a source: C-FIND a peer, then C-GET (or C-MOVE to us) into a folder.

`edgeimg run MODEL --from AET@HOST:PORT --query StudyDate=20260101-20260131` fetches the
matching studies (or series) into a temp folder, which then goes through exactly the path a
folder given on the command line takes. C-GET needs no configuration at the peer, so it is
tried first; a peer that does not offer it is asked to C-MOVE to a store SCP we open for the
run, under our AE title, which the peer must know (docs/serve.md says how for Orthanc).
What fails to arrive becomes an error line of its own, so it is listed and counted.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset

from edgeimg.dicom.uids import check_uid
from edgeimg.net import DEFAULT_CALLING_AET, NetworkError, Peer, associate, client

#: keys that only a series-level C-FIND can match; any of them makes the query series level
SERIES_KEYS = frozenset(
    {
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "BodyPartExamined",
        "SeriesDate",
        "SeriesTime",
        "ProtocolName",
    }
)
#: dcmtk-style values of date and time keys: a value or an inclusive range, either end open
_RANGES = {
    "DA": re.compile(r"^(\d{8}|\d{8}-|-\d{8}|\d{8}-\d{8})$"),
    "TM": re.compile(r"^(\d{2,6}(\.\d+)?)?(-(\d{2,6}(\.\d+)?)?)?$"),
    "DT": re.compile(r"^[\d.+-]+$"),
}
_STATUSES = {
    0xA701: "out of resources (number of matches)",
    0xA702: "out of resources (sub-operations)",
    0xA801: "move destination unknown: the peer has no entry for our AE title",
    0xA900: "identifier does not match the SOP class",
    0xB000: "some sub-operations failed",
    0xFE00: "cancelled",
}
#: what a C-MOVE failure most often means: the peer could not open an association to us
_MOVE_HINT = " (does the peer know our AE title {aet}, and can it reach that host and port?)"
METHODS = ("auto", "get", "move")


class QueryError(ValueError):
    """A `--query` that cannot be sent; the message names the key (a usage error)."""


@dataclass(frozen=True)
class Match:
    """One study (or series) the peer answered the C-FIND with."""

    study_uid: str
    series_uid: str | None = None
    instances: int | None = None
    #: StudyDate then StudyTime as the peer answered (when asked for): sorts oldest first
    when: str = ""

    @property
    def label(self) -> str:
        return f"series {self.series_uid}" if self.series_uid else f"study {self.study_uid}"


@dataclass
class Retrieval:
    """How a retrieve went: the files it wrote and what failed, as run's error lines."""

    files: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)


def parse_query(items: Iterable[str]) -> dict[str, str]:
    """`KEY=VALUE` items to C-FIND keys; `QueryError` names a keyword DICOM does not have, a
    key given twice, or a date/time range that is not `FROM-TO`."""
    query: dict[str, str] = {}
    for item in items:
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals or not key:
            raise QueryError(f"--query {item!r}: expected KEY=VALUE")
        if tag_for_keyword(key) is None:
            raise QueryError(f"--query {key!r}: not a DICOM keyword (such as StudyDate, Modality)")
        if key in query:
            raise QueryError(f"--query {key!r} is given twice")
        pattern = _RANGES.get(dictionary_VR(key))
        if pattern is not None and value and not pattern.match(value):
            raise QueryError(
                f"--query {key}={value!r}: expected a value or a range FROM-TO "
                "(such as 20260101-20260131; either end may be left out)"
            )
        query[key] = value
    return query


def level(query: dict[str, str]) -> str:
    """SERIES when a key needs it, else STUDY (a study-level match retrieves whole studies)."""
    return "SERIES" if SERIES_KEYS & set(query) else "STUDY"


def _identifier(query: dict[str, str], query_level: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = query_level
    ds.StudyInstanceUID = ""
    if query_level == "SERIES":
        ds.SeriesInstanceUID = ""
        ds.NumberOfSeriesRelatedInstances = ""
    else:
        ds.NumberOfStudyRelatedInstances = ""
    for key, value in query.items():
        setattr(ds, key, value)
    return ds


def find(
    peer: Peer,
    query: dict[str, str],
    calling: str = DEFAULT_CALLING_AET,
    timeout: float = 30,
) -> list[Match]:
    """C-FIND (study root) at the level the keys need; `NetworkError` for no association or
    a failed C-FIND, in one line naming the peer."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FindModel

    query_level = level(query)
    ae = client(calling, timeout)
    ae.add_requested_context(FindModel)
    assoc = associate(ae, peer, timeout)
    matches: dict[tuple[str, str | None], Match] = {}
    try:
        for status, found in assoc.send_c_find(_identifier(query, query_level), FindModel):
            code = getattr(status, "Status", None)
            if code is None:
                raise NetworkError(
                    f"C-FIND {peer}: the peer ended the association without an "
                    f"answer (does it accept our AE title {calling}?)"
                )
            if code in (0xFF00, 0xFF01) and found is not None:
                match = _match(found, query_level)
                if match is not None:
                    matches.setdefault((match.study_uid, match.series_uid), match)
            elif code not in (0x0000, 0xFF00, 0xFF01):
                raise NetworkError(f"C-FIND {peer}: status 0x{code:04X} {_STATUSES.get(code, '')}")
    finally:
        if assoc.is_established:
            assoc.release()
    return list(matches.values())


def _match(found: Dataset, query_level: str) -> Match | None:
    study = str(found.get("StudyInstanceUID", "") or "")
    series = str(found.get("SeriesInstanceUID", "") or "") if query_level == "SERIES" else None
    if not study or (query_level == "SERIES" and not series):
        return None
    key = "NumberOfSeriesRelatedInstances" if series else "NumberOfStudyRelatedInstances"
    count = found.get(key)
    when = f"{found.get('StudyDate', '') or ''}{found.get('StudyTime', '') or ''}".strip()
    return Match(study, series or None, int(count) if count not in (None, "") else None, when)


class _Sink:
    """Writes each instance a C-GET or C-MOVE delivers as `<SOP Instance UID>.dcm`, bytes as
    received; refuses instances of studies it was not asked for."""

    def __init__(self, folder: Path, studies: set[str]) -> None:
        self.folder = folder
        self.studies = studies
        self.written = 0
        self.lock = threading.Lock()
        self.on_stored: Callable[[], None] = lambda: None

    def handle(self, event: Any) -> int:
        try:
            sop_uid = check_uid(str(event.request.AffectedSOPInstanceUID))
            if str(event.dataset.get("StudyInstanceUID", "")) not in self.studies:
                return 0xA700  # not something this run asked for
            path = self.folder / f"{sop_uid}.dcm"
            path.write_bytes(event.encoded_dataset())
        except Exception:  # the peer reports it as a failed sub-operation; we count those
            return 0xA700
        with self.lock:
            self.written += 1
        self.on_stored()
        return 0x0000


def retrieve(
    peer: Peer,
    matches: list[Match],
    folder: Path,
    *,
    method: str = "auto",
    calling: str = DEFAULT_CALLING_AET,
    move_port: int = 0,
    timeout: float = 30,
    progress: Callable[[Match, int | None], Callable[[], None]] | None = None,
) -> Retrieval:
    """Fetch every match into `folder`: C-GET (`get`), C-MOVE to a store SCP opened here on
    `move_port` as `calling` (`move`), or C-GET unless the peer does not offer it (`auto`).

    `progress(match, expected)` is called as each match starts and returns what to call per
    instance stored. `NetworkError` when the peer cannot be reached at all; one that goes
    away part way fails the matches left, each with the reason.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sink = _Sink(folder, {match.study_uid for match in matches})
    result = Retrieval()
    use_move = method == "move" or (method == "auto" and not _offers_get(peer, calling, timeout))
    server = _store_scp(calling, move_port, sink, timeout) if use_move else None
    try:
        for match in matches:
            sink.on_stored = progress(match, match.instances) if progress else lambda: None
            before = sink.written
            try:
                if server is None:
                    error = _c_get(peer, match, sink, calling, timeout)
                else:
                    error = _c_move(peer, match, calling, timeout)
            except NetworkError as lost:  # the peer went away after the C-FIND: list the rest
                error = str(lost)
            if error is not None:
                received = sink.written - before
                result.failures.append(failure_line(str(peer), match, error, received))
    finally:
        if server is not None:
            server.shutdown()
    result.files = sink.written
    return result


def failure_line(source: str, match: Match, error: str, received: int) -> dict[str, Any]:
    """run's error line for a match that did not (fully) arrive from `source`."""
    line = {"status": "error", "study_uid": match.study_uid, "file": f"{source} {match.label}"}
    if match.series_uid:
        line["series_uid"] = match.series_uid
    line["error"] = f"retrieve failed: {error}" + (
        f" ({received} instance(s) arrived and were run)" if received else ""
    )
    return line


def _retrieve_identifier(match: Match) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if match.series_uid else "STUDY"
    ds.StudyInstanceUID = match.study_uid
    if match.series_uid:
        ds.SeriesInstanceUID = match.series_uid
    return ds


def _storage_contexts() -> list[Any]:
    """Storage SOP classes to ask for in a C-GET association (127 of them at most, beside the
    C-GET context): pynetdicom's common list, and the enhanced classes the models read."""
    from pynetdicom import StoragePresentationContexts
    from pynetdicom.presentation import build_context

    wanted = [context.abstract_syntax for context in StoragePresentationContexts]
    for uid in (
        "1.2.840.10008.5.1.4.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.2.2",
        "1.2.840.10008.5.1.4.1.1.4.1",
        "1.2.840.10008.5.1.4.1.1.4.4",
    ):
        if uid not in wanted:
            wanted.insert(0, uid)
    return [build_context(uid) for uid in wanted[:127]]


def _offers_get(peer: Peer, calling: str, timeout: float) -> bool:
    """Whether the peer accepts the study-root C-GET context (one short association)."""
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

    ae = client(calling, timeout)
    ae.add_requested_context(GetModel)
    assoc = associate(ae, peer, timeout)
    try:
        return any(cx.abstract_syntax == GetModel for cx in assoc.accepted_contexts)
    finally:
        assoc.release()


def _c_get(peer: Peer, match: Match, sink: _Sink, calling: str, timeout: float) -> str | None:
    """One C-GET; None on success, else why it failed in words."""
    from pynetdicom import build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GetModel

    ae = client(calling, timeout)
    ae.add_requested_context(GetModel)
    roles = []
    for context in _storage_contexts():
        ae.add_requested_context(context.abstract_syntax, context.transfer_syntax)
        roles.append(build_role(context.abstract_syntax, scp_role=True))
    handlers = [(evt.EVT_C_STORE, sink.handle)]
    assoc = associate(ae, peer, timeout, ext_neg=roles, evt_handlers=handlers)
    try:
        if not any(cx.abstract_syntax == GetModel for cx in assoc.accepted_contexts):
            return "the peer does not offer C-GET (try --retrieve move)"
        return _final(assoc.send_c_get(_retrieve_identifier(match), GetModel), "C-GET")
    finally:
        if assoc.is_established:
            assoc.release()


def _c_move(peer: Peer, match: Match, calling: str, timeout: float) -> str | None:
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as MoveModel

    ae = client(calling, timeout)
    ae.add_requested_context(MoveModel)
    assoc = associate(ae, peer, timeout)
    try:
        responses = assoc.send_c_move(_retrieve_identifier(match), calling, MoveModel)
        error = _final(responses, "C-MOVE")
        return error + _MOVE_HINT.format(aet=calling) if error else None
    finally:
        if assoc.is_established:
            assoc.release()


def _final(responses: Iterable[tuple[Any, Any]], service: str) -> str | None:
    """Read the responses to the end; None when the last says every instance arrived."""
    code, failed = None, 0
    for status, _ in responses:
        code = getattr(status, "Status", None)
        if code is None:
            return f"{service}: no response (association lost)"
        failed = int(status.get("NumberOfFailedSubOperations", 0) or 0)
    if code == 0x0000 and not failed:
        return None
    if code == 0x0000:
        return f"{service}: {failed} instance(s) failed"
    detail = _STATUSES.get(code, "unable to process" if code >> 12 == 0xC else "failed")
    count = f", {failed} instance(s) failed" if failed else ""
    return f"{service}: status 0x{code:04X} {detail}{count}"


def _store_scp(aet: str, port: int, sink: _Sink, timeout: float) -> Any:
    """A store SCP for C-MOVE, as `aet` on `port` (every address: the peer connects to us)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.supported_contexts = AllStoragePresentationContexts
    try:
        return ae.start_server(
            ("0.0.0.0", port), block=False, evt_handlers=[(evt.EVT_C_STORE, sink.handle)]
        )
    except OSError as error:
        raise NetworkError(f"cannot open the C-MOVE store SCP on port {port}: {error}") from None
