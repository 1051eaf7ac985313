"""The `FaceSwapper` interface every swap backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np


class FaceSwapper(ABC):
    """Puts the target person's face into frames.

    The runner calls `prepare` once, then `swap` for every frame. Frames are HxWx3 uint8 RGB,
    composited over the dataset background; the runner restores alpha from the base frame.
    """

    name: str = "base"
    #: False for backends that leave frames unchanged on purpose (status "kept", not "swapped").
    changes_frames: bool = True

    @abstractmethod
    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]]) -> None:
        """target: the target photo (HxWx3 uint8); frames: relpath ("train/r_0.png") -> (H, W)
        of every base frame. Raises DeepfakeError when the target has no face or inputs mismatch."""

    @abstractmethod
    def swap(self, frame: np.ndarray, relpath: str) -> np.ndarray | None:
        """The swapped HxWx3 uint8 frame, or None when no face was found in it."""

    def config(self) -> dict:
        """What determines this backend's output, hashed into the swap cache's fingerprint.
        Called after `prepare`."""
        return {"name": self.name}
