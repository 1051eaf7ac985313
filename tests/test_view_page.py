"""viewer.html: one self-contained page that draws a Gaussians run's splats from disk, offline."""

from __future__ import annotations

import base64
import gzip
import io
import re
import struct
import time

import numpy as np
import pytest
import torch
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE
from implicit_deepfake.models.gaussians import GaussianCloud
from implicit_deepfake.view.camera import initial_view
from implicit_deepfake.view.spz import spz_bytes
from implicit_deepfake.view.webpage import write_viewer_page
from tests.view_scene import (
    BACKGROUND,
    drawn_fraction,
    head_module,
    middle,
    needs_chromium,
    reference_render,
    ring_cameras,
    view_head_box,
    viewer_page_from_disk,
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


def test_initial_view_is_the_camera_seeing_the_face_most_frontally():
    cameras = ring_cameras()
    yaws = [-50.0, 35.0, 20.0, -4.0, 12.0, 30.0, 60.0, 90.0]
    view = initial_view(cameras, yaws)
    assert np.allclose(view.position, cameras.centers[3].numpy(), atol=1e-5)
    # As a project camera it looks along that camera's optical axis (rolled to the cameras' mean up).
    camera = view.cameras(64, 64)
    assert torch.allclose(camera.world_to_camera[0, 2], cameras.world_to_camera[3, 2], atol=1e-4)
    assert torch.allclose(camera.intrinsics, cameras.intrinsics[3], atol=1e-3)


def decode_spz(data: bytes) -> dict[str, np.ndarray]:
    """A .spz (version 2) read back as the spz library's loader reads it."""
    raw = gzip.decompress(data)
    magic, version, n, degree, bits, flags, _ = struct.unpack_from("<IIIBBBB", raw)
    assert (magic, version, flags) == (0x5053474E, 2, 0)
    offset = 16

    def take(*shape: int) -> np.ndarray:
        nonlocal offset
        count = int(np.prod(shape))
        values = np.frombuffer(raw, np.uint8, count, offset).reshape(shape).astype(np.float64)
        offset += count
        return values

    b = take(n, 3, 3).astype(np.int64)
    fixed = b[..., 0] + (b[..., 1] << 8) + (b[..., 2] << 16)
    means = np.where(fixed >= 1 << 23, fixed - (1 << 24), fixed) / (1 << bits)
    alphas, colors, scales, xyz = take(n) / 255, take(n, 3), take(n, 3), take(n, 3) / 127.5 - 1
    w = np.sqrt(np.clip(1 - (xyz**2).sum(1, keepdims=True), 0, None))
    sh = (take(n, (degree + 1) ** 2 - 1, 3) - 128) / 128
    assert offset == len(raw)
    return {"means": means, "alphas": alphas, "sh0": (colors / 255 - 0.5) / 0.15, "log_scales": scales / 16 - 10,
            "quats": np.concatenate([w, xyz], 1), "shN": sh}  # fmt: skip


def test_spz_holds_the_cloud_within_its_quantisation():
    generator = torch.Generator().manual_seed(1)
    n = 500
    cloud = GaussianCloud(sh_degree=3)

    def uniform(*shape: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    cloud.load_values({
        "means": uniform(n, 3, low=-3, high=3), "scales": uniform(n, 3, low=-5, high=0),
        "quats": torch.randn(n, 4, generator=generator), "opacities": torch.randn(n, generator=generator),
        "sh0": uniform(n, 1, 3, low=-1.5, high=1.5), "shN": uniform(n, 15, 3, low=-0.5, high=0.5),
    })  # fmt: skip
    decoded = decode_spz(spz_bytes(cloud))
    p = {name: t.detach().numpy().astype(np.float64) for name, t in cloud.params.items()}
    assert np.abs(decoded["means"] - p["means"]).max() <= 0.5 / 4096 + 1e-9
    assert np.abs(decoded["alphas"] - 1 / (1 + np.exp(-p["opacities"]))).max() <= 0.5 / 255 + 1e-6
    assert np.abs(decoded["sh0"] - p["sh0"][:, 0]).max() <= 0.5 / 255 / 0.15 + 1e-6
    assert np.abs(decoded["log_scales"] - p["scales"]).max() <= 0.5 / 16 + 1e-6
    quats = p["quats"] / np.linalg.norm(p["quats"], axis=1, keepdims=True)
    assert np.abs((decoded["quats"] * quats).sum(1)).min() > 0.99  # the same rotation (q and -q)
    assert (
        np.abs(decoded["shN"][:, :3] - p["shN"][:, :3]).max() <= 4.5 / 128 + 1e-6
    )  # 5 bits: buckets of 8 after rounding
    assert np.abs(decoded["shN"][:, 3:] - p["shN"][:, 3:]).max() <= 8.5 / 128 + 1e-6  # 4 bits: buckets of 16


def test_page_carries_the_splats_and_the_notice_and_names_no_remote_url(page_file):
    page, ply, _ = page_file
    text = page.read_text(encoding="utf-8")
    splats = re.search(r'<script id="viewer-splats" type="application/octet-stream">([^<]*)</script>', text)
    decoded = decode_spz(base64.b64decode(splats.group(1)))
    cloud = GaussianCloud.load_ply(ply)
    assert np.abs(decoded["means"] - cloud.params["means"].detach().numpy()).max() <= 0.5 / 4096 + 1e-6
    assert SYNTHETIC_NOTICE in text
    # Nothing for the browser to load from elsewhere: no src/href attributes, no stylesheet imports.
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)
    assert "@import" not in text
    # The renderer (~3 MB) and the splats: under a third of the .ply's size.
    assert len(text) - len(splats.group(1)) < 3.5e6
    assert len(splats.group(1)) < ply.stat().st_size / 3


def test_a_missing_ply_is_a_clear_error(tmp_path):
    with pytest.raises(DeepfakeError, match="point_cloud.ply: no such .ply"):
        write_viewer_page(
            tmp_path / "viewer.html", tmp_path / "point_cloud.ply", initial_view(ring_cameras()), BACKGROUND, "x"
        )
    assert not (tmp_path / "viewer.html").exists()


@needs_chromium
def test_page_draws_the_head_from_disk_with_no_request_leaving_the_machine(page_file, tmp_path):
    page_path, _, view = page_file
    with viewer_page_from_disk(page_path, WIDTH, HEIGHT) as page:
        time.sleep(1.0)  # the sort worker's first order reaches the screen within a few frames
        assert "SYNTHETIC IMAGE" in page.inner_text("#viewer-notice")
        assert page.is_visible("#viewer-notice")
        png = page.screenshot(path=str(tmp_path / "viewer_html.png"))
    image = np.array(Image.open(io.BytesIO(png)).convert("RGB"))
    box = view_head_box(view, WIDTH, HEIGHT)
    assert drawn_fraction(image, box, BACKGROUND) > 0.95  # the head covers its projected box
    # In the colours the project's renderer gives it from that camera (Spark decodes the .spz's colours).
    reference = reference_render(head_module(), view, WIDTH, HEIGHT)
    assert np.abs(middle(image, box).mean(0) - middle(reference, box).mean(0)).max() < 10
    # Beside the head, below the notice: the background.
    beside = image[box[1] : box[3], box[2] + 20 : WIDTH - 10]
    assert (np.abs(beside.astype(int) - 255).max(-1) <= 30).mean() > 0.95
