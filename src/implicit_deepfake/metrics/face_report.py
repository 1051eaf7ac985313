"""Face metrics of a set of images: how often a face is found and whose identity it carries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.identity import FaceEmbedder
from implicit_deepfake.metrics.swap_quality import expression_error, pose_error_deg, yaw_bucket_report


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def _median(values: list[float]) -> float | None:
    return round(float(np.median(values)), 4) if values else None


def face_metrics(
    images: Sequence[np.ndarray],
    target: np.ndarray,
    embedder: FaceEmbedder,
    landmarker: FaceLandmarker,
    references: Sequence[np.ndarray] | None = None,
    yaws_deg: Sequence[float] | None = None,
    portrait: np.ndarray | None = None,
) -> dict:
    """images, references: HxWx3 uint8 (references[i] is the base frame of the same view).

    Returns the face detection rate, the mean identity distance of the images to the target photo
    and, with references, to the base frames (distances average over images where a face is found),
    and the median head-pose and expression errors against the references (the swap-quality columns).
    Also each image's distance to the target, in order.
    With `yaws_deg` (each view's head yaw), the same distances per yaw bucket (0-30, 30-60, 60-90).
    With a `portrait` of the base person (its most frontal view: a reference of the same kind as the
    target photo), also each bucket's distance to it, and the base frames' own: how far turning alone
    takes a face from a frontal portrait. A base frame of the same view shares the pose, light and
    hair the target photo cannot, so at a turn "nearer the base frame" reads pose, not who it is.
    """
    target_embedding = embedder.embed(target)
    portrait_embedding = None if portrait is None else embedder.embed(portrait)
    detected, to_target, to_base, to_portrait, base_to_portrait, pose, expression = 0, [], [], [], [], [], []
    for i, image in enumerate(images):
        face = landmarker.detect(image)
        detected += face is not None
        reference_face = landmarker.detect(references[i]) if references is not None and face is not None else None
        if face is not None and reference_face is not None:
            pose.append(pose_error_deg(face.landmarks, reference_face.landmarks, image.shape[:2]))
            expression.append(expression_error(face.landmarks, reference_face.landmarks))
        embedding = embedder.embed(image)
        # The base frame's embedding serves the render's distance to it, and with a portrait the base's own.
        wanted = embedding is not None or portrait_embedding is not None
        reference = embedder.embed(references[i]) if references is not None and wanted else None
        to_target.append(
            None if embedding is None or target_embedding is None else embedder.distance(embedding, target_embedding)
        )
        to_base.append(None if reference is None or embedding is None else embedder.distance(embedding, reference))
        if portrait is not None:
            to_portrait.append(
                None
                if portrait_embedding is None or embedding is None
                else embedder.distance(embedding, portrait_embedding)
            )
            base_to_portrait.append(
                None
                if portrait_embedding is None or reference is None
                else embedder.distance(reference, portrait_embedding)
            )
    report: dict[str, Any] = {
        "images": len(images),
        "face_detection_rate": round(detected / max(len(images), 1), 4),
        "identity_distance_to_target": _mean([d for d in to_target if d is not None]),
        "identity_distance_to_base": _mean([d for d in to_base if d is not None]),
        "identity_backend": embedder.name,
        "pose_error_deg_median": _median(pose),
        "expression_error_median": _median(expression),
        # Each image's distance to the target (None: no face), for the run's contact sheet.
        "identity_distance_to_target_per_image": [None if d is None else round(float(d), 4) for d in to_target],
    }
    if portrait is not None:
        report["identity_distance_to_base_portrait"] = _mean([d for d in to_portrait if d is not None])
    if yaws_deg is not None:
        distances = {"target": to_target, "base": to_base}
        if portrait is not None:
            distances["base_portrait"] = to_portrait
            report["identity_by_yaw_of_base_frames"] = yaw_bucket_report(yaws_deg, {"base_portrait": base_to_portrait})
        report["identity_by_yaw"] = yaw_bucket_report(yaws_deg, distances)
    return report
