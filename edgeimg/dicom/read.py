"""Read DICOM files defensively: validate before decoding, decode to float32 frames.

Files from scanners, PACS and the network are trusted as little as possible: every attribute
that drives decoding is checked first (`edgeimg.dicom.validate`), and every failure becomes a
`DicomInputError` whose message names the file and says what is wrong. How frames are valued
is `edgeimg.dicom.pixels`' docstring; where they lie, `edgeimg.dicom.geometry`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from edgeimg.dicom.attributes import (
    DicomInputError,
    clean,
    get_value,
    int_or_none,
    str_or_none,
)
from edgeimg.dicom.geometry import geometry
from edgeimg.dicom.pixels import decode_pixels
from edgeimg.dicom.validate import PIXEL_TAGS, check_pixels, check_uids, cut_element

__all__ = ["DicomInputError", "Image", "decode", "read_header", "read_image"]


@dataclass
class Image:
    """One decoded instance.

    `frames` is (F, R, C) float32 for greyscale or (F, R, C, 3) for RGB (value conventions in
    `edgeimg.dicom.pixels`); `photometric` describes `frames` ("MONOCHROME2" or
    "RGB"), the original value is in `header`. `header` is the dataset without pixel data.
    `position` is frame 0's Image Position (Patient); `frame_positions` has one entry per frame
    (from per-frame functional groups or Grid Frame Offset Vector, else None past frame 0).
    """

    path: str | None
    header: Dataset
    frames: np.ndarray
    photometric: str
    modality: str | None
    sop_class_uid: str | None
    sop_instance_uid: str | None
    series_uid: str | None
    study_uid: str | None
    position: tuple[float, float, float] | None
    frame_positions: tuple[tuple[float, float, float] | None, ...]
    orientation: tuple[float, float, float, float, float, float] | None
    pixel_spacing: tuple[float, float] | None
    instance_number: int | None


def read_header(path: str | os.PathLike[str]) -> Dataset:
    """Read everything but the pixel data and check the UIDs used to file the instance."""
    name = os.fspath(path)
    ds = _dcmread(path, name, header_only=True)
    cut = cut_element(ds, name)
    check_uids(ds, name)
    if cut is not None:
        raise cut
    return ds


def read_image(
    path_or_dataset: str | os.PathLike[str] | Dataset, *, require_uids: bool = True
) -> Image:
    """Validate and decode one file or in-memory dataset into an `Image`.

    `require_uids=False` accepts instances without valid Study/Series/SOP Instance UIDs
    (e.g. hand-made test files); anything that is stored or sent on needs them.
    """
    if isinstance(path_or_dataset, Dataset):
        ds = path_or_dataset
        path = getattr(ds, "filename", None)
        path = path if isinstance(path, str) else None
        name = path or _dataset_name(ds)
    else:
        path = name = os.fspath(path_or_dataset)
        ds = _dcmread(path_or_dataset, name, header_only=False)
    cut = cut_element(ds, name)
    info = check_pixels(ds, name)
    if require_uids:
        check_uids(ds, name)
    if cut is not None:
        raise cut
    frames = decode_pixels(ds, name, info)
    geo = geometry(ds)
    return Image(
        path=path,
        header=_without_pixels(ds),
        frames=frames,
        photometric="RGB" if frames.ndim == 4 else "MONOCHROME2",
        modality=str_or_none(ds, "Modality", name),
        sop_class_uid=str_or_none(ds, "SOPClassUID", name),
        sop_instance_uid=str_or_none(ds, "SOPInstanceUID", name),
        series_uid=str_or_none(ds, "SeriesInstanceUID", name),
        study_uid=str_or_none(ds, "StudyInstanceUID", name),
        position=geo.positions[0] if geo.positions else None,
        frame_positions=geo.positions,
        orientation=geo.orientation,
        pixel_spacing=geo.pixel_spacing,
        instance_number=int_or_none(ds, "InstanceNumber"),
    )


def decode(ds: Dataset, name: str) -> np.ndarray:
    """Validate the pixel attributes of `ds` and return its frames as `Image.frames` would be."""
    return decode_pixels(ds, name, check_pixels(ds, name))


def _dcmread(path: str | os.PathLike[str], name: str, *, header_only: bool) -> Dataset:
    try:
        return dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        size = os.path.getsize(path) if os.path.isfile(path) else None
        if size is not None and size < 132:
            raise DicomInputError(name, f"not a DICOM file ({size} bytes, too short)") from None
        raise DicomInputError(
            name, "not a DICOM file (no 'DICM' prefix after the preamble)"
        ) from None
    except OSError as exc:
        raise DicomInputError(name, f"cannot read file: {exc.strerror or clean(exc)}") from None
    except Exception as exc:
        raise DicomInputError(name, f"cannot parse DICOM: {clean(exc)}") from None


def _without_pixels(ds: Dataset) -> Dataset:
    """A new dataset sharing every element but the pixel data (the caller's is not modified)."""
    header = Dataset({tag: elem for tag, elem in ds.items() if tag not in PIXEL_TAGS})
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is not None and little is not None:
        header.set_original_encoding(implicit, little, ds.original_character_set)
    if isinstance(getattr(ds, "filename", None), str):
        header.filename = ds.filename
    return header


def _dataset_name(ds: Dataset) -> str:
    uid = get_value(ds, "SOPInstanceUID")
    if isinstance(uid, str) and UID(uid).is_valid:
        return f"<dataset {uid}>"
    return "<dataset>"
