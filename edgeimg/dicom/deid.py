"""De-identification by the Basic Application Level Confidentiality Profile (PS3.15 Annex E).

The profile's action table lives in `deid_profile.py`; this module applies it. Decisions the
standard leaves to the implementer, written down here so they can be reviewed:

- Compound codes (X/Z, X/D, Z/D, X/Z/D) pick the mildest action the IOD needs: the attribute's
  type in the object's IOD (from highdicom's copy of the standard) decides — type 1: D, type 2: Z,
  type 3 or absent: X. Objects of an IOD we cannot look up are treated as type 2 throughout, which
  keeps every attribute present and empty rather than guessing it away.
- X/Z/U* on a sequence (ReferencedImageSequence, SourceImageSequence, ...) keeps the sequence and
  maps the UIDs inside it, so references between de-identified objects still resolve.
- UIDs (U) map to 2.25.<128-bit int> by HMAC-SHA256 under the user's key: the same UID always
  maps to the same UID under one key, so a series de-identified file by file stays one series,
  and nobody without the key can map back or test a guess.
- PatientName and PatientID are replaced by one pseudonym, HMAC of the original PatientID (or the
  name when there is no ID), so one patient's studies stay linked under one key.
- Clean (C, Clean Descriptors Option) cannot understand free text. It keeps the words of a fixed
  vocabulary of anatomy, modality and technique terms and short numbers with units, and drops
  every other word: "CT CHEST W CONTRAST 5MM" survives, a name or an ID in it does not.
- Private attributes, curves and overlays are removed: whole overlay groups (60xx), not just the
  data and comments the table names, since an Overlay Plane without its data is invalid.
- Pixel data is never changed: objects likely to carry burned-in text are flagged instead
  (`burned_in_risk`).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from edgeimg import __version__
from edgeimg.dicom.deid_profile import (
    BASIC_PROFILE,
    CLEAN_DESCRIPTORS,
    REPEATING_GROUPS,
    RETAIN_UIDS,
)

DICOM_ROOT = "1.2.840.10008."
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

METHOD_CODES = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
}
"""CID 7050 De-identification Method codes (scheme DCM) for the profile and its options."""

_DUMMY_TEXT = "ANONYMIZED"
_DUMMIES = {
    "DA": "19000101",
    "TM": "000000",
    "DT": "19000101000000",
    "AS": "000Y",
    "IS": "0",
    "DS": "0",
    "CS": "ANONYMIZED",
}
_NUMERIC = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"}
_BINARY = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
_TEXT = {"LO", "SH", "LT", "ST", "UT", "UC", "PN"}

_RESOLVE = {
    "1": {"Z/D": "D", "X/Z": "Z", "X/D": "D", "X/Z/D": "D"},
    "2": {"Z/D": "Z", "X/Z": "Z", "X/D": "D", "X/Z/D": "Z"},
    "3": {"Z/D": "Z", "X/Z": "X", "X/D": "X", "X/Z/D": "X"},
}
"""Compound code → action, by the attribute's type in the IOD (see the module docstring)."""

SAFE_WORDS = frozenset(
    """
    abdomen abd aaa adrenal ankle aorta aortic arm arterial artery ax axial bladder body bone
    brain breast c cardiac carotid cervical chest colon contrast cor coronal ct cta cine
    delayed diffusion dwi elbow enhanced face femur fibula flair foot forearm gd hand head heart
    helical hip humerus iv kidney knee l leg liver localizer lower lumbar lung lungs mediastinum
    mip mpr mr mra mri native neck non orbit orbits pancreas pelvis perfusion pet phase portal
    post pre prostate recon rib ribs routine sag sagittal scout se sinus sinuses skull soft
    spine spiral spleen std standard stir t t1 t2 thin thick thorax thoracic tibia tissue
    topogram upper us venous w wo with without wrist x xr 3d 2d dual energy kidneys ureter
    urinary low dose ld hr high resolution sharp smooth kernel lat ap pa lateral frontal
    """.split()
)
"""Words the Clean Descriptors Option keeps; anything else in a descriptor is dropped."""

