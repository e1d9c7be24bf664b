"""Classification and detection findings as a TID 1500 Comprehensive 3D SR (highdicom).

`findings` is a list of dicts, one per finding; all refer to the model's first label
(`model.labels[0]`, e.g. SNOMED 52988006 "Lesion"):

- slice level: ``{"sop_instance_uid": uid, "probability": 0.93, "label": True}``, with
  ``"frame": n`` (1-based) when the source is a multi-frame (enhanced) image
- series level: ``{"level": "series", "probability": 0.71, "label": True}``, optionally with
  ``"sop_instance_uids": [...]``, the images the finding rests on (default: every source)
- several slices: ``{"sop_instance_uids": [...], "frames": [...], "probability": 0.93,
  "label": True}``, one finding resting on those images (a run of adjacent positive slices)
- detection: ``{"sop_instance_uid": uid, "boxes": [[x0, y0, x1, y1, score], ...]}`` (and
  ``"frame"``), corners in
  DICOM image coordinates (column, row; (0, 0) is the top-left corner of the top-left pixel, as
  for torchvision boxes); an empty list records the finding as absent on that image.

Slice and series findings become measurement groups (TID 1501) with the finding code, the
probability as a measurement in {probability}, and the presence of the finding as a
qualitative evaluation; they reference the source image(s), by frame number for multi-frame
sources. The Image Library (TID 1600, `edgeimg.dicom.library`) lists the frames the groups
reference, with the geometry each source gives; the evidence sequence lists every source.
Library entries are what makes an SR slow to build, so a series-level finding that rests on
one slice names that slice rather than the whole series.

Each box becomes a planar ROI group (TID 1410) whose SCOORD POLYLINE (closed rectangle) lies
on its source image, with the detector score as a measurement. SCOORD on the source image,
rather than SCOORD3D, keeps the box in the pixel space the detector saw and needs no frame of
reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

from edgeimg.dicom.frames import Frame, frame_count, frames_of, is_multiframe
from edgeimg.dicom.library import SharedConcept, concept, image_library
from edgeimg.dicom.write import (
    MANUFACTURER,
    Output,
    character_set,
    check_sources,
    prepare,
    save,
)
from edgeimg.sdk.model import ModelSpec

PROBABILITY = SharedConcept("122157", "DCM", "Probability")
PROBABILITY_UNIT = SharedConcept("{probability}", "UCUM", "Probability")
SCORE = SharedConcept("246262008", "SCT", "Score")
NO_UNITS = SharedConcept("1", "UCUM", "no units")
PROCEDURES = {"CT": concept(codes.SCT.ComputedTomography)}
IMAGING_PROCEDURE = SharedConcept("363679005", "SCT", "Imaging")
PRESENT = concept(codes.SCT.Present)
ABSENT = concept(codes.SCT.Absent)
DEVICE = concept(codes.DCM.Device)

Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
)


def write_sr(
    sources: list[Dataset],
    findings: Sequence[Mapping[str, Any]],
    *,
    model: ModelSpec,
    engine_key: str,
    out_dir: Path,
    predecessors: Sequence[Dataset] = (),
    other_evidence: Sequence[Dataset] = (),
) -> Path:
    """Write the findings of `model` on `sources` as one SR in the source study; return its path.

    `predecessors` are earlier SRs this one supersedes (Predecessor Documents Sequence);
    `other_evidence` are instances of other studies the findings rest on too, the priors a
    model compared with (highdicom lists them in the Pertinent Other Evidence Sequence).
    """
    sources = check_sources(sources, one_series=False)
    if not findings:
        raise ValueError("no findings to report; TID 1500 needs at least one measurement group")
    output = prepare("sr", "SR", sources, model, engine_key)
    groups = _Groups(sources, output)
    measurements = [
        group for index, finding in enumerate(findings) for group in groups(index, finding)
    ]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(output),
        procedure_reported=PROCEDURES.get(sources[0].Modality, IMAGING_PROCEDURE),
        imaging_measurements=measurements,
    )
    library = groups.referenced_frames()
    # TID 1500 places the library before the Imaging Measurements container (the last item)
    report[0].ContentSequence.insert(-1, image_library(library))
    root, tree = _detached(report)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, *other_evidence],
        content=root,
        series_instance_uid=output.uids.series,
        series_number=output.series_number,
        sop_instance_uid=output.uids.instance(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=True,
        series_description=output.series_description,
        previous_versions=list(predecessors) or None,
        specific_character_set=character_set(sources),
    )
    sr.ContentSequence = tree
    return save(sr, out_dir, [*sources, *other_evidence])  # the gate checks references


def _detached(report: hd.sr.MeasurementReport) -> tuple[Dataset, hd.sr.ContentSequence]:
    """The report's root container without its content, and that content.

    Comprehensive3DSR deep-copies the tree it is given, parses the copy back into content
    items (for its `content` property, which we never read) and searches it for the images
    it references: half an SR's cost, and not a byte of what it writes. It is given the root
    alone and the tree is attached after; the output gate checks the references instead.
    """
    root = report[0]
    tree = root.ContentSequence
    root.ContentSequence = []
    return root, tree


def _observation_context(output: Output) -> hd.sr.ObservationContext:
    """The model, run by this engine, is the observer: a device, not a person."""
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=output.uids.device,
        name=output.model.name[:64],
        manufacturer_name=MANUFACTURER,
        model_name=output.model_name,
        serial_number=output.device_serial_number,
    )
    observer = hd.sr.ObserverContext(observer_type=DEVICE, observer_identifying_attributes=device)
    return hd.sr.ObservationContext(observer_device_context=observer)


class _Groups:
    """Turns findings into TID 1500 measurement groups about the model's first label."""

    def __init__(self, sources: Sequence[Dataset], output: Output) -> None:
        self.sources = list(sources)
        # every frame by key, in source order; its geometry is read only if a finding names it
        self.keys = {
            (str(ds.SOPInstanceUID), number if is_multiframe(ds) else None): ds
            for ds in sources
            for number in range(1, frame_count(ds) + 1)
        }
        self.referenced: set[tuple[str, int | None]] = set()
        self._frames: dict[str, list[Frame]] = {}
        self.output = output
        label = output.model.labels[0]
        self.finding_type = SharedConcept(label.value, label.scheme, label.meaning)
        self.algorithm = hd.sr.AlgorithmIdentification(
            name=output.model.name, version=output.model.version
        )

    def __call__(self, index: int, finding: Mapping[str, Any]) -> list[Group]:
        """One group per slice or series finding, one planar ROI group per box."""
        if finding.get("level") == "series" or "sop_instance_uids" in finding:
            uids = finding.get("sop_instance_uids")
            frames = finding.get("frames") or [None] * len(uids or [])
            keys = list(self.keys) if uids is None else list(zip(uids, frames, strict=True))
        else:
            keys = [(finding.get("sop_instance_uid"), finding.get("frame"))]
        if not keys or any(key not in self.keys for key in keys):
            raise ValueError(f"finding {index} names no source image or frame: {keys[:3]}")
        images = [self._frame(key) for key in keys]
        self.referenced.update(keys)
        if finding.get("boxes"):
            return [
                self._box(index, number, box, images[0])
                for number, box in enumerate(finding["boxes"])
            ]
        if "boxes" in finding:  # a detector that found nothing says so: "absent" on the image
            return [self._image(index, images, None, present=False)]
        probability = float(finding["probability"])
        return [self._image(index, images, probability, present=bool(finding.get("label")))]

    def _frame(self, key: tuple[str, int | None]) -> Frame:
        """The frame `key` names, its source's frames read once, when first named."""
        uid, number = key
        if uid not in self._frames:
            self._frames[uid] = frames_of(self.keys[key])
        return self._frames[uid][(number or 1) - 1]

    def referenced_frames(self) -> list[Frame]:
        """The frames findings named, in source order: what the Image Library lists."""
        return [self._frame(key) for key in self.keys if key in self.referenced]

    def _tracking(self, identifier: str) -> hd.sr.TrackingIdentifier:
        return hd.sr.TrackingIdentifier(
            uid=self.output.uids.uid("finding", identifier), identifier=f"finding {identifier}"
        )

    @staticmethod
    def _measurement(name: Any, value: float, unit: Any) -> hd.sr.Measurement:
        """A measurement of its group's algorithm: the group names it (TID 1501/1410 apply it
        to their content), so the measurement does not repeat it (five items fewer each)."""
        return hd.sr.Measurement(name=name, value=value, unit=unit)

    def _image(
        self, index: int, images: Sequence[Frame], probability: float | None, *, present: bool
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        measurements = (
            []
            if probability is None
            else [self._measurement(PROBABILITY, probability, PROBABILITY_UNIT)]
        )
        presence = PRESENT if present else ABSENT
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=self._tracking(str(index)),
            finding_type=self.finding_type,
            algorithm_id=self.algorithm,
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(
                    referenced_sop_class_uid=frame.source.SOPClassUID,
                    referenced_sop_instance_uid=frame.source.SOPInstanceUID,
                    referenced_frame_numbers=_numbers(frame),
                )
                for frame in images
            ],
            measurements=measurements,
            qualitative_evaluations=[
                hd.sr.QualitativeEvaluation(name=self.finding_type, value=presence)
            ],
        )

    def _box(
        self, index: int, number: int, box: Sequence[float], image: Frame
    ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
        x0, y0, x1, y1, score = (float(value) for value in box)
        corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=corners,
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=image.source.SOPClassUID,
                referenced_sop_instance_uid=image.source.SOPInstanceUID,
                referenced_frame_numbers=_numbers(image),
            ),
        )
        return hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=self._tracking(f"{index}.{number}"),
            referenced_region=region,
            finding_type=self.finding_type,
            algorithm_id=self.algorithm,
            measurements=[self._measurement(SCORE, score, NO_UNITS)],
        )


def _numbers(frame: Frame) -> list[int] | None:
    """Referenced Frame Number for a frame of a multi-frame source; None for single-frame."""
    return None if frame.number is None else [frame.number]
