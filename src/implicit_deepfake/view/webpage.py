"""`viewer.html`: one file that shows a Gaussians run in a browser, opened from disk.

Browsers refuse `fetch()` of a page's sibling files under file://, so the page carries everything
inline: the splat renderer (Spark + three.js, bundled by `view/web/build.mjs` into
`view/assets/viewer.js`, licences beside it), the splats as base64 of a .spz (a quarter of the .ply's
size), and the camera to open on.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE, atomic_path
from implicit_deepfake.data.datamodule import FrameDataModule
from implicit_deepfake.models.gaussians import GaussianCloud
from implicit_deepfake.view.camera import InitialView, front_view
from implicit_deepfake.view.spz import spz_bytes

PAGE_NAME = "viewer.html"
_BUNDLE = "viewer.js"

_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="description" content="{notice}">
<meta name="generator" content="implicit-deepfake">
<title>{title} (synthetic)</title>
<style>
html, body {{ margin: 0; height: 100%; overflow: hidden; background: #000; font-family: sans-serif; }}
#viewer-canvas {{ display: block; width: 100%; height: 100%; }}
#viewer-notice {{ position: fixed; left: 0; right: 0; top: 0; padding: 6px 10px; font-size: 13px;
  color: #fff; background: rgba(160, 0, 0, 0.85); text-align: center; }}
#viewer-help {{ position: fixed; left: 8px; bottom: 6px; font-size: 12px; color: #888; }}
#viewer-error {{ position: fixed; left: 8px; top: 40px; color: #f66; white-space: pre-wrap; }}
</style>
</head>
<body data-state="loading">
<canvas id="viewer-canvas"></canvas>
<div id="viewer-notice" role="note">{notice}</div>
<div id="viewer-help">{title}: drag to orbit, scroll to zoom, right-drag to pan.</div>
<div id="viewer-error"></div>
<script id="viewer-view" type="application/json">{view}</script>
<script id="viewer-splats" type="application/octet-stream">{splats}</script>
<script>{bundle}</script>
</body>
</html>
"""


def _bundle() -> str:
    script = resources.files("implicit_deepfake.view").joinpath("assets", _BUNDLE)
    if not script.is_file():
        raise DeepfakeError(
            f"{script} is missing: the package was installed without its web assets. Reinstall it, or build them "
            "with `npm ci && npm run build` in src/implicit_deepfake/view/web/."
        )
    return script.read_text(encoding="utf-8")


def write_viewer_page(
    path: str | Path, ply: str | Path, view: InitialView, background: tuple[float, float, float], title: str
) -> Path:
    """Write the page at `path` showing the 3DGS .ply `ply`, opening on `view` over `background` (RGB 0-1)."""
    ply = Path(ply)
    if not ply.is_file():
        raise DeepfakeError(f"{ply}: no such .ply to put in {PAGE_NAME}; export the run first (evaluate.py ckpt=...).")
    bundle = _bundle()
    if "</script" in bundle.lower():  # would end the inline <script> early
        raise DeepfakeError(f"{_BUNDLE} holds '</script': rebuild it with build.mjs (esbuild escapes it).")
    page = _TEMPLATE.format(
        notice=html.escape(SYNTHETIC_NOTICE),
        title=html.escape(title),
        view=json.dumps({**asdict(view), "background": list(background)}),
        splats=base64.b64encode(spz_bytes(GaussianCloud.load_ply(ply))).decode("ascii"),
        bundle=bundle,
    )
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def run_title(model_name: str, run_dir: Path) -> str:
    """What the viewers call a run: its model and folder."""
    return f"{model_name} avatar ({Path(run_dir).name})"


def export_viewer_page(
    run_dir: Path, exported: Mapping[str, str], datamodule: FrameDataModule, model_name: str
) -> dict[str, str]:
    """viewer.html beside the .ply a splat model exported ({"viewer_html": path}), opening on the training
    camera that sees the face most frontally; {} for a model without one (the NeRFs)."""
    if "ply" not in exported:
        return {}
    view = front_view(datamodule.frames("train").cameras, datamodule.root)
    title = run_title(model_name, run_dir)
    page = write_viewer_page(Path(run_dir) / PAGE_NAME, exported["ply"], view, datamodule.background, title)
    return {"viewer_html": str(page)}
