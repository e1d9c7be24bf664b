"""Write synthetic phantoms as a DICOM CT study plus a JSON ground-truth sidecar.

Everything is derived from the seed (pixels, UIDs, dates), so the same arguments give
byte-identical files: pipelines and tests can be checked against known answers. Each series
is an independent phantom (its own anatomy and frame of reference), so one study holds
several labelled examples; a low-dose copy shares its source's phantom and geometry.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from edgeimg import __version__
from edgeimg.synth.enhanced import ENHANCED_FILE, enhanced_dataset
from edgeimg.synth.noise import low_dose
from edgeimg.synth.phantom import PERSIST_MIN, Phantom, make_phantom

SCHEMA = "edgeimg.synth.ground_truth/1"
INTERCEPT = -1024
HU_RANGE = (-1024, 3071)
FULL_DOSE_MA = 200
STUDY_DATE = "20240101"
STUDY_TIME = "120000"
MANUFACTURER = "edgeimg synthetic"


@dataclass
class SeriesInfo:
    """One written series: where it is and what it contains."""

    series_uid: str
    number: int
    folder: str
    description: str
    slices: int
    lesion_present: bool
    persistent: bool
    low_dose: bool = False
    dose_fraction: float = 1.0


@dataclass
class StudyInfo:
    """What `write_study` wrote; `files` counts DICOM files only."""

    out_dir: Path
    study_uid: str
    patient_id: str
    patient_name: str
    ground_truth: Path
    files: int = 0
    series: list[SeriesInfo] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "out": str(self.out_dir),
            "study_uid": self.study_uid,
            "patient_id": self.patient_id,
            "ground_truth": str(self.ground_truth),
            "files": self.files,
            "series": [asdict(info) for info in self.series],
        }


def _uid(*parts: object) -> str:
    """A 2.25 UID from a name-based (SHA-1, version 5) UUID of the parts.

    Deterministic, and distinct for distinct parts. pydicom's generate_uid ignores its entropy
    sources when prefix is None, and joins them without a separator, so it is not used here.
    """
    name = "\x1f".join(["edgeimg.synth", *map(str, parts)])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _stored(hu: np.ndarray) -> np.ndarray:
    """HU to stored values: round, clip to the 12-bit CT range, remove the intercept."""
    return (np.clip(np.rint(hu), *HU_RANGE) - INTERCEPT).astype(np.int16)


def _study_dataset(seed: int, study_uid: str) -> Dataset:
    """Patient, study and equipment attributes shared by every file of the study."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = f"SYNTH^PATIENT{seed}"
    ds.PatientID = f"SYNTH{seed:06d}"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "synthetic phantom, no patient data"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = STUDY_TIME
    ds.StudyID = "SYNTH"
    ds.AccessionNumber = f"SYN{seed}"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "edgeimg synthetic abdomen CT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "edgeimg synth"
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "edgeimg"
    ds.StationName = "SYNTH"
    return ds


