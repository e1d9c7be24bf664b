"""DICOMweb peers: STOW-RS to send results, QIDO-RS + WADO-RS to fetch inputs (dicomweb-client).

A peer is its base URL (`https://pacs.example.org/dicom-web`). TLS certificates are verified
(against the system store, or the PEM bundle given as `ca`). Credentials come from the
environment, never from the URL or the command line, so they cannot reach a log line, the
queue database or `ps`: `EDGEIMG_DICOMWEB_TOKEN` (a bearer token) or `EDGEIMG_DICOMWEB_USER`
with `EDGEIMG_DICOMWEB_PASSWORD` (basic authentication).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from edgeimg.net import NetworkError, SendResult

TOKEN_ENV = "EDGEIMG_DICOMWEB_TOKEN"
USER_ENV = "EDGEIMG_DICOMWEB_USER"
PASSWORD_ENV = "EDGEIMG_DICOMWEB_PASSWORD"
#: DICOM JSON tags in a STOW-RS response (PS3.18 10.5.3)
_FAILED_SOP_SEQUENCE = "00081198"
_REFERENCED_SOP_UID = "00081155"
_FAILURE_REASON = "00081197"
TIMEOUT = 60.0
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
#: instances per STOW-RS request: dicomweb-client builds each request body in memory
STOW_BATCH = 32


def is_url(text: str) -> bool:
    """Whether a `--from`/`--forward` value is a DICOMweb base URL (else `AET@HOST:PORT`)."""
    return text.startswith(("http://", "https://"))


def check_url(text: str) -> str:
    """A usable base URL, without a trailing slash; `ValueError` says what is wrong with it."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r}: expected http(s)://HOST[:PORT]/PATH (a DICOMweb base URL)")
    if parts.username or parts.password:
        raise ValueError(
            f"{parts.scheme}://{parts.hostname}...: credentials do not go in the URL "
            f"(set {TOKEN_ENV}, or {USER_ENV} and {PASSWORD_ENV})"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: a base URL has no query or fragment")
    credentials = os.environ.get(TOKEN_ENV) or os.environ.get(USER_ENV)
    if parts.scheme == "http" and credentials and parts.hostname not in _LOOPBACK:
        raise ValueError(f"{text!r}: credentials would cross the network in clear; use https")
    return text.rstrip("/")


@dataclass
class Client:
    """A DICOMweb peer at `url`, with the session (auth, TLS) every request goes through."""

    url: str
    web: Any
    session: Any

    @classmethod
    def from_url(cls, url: str, ca: Path | str | None = None, timeout: float = TIMEOUT) -> Client:
        """Connect lazily to `url` (checked by `check_url`), verifying TLS against `ca` or the
        system store, authenticating from the environment."""
        import requests
        from dicomweb_client import DICOMwebClient

        url = check_url(url)
        session = requests.Session()
        if ca:  # on the adapter: requests lets REQUESTS_CA_BUNDLE override session.verify
            session.mount("https://", _verifying_adapter(str(ca)))
        token = os.environ.get(TOKEN_ENV)
        if token:
            session.headers["Authorization"] = f"Bearer {token}"
        elif os.environ.get(USER_ENV):
            session.auth = (os.environ[USER_ENV], os.environ.get(PASSWORD_ENV, ""))
        return cls(url, DICOMwebClient(url, session=session, timeout=timeout), session)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.session.close()

    def fail(self, error: Exception, doing: str) -> NetworkError:
        """One line naming the peer and what went wrong, without headers or credentials."""
        return NetworkError(f"{doing} {self.url}: {_reason(error)}")


def _verifying_adapter(ca: str) -> Any:
    """An HTTPS adapter that checks certificates against `ca`, whatever the environment says."""
    from requests.adapters import HTTPAdapter

    class Verifying(HTTPAdapter):
        def send(self, request: Any, **options: Any) -> Any:
            options["verify"] = ca
            return super().send(request, **options)

    return Verifying()


def _reason(error: Exception) -> str:
    import requests

    if isinstance(error, requests.exceptions.SSLError):
        text = str(error)
        if "CERTIFICATE_VERIFY_FAILED" in text:
            return "TLS certificate not trusted (give the CA with --tls-ca)"
        return "TLS handshake failed"
    if isinstance(error, requests.exceptions.HTTPError) and error.response is not None:
        code = error.response.status_code
        hint = " (check the credentials in the environment)" if code in (401, 403) else ""
        return f"HTTP {code} {error.response.reason}{hint}"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "cannot connect"
    if isinstance(error, requests.exceptions.Timeout):
        return "no answer in time"
    return type(error).__name__


def stow(client: Client, paths: Iterable[str | Path]) -> list[SendResult]:
    """STOW-RS the files to the peer, STOW_BATCH to a request; one result per file, shaped like
    C-STORE's (status 0 stored; None with the reason when not), so the forwarder treats both
    alike."""
    paths = [Path(path) for path in paths]
    results: dict[Path, SendResult] = {}
    for start in range(0, len(paths), STOW_BATCH):
        results.update(_stow_batch(client, paths[start : start + STOW_BATCH]))
    return [results[path] for path in paths]


def _stow_batch(client: Client, paths: list[Path]) -> dict[Path, SendResult]:
    from pydicom import dcmread

    results, datasets, by_uid = {}, [], {}
    for path in paths:
        try:
            ds = dcmread(path)
        except Exception as error:  # kept off the request; the rest still go
            results[path] = SendResult(path, None, f"not a readable DICOM file: {error}")
            continue
        datasets.append(ds)
        by_uid[str(ds.SOPInstanceUID)] = path
    if not datasets:
        return results
    try:
        answer = client.web.store_instances(datasets)
    except Exception as error:
        reason = str(client.fail(error, "STOW-RS"))
        return {**results, **{path: SendResult(path, None, reason) for path in by_uid.values()}}
    failed = _failed(answer)
    for uid, path in by_uid.items():
        if uid in failed:
            results[path] = SendResult(path, None, f"STOW-RS refused it: {failed[uid]}")
        else:
            results[path] = SendResult(path, 0x0000)
    return results


def _failed(answer: Any) -> dict[str, str]:
    """SOP Instance UID → failure reason, from a STOW-RS response's Failed SOP Sequence."""
    if answer is None:
        return {}
    document = answer.to_json_dict() if hasattr(answer, "to_json_dict") else answer
    failed = {}
    for item in document.get(_FAILED_SOP_SEQUENCE, {}).get("Value", []):
        uid = item.get(_REFERENCED_SOP_UID, {}).get("Value", [""])[0]
        reason = item.get(_FAILURE_REASON, {}).get("Value", [None])[0]
        failed[uid] = f"reason 0x{reason:04X}" if isinstance(reason, int) else "no reason given"
    return failed


def find(client: Client, query: dict[str, str]) -> list[Any]:
    """QIDO-RS at the level the keys need (as C-FIND would); `retrieve.Match` per answer."""
    from pydicom import Dataset

    from edgeimg.retrieve import Match, level

    series_level = level(query) == "SERIES"
    try:
        if series_level:
            found = client.web.search_for_series(search_filters=query, get_remaining=True)
        else:
            found = client.web.search_for_studies(search_filters=query, get_remaining=True)
    except Exception as error:
        raise client.fail(error, "QIDO-RS") from None
    matches = []
    for document in found:
        ds = Dataset.from_json(document)
        study = str(ds.get("StudyInstanceUID", "") or "")
        series = str(ds.get("SeriesInstanceUID", "") or "") if series_level else ""
        key = "NumberOfSeriesRelatedInstances" if series else "NumberOfStudyRelatedInstances"
        count = ds.get(key)
        if study and (series or not series_level):
            matches.append(Match(study, series or None, int(count) if count else None))
    return matches


def fetch(
    client: Client,
    query: dict[str, str],
    folder: Path,
    progress: Callable[[Any, int | None], Callable[[], None]] | None = None,
) -> list[dict[str, Any]]:
    """QIDO-RS, then WADO-RS each match into `folder` as `<SOP Instance UID>.dcm`; an error
    line per match that failed (as `retrieve.retrieve` makes them). `NetworkError` when the
    query itself fails (the peer is unreachable or refuses us)."""
    from edgeimg.dicom.uids import check_uid
    from edgeimg.retrieve import failure_line

    matches = find(client, query)
    if not matches:
        raise NetworkError(f"nothing at {client.url} matches the query")
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    for match in matches:
        stored = progress(match, match.instances) if progress else lambda: None
        received = 0
        try:
            if match.series_uid:
                instances = client.web.iter_series(match.study_uid, match.series_uid)
            else:
                instances = client.web.iter_study(match.study_uid)
            for ds in instances:
                path = folder / f"{check_uid(str(ds.SOPInstanceUID))}.dcm"
                ds.save_as(path, enforce_file_format=True)
                received += 1
                stored()
        except Exception as error:  # one study failing must not stop the others
            reason = _reason(error) if _is_http(error) else type(error).__name__
            failures.append(failure_line(client.url, match, f"WADO-RS: {reason}", received))
    return failures


def _is_http(error: Exception) -> bool:
    import requests

    return isinstance(error, requests.exceptions.RequestException)
