"""The conformance table: real source files, and systematic mutations of the attributes we read.

A *source* is a list of files somebody else wrote (pydicom's and pynetdicom's test data, dcmtk
conversions of them) or that we wrote as another vendor would (Enhanced CT from `edgeimg synth
--enhanced`, highdicom's Legacy Converted Enhanced CT). A *mutation* changes one attribute
wherever a reader may look for it: at the top level, or in the shared or per-frame functional
group macro that holds it in an enhanced image. Kinds:

    empty      the element present with no value (legal for Type 2, often seen in exports)
    absent     the element removed (Type 3 / 1C, and de-identified data)
    multi      two or more values where one is expected
    perframe   moved from the top level, or the shared group, into every per-frame group
    duplicate  one more file: a copy of the first under the same SOP Instance UID

Every case is written to its own folder, `<case id>/NN.dcm`, with fresh Series and SOP Instance
UIDs (derived from the case id), so that many cases share one folder and one `edgeimg run`.
The judge lives in tests/test_conformance.py; testsupport/corpus.py keeps the malformed-bytes cases.
"""

from __future__ import annotations

import copy
import glob
import shutil
import subprocess
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pynetdicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence

from edgeimg.synth.dicom import write_study
from edgeimg.synth.enhanced import ENHANCED_FILE, legacy_converted
from tests.dciodvfy import dciodvfy_errors

MACROS = {
    "PixelSpacing": "PixelMeasuresSequence",
    "SliceThickness": "PixelMeasuresSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
    "ImagePositionPatient": "PlanePositionSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "WindowCenter": "FrameVOILUTSequence",
    "WindowWidth": "FrameVOILUTSequence",
}
"""Where an enhanced image keeps an attribute that a classic image has at the top level."""

GEOMETRY = ("SliceThickness", "PixelSpacing", "ImageOrientationPatient", "ImagePositionPatient")
PIXEL_VALUES = ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth")
IDENTITY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)
NUMBERS = ("SeriesNumber", "InstanceNumber")

MUTATIONS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(GEOMETRY, ("empty", "absent", "multi", "perframe")),
    **dict.fromkeys(PIXEL_VALUES, ("empty", "absent", "multi", "perframe")),
    "FrameOfReferenceUID": ("empty", "absent"),
    **dict.fromkeys(IDENTITY, ("empty", "absent")),
    **dict.fromkeys(NUMBERS, ("empty", "absent", "multi")),
    "Modality": ("empty", "absent"),
    "SOPInstanceUID": ("duplicate",),
}
"""Attribute -> the kinds of mutation applied to it: the table the suite is driven by."""

SAMPLE: dict[str, tuple[str, ...]] = {
    "pydicom-CT_small": tuple(MUTATIONS),
    "synth-enhanced": (*MACROS, "FrameOfReferenceUID", "SOPInstanceUID"),
}
"""The sample run (`make test`): source -> attributes mutated. The full run (`make fuzz`)
mutates every attribute of every CT source."""

_PYNETDICOM_FILES = Path(pynetdicom.__file__).parent / "tests" / "dicom_files"
_UID_ROOT = "edgeimg.tests.conformance"


@dataclass(frozen=True)
class Source:
    """Files another program wrote; `ct` sources are mutated, the others only run as they are.

    A `valid` source is a CT input that every model taking CT must process, as it is (even
    where dciodvfy finds fault with how another program wrote it, as with highdicom's Legacy
    Converted Enhanced CT) and in every variant that dciodvfy passes; for sequence models,
    when it has enough frames.
    """

    id: str
    load: Callable[[Path], list[Dataset]]
    ct: bool = True
    valid: bool = False


@dataclass(frozen=True)
class Case:
    """One variant: a source, and the attribute and kind of mutation (None: as written)."""

    source: Source
    keyword: str | None = None
    kind: str | None = None

    @property
    def id(self) -> str:
        if self.keyword is None:
            return f"{self.source.id}--as-is"
        return f"{self.source.id}--{self.keyword}-{self.kind}"


