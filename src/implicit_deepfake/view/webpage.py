"""`viewer.html`: one file that shows a Gaussians run in a browser, opened from disk.

Browsers refuse `fetch()` of a page's sibling files under file://, so the page carries everything
inline: the splat renderer (Spark + three.js, bundled by `view/web/build.mjs` into
`view/assets/viewer.js`, licences beside it), the splats as base64 of a .spz (a quarter of the .ply's
size), and the camera to open on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import FrameDataModule
from implicit_deepfake.models.gaussians import GaussianCloud
from implicit_deepfake.view.avatar_page import write_avatar_page
from implicit_deepfake.view.camera import InitialView, front_view
from implicit_deepfake.view.page_shell import write_page
from implicit_deepfake.view.spz import spz_bytes

PAGE_NAME = "viewer.html"
_BUNDLE = "viewer.js"

_STYLE = "#viewer-help { left: 8px; bottom: 6px; }"


def write_viewer_page(
    path: str | Path, ply: str | Path, view: InitialView, background: tuple[float, float, float], title: str
) -> Path:
    """Write the page at `path` showing the 3DGS .ply `ply`, opening on `view` over `background` (RGB 0-1)."""
    ply = Path(ply)
    if not ply.is_file():
        raise DeepfakeError(f"{ply}: no such .ply to put in {PAGE_NAME}; export the run first (evaluate.py ckpt=...).")
    splats = base64.b64encode(spz_bytes(GaussianCloud.load_ply(ply))).decode("ascii")
    opening = json.dumps({**asdict(view), "background": list(background)})
    body = (
        f'<script id="viewer-view" type="application/json">{opening}</script>\n'
        f'<script id="viewer-splats" type="application/octet-stream">{splats}</script>'
    )
    return write_page(path, title, _STYLE, body, _BUNDLE)


def run_title(model_name: str, run_dir: Path) -> str:
    """What the viewers call a run: its model and folder."""
    return f"{model_name} avatar ({Path(run_dir).name})"


def export_viewer_page(
    run_dir: Path,
    exported: Mapping[str, str],
    datamodule: FrameDataModule,
    model_name: str,
    named_expressions: bool = False,
) -> dict[str, str]:
    """viewer.html beside what a splat model exported ({"viewer_html": path}): the 4D player for an
    avatar4d.npz (`named_expressions`: the synthetic head's sliders), else the 3D page of the .ply;
    opening on the training camera that sees the face most frontally. {} for a model without splats
    (the NeRFs)."""
    if "ply" not in exported:
        return {}
    view = front_view(datamodule.frames("train").cameras, datamodule.root)
    title = run_title(model_name, run_dir)
    path, background = Path(run_dir) / PAGE_NAME, datamodule.background
    if "avatar" in exported:
        page = write_avatar_page(path, exported["avatar"], view, background, title, named_expressions)
    else:
        page = write_viewer_page(path, exported["ply"], view, background, title)
    return {"viewer_html": str(page)}
