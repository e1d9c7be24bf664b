"""What every DICOM result object shares: its place in the source study, its identity, its save.

Each writer (`sr`, `seg`, `derived`) builds its object with highdicom (or, for derived images of
the source's own SOP class, from a copy of the source) and hands it here to be saved atomically:
the listener forwards whatever lies in the output folder, so a half-written file must never
appear under its final name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from edgeimg import __version__
from edgeimg.dicom.output_gate import check_output
from edgeimg.dicom.pydicom_write import write_part10
from edgeimg.dicom.type2 import COPIED_TYPE2
from edgeimg.dicom.uids import OutputUIDs, check_uid, output_uids
from edgeimg.durable import atomic_file
from edgeimg.errors import EdgeimgError
from edgeimg.sdk.model import ModelSpec

MANUFACTURER = "edgeimg"
NOT_CLINICAL = "not for clinical use"
# Output series numbers: the source's series number plus an offset per kind, so that viewers
# list results next to their source and a re-run gets the same number.
SERIES_OFFSETS = {"sr": 7000, "seg": 8000, "derived": 9000}
_LO = 64
_MAX_IS = 2**31 - 1


class OutputRefused(ValueError, EdgeimgError):
    """An output these sources cannot make conformant; the text names the file and attribute."""


def source_name(ds: Dataset) -> str:
    """How a refusal names a source: its file, else its SOP Instance UID."""
    filename = getattr(ds, "filename", None)
    if isinstance(filename, str) and filename:
        return filename
    return f"instance {ds.get('SOPInstanceUID', '?')}"


def refuse(ds: Dataset, keyword: str, why: str) -> OutputRefused:
    """The refusal for attribute `keyword` of source `ds`, in the one shape every writer uses."""
    tag = tag_for_keyword(keyword)
    named = f"{keyword} ({tag >> 16:04X},{tag & 0xFFFF:04X})" if tag is not None else keyword
    return OutputRefused(f"{source_name(ds)}: {named} {why}")


@dataclass(frozen=True)
class Output:
    """Identity of one output series: UIDs, number, description and equipment."""

    uids: OutputUIDs
    series_number: int
    series_description: str
    model: ModelSpec
    engine_key: str

    @property
    def software_versions(self) -> list[str]:
        return [f"edgeimg {__version__}", self.model_name]

    @property
    def model_name(self) -> str:
        return f"{self.model.name} {self.model.version}"[:_LO]

    @property
    def device_serial_number(self) -> str:
        return self.engine_key[:_LO]


def series_description(model: ModelSpec, what: str) -> str:
    """Name the model and, unless the model is cleared for clinical use, say it is not."""
    if model.clinical_use:
        return f"{model.name} {model.version} {what}"[:_LO]
    suffix = f" - {NOT_CLINICAL}"
    return f"{model.name} {model.version} {what}"[: _LO - len(suffix)] + suffix


def check_sources(sources: Sequence[Dataset], *, one_series: bool) -> list[Dataset]:
    """Outputs land in the source study, so all sources must share it (and a series, if asked).

    Returns the sources with the Patient and General Study type 2 attributes present (empty
    where a source left them out): outputs copy those modules, and highdicom requires them.
    """
    if not sources:
        raise ValueError("no source images")
    studies = {ds.StudyInstanceUID for ds in sources}
    if len(studies) != 1:
        raise ValueError(f"sources come from {len(studies)} studies; expected one")
    if one_series and len({ds.SeriesInstanceUID for ds in sources}) != 1:
        raise ValueError("sources come from more than one series; expected one")
    return [_with_type2(ds) for ds in sources]


#: COPIED_TYPE2 with their tags: a source's tags are tested as stored, not keyword by keyword
_TYPE2_TAGS = tuple((keyword, tag_for_keyword(keyword)) for keyword in COPIED_TYPE2)


def _with_type2(ds: Dataset) -> Dataset:
    present = ds.keys()
    missing = [keyword for keyword, tag in _TYPE2_TAGS if tag not in present]
    if not missing:
        return ds
    filled = Dataset(dict(ds))  # a new element dict: the caller's dataset stays as it was
    if "file_meta" in ds.__dict__:
        filled.file_meta = ds.file_meta
    for keyword in missing:
        setattr(filled, keyword, "")
    return filled


def character_set(sources: Sequence[Dataset]) -> list[str] | str | None:
    """The sources' Specific Character Set as highdicom accepts it.

    An empty first value means the default repertoire when code extensions follow (Japanese
    studies say ``\\ISO 2022 IR 87``); highdicom refuses the empty value, so it is spelled out
    as ISO 2022 IR 6, which means the same.
    """
    value = sources[0].get("SpecificCharacterSet")
    if value is None or isinstance(value, str):
        return value or None
    values = [str(item) or "ISO 2022 IR 6" for item in value]
    return values if len(values) > 1 else values[0]


def _series_number(ds: Dataset) -> int:
    """The source's series number, 0 where it is empty or not one integer (it is Type 2)."""
    try:
        return max(int(ds.get("SeriesNumber") or 0), 0)
    except (TypeError, ValueError):
        return 0


