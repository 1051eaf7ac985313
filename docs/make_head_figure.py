"""The docs' picture of the embedded head before and after issue 23, stored as a 256-colour PNG.

Before: the head as it was up to commit 553b5d8 (its avatar/head.py read from git: an ellipsoid with
the photo on its front, a navy cap and a grey curly shell). After: the head avatar/ builds now from
the same photo, and from the default target photo and a portrait of your own if you give one. Each
row: the photo, then the head from the front, at 45 degrees, from the side and from the back, at the
default dataset's framing.

    .venv/bin/python docs/make_head_figure.py                  # -> docs/head_before_after.png
    .venv/bin/python docs/make_head_figure.py --photo me.jpg   # a row for your photo (do not commit it)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import types
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from PIL import Image, ImageDraw

from implicit_deepfake.avatar.head import build_avatar, render_avatar
from implicit_deepfake.core.io import atomic_path, composite, read_photo
from implicit_deepfake.core.quiet import quiet_third_party
from implicit_deepfake.data.synthetic import BASE_PHOTO, CAMERA_ANGLE_X, DISTANCE, TARGET_PHOTO, view_cameras
from implicit_deepfake.faces.landmarks import FaceLandmarker

REPO = Path(__file__).resolve().parents[1]
BEFORE_COMMIT = "553b5d8"  # the last commit with the ellipsoid head
VIEWS = np.array([[0.0, 5.0], [45.0, 5.0], [90.0, 5.0], [180.0, 5.0]])
SIZE, LABEL_HEIGHT = 224, 22


def old_head_module() -> types.ModuleType:
    """avatar/head.py as of BEFORE_COMMIT, loaded from git."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:src/implicit_deepfake/avatar/head.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    module = types.ModuleType("old_head")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{BEFORE_COMMIT}:avatar/head.py", "exec"), module.__dict__)
    return module


def row(label: str, photo: np.ndarray, renders: np.ndarray) -> np.ndarray:
    """One labelled row: the photo (fitted into a square) and the renders."""
    square = Image.new("RGB", (SIZE, SIZE), "white")
    thumb = Image.fromarray(photo)
    thumb.thumbnail((SIZE, SIZE))
    square.paste(thumb, ((SIZE - thumb.width) // 2, (SIZE - thumb.height) // 2))
    tiles = [np.asarray(square)] + [composite(image) for image in renders]
    strip = Image.fromarray(np.concatenate(tiles, 1))
    canvas = Image.new("RGB", (strip.width, strip.height + LABEL_HEIGHT), "white")
    canvas.paste(strip, (0, LABEL_HEIGHT))
    ImageDraw.Draw(canvas).text((6, 4), label, fill=(0, 0, 0))
    return np.asarray(canvas)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, action="append", default=[], help="another portrait: a row of its own")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "head_before_after.png")
    args = parser.parse_args()
    quiet_third_party()
    torch.set_grad_enabled(False)
    landmarker = FaceLandmarker()
    cameras = view_cameras(VIEWS, SIZE, CAMERA_ANGLE_X, DISTANCE)
    views = "front, 45 deg, side, back"
    rows = []
    hopper = read_photo(BASE_PHOTO)
    face = landmarker.detect_required(hopper, str(BASE_PHOTO))
    old = old_head_module()
    rows.append(
        row(
            f"before ({BEFORE_COMMIT}): grace_hopper.jpg; {views}",
            hopper,
            old.render_avatar(old.build_avatar(hopper, face), cameras)[0],
        )
    )
    for path in [BASE_PHOTO, TARGET_PHOTO, *args.photo]:
        photo = read_photo(path)
        face = landmarker.detect_required(photo, str(path))
        rows.append(row(f"after: {path.name}; {views}", photo, render_avatar(build_avatar(photo, face), cameras)[0]))
    figure = Image.fromarray(np.concatenate(rows, 0)).quantize(256, dither=Image.Dither.NONE)
    with atomic_path(args.out) as tmp:
        figure.save(tmp, format="PNG", optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1000} KB)")


if __name__ == "__main__":
    main()
