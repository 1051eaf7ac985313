"""Which face geometry drives the swap of each frame: one mesh for a multi-view dataset, smoothed
tracks for a video, or each frame's own detection (see `geometry.py` for the why)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import sha256_json
from implicit_deepfake.faces.landmarks import Face
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.swap.geometry import (
    DegenerateViews,
    FaceMesh3D,
    project_landmarks,
    smooth_tracks,
    triangulate_face,
    visible_landmarks,
)
from implicit_deepfake.swap.warp import face_triangles

log = logging.getLogger(__name__)
TRACK_MODES = ("auto", "multiview", "temporal", "per_frame")


@dataclass(frozen=True)
class TrackedFrame:
    """face: the landmarks that drive this frame's swap (None: no face); status: "found", "no_face"
    or "hidden" (the mesh faces away from this view); visible: the share of the mesh's landmarks
    this view sees (multiview only)."""

    face: Face | None
    status: str
    visible: float | None = None


@dataclass(frozen=True)
class FaceTrack:
    mode: str
    frames: list[TrackedFrame]
    mesh: FaceMesh3D | None
    triangles: np.ndarray

    def fingerprint(self) -> str:
        """A hash of every frame's driving landmarks (to 0.01 px): a changed track re-swaps."""
        return sha256_json(
            [None if f.face is None else np.round(f.face.landmarks[:, :2], 2).tolist() for f in self.frames]
        )

    def record(self) -> dict:
        counts = {s: sum(f.status == s for f in self.frames) for s in ("found", "no_face", "hidden")}
        return {"mode": self.mode, **counts, **({"mesh": self.mesh.record()} if self.mesh else {})}


def _most_frontal(detections: Sequence[np.ndarray | None]) -> np.ndarray:
    """The detection whose eyes are widest apart for its face height: the most frontal one."""

    def frontality(landmarks: np.ndarray) -> float:
        return float(np.linalg.norm(landmarks[263, :2] - landmarks[33, :2]) / (np.ptp(landmarks[:, 1]) + 1e-6))

    return max((d for d in detections if d is not None), key=frontality)


def _multiview(
    detections: list[np.ndarray | None],
    cameras: Cameras,
    triangles: np.ndarray,
    min_visible: float,
    max_turn: float,
) -> FaceTrack | None:
    try:
        mesh = triangulate_face(detections, cameras, triangles)
    except DegenerateViews as err:
        log.warning("no face mesh across the views: %s; each view uses its own detection", err)
        return None
    if mesh is None:
        log.warning("fewer than two views with a face: no mesh to triangulate, each view uses its own detection")
        return None
    projected = project_landmarks(mesh.points, cameras)
    frames = []
    # The mesh is the face alone: from behind, nothing in it stands for the skull that hides the face.
    for landmarks, turn, focal in zip(projected, mesh.turn_deg(cameras), cameras.intrinsics[:, 0, 0].tolist()):
        visible = float(visible_landmarks(landmarks, triangles, (cameras.height, cameras.width)).mean())
        status = "found" if visible >= min_visible and turn <= max_turn else "hidden"
        # Depth in pixels at the face's distance, as a detector's: the face's x, y and depth then share a scale.
        landmarks = landmarks * np.array([1.0, 1.0, focal / np.median(landmarks[:, 2])], np.float32)
        frames.append(
            TrackedFrame(Face(landmarks.astype(np.float32)) if status == "found" else None, status, round(visible, 3))
        )
    record = mesh.record()
    log.info(
        "face mesh triangulated from %d views (%d rejected as outliers), reprojection error %.2f px median",
        record["views_used"],
        len(record["views_rejected"]),
        record["reprojection_error_px_median"],
    )
    return FaceTrack("multiview", frames, mesh, triangles)


def _from_detections(mode: str, detections: list[np.ndarray | None], triangles: np.ndarray) -> FaceTrack:
    frames = [
        TrackedFrame(None, "no_face") if d is None else TrackedFrame(Face(d.astype(np.float32)), "found")
        for d in detections
    ]
    return FaceTrack(mode, frames, None, triangles)


def track_faces(
    detections: list[np.ndarray | None],
    cameras: Cameras,
    sequences: Sequence[Sequence[int]],
    mode: str,
    video: bool,
    min_visible: float = 0.2,
    min_cutoff: float = 0.02,
    beta: float = 10.0,
    max_turn: float = 120.0,
) -> FaceTrack:
    """The driving landmarks of every frame.

    detections: per frame, (468, 3) detected landmarks or None; cameras: every frame's camera;
    sequences: frame indices in time order, one list per contiguous run (a video's splits);
    mode: one of TRACK_MODES ("auto": temporal for a `video`, multiview otherwise);
    min_visible: a multiview frame that sees less of the mesh is "hidden", and so is one whose camera
    is more than `max_turn` degrees round from the face's front (the skull hides the face there);
    min_cutoff, beta: the one-euro filter of a video's tracks (`geometry.one_euro`): cycles per
    frame when still, and how fast the cutoff rises with speed (per face size per frame)."""
    if mode not in TRACK_MODES:
        raise DeepfakeError(f"swap.track.mode must be one of {TRACK_MODES}, got {mode!r}.")
    if not any(d is not None for d in detections):
        return _from_detections("per_frame", detections, np.zeros((0, 3), np.int64))
    if mode == "auto":
        mode = "temporal" if video else "multiview"
    triangles = face_triangles(_most_frontal(detections)[:, :2]) if mode == "multiview" else np.zeros((0, 3), np.int64)
    if mode == "multiview":
        track = _multiview(detections, cameras, triangles, min_visible, max_turn)
        if track is not None:
            return track
        mode = "per_frame"
    if mode == "temporal":
        smoothed: list[np.ndarray | None] = [None] * len(detections)
        for run in sequences:
            for i, landmarks in zip(run, smooth_tracks([detections[i] for i in run], min_cutoff, beta)):
                smoothed[i] = landmarks
        detections = smoothed
    return _from_detections(mode, detections, triangles)
