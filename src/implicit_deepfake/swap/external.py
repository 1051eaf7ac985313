"""`external`: frames already swapped by any 2D deepfake tool (GHOST in the paper).

The folder mirrors the base dataset (`train/r_0.png`, ...; any of .png/.jpg/.jpeg). Names and
sizes are checked against the base frames before anything is written; alpha, which such tools
drop, is restored by the runner from the base frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import composite, read_image, sha256_file
from implicit_deepfake.faces.landmarks import Face
from implicit_deepfake.swap.base import FaceSwapper

_SUFFIXES = (".png", ".jpg", ".jpeg")


class ExternalSwapper(FaceSwapper):
    name = "external"
    uses_landmarks = False

    def __init__(self, frames_dir: str) -> None:
        self.frames_dir = Path(frames_dir)
        self._files: dict[str, Path] = {}

    def _find(self, relpath: str) -> Path | None:
        stem = (self.frames_dir / relpath).with_suffix("")
        return next((stem.with_suffix(s) for s in _SUFFIXES if stem.with_suffix(s).is_file()), None)

    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]], face: Face | None = None) -> None:
        if not self.frames_dir.is_dir():
            raise DeepfakeError(
                f"swap.frames_dir={self.frames_dir} does not exist. Point it at the folder of frames your "
                "2D face-swap tool wrote, laid out like the base dataset (train/r_0.png, ...)."
            )
        found = {rel: self._find(rel) for rel in frames}
        missing = [rel for rel, path in found.items() if path is None]
        if missing:
            raise DeepfakeError(
                f"swap.frames_dir={self.frames_dir}: {len(missing)} of {len(frames)} frames have no swapped "
                f"image, e.g. {', '.join(missing[:5])}. Each base frame needs one with the same name."
            )
        files = {rel: path for rel, path in found.items() if path is not None}  # all of them: none is missing
        for rel, path in files.items():
            with Image.open(path) as im:
                width, height = im.size
            if (height, width) != tuple(frames[rel]):
                raise DeepfakeError(
                    f"{path}: size {width}x{height} differs from the base frame {rel} "
                    f"({frames[rel][1]}x{frames[rel][0]}). Swap at the base frames' resolution."
                )
        self._files = files

    def swap(self, frame: np.ndarray, relpath: str, face: Face | None = None) -> np.ndarray:
        return composite(read_image(self._files[relpath]))

    def config(self) -> dict:
        return {"name": self.name, "frames": {rel: sha256_file(p) for rel, p in sorted(self._files.items())}}
