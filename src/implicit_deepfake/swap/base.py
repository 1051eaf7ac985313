"""The `FaceSwapper` interface every swap backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np

from implicit_deepfake.faces.landmarks import Face


class FaceSwapper(ABC):
    """Puts the target person's face into frames.

    The runner calls `prepare` once, `calibrate` once, then `swap` for every frame. Frames are
    HxWx3 uint8 RGB, composited over the dataset background; the runner restores alpha from the
    base frame. `face` arguments carry the landmarks the runner chose (the target photo's chosen
    face; a frame's face from the multi-view mesh or the smoothed video track); a backend that is
    given none detects its own.
    """

    name: str = "base"
    #: False for backends that leave frames unchanged on purpose (status "kept", not "swapped").
    changes_frames: bool = True
    #: False for backends that ignore the frame landmarks the runner tracks (swapped elsewhere).
    uses_landmarks: bool = True

    @abstractmethod
    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]], face: Face | None = None) -> None:
        """target: the target photo (HxWx3 uint8), `face` its chosen face; frames: relpath
        ("train/r_0.png") -> (H, W) of every base frame. Raises DeepfakeError when the target has no
        face or inputs mismatch."""

    def calibrate(self, samples: Sequence[tuple[np.ndarray, Face]]) -> None:  # noqa: B027 (an optional hook)
        """Fit what should be one for the whole dataset (e.g. a colour transfer) on (frame, face)
        samples; by default nothing."""

    @abstractmethod
    def swap(self, frame: np.ndarray, relpath: str, face: Face | None = None) -> np.ndarray | None:
        """The swapped HxWx3 uint8 frame, or None when no face was found in it."""

    def config(self) -> dict:
        """What determines this backend's output, hashed into the swap cache's fingerprint.
        Called after `prepare`."""
        return {"name": self.name}
