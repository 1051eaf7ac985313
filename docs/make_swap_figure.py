"""The swap page's figure (docs/swap.md): real frames of other people | swapped with a real target photo | the target.

    .venv/bin/python docs/make_swap_figure.py   # -> docs/swap_real.jpg

Frames: three faces of insightface's t1.jpg (cropped) and matplotlib's Grace Hopper; target:
scikit-image's astronaut. All ship in the installed wheels; the image is marked synthetic in its EXIF.
"""

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import insightface
import matplotlib
import numpy as np
import skimage
from PIL import Image

from implicit_deepfake.core.io import SYNTHETIC_NOTICE, read_photo
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.swap.landmark import LandmarkSwapper

TILE = (200, 240)  # width, height of each face tile


def face_tile(image: np.ndarray, box: np.ndarray, pad: float = 0.45) -> np.ndarray:
    x0, y0, x1, y1 = box
    side = pad * max(x1 - x0, y1 - y0)
    crop = image[int(max(0, y0 - side)) : int(y1 + side), int(max(0, x0 - side)) : int(x1 + side)]
    return cv2.resize(crop, TILE, interpolation=cv2.INTER_AREA)


def main() -> None:
    landmarker = FaceLandmarker()
    group = read_photo(Path(insightface.__file__).parent / "data" / "images" / "t1.jpg")
    frames = []
    for found in landmarker.detect_all(group)[:3]:
        x0, y0, x1, y1 = found.box
        pad = 0.8 * (x1 - x0)
        crop = group[int(max(0, y0 - pad)) : int(y1 + pad), int(max(0, x0 - pad)) : int(x1 + pad)]
        frames.append(cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC))
    frames.append(read_photo(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    target = read_photo(Path(skimage.__file__).parent / "data" / "astronaut.png")
    swapper = LandmarkSwapper(landmarker=landmarker)
    swapper.prepare(target, {})
    top, bottom = [], []
    for frame in frames:
        box = landmarker.detect(frame).bbox
        top.append(face_tile(frame, box))
        bottom.append(face_tile(swapper.swap(frame, "figure"), box))
    target_tile = face_tile(target, landmarker.detect(target).bbox)
    blank = np.full_like(target_tile, 255)
    figure = np.concatenate([np.concatenate([*top, blank], 1), np.concatenate([*bottom, target_tile], 1)], 0)
    out = Path(__file__).parent / "swap_real.jpg"
    exif = Image.Exif()
    exif[0x010E] = SYNTHETIC_NOTICE  # ImageDescription
    Image.fromarray(figure).save(out, quality=85, exif=exif)
    print(out)


if __name__ == "__main__":
    main()
