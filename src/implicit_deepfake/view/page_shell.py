"""The one-file web pages' shell (viewer.html of a 3D run and of a 4D run): the synthetic-media
notice, the canvas, the help line, a page's own controls and data, and its inlined renderer bundle
(view/assets/, built from view/web/): opened from disk, nothing fetched."""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE, atomic_path

_SHELL = """<!DOCTYPE html>
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
#viewer-help {{ position: fixed; font-size: 12px; color: #888; }}
#viewer-error {{ position: fixed; left: 8px; top: 40px; color: #f66; white-space: pre-wrap; }}
{style}
</style>
</head>
<body data-state="loading">
<canvas id="viewer-canvas"></canvas>
<div id="viewer-notice" role="note">{notice}</div>
<div id="viewer-help">{title}: drag to orbit, scroll to zoom, right-drag to pan.</div>
<div id="viewer-error"></div>
{body}
<script>{bundle}</script>
</body>
</html>
"""


def bundle(name: str) -> str:
    """A built script of the page's renderers (view/assets/), checked to be inlinable."""
    script = resources.files("implicit_deepfake.view").joinpath("assets", name)
    if not script.is_file():
        raise DeepfakeError(
            f"{script} is missing: the package was installed without its web assets. Reinstall it, or build them "
            "with `npm ci && npm run build` in src/implicit_deepfake/view/web/."
        )
    text = script.read_text(encoding="utf-8")
    if "</script" in text.lower():  # would end the inline <script> early
        raise DeepfakeError(f"{name} holds '</script': rebuild it with build.mjs (esbuild escapes it).")
    return text


def write_page(path: str | Path, title: str, style: str, body: str, bundle_name: str) -> Path:
    """Write a page at `path`: the shell with the page's `style` (CSS), `body` (its controls and data
    scripts, HTML) and the bundle `bundle_name`; `title` is escaped here."""
    notice, script = html.escape(SYNTHETIC_NOTICE), bundle(bundle_name)
    page = _SHELL.format(notice=notice, title=html.escape(title), style=style, body=body, bundle=script)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