_SAFE_NUMBER = re.compile(r"^\d{1,3}(\.\d{1,3})?(mm|cm|ml|kv|kvp|ma|mas|s|ms|sec|mg|%)?$", re.I)


@dataclass(frozen=True)
class DeidOptions:
    """What to de-identify with: `key` (secret) drives the UID mapping and pseudonyms."""

    key: bytes
    retain_uids: bool = False
    clean_descriptors: bool = False
    keep_private: bool = False

    def __post_init__(self) -> None:
        if len(self.key) < 16:
            raise ValueError("the de-identification key must be at least 16 bytes")


@dataclass
class DeidResult:
    """The de-identified copy, what the caller should know, and whether pixels may hold PHI."""

    dataset: Dataset
    warnings: list[str] = field(default_factory=list)
    burned_in_risk: bool = False
    burned_in_reason: str | None = None


def map_uid(uid: str, key: bytes) -> str:
    """The UID `uid` maps to under `key`; standard (1.2.840.10008) UIDs are not identifying."""
    uid = uid.strip().rstrip("\0")
    if not uid or uid.startswith(DICOM_ROOT):
        return uid
    digest = hmac.new(key, b"uid:" + uid.encode(), hashlib.sha256).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def pseudonym(identity: str, key: bytes) -> str:
    """A stable, keyed stand-in for a patient: the same identity gives the same pseudonym."""
    digest = hmac.new(key, b"patient:" + identity.strip().encode(), hashlib.sha256).hexdigest()
    return f"ANON{digest[:12].upper()}"


def clean_text(text: str) -> str:
    """Keep only vocabulary words and short numbers with units (see SAFE_WORDS).

    Words are split on white space only, so "123-45-6789" or "01/02/1970" is one word and goes
    whole, rather than leaving pieces that look like safe numbers.
    """
    words = (word.strip("()[]{},;:") for word in text.split())
    return " ".join(w for w in words if w.lower() in SAFE_WORDS or _SAFE_NUMBER.match(w))


@functools.lru_cache(maxsize=64)
def _iod_types(sop_class_uid: str) -> dict[tuple[str, ...], str] | None:
    """Attribute path → strictest type (1, 2, 3) over the IOD's modules; None if unknown."""
    try:
        from highdicom._standard_utils import (
            get_iod_module_map,
            get_module_attribute_map,
            get_sop_class_iod_map,
        )
    except ImportError:  # a highdicom without its copy of the standard
        return None
    iod = get_sop_class_iod_map().get(sop_class_uid)
    if iod is None:
        return None
    attributes = get_module_attribute_map()
    types: dict[tuple[str, ...], str] = {}
    for module in get_iod_module_map()[iod]:
        for attribute in attributes[module["key"]]:
            path = (*attribute["path"], attribute["keyword"])
            types[path] = min(types.get(path, "3"), attribute["type"][0])
    return types


