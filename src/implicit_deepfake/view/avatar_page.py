"""`viewer.html` of a 4D run (`model=gaussian_avatar`): one self-contained file that plays the head.

Like the 3D page it opens from disk with no server and no network: everything is inline. It carries
the run's `avatar4d.npz` (the neutral Gaussians, their K offsets, each training frame's code) and a
small WebGL2 splatter of its own (`view/web/avatar.js`, built into `assets/avatar4d.js`), which poses
the Gaussians every frame in the page (neutral + offsets x code: one product per Gaussian), sorts
them by depth on the CPU and draws them back to front. Play/pause, a frame slider and, for the
synthetic head, its expression sliders drive the code. Why not Spark (the 3D page's renderer): see
the comment at the top of avatar.js.
"""

from __future__ import annotations

import base64
import gzip
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.expressions import EXPRESSION_NAMES, EXPRESSION_RANGES
from implicit_deepfake.render.sh import SH_C0
from implicit_deepfake.view.camera import InitialView
from implicit_deepfake.view.page_shell import write_page

PLAYER_BUNDLE = "avatar4d.js"
# Datasets whose expressions are data/expressions.py's rig (jaw, smile, brows): they get named sliders.
NAMED_EXPRESSION_DATA = frozenset({"synthetic4d"})
PLAYBACK_FPS = 25  # a talking-head video's rate

_STYLE = """#viewer-help { right: 8px; top: 40px; }
#player { position: fixed; left: 0; right: 0; bottom: 0; padding: 4px 8px; font-size: 12px; color: #eee;
  background: rgba(0, 0, 0, 0.6); display: flex; flex-wrap: wrap; gap: 4px 12px; align-items: center; }
#player label { display: flex; gap: 4px; align-items: center; }
#player input[type=range] { width: 80px; }
#player #player-frame { flex: 1; min-width: 120px; }
#player-sliders { display: flex; flex-wrap: wrap; gap: 4px 12px; }"""
_CONTROLS = """<div id="player">
<button id="player-play" type="button">Pause</button>
<input id="player-frame" type="range" min="0" max="0" step="1" value="0" aria-label="frame">
<span id="player-label"></span>
<span id="player-sliders"></span>
</div>"""


def _covariances(quats: np.ndarray, log_scales: np.ndarray) -> np.ndarray:
    """(N, 6) upper triangles [xx, xy, xz, yy, yz, zz] of R diag(s^2) R^T."""
    w, x, y, z = (quats / np.linalg.norm(quats, axis=1, keepdims=True).clip(1e-12)).T
    rotation = np.stack(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    ).transpose(2, 0, 1)
    m = rotation * np.exp(log_scales)[:, None, :]
    sigma = m @ m.transpose(0, 2, 1)
    return sigma[:, [0, 0, 0, 1, 1, 2], [0, 1, 2, 1, 2, 2]]


def _quantized(values: np.ndarray) -> tuple[np.ndarray, float]:
    """int16 values and the scale they are multiplied by (offsets: mostly near zero, so they gzip well)."""
    scale = float(np.abs(values).max()) / 32767.0 or 1.0
    return np.round(values / scale).astype("<i2"), scale


def player_payload(arrays: dict[str, np.ndarray], named: bool) -> tuple[dict, bytes]:
    """avatar4d.npz's arrays -> (the layout the page reads, the gzipped little-endian bytes it lays out)."""
    n, k = arrays["means_offsets"].shape[:2]
    shn = arrays["shN"]
    columns: dict[str, np.ndarray] = {
        "means": arrays["means"],
        "covariances": _covariances(arrays["quats"], arrays["scales"]),
        "colors": 0.5 + SH_C0 * arrays["sh0"].reshape(n, 3),
        "sh1": shn[:, :3] if shn.shape[1] >= 3 else np.zeros((n, 0, 3)),
        "opacities": arrays["opacities"],
        "codes": arrays["codes"],
    }
    scales = {}
    for name, values in (
        ("means_offsets", arrays["means_offsets"]),
        ("colors_offsets", SH_C0 * arrays["sh0_offsets"]),
        ("opacities_offsets", arrays["opacities_offsets"]),
    ):
        columns[name], scales[name] = _quantized(values)
    if named:
        count = len(EXPRESSION_NAMES)
        columns["expressions"] = arrays["expressions"][:, :count]
        columns["code_jacobian"] = arrays["code_jacobian"][:, :count]
    layout, chunks, offset = [], [], 0
    for name, values in columns.items():
        data = np.ascontiguousarray(values, dtype="<i2" if values.dtype == np.int16 else "<f4").tobytes()
        layout.append({"name": name, "type": "int16" if values.dtype == np.int16 else "float32",
                       "offset": offset, "length": int(values.size), "scale": scales.get(name, 1.0)})  # fmt: skip
        padding = -len(data) % 4  # each typed array starts 4-byte aligned
        chunks.append(data + b"\0" * padding)
        offset += len(data) + padding
    meta = {"count": int(n), "code_dims": int(k), "frames": len(arrays["codes"]), "layout": layout}
    if named:
        meta["named"] = [
            {"name": name, "min": float(low), "max": float(high)}
            for name, (low, high) in zip(EXPRESSION_NAMES, EXPRESSION_RANGES)
        ]
    return meta, gzip.compress(b"".join(chunks), mtime=0)


def write_avatar_page(
    path: str | Path,
    avatar: str | Path,
    view: InitialView,
    background: tuple[float, float, float],
    title: str,
    named: bool = False,
) -> Path:
    """Write the page at `path` playing the avatar4d.npz `avatar`, opening on `view` over `background`
    (RGB 0-1); `named`: the synthetic head's jaw/smile/brows sliders."""
    avatar = Path(avatar)
    if not avatar.is_file():
        raise DeepfakeError(
            f"{avatar}: no such avatar to put in viewer.html; export the run first (evaluate.py ckpt=...)."
        )
    with np.load(avatar, allow_pickle=False) as data:  # numbers only: nothing in the file runs
        arrays = {name: data[name] for name in data.files}
    try:
        meta, payload = player_payload(arrays, named)
    except (KeyError, ValueError, IndexError) as err:
        raise DeepfakeError(
            f"{avatar}: not an avatar4d.npz of model=gaussian_avatar ({err!r}); export the run again."
        ) from err
    meta |= {"view": {**asdict(view), "background": list(background)}, "fps": PLAYBACK_FPS}
    encoded = base64.b64encode(payload).decode("ascii")
    body = (
        f'{_CONTROLS}\n<script id="viewer-view" type="application/json">{json.dumps(meta)}</script>\n'
        f'<script id="viewer-avatar" type="application/octet-stream">{encoded}</script>'
    )
    return write_page(path, title, _STYLE, body, PLAYER_BUNDLE)
