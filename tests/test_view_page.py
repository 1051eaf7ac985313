"""viewer.html: one self-contained page that draws a Gaussians run's splats from disk, offline."""

from __future__ import annotations

import base64
import io
import re
import time

import numpy as np
import pytest
import torch
from PIL import Image

from implicit_deepfake.errors import DeepfakeError
from implicit_deepfake.io import SYNTHETIC_NOTICE
from implicit_deepfake.view.camera import initial_view
from implicit_deepfake.view.webpage import write_viewer_page
from tests.view_scene import (
    BACKGROUND,
    chromium_page,
    drawn_fraction,
    head_box,
    head_module,
    look_at_world_to_camera,
    needs_chromium,
    ring_cameras,
)

WIDTH, HEIGHT = 640, 480


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("run")
    head_module().cloud.save_ply(folder / "point_cloud.ply")
    view = initial_view(ring_cameras())
    page = write_viewer_page(folder / "viewer.html", folder / "point_cloud.ply", view, BACKGROUND, "test head")
    return page, folder / "point_cloud.ply", view


def test_initial_view_is_the_front_camera_with_the_cameras_up():
    cameras = ring_cameras()  # 8 cameras from -0.6 to 0.6 rad around the z axis, 4 units away
    view = initial_view(cameras)
    centers = cameras.centers
    # The ring's middle cameras are the nearest to its mean direction (-y).
    assert min(float((torch.tensor(view.position) - c).norm()) for c in centers[3:5]) < 1e-5
    assert np.allclose(view.look_at, 0.0, atol=1e-4)
    assert view.up[2] > 0.99  # z up, tilted only by the cameras looking slightly down
    assert view.fov_y_deg == pytest.approx(np.degrees(0.8), abs=1e-3)  # square images: camera_angle_x


def test_page_carries_the_ply_and_the_notice_and_names_no_remote_url(page_file):
    page, ply, _ = page_file
    text = page.read_text(encoding="utf-8")
    splats = re.search(r'<script id="viewer-splats" type="application/octet-stream">([^<]*)</script>', text)
    assert base64.b64decode(splats.group(1)) == ply.read_bytes()
    assert SYNTHETIC_NOTICE in text
    # Nothing for the browser to load from elsewhere: no src/href attributes, no stylesheet imports.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)
    assert "@import" not in text
    # The renderer (~3 MB) and the splats (248 bytes a Gaussian with SH degree 3, base64) make the page.
    assert len(text) < 3.5e6 + 1.4 * ply.stat().st_size


def test_a_missing_ply_is_a_clear_error(tmp_path):
    with pytest.raises(DeepfakeError, match="point_cloud.ply: no such .ply"):
        write_viewer_page(
            tmp_path / "viewer.html", tmp_path / "point_cloud.ply", initial_view(ring_cameras()), BACKGROUND, "x"
        )
    assert not (tmp_path / "viewer.html").exists()


@needs_chromium
def test_page_draws_the_head_from_disk_with_no_request_leaving_the_machine(page_file, tmp_path):
    page_path, _, view = page_file
    requests = []
    with chromium_page(WIDTH, HEIGHT) as page:
        page.on("request", lambda request: requests.append(request.url))
        page.goto(page_path.as_uri())
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=90_000)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#viewer-error")
        time.sleep(1.0)  # the sort worker's first order reaches the screen within a few frames
        assert "SYNTHETIC IMAGE" in page.inner_text("#viewer-notice")
        assert page.is_visible("#viewer-notice")
        png = page.screenshot(path=str(tmp_path / "viewer_html.png"))
    image = np.array(Image.open(io.BytesIO(png)).convert("RGB"))
    box = head_box(look_at_world_to_camera(view.position, view.look_at, view.up), view.fov_y_deg, WIDTH, HEIGHT)
    assert drawn_fraction(image, box, BACKGROUND) > 0.95  # the head covers its projected box
    # Beside the head, below the notice: the background.
    beside = image[box[1] : box[3], box[2] + 20 : WIDTH - 10]
    assert (np.abs(beside.astype(int) - 255).max(-1) <= 30).mean() > 0.95
    assert requests and all(url.split(":", 1)[0] in ("file", "data", "blob") for url in requests), requests
