"""The swap's quality figures for the manifest: per frame (pose, expression, seam) and per dataset
(summaries, and how well the swapped views agree with each other where they see the same point)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from implicit_deepfake.core.io import composite, image_size, read_image, read_json
from implicit_deepfake.data.blender import read_split_index
from implicit_deepfake.metrics.expression import clip_agreement
from implicit_deepfake.metrics.swap_quality import (
    expression_error,
    multiview_colour_difference,
    pose_error_deg,
    seam_score,
    summarise,
)
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.swap.geometry import FaceMesh3D, project_landmarks, visible_points

STATUSES = ("swapped", "no_face", "hidden", "kept")
QUALITY_KEYS = ("pose_error_deg", "expression_error", "seam_score")


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def frame_quality(
    base: np.ndarray, swapped: np.ndarray, base_landmarks: np.ndarray | None, swapped_landmarks: np.ndarray | None
) -> dict:
    """Pose and expression error of the swapped frame against its base frame (None where a face is
    not detected in both), and the seam score (None where nothing changed). Images HxWx3 uint8."""
    pose: float | None = None
    expression: float | None = None
    if base_landmarks is not None and swapped_landmarks is not None:
        pose = _rounded(pose_error_deg(swapped_landmarks, base_landmarks, base.shape[:2]))
        expression = _rounded(expression_error(swapped_landmarks, base_landmarks))
    return {
        "pose_error_deg": pose,
        "expression_error": expression,
        "seam_score": _rounded(seam_score(swapped, base)),
    }


def summary(records: Sequence[dict]) -> dict:
    """Counts per status and the means/medians of identity and quality over the changed frames, and
    how their expression and gaze follow their base frames' (`clip_agreement`)."""
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    changed = [r for r in records if r["status"] == ("swapped" if counts["swapped"] else "kept")]
    identity = summarise(changed, ("identity_distance_before", "identity_distance_after"))
    return {
        "frames": len(records),
        **counts,
        "dropped": sum(r["output"] is None for r in records),
        "mean_identity_distance_before": identity["identity_distance_before_mean"],
        "mean_identity_distance_after": identity["identity_distance_after_mean"],
        **summarise(changed, QUALITY_KEYS),
        "expression": clip_agreement(
            [r["expression"]["base"] for r in changed if r.get("expression")],
            [r["expression"]["swapped"] for r in changed if r.get("expression")],
        ),
    }


def _surface_samples(points: np.ndarray, triangles: np.ndarray, per_triangle: int = 6, seed: int = 0) -> np.ndarray:
    """(T * per_triangle, 3) points spread over the mesh's triangles (uniform barycentrics)."""
    weights = -np.log(np.random.default_rng(seed).random((len(triangles), per_triangle, 3)))
    weights /= weights.sum(-1, keepdims=True)
    return np.einsum("tkc,tcd->tkd", weights, points[triangles]).reshape(-1, 3)


def multiview_consistency(
    mesh: FaceMesh3D,
    triangles: np.ndarray,
    cameras: Cameras,
    views: Sequence[int],
    load: Callable[[int], tuple[np.ndarray, np.ndarray]],
    max_views: int = 24,
) -> dict:
    """Median colour difference (0-255) of face-surface points seen in two views, for the base and
    the swapped frames of `views` (at most `max_views`, evenly chosen); `load(view)` -> (base,
    swapped) HxWx3 uint8. The ratio swapped / base says how much the swap adds to disagreement."""
    views = [views[i] for i in np.linspace(0, len(views) - 1, min(max_views, len(views))).round().astype(int)]
    if len(views) < 2:
        return {"views": len(views), "base": None, "swapped": None, "ratio": None}
    samples = _surface_samples(mesh.points, triangles)
    projected_mesh = project_landmarks(mesh.points, cameras[list(views)])
    projected = project_landmarks(samples, cameras[list(views)])
    size = (cameras.height, cameras.width)
    visible = np.stack([visible_points(m, triangles, size, q) for m, q in zip(projected_mesh, projected)])
    images = [load(v) for v in views]
    base = multiview_colour_difference([b for b, _ in images], projected[..., :2], visible)
    swapped = multiview_colour_difference([s for _, s in images], projected[..., :2], visible)
    ratio = swapped / base if base and swapped is not None else None
    return {"views": len(views), "base": _rounded(base), "swapped": _rounded(swapped), "ratio": _rounded(ratio)}


def face_mesh(swapped_root: Path) -> FaceMesh3D | None:
    """The face mesh the swap into `swapped_root` triangulated (its manifest's `faces.mesh`; None
    without one: a video)."""
    manifest = swapped_root / "manifest.json"
    mesh = read_json(manifest).get("faces", {}).get("mesh") if manifest.is_file() else None
    return None if mesh is None else FaceMesh3D.from_record(mesh)


def head_yaws(swapped_root: Path, cameras: Cameras) -> list[float] | None:
    """Each camera's head yaw against the swap's face mesh (`face_mesh`; None without one)."""
    mesh = face_mesh(swapped_root)
    return None if mesh is None else mesh.yaw_deg(cameras).round(2).tolist()


def base_portrait(source_root: Path, swapped_root: Path, background: Sequence[float]) -> np.ndarray | None:
    """The base person's portrait (HxWx3 uint8 on `background`): its training view that sees the swap's
    face mesh most frontally, by yaw and pitch together; the base's counterpart of the target photo
    for the identity measures. None without a mesh (a video)."""
    mesh = face_mesh(swapped_root)
    if mesh is None:
        return None
    index = read_split_index(source_root, "train")
    height, width = image_size(index.image_paths[0])
    front = int(np.argmin(mesh.turn_deg(index.camera.cameras(index.camera_to_world_gl, width, height))))
    return composite(read_image(index.image_paths[front]), tuple(background))
