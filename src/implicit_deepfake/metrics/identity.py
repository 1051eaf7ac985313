"""Face identity: an embedding per face, and the distance between two people.

Backends: `identity_dlib.DlibEmbedder` (offline default), `identity_arcface.ArcFaceEmbedder`.
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


def identity_distance(embedder: FaceEmbedder, rgb: np.ndarray, target_embedding: np.ndarray) -> float | None:
    """Distance from the largest face in `rgb` (HxWx3 uint8) to `target_embedding`; None without a face."""
    embedding = embedder.embed(rgb)
    return None if embedding is None else embedder.distance(embedding, target_embedding)
