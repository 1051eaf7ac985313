"""viewer.html of a 4D run: one self-contained page that plays expression-driven Gaussians from disk,
offline, posing them in the page per frame (neutral + offsets x code)."""

from __future__ import annotations

import base64
import gzip
import io
import json
import re

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch import nn

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE
from implicit_deepfake.data.expressions import expression_vector
from implicit_deepfake.lit.gaussian_avatar import LitGaussianAvatar
from implicit_deepfake.view.avatar_page import player_payload, write_avatar_page
from implicit_deepfake.view.camera import initial_view
from tests.conftest import REPO
from tests.view_scene import (
    BACKGROUND,
    HEAD_RADII,
    drawn_fraction,
    needs_chromium,
    ring_cameras,
    view_head_box,
    viewer_page_from_disk,
)

WIDTH, HEIGHT = 640, 480
JAW_DROP = 0.12  # world units the mouth patch moves down at jaw_open = 1 (the head is 1.6 tall)


def avatar_module(n: int = 6000, seed: int = 0) -> LitGaussianAvatar:
    """A LitGaussianAvatar of an opaque skin-coloured ellipsoid shell facing -y (the ring cameras' front),
    whose mouth patch (front, below the middle) drops and darkens with jaw_open (code 0); frames: the
    jaw closed, open, half open."""
    generator = torch.Generator().manual_seed(seed)
    directions = nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=1)
    points = directions * torch.tensor(HEAD_RADII)
    colors = torch.tensor([0.75, 0.45, 0.35]) + 0.1 * torch.rand(n, 3, generator=generator)
    config = OmegaConf.load(REPO / "conf" / "model" / "gaussian_avatar.yaml").model.module
    module: LitGaussianAvatar = instantiate(
        OmegaConf.merge(config, {"code_dims": 3, "seed": seed, "pose_refine": False})
    )
    module.cloud.initialize(points, colors.clamp(0, 1), torch.full((n,), 0.05), opacity=0.95)
    x, y, z = points.unbind(1)
    mouth = (y < -0.3) & (x.abs() < 0.25) & (z > -0.45) & (z < -0.15)
    with torch.no_grad():
        module.cloud.params["means_offsets"][mouth, 0, 2] = -JAW_DROP
        module.cloud.params["sh0_offsets"][mouth, 0] = -1.5  # darker: the open mouth
        module.code.linear.weight.zero_()
        module.code.linear.weight[:, :3] = torch.eye(3)  # code = the rig's (jaw, smile, brows)
    module.train_expressions = torch.from_numpy(
        np.stack([expression_vector(), expression_vector(jaw_open=1.0), expression_vector(jaw_open=0.5)])
    )
    module.latents = nn.Parameter(torch.zeros(3, 0))
    module.background = torch.tensor(BACKGROUND)
    module.background_image = torch.tensor(BACKGROUND).expand(1, 1, 3).clone()
    return module.eval()


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> tuple:
    folder = tmp_path_factory.mktemp("run4d")
    module = avatar_module()
    exported = module.export(folder)
    view = initial_view(ring_cameras())
    page = write_avatar_page(folder / "viewer.html", exported["avatar"], view, BACKGROUND, "test head", named=True)
    return page, module, view


def test_payload_lays_out_the_avatar_and_its_frames(page_file):
    page, module, _ = page_file
    text = page.read_text(encoding="utf-8")
    meta = json.loads(re.search(r'<script id="viewer-view" type="application/json">([^<]*)</script>', text).group(1))
    raw = re.search(r'<script id="viewer-avatar" type="application/octet-stream">([^<]*)</script>', text).group(1)
    payload = gzip.decompress(base64.b64decode(raw))
    layout = {entry["name"]: entry for entry in meta["layout"]}

    def read(name: str) -> np.ndarray:
        entry = layout[name]
        dtype = np.float32 if entry["type"] == "float32" else np.int16
        return np.frombuffer(payload, dtype, entry["length"], entry["offset"]).astype(np.float64) * entry["scale"]

    n = len(module.cloud)
    assert (meta["count"], meta["code_dims"], meta["frames"]) == (n, 3, 3)
    assert [s["name"] for s in meta["named"]] == ["jaw_open", "smile", "brow_raise"]
    params = {name: p.detach().numpy() for name, p in module.cloud.params.items()}
    assert np.allclose(read("means"), params["means"].reshape(-1), atol=1e-6)
    offsets = read("means_offsets").reshape(n, 3, 3)
    assert np.abs(offsets - params["means_offsets"]).max() <= JAW_DROP / 32767  # int16 steps of the largest
    assert np.allclose(read("codes").reshape(3, 3), [[0, 0, 0], [1, 0, 0], [0.5, 0, 0]], atol=1e-6)
    # Covariances: R diag(s^2) R^T of isotropic Gaussians of radius 0.05.
    cov = read("covariances").reshape(n, 6)
    assert np.allclose(cov[:, [0, 3, 5]], 0.05**2, rtol=1e-4) and np.abs(cov[:, [1, 2, 4]]).max() < 1e-8
    assert SYNTHETIC_NOTICE in text and not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)
    assert len(text) < 3e6


