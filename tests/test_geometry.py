"""Multi-view face geometry: triangulation of a known mesh seen by known cameras, visibility from the
mesh's own depth, temporal smoothing of a video's landmark tracks, and the track over the default dataset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from implicit_deepfake.render.cameras import Cameras, look_at
from implicit_deepfake.swap.geometry import (
    DegenerateViews,
    project_landmarks,
    smooth_tracks,
    triangulate_face,
    visible_landmarks,
)
from implicit_deepfake.swap.tracking import track_faces
from implicit_deepfake.swap.warp import face_triangles

SIZE = 128


@pytest.fixture(scope="module")
def face_mesh() -> tuple[np.ndarray, np.ndarray]:
    """A real face's 468 landmarks as a 3D mesh (Grace Hopper's photo: mediapipe's x, y, depth in
    pixels) placed in the world facing -y (x right, z up), 0.7 units tall, and its triangles."""
    from implicit_deepfake.faces.landmarks import FaceLandmarker
    from tests.test_identity import load_photo

    landmarks = FaceLandmarker().detect(load_photo("grace_hopper")).landmarks.astype(np.float64)
    centred = landmarks - landmarks.mean(0)
    scale = 0.7 / np.ptp(centred[:, 1])
    points = np.stack([centred[:, 0], centred[:, 2], -centred[:, 1]], 1) * scale - np.array([0.0, 0.3, 0.0])
    return points, face_triangles(landmarks[:, :2])


def ring_cameras(azimuths_deg: list[float], distance: float = 2.0) -> Cameras:
    """Cameras on a horizontal ring around the origin (0 deg = in front, at -y), looking at it."""
    az = torch.tensor(np.radians(azimuths_deg), dtype=torch.float32)
    eye = torch.stack([distance * torch.sin(az), -distance * torch.cos(az), 0.1 * torch.ones_like(az)], 1)
    c2w = look_at(eye, torch.zeros(len(az), 3), torch.tensor([0.0, 0.0, 1.0]))
    return Cameras.from_blender(c2w, 0.8, SIZE, SIZE)


def test_triangulation_recovers_a_known_mesh_and_rejects_outlier_views(face_mesh) -> None:
    points, triangles = face_mesh
    azimuths = [-40, -25, -10, 0, 10, 25, 40, 55]
    cameras = ring_cameras(azimuths)
    rng = np.random.default_rng(0)
    observed = project_landmarks(points, cameras)
    observed[..., :2] += rng.normal(0, 0.3, observed[..., :2].shape)  # a detector's jitter, in pixels
    observed[5, :, :2] += np.array([9.0, -6.0])  # one view's detection badly off
    detections = list(observed)
    detections[7] = None  # and one view without a detection
    mesh = triangulate_face(detections, cameras, triangles)
    error = np.linalg.norm(mesh.points - points, axis=1)
    assert np.median(error) < 0.01 and error.max() < 0.03, (np.median(error), error.max())  # a 0.7-unit face
    assert mesh.rejected == [5] and 5 not in mesh.used and 7 not in mesh.used
    assert mesh.errors[0] < 0.6 and mesh.errors[5] > 5 and np.isnan(mesh.errors[7])
    # The mesh's frame: it looks along -y, up is +z, and each camera's yaw is its azimuth.
    assert mesh.forward @ np.array([0, -1, 0]) > 0.99 and mesh.up @ np.array([0, 0, 1]) > 0.99
    np.testing.assert_allclose(np.abs(mesh.yaw_deg(cameras)), np.abs(azimuths), atol=2.0)
    assert np.sign(mesh.yaw_deg(cameras)[1]) == -np.sign(mesh.yaw_deg(cameras)[5])


def test_visibility_comes_from_the_mesh_depth(face_mesh) -> None:
    points, triangles = face_mesh
    cameras = ring_cameras([0, 60, 180])
    projected = project_landmarks(points, cameras)
    front, turned, behind = (visible_landmarks(p, triangles, (SIZE, SIZE)) for p in projected)
    assert front.mean() > 0.95
    assert behind.sum() == 0  # from behind, every triangle faces away
    # Turned 60 degrees, the bulge hides part of the far side: fewer visible, and those on the near side.
    assert 0.3 < turned.mean() < front.mean()
    near_side = points[:, 0] > 0.1  # camera at +x
    far_side = points[:, 0] < -0.1
    assert turned[near_side].mean() > turned[far_side].mean()


def test_multiview_track_swaps_every_view_that_sees_the_face_and_hides_the_back(face_mesh) -> None:
    points, _ = face_mesh
    cameras = ring_cameras([-30, -10, 0, 10, 30, 70, 180])
    observed = project_landmarks(points, cameras)
    detections = [observed[i] if i < 5 else None for i in range(len(observed))]  # the detector misses 70 and 180
    track = track_faces(detections, cameras, [list(range(7))], mode="auto", video=False)
    assert track.mode == "multiview" and track.mesh is not None
    assert [f.status for f in track.frames] == ["found"] * 6 + ["hidden"]
    # The 70-degree view gets the mesh's projection, not nothing.
    np.testing.assert_allclose(track.frames[5].face.landmarks[:, :2], observed[5][:, :2], atol=0.5)
    assert track.record()["found"] == 6 and track.record()["hidden"] == 1


def test_views_from_behind_the_face_are_hidden_whatever_the_face_mesh_alone_shows(face_mesh) -> None:
    points, _ = face_mesh
    azimuths = [-30, 0, 30, 100, 135, 180]
    cameras = ring_cameras(azimuths)
    observed = project_landmarks(points, cameras)
    detections = [observed[i] if i < 3 else None for i in range(len(observed))]
    mesh = triangulate_face(detections, cameras, face_triangles(observed[1][:, :2]))
    np.testing.assert_allclose(mesh.turn_deg(cameras), np.abs(azimuths), atol=10.0)
    # Counting any share of the mesh as enough, only the turn keeps the views round the back out.
    track = track_faces(detections, cameras, [list(range(6))], mode="multiview", video=False, min_visible=0.0)
    assert [f.status for f in track.frames] == ["found"] * 4 + ["hidden"] * 2
    wide = track_faces(detections, cameras, [list(range(6))], mode="multiview", video=False, min_visible=0.0,
                       max_turn=150.0)  # fmt: skip
    assert [f.status for f in wide.frames] == ["found"] * 5 + ["hidden"]


def _face_track(frames: int) -> np.ndarray:
    """(frames, 468, 3) a 200-px face: landmarks spread over a grid, all at rest."""
    grid = np.stack(np.meshgrid(np.linspace(0, 200, 26), np.linspace(0, 200, 18)), -1).reshape(-1, 2)[:468]
    track = np.zeros((frames, 468, 3), np.float32)
    track[..., :2] = 100 + grid
    return track


def test_smoothed_tracks_lose_jitter_keep_motion_and_fill_short_gaps() -> None:
    rng = np.random.default_rng(1)
    frames = 60
    t = np.arange(frames)
    truth = _face_track(frames)
    truth[..., 0] += 10 * np.sin(t / 8.0)[:, None]  # a slow head motion
    noisy = truth + rng.normal(0, 1.0, truth.shape).astype(np.float32)
    detections = [noisy[i] for i in range(frames)]
    detections[20] = None  # a short gap: filled
    for i in range(40, 46):
        detections[i] = None  # a long gap: stays empty
    smoothed = smooth_tracks(detections, min_cutoff=0.02, beta=10.0)
    assert smoothed[20] is not None and all(smoothed[i] is None for i in range(40, 46))
    kept = [i for i in range(frames) if smoothed[i] is not None and detections[i] is not None]
    raw_error = np.mean([np.abs(noisy[i] - truth[i]).mean() for i in kept])
    smooth_error = np.mean([np.abs(smoothed[i] - truth[i]).mean() for i in kept])
    assert smooth_error < 0.6 * raw_error, (smooth_error, raw_error)
    assert np.abs(smoothed[20][..., 0] - truth[20][..., 0]).mean() < 1.0


def test_a_wink_is_followed_where_a_fixed_blur_smears_it() -> None:
    """An eyelid closes, stays shut two frames and opens (a wink at 25 fps): the one-euro filter
    follows it (speed raises its cutoff) where a Gaussian of the old default (sigma 1 frame) smears it."""
    frames, lid = 30, np.arange(0, 40)  # the first 40 landmarks stand for an eyelid
    truth = _face_track(frames)
    truth[12, lid, 1] += 15
    truth[13:15, lid, 1] += 30  # closed
    truth[15, lid, 1] += 15
    noisy = truth + np.random.default_rng(2).normal(0, 0.5, truth.shape).astype(np.float32)
    smoothed = np.stack(smooth_tracks(list(noisy), min_cutoff=0.02, beta=10.0))
    closed = smoothed[13:15, lid, 1].mean() - truth[0, lid, 1].mean()
    assert closed > 0.85 * 30, closed
    blurred = gaussian_filter1d(noisy, 1.0, axis=0, mode="nearest")[13:15, lid, 1].mean() - truth[0, lid, 1].mean()
    assert blurred < closed - 3
    still = np.abs(smoothed[20:, lid + 100] - truth[20:, lid + 100]).mean()
    assert still < 0.6 * np.abs(noisy[20:, lid + 100] - truth[20:, lid + 100]).mean()  # jitter still goes


def test_views_from_one_camera_position_fall_back_to_their_own_landmarks(face_mesh, caplog) -> None:
    points, triangles = face_mesh
    cameras = ring_cameras([0.0, 0.0, 0.0])
    detections = list(project_landmarks(points, cameras))
    with caplog.at_level("WARNING"):
        track = track_faces(detections, cameras, [[0, 1, 2]], mode="auto", video=False)
    assert track.mode == "per_frame" and track.mesh is None
    assert [f.status for f in track.frames] == ["found"] * 3
    assert "one camera position" in caplog.text
    with pytest.raises(DegenerateViews, match="one camera position"):
        triangulate_face(detections, cameras, triangles)


def test_temporal_track_for_a_video() -> None:
    frames = [np.full((468, 3), float(i), np.float32) for i in range(6)]
    cameras = ring_cameras([0.0] * 6)
    track = track_faces(frames, cameras, [[0, 1, 2], [3, 4, 5]], mode="auto", video=True)
    assert track.mode == "temporal" and track.mesh is None
    # Smoothing stays inside each run (split): frame 2 is not pulled toward frame 3.
    assert track.frames[2].face.landmarks[0, 0] < 2.0 and track.frames[3].face.landmarks[0, 0] > 3.0


def test_unknown_track_mode_is_a_clear_error() -> None:
    from implicit_deepfake.core.errors import DeepfakeError

    with pytest.raises(DeepfakeError, match="swap.track.mode"):
        track_faces([None], ring_cameras([0.0]), [[0]], mode="frames", video=False)
