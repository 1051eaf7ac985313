"""Face identity: an embedding per face, and the distance between two people.

PLACEHOLDER interface - backends are filled in below.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class FaceEmbedder(ABC):
    """Maps an image to an identity embedding of its largest face (None when there is no face)."""

    name: str = "base"
    #: Distance under which two embeddings are the same person for this backend.
    same_person_threshold: float

    @abstractmethod
    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb: HxWx3 uint8 -> (D,) float32 embedding, or None."""

    @abstractmethod
    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Identity distance between two embeddings (lower is more alike)."""
