"""One face geometry for every frame: the 468-point mesh triangulated across views, or smoothed in time.

A per-frame detector disagrees with itself from view to view and finds nothing on a profile, so a
swap driven by it bakes two people into the 3D model. For a dataset with fixed cameras (the Blender
format) the landmarks of the views where the detector finds the face are triangulated once (linear
DLT, then robust re-weighting: views whose reprojection error is an outlier are rejected, and each
view only votes for the landmarks it really sees), and that one mesh is projected into every view.
Visibility comes from the mesh's own depth: its front-facing triangles are rasterised, and a
landmark is visible where it is the nearest surface. A view that sees too little of the face (the
back of the head) is `hidden` and kept. For a talking-head video (NeRFace format: pose and
expression change per frame) the per-frame landmarks are smoothed over time instead, by a filter
that follows speed (the one-euro filter), so a wink or a laugh is not smeared as a fixed blur would.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import cast

import numpy as np
import torch
from scipy.ndimage import grey_dilation

from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.mesh_raster import interpolate, rasterize

_CHIN, _FOREHEAD, _NOSE_TIP = 152, 10, 1


class DegenerateViews(ValueError):
    """The views' cameras cannot triangulate a face (one view, one camera position, a singular
    system): the caller falls back to each frame's own landmarks."""


@dataclass(frozen=True)
class FaceMesh3D:
    """The triangulated landmarks and how well they explain the views they came from.

    points: (468, 3) world; used / rejected: indices of the views that voted for them / were rejected
    as outliers; errors: (N,) median reprojection error in pixels of each view with a detection (nan
    elsewhere)."""

    points: np.ndarray
    used: list[int]
    rejected: list[int]
    errors: np.ndarray

    @classmethod
    def from_record(cls, record: dict) -> FaceMesh3D:
        """The mesh a swap manifest recorded (`record()`), for measuring views against it."""
        return cls(np.asarray(record["points"], np.float64), [], list(record["views_rejected"]), np.zeros(0))

    @property
    def forward(self) -> np.ndarray:
        """(3,) unit vector the face looks along: the normal of the landmarks' best-fit plane,
        turned toward the nose tip (landmark 1), which sticks out of the face."""
        centred = self.points - self.points.mean(0)
        normal = np.linalg.svd(centred, full_matrices=False)[2][-1]
        return normal if normal @ centred[_NOSE_TIP] > 0 else -normal

    @property
    def up(self) -> np.ndarray:
        """(3,) unit chin-to-forehead direction, at right angles to `forward`."""
        up = self.points[_FOREHEAD] - self.points[_CHIN]
        up -= (up @ self.forward) * self.forward
        return up / np.linalg.norm(up)

    def yaw_deg(self, cameras: Cameras) -> np.ndarray:
        """(N,) signed yaw of the head as each camera sees it: the angle about the face's up axis
        between the face's forward direction and the reversed optical axis (0 = frontal)."""
        direction = -cameras.camera_to_world[:, :3, 2].double().numpy()
        direction = direction - np.outer(direction @ self.up, self.up)
        side = np.cross(self.up, self.forward)
        return np.degrees(np.arctan2(direction @ side, direction @ self.forward))

    def turn_deg(self, cameras: Cameras) -> np.ndarray:
        """(N,) angle between the face's forward direction and the direction from the face to each
        camera: 0 = frontal, 90 = profile, 180 = the back of the head."""
        to_camera = cameras.camera_to_world[:, :3, 3].double().numpy() - self.points.mean(0)
        to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
        return np.degrees(np.arccos(np.clip(to_camera @ self.forward, -1.0, 1.0)))

    def record(self) -> dict:
        valid = self.errors[np.isfinite(self.errors)]
        return {
            "views_used": len(self.used),
            "views_rejected": self.rejected,
            "reprojection_error_px_median": round(float(np.median(valid)), 3) if len(valid) else None,
            "reprojection_error_px_max": round(float(valid.max()), 3) if len(valid) else None,
            "forward": np.round(self.forward, 4).tolist(),
            "up": np.round(self.up, 4).tolist(),
            "points": np.round(self.points, 5).tolist(),
        }


