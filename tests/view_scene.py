"""A small Gaussians "head" built directly (no training) and a headless Chromium for the viewer tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from implicit_deepfake.lit.gaussians import LitGaussians
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.view.camera import InitialView
from tests.conftest import REPO, orbit_cameras

CHROMIUM = "/usr/bin/chromium"
# Headless and offline: no background requests, no updates, WebGL in software (no GPU needed).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]  # fmt: skip
needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"no {CHROMIUM}: install Debian's chromium (apt-get install -y chromium)"
)
HEAD_RADII = (0.6, 0.6, 0.8)  # an upright ellipsoid at the origin, world z up (the ring cameras' up)
BACKGROUND = (1.0, 1.0, 1.0)


def head_module(n: int = 4000, seed: int = 0) -> LitGaussians:
    """A LitGaussians holding an opaque, reddish-brown ellipsoid shell of n Gaussians at the origin."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=1)
    points = directions * torch.tensor(HEAD_RADII)
    colors = torch.tensor([0.75, 0.45, 0.35]) + 0.1 * torch.rand(n, 3, generator=generator)
    config = OmegaConf.load(REPO / "conf" / "model" / "gaussians.yaml").model.module
    module: LitGaussians = instantiate(OmegaConf.merge(config, {"sh_degree": 1, "seed": seed}))
    module.cloud.initialize(points, colors.clamp(0, 1), torch.full((n,), 0.05), opacity=0.95)
    module.background = torch.tensor(BACKGROUND)
    return module.eval()


def ring_cameras(size: int = 64) -> Cameras:
    return orbit_cameras(8, size)


def head_box(world_to_camera: np.ndarray, fov_y_deg: float, width: int, height: int) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) pixel box of the head's ellipsoid seen by an OpenCV camera of that vertical field of view."""
    theta, phi = np.meshgrid(np.linspace(0, np.pi, 32), np.linspace(0, 2 * np.pi, 64))
    points = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], -1).reshape(-1, 3)
    cam = (world_to_camera[:3, :3] @ (points * HEAD_RADII).T).T + world_to_camera[:3, 3]
    focal = 0.5 * height / np.tan(np.radians(fov_y_deg) / 2)
    x = focal * cam[:, 0] / cam[:, 2] + width / 2
    y = focal * cam[:, 1] / cam[:, 2] + height / 2
    return int(x.min()), int(y.min()), int(np.ceil(x.max())), int(np.ceil(y.max()))


def drawn_fraction(image: np.ndarray, box: tuple[int, int, int, int], background: tuple[float, ...]) -> float:
    """The fraction of pixels inside `box` (shrunk to its middle half) that differ from `background`."""
    return float((np.abs(middle(image, box) - np.array(background) * 255).max(-1) > 30).mean())


def middle(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The pixels (M, 3) of the middle half of `box` in `image`."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) // 4, (y1 - y0) // 4
    return image[y0 + dy : y1 - dy, x0 + dx : x1 - dx, :3].reshape(-1, 3).astype(float)


def reference_render(module: LitGaussians, view: InitialView, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8: the project's own renderer from a viewer's initial view."""
    image = module.render_views(view.cameras(width, height))[0]
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def view_head_box(view: InitialView, width: int, height: int) -> tuple[int, int, int, int]:
    """The head's box in a width x height image from `view`."""
    return head_box(view.cameras(width, height).world_to_camera[0].numpy(), view.fov_y_deg, width, height)


@contextmanager
def chromium_page(width: int = 640, height: int = 480) -> Iterator[object]:
    """A Playwright page in Debian's Chromium (never a downloaded browser)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


@contextmanager
def viewer_page_from_disk(path: Path, width: int, height: int) -> Iterator[Any]:
    """A viewer.html opened from disk in chromium_page, loaded and ready; when the body is done, every
    request the page made was for the file itself or in-page data (none left the machine)."""
    requests: list[str] = []
    with chromium_page(width, height) as page:
        page.on("request", lambda request: requests.append(request.url))
        page.goto(path.as_uri())
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=90_000)
        assert page.evaluate("document.body.dataset.state") == "ready", page.inner_text("#viewer-error")
        yield page
    assert requests and all(url.split(":", 1)[0] in ("file", "data", "blob") for url in requests), requests
