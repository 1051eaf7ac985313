"""Face metrics of a set of images: how often a face is found and whose identity it carries."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from implicit_deepfake.faces import FaceLandmarker
from implicit_deepfake.metrics.identity import FaceEmbedder


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def face_metrics(
    images: Sequence[np.ndarray],
    target: np.ndarray,
    embedder: FaceEmbedder,
    landmarker: FaceLandmarker,
    references: Sequence[np.ndarray] | None = None,
) -> dict[str, float | int | None]:
    """images, references: HxWx3 uint8 (references[i] is the base frame of the same view).

    Returns the face detection rate, the mean identity distance of the images to the target photo
    and, with references, to the base frames; distances average over images where a face is found.
    """
    target_embedding = embedder.embed(target)
    detected, to_target, to_base = 0, [], []
    for i, image in enumerate(images):
        detected += landmarker.detect(image) is not None
        embedding = embedder.embed(image)
        if embedding is None:
            continue
        if target_embedding is not None:
            to_target.append(embedder.distance(embedding, target_embedding))
        reference = embedder.embed(references[i]) if references is not None else None
        if reference is not None:
            to_base.append(embedder.distance(embedding, reference))
    return {
        "images": len(images),
        "face_detection_rate": round(detected / max(len(images), 1), 4),
        "identity_distance_to_target": _mean(to_target),
        "identity_distance_to_base": _mean(to_base),
        "identity_backend": embedder.name,
    }
