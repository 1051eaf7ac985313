"""`none`: base frames unchanged, the ablation baseline."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from implicit_deepfake.faces.landmarks import Face
from implicit_deepfake.swap.base import FaceSwapper


class NoSwap(FaceSwapper):
    name = "none"
    changes_frames = False
    uses_landmarks = False

    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]], face: Face | None = None) -> None:
        pass

    def swap(self, frame: np.ndarray, relpath: str, face: Face | None = None) -> np.ndarray:
        return frame
