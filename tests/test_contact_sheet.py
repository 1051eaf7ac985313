"""The run's contact sheet: every frame in its panel, pixel for pixel, and the metrics written beside them."""

from __future__ import annotations

import numpy as np
import pytest

from implicit_deepfake.core.io import image_text
from implicit_deepfake.reports.contact_sheet import COLUMNS, SheetView, contact_sheet, write_contact_sheet


def _frame(seed: int, size: int = 48) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _views(count: int) -> list[SheetView]:
    return [
        SheetView(f"r_{i}", _frame(3 * i), _frame(3 * i + 1), _frame(3 * i + 2), 20.0 + i / 3, None if i == 1 else 0.4)
        for i in range(count)
    ]


def _box(sheet, key: str) -> np.ndarray:
    left, top, right, bottom = sheet.boxes[key]
    return sheet.image[top:bottom, left:right]


def test_every_view_shows_base_swapped_and_render_with_its_numbers():
    views = _views(3)
    target = _frame(99, 64)[:, :40]  # a portrait photo of another size
    sheet = contact_sheet(views, target, ["gaussians on synthetic", "test PSNR 20.33 dB"])
    factor = 4  # 48-px frames scaled by a whole factor to about 192 px
    for view in views:
        for column, frame in zip(COLUMNS, (view.base, view.swapped, view.render)):
            shown = _box(sheet, f"{view.name}/{column}")
            np.testing.assert_array_equal(shown, np.repeat(np.repeat(frame, factor, 0), factor, 1))
    assert _box(sheet, "target").shape[0] == 48 * factor  # the target photo, as tall as a panel
    assert "PSNR 20.00 dB   identity dist. 0.400" in sheet.texts
    assert "PSNR 20.33 dB   no face found" in sheet.texts
    assert "PSNR 20.67 dB   identity dist. 0.400" in sheet.texts
    assert {"gaussians on synthetic", "test PSNR 20.33 dB", "target photo"} <= set(sheet.texts)
    assert any(t.startswith("SYNTHETIC IMAGE") for t in sheet.texts)
    assert (sheet.image[:, -10:] == 255).all()  # no text runs off the right edge (the notice is the widest)
    # The captions are drawn: dark ink in the band under the render panels, none in the empty tile.
    left, _, _, bottom = sheet.boxes["r_0/base frame"]
    band = sheet.image[bottom + 2 : bottom + 24, left : left + 200]
    assert (band.min(axis=2) < 100).sum() > 100
    _, top, right, bottom = sheet.boxes["r_2/render"]
    assert (sheet.image[top : bottom + 24, right + 20 : -20] == 255).all()  # r_2 sits alone in its row


def test_many_views_are_spread_over_the_split_and_written_marked_synthetic(tmp_path):
    sheet = write_contact_sheet(tmp_path / "summary.png", _views(12), _frame(5), ["headline"], max_views=4)
    shown = sorted({key.split("/")[0] for key in sheet.boxes if "/" in key}, key=lambda n: int(n[2:]))
    assert shown == ["r_0", "r_4", "r_7", "r_11"]  # first to last, evenly
    assert image_text(tmp_path / "summary.png")["AIGenerated"] == "true"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.png"]


def test_no_views_is_an_error():
    with pytest.raises(ValueError, match="no test views"):
        contact_sheet([], _frame(0), ["headline"])