def _read(paths: list[str | Path]) -> list[Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [pydicom.dcmread(path) for path in sorted(paths)]


def _pydicom(*names: str) -> Callable[[Path], list[Dataset]]:
    return lambda _work: _read([get_testdata_file(name) for name in names])


def _pydicom_folder(folder: str) -> Callable[[Path], list[Dataset]]:
    def load(_work: Path) -> list[Dataset]:
        root = Path(get_testdata_file("CT_small.dcm")).parent
        return _read(sorted(glob.glob(str(root / "dicomdirtests" / folder / "*"))))

    return load


def _pynetdicom(name: str) -> Callable[[Path], list[Dataset]]:
    return lambda _work: _read([_PYNETDICOM_FILES / name])


def _dcmtk(tool: str, *options: str) -> Callable[[Path], list[Dataset]]:
    """CT_small.dcm converted by a dcmtk tool (dcmconv for byte order, dcmc* to compress)."""

    def load(work: Path) -> list[Dataset]:
        target = work / f"{tool}{''.join(options)}.dcm"
        command = [tool, *options, get_testdata_file("CT_small.dcm"), str(target)]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
        return _read([target])

    return load


def _synth(kind: str) -> Callable[[Path], list[Dataset]]:
    """Eight 64 x 64 slices: as single frames, as Enhanced CT, or as Legacy Converted."""

    def load(work: Path) -> list[Dataset]:
        out = work / f"synth-{kind}"
        write_study(out, series=1, slices=8, size=64, seed=14, enhanced=kind == "enhanced")
        if kind == "enhanced":
            return _read([out / "series-001" / ENHANCED_FILE])
        slices = _read(sorted((out / "series-001").glob("slice-*.dcm")))
        if kind == "single":
            return slices
        return [legacy_converted(slices, _uid("legacy", "series"), _uid("legacy", "sop"))]

    return load


def _available(tool: str) -> bool:
    return shutil.which(tool) is not None


SOURCES: tuple[Source, ...] = (
    Source("pydicom-CT_small", _pydicom("CT_small.dcm"), valid=True),
    Source("pydicom-CT_J2KI", _pydicom("693_J2KI.dcm")),
    Source("pydicom-CT_J2K_pixelrep", _pydicom("J2K_pixelrep_mismatch.dcm")),
    Source("pydicom-CT2", _pydicom_folder("77654033/CT2"), valid=True),
    Source("pydicom-CT5N", _pydicom_folder("98892001/CT5N")),
    Source("pynetdicom-CT", _pynetdicom("CTImageStorage.dcm"), valid=True),
    *(
        Source(f"dcmtk-{name}", _dcmtk(tool, *options), valid=True)
        for name, tool, options in (
            ("implicit", "dcmconv", ("+ti",)),
            ("big-endian", "dcmconv", ("+tb",)),
            ("rle", "dcmcrle", ()),
            ("jpeg-lossless", "dcmcjpeg", ("+e1",)),
            ("jpeg-ls", "dcmcjpls", ()),
        )
        if _available(tool)
    ),
    Source("synth-single", _synth("single"), valid=True),
    Source("synth-enhanced", _synth("enhanced"), valid=True),
    Source("synth-legacy", _synth("legacy"), valid=True),
    *(
        Source(f"pydicom-{name.removesuffix('.dcm')}", _pydicom(name), ct=False)
        for name in (
            "MR_small.dcm",
            "MR_small_bigendian.dcm",
            "MR_small_RLE.dcm",
            "MR_small_jpeg_ls_lossless.dcm",
            "MR_small_jp2klossless.dcm",
            "JPEG2000.dcm",
            "JPEG-lossy.dcm",
            "SC_rgb_rle.dcm",
            "SC_rgb_rle_2frame.dcm",
            "rtdose.dcm",
            "test-SR.dcm",
            "examples_ybr_color.dcm",
        )
        if get_testdata_file(name) is not None
    ),
    *(
        Source(f"pynetdicom-{name.removesuffix('.dcm')}", _pynetdicom(name), ct=False)
        for name in ("RTImageStorage.dcm", "SCImageStorage_Deflated.dcm")
        if (_PYNETDICOM_FILES / name).is_file()
    ),
)


def cases(full: bool) -> list[Case]:
    """Every source as it is, and the mutation table over the CT sources (the sample's, or all)."""
    return [Case(source) for source in SOURCES] + [
        Case(source, keyword, kind)
        for source in SOURCES
        if source.ct and (full or source.id in SAMPLE)
        for keyword in (MUTATIONS if full else SAMPLE[source.id])
        for kind in MUTATIONS[keyword]
    ]


def _uid(*parts: object) -> str:
    name = "\x1f".join([_UID_ROOT, *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _groups(ds: Dataset, keyword: str) -> Iterator[Dataset]:
    """The macro items that may hold `keyword`, shared group first, then each frame's."""
    macro = MACROS.get(keyword)
    if macro is None:
        return
    for outer in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        for group in ds.get(outer, []):
            yield from group.get(macro, [])


def _places(ds: Dataset, keyword: str) -> list[Dataset]:
    """Every dataset where `keyword` is present: the top level and functional group macros."""
    return [place for place in (ds, *_groups(ds, keyword)) if keyword in place]


def _empty(ds: Dataset, keyword: str, places: list[Dataset]) -> None:
    for place in places:
        place[keyword].value = None


def _absent(ds: Dataset, keyword: str, places: list[Dataset]) -> None:
    for place in places:
        del place[keyword]


def _multi(ds: Dataset, keyword: str, places: list[Dataset]) -> None:
    for place in places:
        value = place[keyword].value
        values = list(value) if isinstance(value, list | tuple | MultiValue) else [value]
        place[keyword].value = [*values, values[0]]


def _perframe(ds: Dataset, keyword: str, places: list[Dataset]) -> None:
    """Into every per-frame group: an enhanced image's shared macro moves there whole (legal);
    a classic image's top-level attribute goes into per-frame groups made for it."""
    macro = MACROS[keyword]
    for group in ds.get("SharedFunctionalGroupsSequence", []):
        if any(item is place for item in group.get(macro, []) for place in places):
            item = group[macro].value[0]
            del group[macro]
            for frame in ds.PerFrameFunctionalGroupsSequence:
                setattr(frame, macro, DicomSequence([copy.deepcopy(item)]))
            return
    element = ds[keyword]
    del ds[keyword]
    frames = int(ds.get("NumberOfFrames") or 1)
    if "PerFrameFunctionalGroupsSequence" not in ds:
        ds.PerFrameFunctionalGroupsSequence = DicomSequence([Dataset() for _ in range(frames)])
    for frame in ds.PerFrameFunctionalGroupsSequence:
        if macro not in frame:
            setattr(frame, macro, DicomSequence([Dataset()]))
        frame[macro].value[0].add_new(element.tag, element.VR, element.value)


_KINDS = {"empty": _empty, "absent": _absent, "multi": _multi, "perframe": _perframe}


def mutate(case: Case, datasets: list[Dataset]) -> list[Dataset] | None:
    """The case's files (new Series and SOP UIDs), or None when the mutation does not apply."""
    series_uid = _uid(case.id, "series")
    out = []
    for index, source in enumerate(datasets):
        ds = copy.deepcopy(source)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = _uid(case.id, "instance", index)
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    if case.kind == "duplicate":
        twin = copy.deepcopy(out[0])
        twin.ImageComments = "a different object under the same SOP Instance UID"
        return [*out, twin]
    if case.keyword is None:
        return out
    if case.kind == "perframe" and case.keyword not in MACROS:
        return None
    for ds in out:
        places = _places(ds, case.keyword)
        if case.kind == "perframe" and ds.get("PerFrameFunctionalGroupsSequence"):
            shared = _shared(ds, case.keyword)
            places = [p for p in places if p is ds or any(p is s for s in shared)]
        if not places:
            return None
        _KINDS[case.kind](ds, case.keyword, places)
    return out


def _shared(ds: Dataset, keyword: str) -> list[Dataset]:
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    return [m for g in shared for m in g.get(MACROS[keyword], []) if keyword in m]


@dataclass
class Written:
    """What `write_cases` wrote: every file under its case, cases that did not apply, and
    per source its number of files and of frames."""

    root: Path
    files: dict[str, list[Path]]
    not_applicable: list[str]
    sources: dict[str, tuple[int, int]]
    conformant: set[str] = field(default_factory=set)
    """Cases whose every file passes dciodvfy with no errors: legal input, not just readable."""


def write_cases(root: Path, selected: list[Case]) -> Written:
    """Write each applicable case into `root/<case id>/NN.dcm`."""
    root.mkdir(parents=True, exist_ok=True)
    loaded: dict[str, list[Dataset]] = {}
    written = Written(root, {}, [], {})
    with tempfile.TemporaryDirectory() as work:
        for case in selected:
            if case.source.id not in loaded:
                found = loaded[case.source.id] = case.source.load(Path(work))
                frames = sum(int(ds.get("NumberOfFrames") or 1) for ds in found)
                written.sources[case.source.id] = (len(found), frames)
            datasets = mutate(case, loaded[case.source.id])
            if datasets is None:
                written.not_applicable.append(case.id)
                continue
            folder = root / case.id
            folder.mkdir()
            paths = []
            for index, ds in enumerate(datasets):
                path = folder / f"{index:02d}.dcm"
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds.save_as(path, enforce_file_format=True)
                paths.append(path)
            written.files[case.id] = paths
            if not any(dciodvfy_errors(path) for path in paths):
                written.conformant.add(case.id)
    return written
