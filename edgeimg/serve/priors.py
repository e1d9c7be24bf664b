"""Prior studies for a job in `serve`, for models whose ModelSpec declares `priors = N`.

Before such a job runs, the patient's other studies of the same modality are found by C-FIND
(study root, PatientID and ModalitiesInStudy of the series), the most recent N that are not
newer than the current study are fetched with `edgeimg.retrieve` (C-GET where the peer offers
it, else C-MOVE to a store SCP of ours) into a per-job folder under the spool, and the model
runs on them too, so `ModelImplementation.compare` gets its own results on both. A source that
cannot be reached, or a prior that does not fully arrive, is `PriorsUnavailable`: transient, the
job waits and tries again. No prior found is not an error: the job runs with none.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeimg.dicom.uids import check_uid
from edgeimg.net import NetworkError, Peer
from edgeimg.retrieve import find, retrieve

#: characters C-FIND reads as wildcards (or a value separator) in a PatientID: such an ID could
#: match other patients' studies, so it gets no priors
_WILDCARDS = frozenset("*?\\")


class PriorsUnavailable(Exception):
    """The priors source cannot be reached or did not deliver (one line, no patient data)."""


@dataclass(frozen=True)
class Prior:
    """One prior study fetched for a job: where its files are."""

    study_uid: str
    when: str
    folder: Path

    def as_dict(self) -> dict[str, str]:
        """What results.jsonl says of it: the UID only (a study date is patient data)."""
        return {"study_uid": self.study_uid}


def fetch_priors(
    peer: Peer,
    header: Any,
    count: int,
    folder: Path,
    *,
    calling: str,
    move_port: int = 0,
    timeout: float = 30,
) -> list[Prior]:
    """The `count` most recent other studies of the patient in `header` (a dataset of the
    current series) and its modality, fetched from `peer` into `folder`, newest first."""
    patient = str(header.get("PatientID", "") or "")
    current = str(header.get("StudyInstanceUID", "") or "")
    if count <= 0 or not patient or _WILDCARDS & set(patient):
        return []
    current_when = f"{header.get('StudyDate', '') or ''}{header.get('StudyTime', '') or ''}"
    query = {
        "PatientID": patient,
        "ModalitiesInStudy": str(header.get("Modality", "") or ""),
        "StudyDate": "",
        "StudyTime": "",
    }
    try:
        matches = find(peer, query, calling, timeout)
    except NetworkError as error:
        raise PriorsUnavailable(str(error)) from None
    candidates = [
        match
        for match in matches
        if match.study_uid != current and not (current_when and match.when > current_when)
    ]
    chosen = sorted(candidates, key=lambda match: match.when, reverse=True)[:count]
    shutil.rmtree(folder, ignore_errors=True)  # an earlier, interrupted attempt starts over
    priors = []
    for match in chosen:
        target = folder / check_uid(match.study_uid)
        try:
            done = retrieve(
                peer, [match], target, calling=calling, move_port=move_port, timeout=timeout
            )
        except NetworkError as error:
            raise PriorsUnavailable(str(error)) from None
        if done.failures:
            raise PriorsUnavailable(done.failures[0]["error"])
        priors.append(Prior(match.study_uid, match.when, target))
    return priors


def prior_results(inferencer: Any, priors: list[Prior]) -> list[dict[str, Any]]:
    """The model's result line on each series of each prior it takes, newest study first."""
    from edgeimg.pipeline import run_series, scan

    lines = []
    for prior in priors:
        jobs = [job for job in scan([prior.folder], inferencer.spec).jobs if job.skip is None]
        for series in run_series(inferencer, jobs, None, whole=True):
            series.raise_failure()
            lines.append(series.line)
    return lines


def with_priors(inferencer: Any, priors: list[Prior]) -> Callable[[dict[str, Any]], None]:
    """What adds the priors to a result line: the studies used, and the model's `compare` of
    its results on this series with its results on theirs (nothing for a model without)."""
    if inferencer.spec.priors <= 0:
        return lambda line: None
    earlier = prior_results(inferencer, priors)
    used = [prior.as_dict() for prior in priors]

    def add(line: dict[str, Any]) -> None:
        line["priors"] = used
        line["comparison"] = inferencer.implementation.compare(line, earlier)

    return add


def prior_headers(priors: list[Prior]) -> tuple[Any, ...]:
    """One header (no pixels) per prior instance: the SR lists them as other evidence."""
    from pydicom import dcmread

    return tuple(
        dcmread(path, stop_before_pixels=True)
        for prior in priors
        for path in sorted(prior.folder.glob("*.dcm"))
    )