def _projection_matrices(cameras: Cameras) -> np.ndarray:
    """(N, 3, 4) K [R | t] in float64."""
    k = cameras.intrinsics.double().numpy()
    return k @ cameras.world_to_camera.double().numpy()[:, :3, :]


def triangulate(projections: np.ndarray, xy: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted linear (DLT) triangulation of P points seen in N views.

    projections: (N, 3, 4); xy: (N, P, 2) pixels; weights: (N, P) (0 = not seen). Returns (P, 3);
    points seen by fewer than two views come back nan."""
    rows = np.concatenate(
        [
            xy[..., :1, None] * projections[:, None, 2:3] - projections[:, None, 0:1],
            xy[..., 1:2, None] * projections[:, None, 2:3] - projections[:, None, 1:2],
        ],
        axis=2,
    )  # (N, P, 2, 4)
    rows = rows / np.linalg.norm(rows, axis=-1, keepdims=True).clip(1e-12)
    rows = rows * np.sqrt(weights)[..., None, None]
    system = rows.transpose(1, 0, 2, 3).reshape(xy.shape[1], -1, 4)  # (P, 2N, 4)
    _, _, vt = np.linalg.svd(system)
    homogeneous = vt[:, -1]
    points = homogeneous[:, :3] / homogeneous[:, 3:]
    points[(weights > 0).sum(0) < 2] = np.nan
    return points


def reprojection_errors(projections: np.ndarray, points: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(N, P) pixel distance between the projected points (P, 3) and the observations (N, P, 2)."""
    homogeneous = np.concatenate([points, np.ones_like(points[:, :1])], 1)
    projected = np.einsum("nij,pj->npi", projections, homogeneous)
    return np.linalg.norm(projected[..., :2] / projected[..., 2:] - xy, axis=-1)


def project_landmarks(points: np.ndarray, cameras: Cameras) -> np.ndarray:
    """(N, P, 3) pixel x, y and camera depth of world points (P, 3): the landmarks' layout."""
    pix, depth = cameras.project(torch.as_tensor(points, dtype=torch.float32))
    return torch.cat([pix, depth[..., None]], -1).numpy()


def visible_points(
    landmarks: np.ndarray, triangles: np.ndarray, size: tuple[int, int], queries: np.ndarray, tolerance: float = 0.02
) -> np.ndarray:
    """Which points on the face mesh one view sees, by the mesh's own depth.

    landmarks: (P, 3) pixel x, y, depth of the mesh in the view; triangles: (T, 3), counter-
    clockwise (positive signed area in y-down pixels) where they face the camera, as
    `face_triangles` orients them; size: (H, W); queries: (Q, 3) pixel x, y, depth of points on the
    mesh. A point is visible when it lies in the image and a front-facing triangle at its pixel is
    no nearer than it (within `tolerance` of the face's depth extent). Returns (Q,) bool."""
    xy, depth = landmarks[:, :2], landmarks[:, 2]
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    front = triangles[0.5 * np.cross(b - a, c - a) > 0]
    height, width = size
    qxy, qdepth = queries[:, :2], queries[:, 2]
    inside = (qxy[:, 0] >= 0) & (qxy[:, 0] < width) & (qxy[:, 1] >= 0) & (qxy[:, 1] < height) & (qdepth > 0)
    if len(front) == 0 or not inside.any():
        return np.zeros(len(queries), bool)
    faces = torch.from_numpy(np.ascontiguousarray(front))
    face_id, bary = rasterize(torch.from_numpy(xy).double(), torch.from_numpy(depth).double(), faces, height, width)
    surface = interpolate(torch.from_numpy(depth)[:, None].double(), faces, face_id, bary)[..., 0].numpy()
    covered = face_id.numpy() >= 0
    # The mesh's own border vertices fall half outside it: a pixel just outside takes its neighbours' depth.
    surface = np.where(covered, surface, grey_dilation(np.where(covered, surface, -np.inf), size=3))
    # A point is up to a pixel from its pixel's centre, where the depth was read: allow the local slope.
    finite = np.where(np.isfinite(surface), surface, 0.0)
    slope = grey_dilation(np.maximum(*(np.abs(g) for g in np.gradient(finite))) * np.isfinite(surface), size=3)
    ij = np.clip(np.floor(qxy).astype(int), 0, [width - 1, height - 1])
    slack = tolerance * float(np.ptp(depth)) + 1.5 * slope[ij[:, 1], ij[:, 0]]
    return inside & (qdepth <= surface[ij[:, 1], ij[:, 0]] + slack)


def visible_landmarks(landmarks: np.ndarray, triangles: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(P,) bool: the mesh's own landmarks (P, 3) that one view of size (H, W) sees (`visible_points`)."""
    return visible_points(landmarks, triangles, size, landmarks)


def triangulate_face(
    detected: list[np.ndarray | None],
    cameras: Cameras,
    triangles: np.ndarray,
    iterations: int = 4,
    outlier_factor: float = 3.0,
    min_error_px: float = 1.0,
) -> FaceMesh3D | None:
    """Robust triangulation of per-view detections (each (468, 3) or None) -> FaceMesh3D, or None
    with fewer than two detections.

    Each pass triangulates with the current weights, then (a) rejects views whose median
    reprojection error exceeds `outlier_factor` times the median over views (and `min_error_px`
    scaled to the image), and (b) keeps in each remaining view only the landmarks the mesh shows
    visible there and whose error is not an outlier, so a detector's guesses for the hidden side
    of a turned face do not pull the mesh."""
    seen = [i for i, d in enumerate(detected) if d is not None]
    if len(seen) < 2:
        return None
    _check_baseline(cameras[seen])
    try:
        return _triangulate_robust(detected, seen, cameras, triangles, iterations, outlier_factor, min_error_px)
    except np.linalg.LinAlgError as err:
        raise DegenerateViews(f"the triangulation found no solution ({err})") from err


def _check_baseline(cameras: Cameras, min_ratio: float = 0.02) -> None:
    """Refuse views whose camera centres lie (nearly) at one point: depth cannot be triangulated.
    min_ratio: the centres' spread over their distance from the point they look at."""
    rotation, translation = cameras.world_to_camera[:, :3, :3].double(), cameras.world_to_camera[:, :3, 3].double()
    centres = -(rotation.transpose(1, 2) @ translation[..., None])[..., 0]
    spread = float((centres - centres.mean(0)).norm(dim=1).max())
    distance = float(translation.norm(dim=1).median())
    if spread <= min_ratio * max(distance, 1e-9):
        raise DegenerateViews(f"all {len(centres)} views with a face are seen from one camera position")


def _triangulate_robust(
    detected: list[np.ndarray | None],
    seen: list[int],
    cameras: Cameras,
    triangles: np.ndarray,
    iterations: int,
    outlier_factor: float,
    min_error_px: float,
) -> FaceMesh3D:
    projections = _projection_matrices(cameras[seen])
    xy = np.stack([cast(np.ndarray, detected[i])[:, :2] for i in seen]).astype(np.float64)  # seen: detected views
    weights = np.ones(xy.shape[:2])
    floor = min_error_px * max(cameras.width, cameras.height) / 128.0
    active = np.ones(len(seen), bool)
    for _ in range(iterations):
        voted = active
        points = triangulate(projections, xy, weights * active[:, None])
        # Points no view sees twice after re-weighting fall back to the unweighted estimate.
        missing = ~np.isfinite(points).all(1)
        if missing.any():
            points[missing] = triangulate(projections, xy[:, missing], active[:, None] * np.ones((1, missing.sum())))
        errors = reprojection_errors(projections, points, xy)
        view_error = np.median(errors, 1)
        limit = max(outlier_factor * np.median(view_error[active]), floor)
        active = view_error <= limit
        if active.sum() < 2:
            active = view_error <= np.sort(view_error)[1]
        projected = project_landmarks(points, cameras[seen])
        visible = np.stack([visible_landmarks(p, triangles, (cameras.height, cameras.width)) for p in projected])
        point_limit = max(
            outlier_factor * np.median(errors[active][visible[active]]) if visible[active].any() else 0, floor
        )
        weights = (visible & (errors <= point_limit)).astype(np.float64)
    all_errors = np.full(len(detected), np.nan)
    all_errors[seen] = view_error
    return FaceMesh3D(
        points, [seen[i] for i in np.flatnonzero(voted)], [seen[i] for i in np.flatnonzero(~voted)], all_errors
    )


def _one_euro_pass(values: np.ndarray, min_cutoff: float, beta: float, derivative_cutoff: float) -> np.ndarray:
    """Casiez et al.'s one-euro filter along axis 0 of (T, P, C) landmark tracks, in frame units:
    each point's cutoff (cycles per frame) is `min_cutoff` plus `beta` times its smoothed speed in
    face sizes per frame, so a still face loses its jitter and a fast one is followed."""

    def smoothing(cutoff: np.ndarray | float) -> np.ndarray | float:
        return 1.0 / (1.0 + 1.0 / (2.0 * np.pi * cutoff))

    out = np.empty_like(values)
    out[0] = values[0]
    speed_estimate = np.zeros(values.shape[1:2] + (1,))
    for t in range(1, len(values)):
        size = max(float(np.ptp(values[t, :, :2], 0).max()), 1.0)
        speed = np.linalg.norm(values[t, :, :2] - out[t - 1, :, :2], axis=-1, keepdims=True) / size
        speed_estimate += smoothing(derivative_cutoff) * (speed - speed_estimate)
        weight = smoothing(min_cutoff + beta * speed_estimate)
        out[t] = out[t - 1] + weight * (values[t] - out[t - 1])
    return out


def one_euro(values: np.ndarray, min_cutoff: float, beta: float, derivative_cutoff: float = 0.1) -> np.ndarray:
    """(T, P, C) tracks filtered forward and backward (the one-euro filter, `_one_euro_pass`) and the
    two averaged: the clip is known whole, so neither direction's lag survives."""
    forward = _one_euro_pass(values, min_cutoff, beta, derivative_cutoff)
    backward = _one_euro_pass(values[::-1], min_cutoff, beta, derivative_cutoff)[::-1]
    return 0.5 * (forward + backward)


def smooth_tracks(
    detected: list[np.ndarray | None], min_cutoff: float, beta: float, max_gap: int = 2
) -> list[np.ndarray | None]:
    """Per-frame landmarks of one video, smoothed over time by the one-euro filter (`one_euro`;
    min_cutoff 0: not smoothed).

    Gaps of at most `max_gap` frames without a detection are filled by linear interpolation; longer
    gaps stay None (and split the sequence, so no smoothing reaches across them)."""
    found = np.array([d is not None for d in detected])
    out: list[np.ndarray | None] = [None] * len(detected)
    if not found.any():
        return out
    index = np.flatnonzero(found)
    tracks = np.stack([detected[i] for i in index]).astype(np.float64)
    # Frames between two detections at most max_gap + 1 apart are filled, then each run smoothed.
    filled = np.zeros(len(detected), bool)
    for start, end in pairwise(index):
        if end - start <= max_gap + 1:
            filled[start : end + 1] = True
    filled[index] = True
    values = np.stack(
        [
            np.interp(np.arange(len(detected)), index, tracks[:, p, c])
            for p in range(tracks.shape[1])
            for c in range(tracks.shape[2])
        ],
        1,
    )
    values = values.reshape(len(detected), *tracks.shape[1:])
    runs = np.split(np.arange(len(detected)), np.flatnonzero(np.diff(filled.astype(int))) + 1)
    for run in runs:
        if not filled[run[0]]:
            continue
        chunk = one_euro(values[run], min_cutoff, beta) if min_cutoff > 0 else values[run]
        for k, frame in enumerate(run):
            out[frame] = chunk[k].astype(np.float32)
    return out
