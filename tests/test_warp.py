"""The piecewise-affine warp between meshes (`swap/warp.py`): hidden triangles dropped, the near side
painted last, a turned photo triangulated in its face's own plane."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from implicit_deepfake.faces.landmarks import FaceLandmarker, face_oval_indices
from implicit_deepfake.swap.compositing import hull_mask
from implicit_deepfake.swap.warp import face_triangles, signed_areas, untangled, warp_triangles
from tests.test_identity import load_photo

NOSE_TIP = 1


def yaw_landmarks(landmarks: np.ndarray, degrees: float) -> np.ndarray:
    """(P, 3) mesh landmarks turned about the vertical axis through their mean (depth is in
    pixels, like x, so this is a rigid 3D turn of the face)."""
    centre = landmarks.mean(0)
    x, y, z = (landmarks - centre).T
    angle = np.deg2rad(degrees)
    turned = np.stack([x * np.cos(angle) + z * np.sin(angle), y, -x * np.sin(angle) + z * np.cos(angle)], 1)
    return (turned + centre).astype(np.float32)


def turned_face(photo: np.ndarray, landmarks: np.ndarray, degrees: float, size: int = 128) -> np.ndarray:
    """The photo's face mesh turned by `degrees`, rendered on white and cropped to size x size,
    like the synthetic avatar's frames (a textured head on a white background)."""
    xy = landmarks[:, :2]
    image, covered = warp_triangles(photo, xy, yaw_landmarks(landmarks, degrees), face_triangles(xy), photo.shape[:2])
    frame = np.where(covered[..., None], image, 255).astype(np.uint8)
    (x0, y0), (x1, y1) = xy.min(0), xy.max(0)
    half = 0.8 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    crop = frame[int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)]
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def test_turned_mesh_drops_hidden_triangles_and_near_side_wins(landmarker: FaceLandmarker) -> None:
    """A coordinate-coded image shows where each warped pixel was sampled from."""
    photo = load_photo("astronaut")
    landmarks = landmarker.detect(photo).landmarks
    xy, triangles = landmarks[:, :2], face_triangles(landmarks[:, :2])
    ys, xs = np.mgrid[: photo.shape[0], : photo.shape[1]]
    code = np.dstack([xs // 2, ys // 2, np.zeros_like(xs)]).astype(np.uint8)

    covered_pixels = []
    for degrees in (0, 30, 60):
        turned = yaw_landmarks(landmarks, degrees)
        warped, covered = warp_triangles(code, xy, turned, triangles, photo.shape[:2])
        covered_pixels.append(covered.sum())
        nose = np.round(turned[NOSE_TIP, :2] - 0.5).astype(int)
        sampled = 2.0 * warped[nose[1], nose[0], :2]
        assert np.abs(sampled - xy[NOSE_TIP]).max() <= 4  # the nose, not the cheek behind it
    assert covered_pixels[0] > covered_pixels[1] > covered_pixels[2]

    # Turned 180 degrees, every triangle faces away: nothing is drawn.
    _, covered = warp_triangles(code, xy, yaw_landmarks(landmarks, 180), triangles, photo.shape[:2])
    assert covered.sum() == 0

    # Painting near-to-far instead lets the far cheek cover the nose tip.
    wrong_order = turned * np.array([1, 1, -1], np.float32)
    warped, _ = warp_triangles(code, xy, wrong_order, triangles, photo.shape[:2])
    assert np.abs(2.0 * warped[nose[1], nose[0], 0] - xy[NOSE_TIP, 0]) >= 5


@pytest.mark.parametrize("degrees", [20, 35])
def test_a_turned_photo_covers_a_frontal_face_whole(landmarker: FaceLandmarker, degrees: float) -> None:
    """A photo's face turned by `degrees` warped onto the frontal face: triangulated in the photo's
    own pixels, its compressed far side folds over in the frontal face and leaves holes; turned
    frontal first (its depth given), it leaves out only what the photo does not see (triangles facing
    away in it) and covers the rest as the unturned photo's own triangles do."""
    photo = load_photo("astronaut")
    frontal = landmarker.detect(photo).landmarks
    turned = yaw_landmarks(frontal, degrees)
    silhouette = hull_mask(frontal[face_oval_indices(), :2], photo.shape[:2], convex=False) > 0

    def coverage(source: np.ndarray, triangles: np.ndarray) -> float:
        _, covered = warp_triangles(photo, source[:, :2], frontal, triangles, photo.shape[:2])
        return float(covered[silhouette].mean())

    triangles = face_triangles(turned)
    a, b, c = (turned[triangles[:, k], :2] for k in range(3))
    unseen = np.zeros(photo.shape[:2], np.uint8)
    for corners in frontal[triangles[np.cross(b - a, c - a) < 0], :2]:
        unseen |= hull_mask(corners, photo.shape[:2])
    unturned = coverage(frontal, face_triangles(frontal[:, :2]))
    in_pixels, turned_frontal = coverage(turned, face_triangles(turned[:, :2])), coverage(turned, triangles)
    seen = 1.0 - float(unseen[silhouette].mean())
    assert 0.85 < seen < 0.995 and turned_frontal > min(seen, unturned) - 0.005, (seen, unturned, turned_frontal)
    assert in_pixels < turned_frontal - 0.02, (in_pixels, turned_frontal)


def test_a_move_that_turns_triangles_over_is_pulled_back_only_there(landmarker: FaceLandmarker) -> None:
    """A photo's forehead lowered into its brows (a fringe's face top against raised brows) turns the
    band of triangles between them over; untangled pulls those movable corners back until every
    triangle the source has upright is upright again, and leaves the rest of the move as it was."""
    photo = load_photo("astronaut")
    source = landmarker.detect(photo).landmarks[:, :2].astype(np.float64)
    triangles = face_triangles(source)
    brows, lids = source[[105, 334], 1].mean(), source[[159, 386], 1].mean()
    moved = source.copy()
    forehead = source[:, 1] < brows - 0.02 * np.ptp(source[:, 1])
    moved[forehead, 1] = brows + 0.3 * (lids - brows)  # the forehead's points dropped below the brows
    moved[:, 0] += 2.0  # and the whole face moved 2 px right

    area = lambda xy: signed_areas(xy, triangles)  # noqa: E731
    upright = area(source) > 0
    assert (upright & (area(moved) <= 0)).sum() > 20
    above_lids = source[:, 1] < lids
    out = untangled(source, moved, triangles, above_lids)
    assert not (upright & (area(out) <= 0)).any()
    untouched = ~np.isin(np.arange(len(source)), triangles[upright & (area(moved) <= 0)])
    np.testing.assert_allclose(out[untouched], moved[untouched])  # the move kept where nothing turned over
    np.testing.assert_allclose(out[~above_lids], moved[~above_lids])  # and below the lids wholly
    assert np.abs(out - source)[forehead, 1].mean() < 0.5 * np.abs(moved - source)[forehead, 1].mean()
