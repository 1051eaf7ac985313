"""The run's contact sheet, `summary.png`: per test view the base frame, the swapped frame the model
trained on and the model's render, with the view's PSNR and identity distance; the target photo and
the run's headline figures above them, the synthetic-media notice below."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from implicit_deepfake.core.io import SYNTHETIC_NOTICE, write_png

COLUMNS = ("base frame", "swapped frame", "render")
PANEL_PX = 192  # frames are scaled up by a whole factor to about this size, pixels kept sharp
TILES_PER_ROW = 2  # views side by side, each a tile of the three panels
GAP, MARGIN, CAPTION_PX, FONT_PX = 8, 16, 28, 18
BACKGROUND, INK, MUTED = (255, 255, 255), (20, 20, 20), (90, 90, 90)


@dataclass(frozen=True)
class SheetView:
    """One test view: the three frames (HxWx3 uint8, one size) and its metrics."""

    name: str
    base: np.ndarray
    swapped: np.ndarray
    render: np.ndarray
    psnr: float
    identity_distance: float | None  # render to the target photo; None where no face was found

    def caption(self) -> str:
        identity = "no face found" if self.identity_distance is None else f"identity dist. {self.identity_distance:.3f}"
        return f"PSNR {self.psnr:.2f} dB   {identity}"


@dataclass
class ContactSheet:
    """The sheet, where each frame went ({name/column: (left, top, right, bottom)}), and its text."""

    image: np.ndarray
    boxes: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)


def headline(metrics: dict) -> list[str]:
    """The sheet's title lines from a run's metrics.json: what ran, and its test means."""
    to_target, to_base = metrics["test.identity_distance_to_target"], metrics["test.identity_distance_to_base"]
    identity = "n/a (no face found)" if to_target is None else f"{to_target:.3f}"
    base = "" if to_base is None else f" (to the base frames {to_base:.3f})"
    return [
        f"{metrics['model']} on {metrics['data']}, swap={metrics['swap']}, {metrics['steps']} steps",
        f"test PSNR {metrics['test.psnr']:.2f} dB   SSIM {metrics['test.ssim']:.3f}",
        f"identity distance to the target photo {identity}{base}",
        f"face found in {metrics['test.face_detection_rate']:.0%} of the renders",
    ]


def _scale(image: np.ndarray, factor: int) -> np.ndarray:
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def _fit(image: np.ndarray, height: int) -> np.ndarray:
    """Resize (any size, e.g. the target photo) to `height` rows, keeping its aspect ratio."""
    width = max(1, round(image.shape[1] * height / image.shape[0]))
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.LANCZOS))


def _spread(views: Sequence[SheetView], count: int) -> list[SheetView]:
    """At most `count` views, evenly spread over the test split."""
    if len(views) <= count:
        return list(views)
    return [views[int(i)] for i in np.linspace(0, len(views) - 1, count).round()]


def contact_sheet(
    views: Sequence[SheetView], target: np.ndarray, heading: Sequence[str], max_views: int = 8
) -> ContactSheet:
    """Lay out the sheet: target photo and `heading` lines on top, then the views' tiles."""
    if not views:
        raise ValueError("contact_sheet: no test views")
    views = _spread(views, max_views)
    height, width = views[0].render.shape[:2]
    factor = max(1, round(PANEL_PX / max(height, width)))
    panel_w, panel_h = width * factor, height * factor
    tile_w = 3 * panel_w + 2 * GAP
    font = ImageFont.load_default(size=FONT_PX)
    title_font = ImageFont.load_default(size=FONT_PX + 5)

    photo = _fit(target, panel_h)
    header_h = panel_h + CAPTION_PX
    rows = -(-len(views) // TILES_PER_ROW)
    row_h = CAPTION_PX + panel_h + CAPTION_PX  # column names, frames, caption
    # Wide enough for the tiles, the headline beside the photo and the notice, whatever the frame size.
    text_w = max(title_font.getlength(line) if i == 0 else font.getlength(line) for i, line in enumerate(heading))
    sheet_w = max(
        2 * MARGIN + TILES_PER_ROW * tile_w + (TILES_PER_ROW - 1) * 2 * GAP,
        2 * MARGIN + photo.shape[1] + 2 * GAP + math.ceil(text_w),
        2 * MARGIN + math.ceil(font.getlength(SYNTHETIC_NOTICE)),
    )
    sheet_h = MARGIN + header_h + GAP + rows * (row_h + GAP) + CAPTION_PX + MARGIN
    canvas = Image.new("RGB", (sheet_w, sheet_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    sheet = ContactSheet(np.zeros(0))

    def paste(image: np.ndarray, left: int, top: int, key: str) -> None:
        canvas.paste(Image.fromarray(image), (left, top))
        sheet.boxes[key] = (left, top, left + image.shape[1], top + image.shape[0])

    def text(xy: tuple[int, int], value: str, fill=INK, use=font) -> None:
        draw.text(xy, value, fill=fill, font=use)
        sheet.texts.append(value)

    paste(photo, MARGIN, MARGIN, "target")
    text((MARGIN, MARGIN + panel_h + 4), "target photo", MUTED)
    left = MARGIN + photo.shape[1] + 2 * GAP
    for i, line in enumerate(heading):
        text((left, MARGIN + i * (FONT_PX + 12)), line, INK, title_font if i == 0 else font)

    top = MARGIN + header_h + GAP
    for index, view in enumerate(views):
        tile_left = MARGIN + (index % TILES_PER_ROW) * (tile_w + 2 * GAP)
        tile_top = top + (index // TILES_PER_ROW) * (row_h + GAP)
        for column, (name, frame) in enumerate(zip(COLUMNS, (view.base, view.swapped, view.render))):
            x = tile_left + column * (panel_w + GAP)
            label = f"{view.name}: {name}" if column == 0 else name
            text((x, tile_top + 4), label, MUTED)
            paste(_scale(frame, factor), x, tile_top + CAPTION_PX, f"{view.name}/{name}")
        text((tile_left, tile_top + CAPTION_PX + panel_h + 4), view.caption())
    text((MARGIN, sheet_h - MARGIN - CAPTION_PX + 6), SYNTHETIC_NOTICE, MUTED)
    sheet.image = np.asarray(canvas)
    return sheet


def write_contact_sheet(
    path: str | Path, views: Sequence[SheetView], target: np.ndarray, heading: Sequence[str], max_views: int = 8
) -> ContactSheet:
    """contact_sheet(...) written as a PNG marked synthetic (atomically)."""
    sheet = contact_sheet(views, target, heading, max_views)
    write_png(path, sheet.image, source="ImplicitDeepfake contact sheet: " + " | ".join(heading))
    return sheet