class _Deidentifier:
    """One run over one dataset: options, the IOD's attribute types and the warnings so far."""

    def __init__(self, ds: Dataset, options: DeidOptions) -> None:
        self.options = options
        self.types = _iod_types(str(ds.get("SOPClassUID", "")))
        self.warnings: list[str] = []
        identity = str(ds.get("PatientID", "") or "") or str(ds.get("PatientName", "") or "")
        self.pseudonym = pseudonym(identity, options.key)

    def action(self, tag: BaseTag, path: tuple[str, ...], keyword: str) -> str | None:
        """The single action (D, Z, X, K, C, U) for `tag`, or None where the table is silent."""
        if tag.is_private:
            return "K" if self.options.keep_private else "X"
        if tag.group & 0xFF01 == 0x6000:
            return "X"  # whole overlay planes: without their data the rest would be invalid
        for (mask, group, element), code in REPEATING_GROUPS.items():
            if (tag.group & mask) == group and element in (-1, tag.element):
                return code
        code = BASIC_PROFILE.get(int(tag))
        if code is None:
            return None
        if self.options.retain_uids and int(tag) in RETAIN_UIDS:
            return "K"
        if self.options.clean_descriptors and int(tag) in CLEAN_DESCRIPTORS:
            return "C"
        if code == "X/Z/U*":
            return "U"
        if "/" in code:
            kind = "2" if self.types is None else self.types.get((*path, keyword), "3")
            return _RESOLVE[kind][code]
        return code

    def run(self, ds: Dataset, path: tuple[str, ...] = ()) -> None:
        for elem in list(ds):
            self.apply(ds, elem, path)

    def apply(self, ds: Dataset, elem: DataElement, path: tuple[str, ...]) -> None:
        if not path and elem.keyword in ("PatientName", "PatientID"):
            elem.value = self.pseudonym
            return
        action = self.action(elem.tag, path, elem.keyword)
        if action == "X":
            del ds[elem.tag]
        elif action == "Z":
            elem.value = Sequence() if elem.VR == "SQ" else None
        elif elem.VR == "SQ":
            for item in elem.value:
                self.run(item, (*path, elem.keyword))
        elif action == "D" or (action == "U" and elem.VR != "UI"):
            elem.value = self.dummy(elem)
        elif action == "U":
            elem.value = self.map_uids(elem.value)
        elif action == "C":
            elem.value = self.clean(elem)

    def dummy(self, elem: DataElement):
        vr = elem.VR.split(" or ")[0]  # "US or SS", "OB or OW": any of them will do
        if vr == "UI":
            return self.map_uids(elem.value)
        if vr in _NUMERIC:
            return 0
        if vr in _BINARY:
            return bytes(max(2, len(elem.value or b"")))
        return _DUMMIES.get(vr, _DUMMY_TEXT)

    def map_uids(self, value):
        if isinstance(value, (list, MultiValue)):
            return [map_uid(str(item), self.options.key) for item in value]
        return map_uid(str(value), self.options.key) if value else value

    def clean(self, elem: DataElement):
        if elem.VR not in _TEXT or elem.value is None:
            return elem.value
        if isinstance(elem.value, (list, MultiValue)):
            return [clean_text(str(item)) for item in elem.value]
        return clean_text(str(elem.value))


def burned_in_risk(ds: Dataset) -> str | None:
    """Why the pixels of `ds` may show PHI as text, or None; we flag, we never scrub pixels."""
    if str(ds.get("BurnedInAnnotation", "")).upper() == "YES":
        return "BurnedInAnnotation is YES"
    if str(ds.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE):
        return "Secondary Capture objects often carry screen text"
    if str(ds.get("Modality", "")).upper() in ("US", "XC", "OT", "ES"):
        return f"modality {ds.Modality} often carries burned-in text"
    image_type = [str(value).upper() for value in _as_list(ds.get("ImageType"))]
    if "SECONDARY" in image_type or "SCREEN SHOT" in image_type:
        return "ImageType says SECONDARY (screen captures often carry text)"
    return None


def _as_list(value) -> list:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, (list, MultiValue)) else [value]


def _method(options: DeidOptions) -> Iterable[tuple[str, str]]:
    yield METHOD_CODES["basic"]
    if options.retain_uids:
        yield METHOD_CODES["retain_uids"]
    if options.clean_descriptors:
        yield METHOD_CODES["clean_descriptors"]


def deidentify(ds: Dataset, options: DeidOptions) -> DeidResult:
    """A de-identified copy of `ds` (which is left untouched) per PS3.15 E.1 and `options`."""
    out = copy.deepcopy(ds)
    worker = _Deidentifier(out, options)
    worker.run(out)
    reason = burned_in_risk(ds)
    if reason:
        worker.warnings.append(f"possible burned-in PHI in pixel data: {reason}")
        if not out.get("BurnedInAnnotation"):
            out.BurnedInAnnotation = "YES"
    if options.keep_private:
        worker.warnings.append("private attributes kept: they may hold PHI")
    codes = list(_method(options))
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = [f"edgeimg {__version__}: {meaning}" for _, meaning in codes]
    items = []
    for value, meaning in codes:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
        items.append(item)
    out.DeidentificationMethodCodeSequence = items
    if getattr(out, "file_meta", None) is not None and "SOPInstanceUID" in out:
        out.file_meta.MediaStorageSOPInstanceUID = out.SOPInstanceUID
    return DeidResult(out, worker.warnings, reason is not None, reason)