def _slice_dataset(
    base: Dataset,
    phantom: Phantom,
    pixels: np.ndarray,
    k: int,
    series: dict[str, Any],
) -> Dataset:
    """One CT Image Storage instance: series-level `series` values plus slice k's geometry."""
    ds = Dataset()
    ds.update(base)
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = series["sop_uids"][k]
    ds.InstanceCreationDate = STUDY_DATE
    ds.InstanceCreationTime = STUDY_TIME
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series["uid"]
    ds.SeriesNumber = series["number"]
    ds.SeriesDescription = series["description"]
    ds.SeriesDate = STUDY_DATE
    ds.SeriesTime = STUDY_TIME
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = series["frame_uid"]
    ds.PositionReferenceIndicator = ""

    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = k + 1
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = STUDY_DATE
    ds.AcquisitionTime = STUDY_TIME
    ds.ContentDate = STUDY_DATE
    ds.ContentTime = STUDY_TIME
    ds.BurnedInAnnotation = "NO"

    size = pixels.shape[-1]
    spacing = phantom.pixel_spacing
    corner = -spacing * (size - 1) / 2.0
    z = float(phantom.positions_z[k])
    ds.ImagePositionPatient = [round(corner, 4), round(corner, 4), round(z, 4)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [round(spacing, 6), round(spacing, 6)]
    ds.SliceThickness = phantom.slice_thickness
    ds.SliceLocation = round(z, 4)

    dose = series["dose_fraction"]
    ds.KVP = 120
    ds.XRayTubeCurrent = round(FULL_DOSE_MA * dose)
    ds.ExposureTime = 500
    ds.Exposure = round(FULL_DOSE_MA * dose * 0.5)
    ds.CTDIvol = round(12.0 * dose, 3)
    ds.CTDIPhantomTypeCodeSequence = [_code("113691", "DCM", "IEC Body Dosimetry Phantom")]
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = round(spacing * size, 3)
    ds.DistanceSourceToDetector = 1085.6
    ds.DistanceSourceToPatient = 595.0
    ds.GantryDetectorTilt = 0
    ds.TableHeight = 160
    ds.RotationDirection = "CW"
    ds.ScanOptions = "HELICAL MODE"
    ds.FilterType = "BODY FILTER"
    ds.ConvolutionKernel = "STANDARD"
    ds.RevolutionTime = 0.5
    ds.SpiralPitchFactor = 1.0

    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = INTERCEPT
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.WindowCenterWidthExplanation = "ABDOMEN"
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels[k].tobytes()

    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _write_series(
    out_dir: Path,
    base: Dataset,
    phantom: Phantom,
    hu: np.ndarray,
    series: dict[str, Any],
    progress: Callable[[int], None] | None,
) -> list[dict[str, Any]]:
    """Write one folder of slices; return the sidecar's per-slice entries."""
    folder = out_dir / series["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    pixels = _stored(hu)
    enhanced = bool(series.get("enhanced"))
    if enhanced:
        name = f"{series['folder']}/{ENHANCED_FILE}"
        enhanced_dataset(base, phantom, pixels, series).save_as(
            out_dir / name, enforce_file_format=True
        )
    entries = []
    for k in range(hu.shape[0]):
        if enhanced:
            where = {"frame": k + 1, "sop_instance_uid": series["sop_uid"], "file": name}
        else:
            name = f"{series['folder']}/slice-{k + 1:04d}.dcm"
            ds = _slice_dataset(base, phantom, pixels, k, series)
            ds.save_as(out_dir / name, enforce_file_format=True)
            where = {"instance_number": k + 1, "sop_instance_uid": ds.SOPInstanceUID, "file": name}
        entries.append(
            {
                "index": k,
                **where,
                "z": float(phantom.positions_z[k]),
                "label": bool(phantom.slice_labels[k]),
                "boxes": [list(box) for box in phantom.boxes[k]],
                "lesion_ids": list(phantom.box_ids[k]),
            }
        )
        if progress is not None:
            progress(1)
    return entries


def _lesions(phantom: Phantom) -> list[dict[str, Any]]:
    return [
        {
            "id": lesion.id,
            "decoy": lesion.decoy,
            "host": lesion.host,
            "delta_hu": round(lesion.delta_hu, 1),
            "center_px": [round(c, 1) for c in lesion.center],
            "radius_px": [round(r, 2) for r in lesion.radius],
            "slices": lesion.slices,
            "longest_run": lesion.run,
        }
        for lesion in phantom.lesions
    ]


def count_files(series: int, slices: int, pairs: bool) -> int:
    """How many slices `write_study` writes (files, or frames with `enhanced`), for progress."""
    return series * slices * (2 if pairs else 1)


def write_study(
    out_dir: Path,
    *,
    series: int = 3,
    slices: int = 32,
    size: int = 512,
    seed: int = 0,
    noisy: bool = False,
    pairs: bool = False,
    dose_fraction: float = 0.25,
    gaps: bool = False,
    enhanced: bool = False,
    progress: Callable[[int], None] | None = None,
) -> StudyInfo:
    """Write one synthetic patient and study with `series` CT series, and its ground truth.

    Layout: `series-NNN/slice-KKKK.dcm` plus `series-NNN/masks.npz` per series, and
    `ground_truth.json` (see docs/synth.md). `noisy` gives the primary series full-dose
    quantum noise instead of clean pixels; `pairs` also writes `series-NNN-lowdose/`, the same
    phantom at `dose_fraction` of the dose, with its own series UID. `progress` is called with
    1 after each slice. `gaps` drops 1-3 slices inside each series (see `make_phantom`).
    `enhanced` writes each series as one Enhanced CT file, `series-NNN/enhanced.dcm`, frame k
    being slice k (see edgeimg.synth.enhanced); its UIDs differ from the single-frame study's.
    """
    if series < 1 or slices < PERSIST_MIN or size < 32:
        raise ValueError(f"need series >= 1, slices >= {PERSIST_MIN}, size >= 32")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = (seed, size, slices, noisy, gaps, *(("enhanced",) if enhanced else ()))
    study_uid = _uid(*key, "study")
    base = _study_dataset(seed, study_uid)
    info = StudyInfo(
        out_dir=out_dir,
        study_uid=study_uid,
        patient_id=str(base.PatientID),
        patient_name=str(base.PatientName),
        ground_truth=out_dir / "ground_truth.json",
    )
    truth: dict[str, Any] = {
        "schema": SCHEMA,
        "generator": f"edgeimg {__version__}",
        "seed": seed,
        "size": size,
        "slices": slices,
        "persist_min": PERSIST_MIN,
        "patient_id": info.patient_id,
        "patient_name": info.patient_name,
        "study_uid": study_uid,
        "series": [],
    }
    for index in range(1, series + 1):
        rng = np.random.default_rng([seed, index])
        phantom = make_phantom(rng, slices, size, gaps=gaps)
        folder = f"series-{index:03d}"
        mask_file = f"{folder}/masks.npz"
        variants = [(folder, index, False, 1.0)]
        if pairs:
            variants.append((f"{folder}-lowdose", series + index, True, dose_fraction))
        for name, number, is_low, dose in variants:
            noise_rng = np.random.default_rng([seed, index, 1 if is_low else 0])
            if is_low or noisy:
                hu = low_dose(phantom.hu, noise_rng, dose, pixel_spacing=phantom.pixel_spacing)
            else:
                hu = phantom.hu
            description = f"SYNTHETIC abdomen {phantom.slice_thickness:g}mm"
            if is_low:
                description += f" LOW DOSE {round(dose * 100)}%"
            uid_key = (*key, index, "lowdose" if is_low else "primary", dose)
            meta = {
                "uid": _uid(*uid_key, "series"),
                "frame_uid": _uid(*key, index, "frame"),
                "number": number,
                "folder": name,
                "description": description,
                "dose_fraction": dose,
                "sop_uids": [_uid(*uid_key, "instance", k) for k in range(slices)],
                "enhanced": enhanced,
                "sop_uid": _uid(*uid_key, "enhanced"),
                "irradiation_uid": _uid(*uid_key, "irradiation"),
                "organization_uid": _uid(*uid_key, "dimensions"),
                "intercept": INTERCEPT,
                "date": STUDY_DATE,
                "time": STUDY_TIME,
            }
            entries = _write_series(out_dir, base, phantom, hu, meta, progress)
            truth["series"].append(
                {
                    "series_uid": meta["uid"],
                    "series_number": number,
                    "folder": name,
                    "description": description,
                    "low_dose": is_low,
                    "dose_fraction": dose,
                    "source_series_uid": truth["series"][-1]["series_uid"] if is_low else None,
                    "lesion_present": phantom.lesion_present,
                    "persistent": phantom.persistent,
                    "pixel_spacing": phantom.pixel_spacing,
                    "slice_thickness": phantom.slice_thickness,
                    "mask": mask_file,
                    "lesions": _lesions(phantom),
                    "slices": entries,
                }
            )
            info.series.append(
                SeriesInfo(
                    series_uid=meta["uid"],
                    number=number,
                    folder=name,
                    description=description,
                    slices=slices,
                    lesion_present=phantom.lesion_present,
                    persistent=phantom.persistent,
                    low_dose=is_low,
                    dose_fraction=dose,
                )
            )
            info.files += 1 if enhanced else len(entries)
        np.savez_compressed(
            out_dir / mask_file, mask=phantom.lesion_mask, lesion_ids=phantom.lesion_ids
        )
    info.ground_truth.write_text(json.dumps(truth, indent=2) + "\n")
    return info
