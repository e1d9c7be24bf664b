"""PNG previews of model results, so a person can eyeball what `run` found without a DICOM viewer.

A preview shows the slice as the model saw it (windowed, at model size, upscaled to at least
MIN_SIDE pixels) with the result drawn on it: the mask contour for segmentation, boxes with
scores for detection, input and output side by side for enhancement, and a caption with the
scalar results (probability, label, anomaly score). Sequence models get one strip per series.
Previews are for review only; the DICOM outputs are the results.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from edgeimg.pipeline.decode import Decoded
from edgeimg.sdk.model import ModelSpec

MIN_SIDE = 256
CAPTION_HEIGHT = 22
STRIP_SLICES = 6
STRIP_TILE = 128
GAP = 4
SHEET_COLUMNS = 8
SHEET_TILE = 128
CONTOUR_COLOUR = (255, 48, 48)
BOX_COLOUR = (255, 200, 0)
TEXT_COLOUR = (255, 255, 255)
CAPTION_BACKGROUND = (24, 24, 24)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


def safe_uid(value: object) -> str:
    """A UID fit for a file name: as is when valid, else a hash, so no header can name a path."""
    text = str(value).strip().rstrip("\x00")
    if len(text) <= 64 and _UID.match(text):
        return text
    return "invalid-" + hashlib.sha256(text.encode()).hexdigest()[:16]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _scale(height: int, width: int, side: int) -> int:
    """Integer upscaling keeps model pixels square, so drawn coordinates stay exact."""
    return max(1, math.ceil(side / max(1, min(height, width))))


def _gray(image: np.ndarray, scale: int) -> Image.Image:
    """A windowed [0, 1] slice as an RGB image `scale` times larger."""
    pixels = (np.clip(np.nan_to_num(image), 0.0, 1.0) * 255).round().astype(np.uint8)
    height, width = pixels.shape
    gray = Image.fromarray(pixels, mode="L").resize((width * scale, height * scale))
    return gray.convert("RGB")


def _slice(decoded: Decoded, frame: int) -> np.ndarray:
    """The model input of one frame as (H, W); the first channel holds the primary window."""
    return decoded.inputs[frame, 0]


def _format(value: Any) -> str | None:
    if isinstance(value, bool | np.bool_):
        return str(bool(value)).lower()
    if isinstance(value, float | np.floating):
        return f"{float(value):.3f}"
    if isinstance(value, int | np.integer | str):
        return str(value)
    return None


def caption(name: str, item: dict[str, Any]) -> str:
    """The model name and every scalar result, e.g. 'cnn  probability=0.912  label=1'."""
    parts = [name]
    for key, value in item.items():
        text = _format(value)
        if text is not None:
            parts.append(f"{key}={text}")
    return "  ".join(parts)


def _with_caption(body: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (body.width, body.height + CAPTION_HEIGHT), CAPTION_BACKGROUND)
    canvas.paste(body, (0, CAPTION_HEIGHT))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=TEXT_COLOUR, font=_font(14))
    return canvas


def contour(mask: np.ndarray) -> np.ndarray:
    """Pixels of the mask with a 4-neighbour outside it: the outline, one pixel wide."""
    inside = np.asarray(mask) > 0
    padded = np.pad(inside, 1)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:] & inside
    return inside & ~interior


def _draw_mask(image: Image.Image, mask: np.ndarray, scale: int) -> None:
    """Outline at display resolution, two pixels wide so it survives viewer downscaling."""
    mask = np.asarray(mask) > 0
    if mask.shape != (image.height // scale, image.width // scale):
        raise ValueError(f"mask {mask.shape} does not match the model input it outlines")
    large = np.kron(mask, np.ones((scale, scale), dtype=bool))
    edge = contour(large)
    thick = edge.copy()
    thick[1:] |= edge[:-1]
    thick[:, 1:] |= edge[:, :-1]
    pixels = np.asarray(image).copy()
    pixels[thick & large] = CONTOUR_COLOUR
    image.paste(Image.fromarray(pixels))


def _draw_boxes(image: Image.Image, boxes: Sequence, scores: Sequence, scale: int) -> None:
    draw = ImageDraw.Draw(image)
    font = _font(12)
    for box, score in zip(boxes, scores, strict=True):
        x0, y0, x1, y1 = (float(v) * scale for v in box)
        draw.rectangle((x0, y0, x1, y1), outline=BOX_COLOUR, width=2)
        draw.text((x0 + 2, max(0.0, y0 - 14)), f"{float(score):.2f}", fill=BOX_COLOUR, font=font)


def _side_by_side(left: Image.Image, right: Image.Image) -> Image.Image:
    size = (left.width + GAP + right.width, max(left.height, right.height))
    canvas = Image.new("RGB", size, CAPTION_BACKGROUND)
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width + GAP, 0))
    return canvas


def render_slice(decoded: Decoded, item: dict[str, Any], name: str, frame: int = 0) -> Image.Image:
    """One slice result drawn on its model input; what each key means decides what is drawn."""
    source = _slice(decoded, frame)
    scale = _scale(*source.shape, MIN_SIDE)
    image = _gray(source, scale)
    if "mask" in item:
        _draw_mask(image, item["mask"], scale)
    if "boxes" in item:
        _draw_boxes(
            image, item["boxes"], item.get("scores", [math.nan] * len(item["boxes"])), scale
        )
    if "image" in item:
        output = np.asarray(item["image"], dtype=np.float32)
        image = _side_by_side(image, _gray(output, _scale(*output.shape, MIN_SIDE)))
    return _with_caption(image, caption(name, item))


def _strip_frames(decoded: Sequence[Decoded]) -> list[tuple[int, Decoded, int]]:
    """Evenly spaced (position in series, file, frame) picks, first and last slice included."""
    frames = [(source, frame) for source in decoded for frame in range(len(source.inputs))]
    count = min(STRIP_SLICES, len(frames))
    picks = np.linspace(0, len(frames) - 1, count).round().astype(int)
    return [(int(i), *frames[i]) for i in picks]


def render_series(decoded: Sequence[Decoded], item: dict[str, Any], name: str) -> Image.Image:
    """A strip of evenly spaced slices, each with its slice probability when the model gives one."""
    slice_probabilities = list(item.get("slice_probabilities") or [])
    font = _font(12)
    strip = None
    for position, source, frame in _strip_frames(decoded):
        pixels = _slice(source, frame)
        tile = _gray(pixels, _scale(*pixels.shape, STRIP_TILE))
        if position < len(slice_probabilities):
            text = f"{float(slice_probabilities[position]):.2f}"
            ImageDraw.Draw(tile).text((3, 2), text, fill=BOX_COLOUR, font=font)
        strip = tile if strip is None else _side_by_side(strip, tile)
    return _with_caption(strip, caption(name, item))


def preview_name(decoded: Decoded | Sequence[Decoded], spec: ModelSpec, frame: int = 0) -> str:
    """`<model>-<SOP Instance UID>-f<frame>.png`, or `<model>-series-<Series UID>.png`."""
    if isinstance(decoded, Decoded):
        uid = safe_uid(decoded.header.get("SOPInstanceUID", ""))
        return f"{spec.name}-{uid}-f{frame:04d}.png"
    uid = safe_uid(decoded[0].header.get("SeriesInstanceUID", ""))
    return f"{spec.name}-series-{uid}.png"


def write_preview(
    decoded: Decoded | Sequence[Decoded],
    item: dict[str, Any],
    spec: ModelSpec,
    out_dir: Path,
    frame: int = 0,
) -> Path:
    """Write one PNG: a slice result (`decoded` one file, `frame` in it) or a series result."""
    if isinstance(decoded, Decoded):
        image = render_slice(decoded, item, spec.name, frame)
    elif decoded:
        image = render_series(decoded, item, spec.name)
    else:
        raise ValueError(f"model {spec.name!r}: a series preview needs at least one slice")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / preview_name(decoded, spec, frame)
    image.save(path, format="PNG")
    return path


def write_previews(
    spec: ModelSpec, decoded: list[Decoded], items: list[dict[str, Any]], out_dir: Path
) -> list[Path]:
    """Previews of one series a person can page through, in out_dir/<Series UID>/: one PNG per
    slice named by its place in the series (`0001_<SOP Instance UID>.png`, in the order `run`
    read the series), a contact sheet of them all, and index.html to page through them. A
    sequence model's series gives its strip (`series.png`) and the index."""
    if not decoded:
        raise ValueError(f"model {spec.name!r}: a series preview needs at least one slice")
    folder = Path(out_dir) / safe_uid(decoded[0].header.get("SeriesInstanceUID", ""))
    folder.mkdir(parents=True, exist_ok=True)
    pages: list[tuple[Path, str]] = []
    if spec.input.sequence:
        for item in items:
            path = folder / "series.png"
            render_series(decoded, item, spec.name).save(path, format="PNG")
            pages.append((path, caption(spec.name, item)))
        return [path for path, _ in pages] + [_index(folder, spec, pages, None)]
    frames = [(source, frame) for source in decoded for frame in range(len(source.inputs))]
    tiles = []
    for index, ((source, frame), item) in enumerate(zip(frames, items, strict=True), start=1):
        uid = safe_uid(source.header.get("SOPInstanceUID", ""))
        image = render_slice(source, item, spec.name, frame)
        path = folder / f"{index:04d}_{uid}.png"
        image.save(path, format="PNG")
        pages.append((path, caption(spec.name, item)))
        tiles.append(image)
    sheet = folder / "contact.png"
    contact_sheet(tiles).save(sheet, format="PNG")
    return [path for path, _ in pages] + [sheet, _index(folder, spec, pages, sheet)]