def test_payload_without_named_expressions_has_no_sliders():
    arrays = {name: p.detach().numpy() for name, p in avatar_module(n=50).cloud.params.items()}
    arrays |= {"codes": np.zeros((2, 3), np.float32)}
    meta, _ = player_payload(arrays, named=False)
    assert "named" not in meta and {e["name"] for e in meta["layout"]}.isdisjoint({"expressions", "code_jacobian"})


def test_a_missing_avatar_is_a_clear_error(tmp_path):
    with pytest.raises(DeepfakeError, match="avatar4d.npz: no such avatar"):
        write_avatar_page(
            tmp_path / "viewer.html", tmp_path / "avatar4d.npz", initial_view(ring_cameras()), BACKGROUND, "x"
        )
    assert not (tmp_path / "viewer.html").exists()
    np.savez(tmp_path / "other.npz", means=np.zeros((2, 3), np.float32))
    with pytest.raises(DeepfakeError, match="other.npz: not an avatar4d.npz"):
        write_avatar_page(
            tmp_path / "viewer.html", tmp_path / "other.npz", initial_view(ring_cameras()), BACKGROUND, "x"
        )


def _frame(page, frame: int) -> np.ndarray:
    """The page showing `frame`, paused: a screenshot once it has been drawn."""
    page.evaluate(f"window.avatarPlayer.showFrame({frame})")
    page.wait_for_function(f"document.body.dataset.frame === '{frame}'", timeout=30_000)
    page.evaluate("new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))")
    return np.array(Image.open(io.BytesIO(page.screenshot())).convert("RGB")).astype(np.float64)


@needs_chromium
def test_page_plays_the_mouth_and_keeps_the_rest_with_no_request_leaving_the_machine(page_file):
    page_path, module, view = page_file
    with viewer_page_from_disk(page_path, WIDTH, HEIGHT) as page:
        assert "SYNTHETIC IMAGE" in page.inner_text("#viewer-notice")
        closed, opened = _frame(page, 0), _frame(page, 1)
        top = int(page.evaluate("document.getElementById('viewer-notice').getBoundingClientRect().bottom")) + 1
        bottom = int(page.evaluate("document.getElementById('player').getBoundingClientRect().top")) - 1
        assert page.input_value("#player-jaw_open") == "1"  # the sliders follow the frame
        assert page.inner_text("#player-play") == "Play"  # paused by showing a frame
    box = view_head_box(view, WIDTH, HEIGHT)
    assert drawn_fraction(closed.astype(np.uint8), box, BACKGROUND) > 0.95  # the head covers its projected box
    # The project's renderer at both expressions says where the mouth is; the page agrees with it.
    cameras = view.cameras(WIDTH, HEIGHT)
    expressions = module.train_expressions[:2]
    reference = module.render_views(cameras[[0, 0]], expressions)
    reference = (reference.clamp(0, 1) * 255).numpy()
    mouth = np.abs(reference[1] - reference[0]).max(-1) > 40
    assert 0.002 < mouth.mean() < 0.1
    rest = ~mouth
    rest[:top] = rest[bottom:] = False  # the notice and the player's controls
    change = np.abs(opened - closed).max(-1)
    assert change[mouth].mean() > 40 and change[rest].mean() < 1.0, (change[mouth].mean(), change[rest].mean())
    # Both frames in the renderer's colours, inside the head (below the notice, above the controls).
    inside = np.zeros_like(mouth)
    inside[box[1] : box[3], box[0] : box[2]] = True
    inside[:top] = inside[bottom:] = False
    for shot, ref in ((closed, reference[0]), (opened, reference[1])):
        assert np.abs(shot[inside].mean(0) - ref[inside].mean(0)).max() < 10
    # Beside the head: the background, in both frames.
    beside = closed[box[1] : box[3], box[2] + 20 : WIDTH - 10]
    assert (np.abs(beside - 255).max(-1) <= 30).mean() > 0.95
