"""Pixel data decoded into float32 frames, after `validate.check_pixels` has vouched for it.

Value conventions (those of `read.Image.frames`):

* greyscale: the modality LUT is applied (Rescale Slope/Intercept, per frame for enhanced
  multi-frame objects, or a Modality LUT Sequence), so CT frames are in HU.
* MONOCHROME1 is flipped within the range its stored values can take (mapped through the
  modality LUT), ``v -> lo + hi - v``: higher is brighter for every image, values stay in the
  same range, and the header's Window Center/Width no longer apply to the flipped data.
* colour (RGB, YBR_* and PALETTE COLOR) becomes RGB with a trailing axis of 3, no rescaling.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut, apply_modality_lut, convert_color_space, get_decoder

from edgeimg.dicom.attributes import (
    DicomInputError,
    clean,
    first_item,
    float_or_none,
    get_value,
    sequence,
    short,
)
from edgeimg.dicom.validate import PixelInfo


def decode_pixels(ds: Dataset, name: str, info: PixelInfo) -> np.ndarray:
    uid = info.transfer_syntax
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise DicomInputError(name, f"unsupported transfer syntax {uid.name} ({uid})") from None
    if not decoder.is_available:
        needs = "; ".join(decoder.missing_dependencies) or "no plugin available"
        raise DicomInputError(
            name, f"no decoder installed for transfer syntax {uid.name} ({uid}): {needs}"
        )
    try:
        arr, meta = decoder.as_array(ds, as_rgb=True)
    except Exception as exc:
        raise DicomInputError(name, f"cannot decode {uid.name} pixel data: {clean(exc)}") from None

    color = info.samples == 3 or info.photometric == "PALETTE COLOR"
    expected = (info.frames, info.rows, info.columns) + (
        (info.samples,) if info.samples > 1 else ()
    )
    if arr.shape == expected[1:]:
        arr = arr[np.newaxis]
    if arr.shape != expected:
        raise DicomInputError(name, f"decoded shape {arr.shape} does not match header {expected}")

    if info.photometric == "PALETTE COLOR":
        try:
            return apply_color_lut(arr, ds).astype(np.float32)
        except Exception as exc:
            raise DicomInputError(name, f"cannot apply the palette: {clean(exc)}") from None
    if color:
        decoded_as = str(meta.get("photometric_interpretation", info.photometric))
        if decoded_as in ("YBR_FULL", "YBR_FULL_422"):
            arr = convert_color_space(arr, decoded_as, "RGB")
        elif decoded_as != "RGB":
            raise DicomInputError(name, f"cannot convert {decoded_as} pixel data to RGB")
        return arr.astype(np.float32)
    return _modality(ds, name, arr, info)


def _modality(ds: Dataset, name: str, arr: np.ndarray, info: PixelInfo) -> np.ndarray:
    """Apply the modality LUT per frame; flip MONOCHROME1 (see module docstring)."""
    if info.keyword == "PixelData":
        if info.signed:
            stored = np.array([-(2 ** (info.bits_stored - 1)), 2 ** (info.bits_stored - 1) - 1])
        else:
            stored = np.array([0, 2**info.bits_stored - 1])
    else:
        stored = np.array([np.nanmin(arr), np.nanmax(arr)]) if arr.size else np.zeros(2)

    rescale = _rescale_per_frame(ds, info.frames, name)
    try:
        if rescale is not None:
            slopes = np.array([s for s, _ in rescale], dtype=np.float32)
            intercepts = np.array([i for _, i in rescale], dtype=np.float32)
            out = arr.astype(np.float32)
            out *= slopes[:, None, None]
            out += intercepts[:, None, None]
            lo = np.minimum(slopes * stored[0], slopes * stored[1]) + intercepts
            hi = np.maximum(slopes * stored[0], slopes * stored[1]) + intercepts
        elif "ModalityLUTSequence" in ds and info.keyword == "PixelData":
            out = apply_modality_lut(arr, ds).astype(np.float32)
            ends = apply_modality_lut(stored, ds).astype(np.float32)
            lo = np.full(info.frames, ends.min(), np.float32)
            hi = np.full(info.frames, ends.max(), np.float32)
        else:
            out = arr.astype(np.float32)
            lo = np.full(info.frames, stored.min(), np.float32)
            hi = np.full(info.frames, stored.max(), np.float32)
    except Exception as exc:
        raise DicomInputError(name, f"cannot apply the modality LUT: {clean(exc)}") from None
    if info.photometric == "MONOCHROME1":
        out = (lo + hi).astype(np.float32)[:, None, None] - out
    return out


def _rescale_per_frame(ds: Dataset, frames: int, name: str) -> list[tuple[float, float]] | None:
    """(slope, intercept) per frame, or None when no rescale applies (identity or a LUT).

    Empty values mean the identity; values that are not one number are refused, since a guess
    would shift every HU the model sees.
    """
    shared = first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = sequence(ds, "PerFrameFunctionalGroupsSequence")
    if len(per_frame) == frames:
        found = [_frame_rescale(item, shared, name) for item in per_frame]
        if any(f is not None for f in found):
            top = _rescale_of(ds, name) or (1.0, 0.0)
            return [f or top for f in found]
    elif shared is not None:
        item = first_item(shared, "PixelValueTransformationSequence")
        found_shared = _rescale_of(item, name) if item is not None else None
        if found_shared is not None:
            return [found_shared] * frames
    top = _rescale_of(ds, name)
    return [top] * frames if top is not None else None


def _frame_rescale(item: Dataset, shared: Dataset | None, name: str) -> tuple[float, float] | None:
    for group in (item, shared):
        if group is None:
            continue
        transform = first_item(group, "PixelValueTransformationSequence")
        if transform is not None and (found := _rescale_of(transform, name)) is not None:
            return found
    return None


def _rescale_of(ds: Dataset, name: str) -> tuple[float, float] | None:
    if "RescaleSlope" not in ds and "RescaleIntercept" not in ds:
        return None
    return (
        _rescale_value(ds, "RescaleSlope", name, 1.0),
        _rescale_value(ds, "RescaleIntercept", name, 0.0),
    )


def _rescale_value(ds: Dataset, keyword: str, name: str, default: float) -> float:
    value = get_value(ds, keyword, name)
    if value is None or value == "":
        return default
    number = float_or_none(value)
    if number is None:
        raise DicomInputError(name, f"{keyword} {short(value)} is not a single finite number")
    return number
