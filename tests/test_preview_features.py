"""PNG previews of each kind of result, and per-slice features: shapes, index, appends, refusals."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeimg.features import FeaturesUnsupported, write_features
from edgeimg.files import dicom_files
from edgeimg.pipeline import Decoded, decode_file
from edgeimg.plugins import get_registry
from edgeimg.preview import (
    BOX_COLOUR,
    CAPTION_BACKGROUND,
    CAPTION_HEIGHT,
    CONTOUR_COLOUR,
    MIN_SIDE,
    STRIP_SLICES,
    safe_uid,
    write_preview,
    write_previews,
)
from edgeimg.sdk.model import ModelSpec
from edgeimg.synth.dicom import write_study

SLICES = 8


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("study")
    write_study(out, series=2, slices=SLICES, size=64, seed=5)
    return out


def spec(name: str) -> ModelSpec:
    return get_registry().model(name)


def decoded_for(name: str, study: Path, series: int = 1) -> list[Decoded]:
    files = [p for p in dicom_files([study])[0] if p.suffix == ".dcm"]
    return [decode_file(path, spec(name)) for path in files[: series * SLICES]]


def rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def count(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((pixels == colour).all(axis=-1).sum())


def body_side(name: str) -> int:
    height = get_registry().model(name).input.size[0]
    return height * -(-MIN_SIDE // height)


def assert_caption_written(pixels: np.ndarray) -> None:
    band = pixels[:CAPTION_HEIGHT]
    assert (band != CAPTION_BACKGROUND).any(axis=-1).sum() > 20


def test_segmentation_preview_outlines_the_mask(study, tmp_path):
    decoded = decoded_for("unet", study)[0]
    height, width = decoded.inputs.shape[-2:]
    mask = np.zeros((height, width), np.uint8)
    mask[20:50, 30:60] = 1
    path = write_preview(decoded, {"mask": mask, "pixels": int(mask.sum())}, spec("unet"), tmp_path)
    assert path.name == f"unet-{decoded.header.SOPInstanceUID}-f0000.png"
    pixels = rgb(path)
    side = body_side("unet")
    assert pixels.shape == (side + CAPTION_HEIGHT, side, 3) and side >= MIN_SIDE
    scale = side // height
    outline = count(pixels, CONTOUR_COLOUR)
    assert 2 * (30 + 30) * scale <= outline <= 2 * 4 * 30 * scale
    inside = pixels[CAPTION_HEIGHT + 35 * scale, 45 * scale]
    assert len(set(inside.tolist())) == 1
    assert_caption_written(pixels)


def test_detection_preview_draws_boxes(study, tmp_path):
    decoded = decoded_for("detector", study)[0]
    item = {"boxes": [[10.0, 12.0, 40.0, 44.0], [50.0, 50.0, 70.0, 80.0]], "scores": [0.9, 0.6]}
    pixels = rgb(write_preview(decoded, item, spec("detector"), tmp_path))
    assert count(pixels, BOX_COLOUR) > 2 * 2 * (30 + 32) * 2
    assert pixels.shape[1] == body_side("detector")


def test_classification_preview_is_the_slice_with_a_caption(study, tmp_path):
    decoded = decoded_for("cnn", study)[0]
    pixels = rgb(write_preview(decoded, {"probability": 0.91, "label": 1}, spec("cnn"), tmp_path))
    side = body_side("cnn")
    assert pixels.shape == (side + CAPTION_HEIGHT, side, 3)
    body = pixels[CAPTION_HEIGHT:]
    assert (body[..., 0] == body[..., 1]).all() and body.std() > 0
    assert_caption_written(pixels)


def test_enhancement_preview_is_before_and_after(study, tmp_path):
    decoded = decoded_for("autoencoder", study)[0]
    output = 1.0 - decoded.inputs[0, 0]
    item = {"image": output, "anomaly_score": 0.25}
    pixels = rgb(write_preview(decoded, item, spec("autoencoder"), tmp_path))
    side = body_side("autoencoder")
    assert pixels.shape[:2] == (side + CAPTION_HEIGHT, 2 * side + 4)
    before, after = pixels[CAPTION_HEIGHT:, :side, 0], pixels[CAPTION_HEIGHT:, -side:, 0]
    assert np.abs(before + after - 255).max() <= 1


def test_sequence_preview_is_one_strip_per_series(study, tmp_path):
    decoded = decoded_for("lstm", study)
    item = {
        "probability": 0.8,
        "positive": True,
        "slice_probabilities": [0.1 * i for i in range(SLICES)],
    }
    paths = write_previews(spec("lstm"), decoded, [item], tmp_path)
    series = str(decoded[0].header.SeriesInstanceUID)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"{series}/series.png",
        f"{series}/index.html",
    ]
    pixels = rgb(paths[0])
    tiles = min(STRIP_SLICES, SLICES)
    assert pixels.shape[:2] == (128 + CAPTION_HEIGHT, tiles * 128 + (tiles - 1) * 4)
    assert count(pixels, BOX_COLOUR) > 0


def test_previews_page_through_a_series_in_slice_order(study, tmp_path):
    """One PNG per slice in <series>/, named <index>_<instance> in series order, a contact
    sheet with a numbered tile per slice, and an index page linking each to the next."""
    decoded = decoded_for("cnn", study)
    items = [{"probability": index / 10, "label": 0} for index in range(len(decoded))]
    paths = write_previews(spec("cnn"), decoded, items, tmp_path)
    series = tmp_path / str(decoded[0].header.SeriesInstanceUID)
    slices = [
        series / f"{index:04d}_{item.header.SOPInstanceUID}.png"
        for index, item in enumerate(decoded, start=1)
    ]
    assert paths == [*slices, series / "contact.png", series / "index.html"]
    assert sorted(p for p in series.iterdir() if p.name[0].isdigit()) == slices
    with Image.open(series / "contact.png") as sheet:
        assert sheet.size == (SLICES * (128 + 4) - 4, 128)
    page = (series / "index.html").read_text()
    assert page.index(slices[0].name) < page.index(slices[1].name) < page.index(slices[-1].name)
    assert "href='#p2'>next" in page and f"href='#p{SLICES - 1}'>previous" in page
    assert "probability=0.700" in page and "SYNTH" not in page


def test_file_names_never_come_from_an_invalid_uid():
    assert safe_uid("1.2.840.10008.5.1.4.1.1.2") == "1.2.840.10008.5.1.4.1.1.2"
    for bad in ("../../etc/passwd", "1.2/3", "1." + "2" * 70, ""):
        name = safe_uid(bad)
        assert name.startswith("invalid-") and "/" not in name and "." not in name


@pytest.fixture
def autoencoder(tmp_path):
    """The autoencoder with freshly initialised weights, so the test does not wait on training."""
    from safetensors.torch import save_file

    from edgeimg.sdk.training import implementation_for

    model = spec("autoencoder")
    weights = tmp_path / "autoencoder.safetensors"
    save_file(implementation_for(model).build().state_dict(), str(weights))
    return dataclasses.replace(model, weights=str(weights))


def read_index(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_features_one_row_per_slice_and_appends(autoencoder, study, tmp_path):
    decoded = decoded_for("autoencoder", study, series=2)
    first, second = decoded[:SLICES], decoded[SLICES:]
    npy, index = write_features(autoencoder, first, tmp_path)
    features = np.load(npy)
    assert features.dtype == np.float32 and features.ndim == 2 and len(features) == SLICES
    assert np.isfinite(features).all()
    write_features(autoencoder, second, tmp_path)
    features = np.load(npy)
    rows = read_index(index)
    assert len(features) == len(rows) == 2 * SLICES
    assert list(rows[0]) == ["row", "study_uid", "series_uid", "sop_instance_uid", "frame", "file"]
    for position, (row, item) in enumerate(zip(rows, decoded, strict=True)):
        assert int(row["row"]) == position and row["frame"] == "0"
        assert row["sop_instance_uid"] == item.header.SOPInstanceUID
        assert row["series_uid"] == item.header.SeriesInstanceUID
        assert row["file"] == str(item.path)
    assert len({row["series_uid"] for row in rows}) == 2


def test_features_refused_for_a_model_without_embed(study, tmp_path):
    with pytest.raises(FeaturesUnsupported, match="'cnn'") as raised:
        write_features(spec("cnn"), decoded_for("cnn", study), tmp_path)
    assert isinstance(raised.value, ValueError)
    assert not (tmp_path / "features.npy").exists()