def prepare(
    kind: str,
    what: str,
    sources: Sequence[Dataset],
    model: ModelSpec,
    engine_key: str,
    *,
    series_offset: int | None = None,
) -> Output:
    """The identity of the `kind` output of `model` run by `engine_key` on `sources`.

    A writer of its own kind (a plugin's) gives the `series_offset` its series number takes
    from the source's; the built-in kinds have theirs in SERIES_OFFSETS.
    """
    offset = SERIES_OFFSETS.get(kind) if series_offset is None else series_offset
    if offset is None:
        raise ValueError(f"output kind {kind!r} has no series number offset; give series_offset")
    if not engine_key:
        raise ValueError("engine_key is empty; output UIDs are derived from it")
    uids = output_uids(
        kind, (ds.SOPInstanceUID for ds in sources), model.name, model.version, engine_key
    )
    source_number = min(_series_number(ds) for ds in sources)
    number = min(source_number + offset, _MAX_IS)
    return Output(uids, number, series_description(model, what), model, engine_key)


DEID_METHODS = ("DeidentificationMethod", "DeidentificationMethodCodeSequence")
#: what an output says when its source was de-identified by a method it does not name
UNSTATED_METHOD = "source de-identified; method not stated in the source"


def _state_deidentification(dataset: Dataset, sources: Sequence[Dataset]) -> None:
    """An output that says Patient Identity Removed YES must name a method (Type 1C), as its
    source should have: copy the source's, or say the source did not give one."""
    if str(dataset.get("PatientIdentityRemoved", "")).upper() != "YES":
        return
    if any(dataset.get(keyword) for keyword in DEID_METHODS):
        return
    for source in sources:
        found = {keyword: source.get(keyword) for keyword in DEID_METHODS if source.get(keyword)}
        if found:
            for keyword, value in found.items():
                setattr(dataset, keyword, value)
            return
    dataset.DeidentificationMethod = UNSTATED_METHOD


#: date and time pairs an output states about itself, set from its sources (`source_time`)
STAMPED = (
    ("InstanceCreationDate", "InstanceCreationTime"),
    ("ContentDate", "ContentTime"),
    ("SeriesDate", "SeriesTime"),
    ("DateOfSecondaryCapture", "TimeOfSecondaryCapture"),
)
#: where a source says when its content was made, most specific first
SOURCE_TIMES = ("Content", "Acquisition", "Series", "Study")
#: for sources that say nothing of when (the DICOM epoch of no meaning, but a fixed one)
NO_TIME = ("19700101", "000000")


def source_time(sources: Sequence[Dataset]) -> tuple[str, str]:
    """The newest (date, time) the sources give for their content: what an output's dates and
    times say, so that the same input gives the same bytes (a re-run, a retry, another node)."""
    found = []
    for ds in sources:
        for prefix in SOURCE_TIMES:
            date = str(ds.get(f"{prefix}Date", "") or "")
            if len(date) == 8 and date.isdigit():
                found.append((date, str(ds.get(f"{prefix}Time", "") or "000000")))
                break
    return max(found, default=NO_TIME)


def _stamp(dataset: Dataset, sources: Sequence[Dataset]) -> None:
    """highdicom and the derived writer date an object by the clock; date it by its sources."""
    date, time = source_time(sources)
    for date_keyword, time_keyword in STAMPED:
        if date_keyword in dataset:
            setattr(dataset, date_keyword, date)
            setattr(dataset, time_keyword, time)
    inherited = {
        str(item.get("ContributionDateTime"))
        for source in sources
        for item in source.get("ContributingEquipmentSequence") or []
    }
    for item in dataset.get("ContributingEquipmentSequence") or []:
        if "ContributionDateTime" in item and str(item.ContributionDateTime) not in inherited:
            item.ContributionDateTime = date + time  # ours or highdicom's, dated by the clock


def save(dataset: Dataset, out_dir: Path, sources: Sequence[Dataset]) -> Path:
    """Gate `dataset`, then write it to out_dir/<SOPInstanceUID>.dcm durably (temp file, fsync,
    rename): an object that fails the gate never reaches the folder the forwarder reads."""
    _stamp(dataset, sources)
    _state_deidentification(dataset, sources)
    check_output(dataset, sources)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{check_uid(str(dataset.SOPInstanceUID))}.dcm"
    with atomic_file(path, prefix=f".{path.name}.") as stream:
        write_part10(stream, dataset)
    return path