def contact_sheet(images: Sequence[Image.Image]) -> Image.Image:
    """Every slice's preview as a numbered tile, SHEET_COLUMNS to a row, in series order."""
    columns = min(SHEET_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    step = SHEET_TILE + GAP
    sheet = Image.new("RGB", (columns * step - GAP, rows * step - GAP), CAPTION_BACKGROUND)
    draw, font = ImageDraw.Draw(sheet), _font(12)
    for number, image in enumerate(images):
        tile = image.copy()
        tile.thumbnail((SHEET_TILE, SHEET_TILE))
        x, y = (number % columns) * step, (number // columns) * step
        sheet.paste(tile, (x, y))
        draw.text((x + 3, y + 2), str(number + 1), fill=BOX_COLOUR, font=font)
    return sheet


def _index(
    folder: Path, spec: ModelSpec, pages: list[tuple[Path, str]], sheet: Path | None
) -> Path:
    """index.html: the contact sheet, then each preview with its caption and links to the one
    before and after it. It names files and results only, no header text."""
    total = len(pages)
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>{escape(spec.name)} previews</title>",
        f"<h1>{escape(spec.name)} {escape(spec.version)}: {total} preview(s)</h1>",
    ]
    if sheet is not None:
        parts.append(f"<p><a href='#p1'><img src='{sheet.name}' alt='contact sheet'></a></p>")
    for number, (path, text) in enumerate(pages, start=1):
        around = ((number - 1, "previous"), (number + 1, "next"))
        links = [f"<a href='#p{n}'>{label}</a>" for n, label in around if 1 <= n <= total]
        parts.append(
            f"<section id='p{number}'><h2>{number} / {total}</h2>{' '.join(links)}<br>"
            f"<img src='{path.name}' alt='preview {number}'><p>{escape(text)}</p></section>"
        )
    path = folder / "index.html"
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path


def _salience(item: dict[str, Any]) -> float:
    """How much a model found on one slice: its probability, mask area, boxes or anomaly."""
    if "mask" in item:
        return float(np.count_nonzero(item["mask"]))
    for key in ("probability", "anomaly_score"):
        if isinstance(item.get(key), int | float | np.number):
            return float(item[key])
    return float(len(item.get("boxes") or ()))


def thumbnail(spec: ModelSpec, decoded: list[Decoded], items: list[dict[str, Any]]) -> bytes:
    """One PNG for a series result (the status page's preview): the slice the model found the
    most on, or the strip for a sequence model. Pixels and results only; no header text."""
    if spec.input.sequence:
        image = render_series(decoded, items[0], spec.name)
    else:
        frames = [(source, frame) for source in decoded for frame in range(len(source.inputs))]
        index = max(range(len(items)), key=lambda i: _salience(items[i]))
        source, frame = frames[index]
        image = render_slice(source, items[index], spec.name, frame)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
