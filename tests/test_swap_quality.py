"""Swap quality measures on Grace Hopper's photo: pose and expression errors on re-detected
landmarks of turned renders, seam visibility of pasted patches, multi-view colour consistency."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.swap_quality import (
    expression_error,
    multiview_colour_difference,
    pose_error_deg,
    seam_score,
    summarise,
    yaw_bucket_report,
)
from implicit_deepfake.swap.landmark import LandmarkSwapper
from tests.test_identity import load_photo
from tests.test_warp import turned_face

SIZE = (128, 128)


@pytest.fixture(scope="module")
def hopper(landmarker: FaceLandmarker) -> tuple[np.ndarray, np.ndarray]:
    """Grace Hopper's photo and its (468, 3) landmarks."""
    photo = load_photo("grace_hopper")
    return photo, landmarker.detect(photo).landmarks


@pytest.fixture(scope="module")
def renders(landmarker: FaceLandmarker, hopper: tuple[np.ndarray, np.ndarray]) -> dict[int, tuple]:
    """yaw -> (128x128 render of the face mesh turned by it, landmarks re-detected in the render)."""
    photo, landmarks = hopper
    frames = {yaw: turned_face(photo, landmarks, yaw) for yaw in (0, 15, -15)}
    return {yaw: (frame, landmarker.detect(frame).landmarks) for yaw, frame in frames.items()}


def test_pose_error_reads_the_turn(renders: dict[int, tuple]) -> None:
    base = renders[0][1]
    assert pose_error_deg(base, base, SIZE) < 1e-3
    for yaw in (15, -15):
        error = pose_error_deg(renders[yaw][1], base, SIZE)
        assert abs(error - 15) < 2.5, error  # measured 13.9 and 14.2 (re-detected landmarks)


def test_pose_error_of_a_swap_is_small(landmarker: FaceLandmarker, renders: dict[int, tuple]) -> None:
    frame, base = renders[0]
    swapper = LandmarkSwapper(landmarker=landmarker)
    swapper.prepare(load_photo("astronaut"), {})
    swapped = landmarker.detect(swapper.swap(frame, "x.png")).landmarks
    assert pose_error_deg(swapped, base, SIZE) < 3.0  # measured 2.6 (the swap issue's target: 3)
    assert expression_error(swapped, base) < 0.03  # measured 0.015


def _similar(landmarks: np.ndarray, scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    turn = cv2.getRotationMatrix2D((0.0, 0.0), degrees, scale)
    return landmarks[:, :2] @ turn[:, :2].T + np.array(shift)


def _open_mouth(landmarks: np.ndarray) -> np.ndarray:
    """The lower lip and chin (landmarks below the lower inner lip, 14) dropped by 15% of the
    inter-ocular distance."""
    xy = landmarks[:, :2].copy()
    xy[xy[:, 1] > xy[14, 1], 1] += 0.15 * np.linalg.norm(xy[33] - xy[263])
    return xy


def test_expression_error(hopper: tuple[np.ndarray, np.ndarray]) -> None:
    landmarks = hopper[1]
    assert expression_error(_similar(landmarks, 0.4, 20, (30, -10)), landmarks) < 1e-6
    opened = expression_error(_open_mouth(landmarks), landmarks)
    assert opened > 0.02  # measured 0.040
    small = _similar(landmarks, 0.3, 0, (0, 0))
    assert expression_error(_similar(_open_mouth(landmarks), 0.3, 10, (5, 5)), small) == pytest.approx(opened)


def _patched(photo: np.ndarray, feather: float) -> tuple[np.ndarray, np.ndarray]:
    """The photo with a colour-shifted ellipse over the face, hard-edged (feather 0) or blended
    by a Gaussian alpha of sigma `feather`; and the hard ellipse mask."""
    mask = np.zeros(photo.shape[:2], np.float32)
    cv2.ellipse(mask, (255, 230), (80, 100), 0, 0, 360, 1.0, -1)
    alpha = cv2.GaussianBlur(mask, (0, 0), feather) if feather else mask
    shifted = np.clip(photo.astype(np.float32) + np.array([50.0, 40.0, 30.0]), 0, 255)
    out = alpha[..., None] * shifted + (1 - alpha[..., None]) * photo
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), mask > 0


def test_seam_score_sees_a_hard_edge(hopper: tuple[np.ndarray, np.ndarray]) -> None:
    photo = hopper[0]
    hard, region = _patched(photo, 0)
    feathered, _ = _patched(photo, 15)
    hard_score, feathered_score = seam_score(hard, photo), seam_score(feathered, photo)
    # measured 1.61 and 0.99
    assert hard_score > 1.3 and abs(feathered_score - 1) < 0.15, (hard_score, feathered_score)
    assert seam_score(hard, photo, changed=region, band=4) > 1.3  # measured 1.51
    assert seam_score(photo, photo) is None
    assert seam_score(photo, photo, changed=np.zeros(photo.shape[:2], bool)) is None
    assert seam_score(hard, photo, changed=np.ones(photo.shape[:2], bool)) is None


def _plane_views(photo: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Two views of the photo as a textured plane through known affine maps, and where a grid of
    plane points (pixel centres of the photo) lands in each, (2, P, 2)."""
    maps = [np.array([[0.9, 0.1, 10.0], [-0.05, 0.85, 20.0]]), np.array([[0.7, -0.15, 60.0], [0.2, 0.8, 5.0]])]
    views = [cv2.warpAffine(photo, m, (400, 400), flags=cv2.INTER_LINEAR) for m in maps]
    ys, xs = np.mgrid[150:350:4, 150:400:4]
    plane = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], 1)
    # warpAffine works in pixel indices (centres at +0): shift to and from centres at +0.5.
    pixels = np.stack([(plane - 0.5) @ m[:, :2].T + m[:, 2] + 0.5 for m in maps])
    return views, pixels


def test_multiview_colour_difference(hopper: tuple[np.ndarray, np.ndarray]) -> None:
    views, pixels = _plane_views(hopper[0])
    visible = np.ones(pixels.shape[:2], bool)
    consistent = multiview_colour_difference(views, pixels, visible)
    shuffled = pixels.copy()
    shuffled[1] = pixels[1][np.random.default_rng(0).permutation(pixels.shape[1])]
    inconsistent = multiview_colour_difference(views, shuffled, visible)
    assert consistent < 3 < 20 < inconsistent, (consistent, inconsistent)  # measured 1.0 and 61.0
    assert multiview_colour_difference(views, pixels, np.zeros_like(visible)) is None
    # Three views, two pairs kept: still a median over the pairs' shared points.
    three = multiview_colour_difference(
        views + [views[0]], np.concatenate([pixels, pixels[:1]]), np.ones((3, pixels.shape[1]), bool), max_pairs=2
    )
    assert three < 3


def test_yaw_bucket_report() -> None:
    yaws = [0, -10, 29.9, 30, -45, 60, 90, -120]
    to_target = [0.3, 0.5, None, 0.4, 0.6, 0.5, None, 0.9]
    to_base = [0.2, 0.1, None, 0.3, None, 0.7, 0.8, 0.95]
    assert yaw_bucket_report(yaws, {"target": to_target, "base": to_base}) == {
        "0-30": {"views": 3, "faces": 2, "identity_distance_to_target": 0.4, "identity_distance_to_base": 0.15},
        "30-60": {"views": 2, "faces": 2, "identity_distance_to_target": 0.5, "identity_distance_to_base": 0.3},
        "60-90": {"views": 2, "faces": 2, "identity_distance_to_target": 0.5, "identity_distance_to_base": 0.75},
        ">90": {"views": 1, "faces": 1, "identity_distance_to_target": 0.9, "identity_distance_to_base": 0.95},
    }
    report = yaw_bucket_report([5, 70], {"target": [None, 1 / 3], "base": [None, None]})
    assert list(report) == ["0-30", "30-60", "60-90"]
    assert report["0-30"] == {
        "views": 1,
        "faces": 0,
        "identity_distance_to_target": None,
        "identity_distance_to_base": None,
    }
    assert report["30-60"]["views"] == 0 and report["60-90"]["identity_distance_to_target"] == 0.3333
    # Any named reference gets its own column; one list alone works too.
    portrait = yaw_bucket_report([10, 40, 50], {"base_portrait": [0.7, None, 0.5]})
    assert portrait["0-30"] == {"views": 1, "faces": 1, "identity_distance_to_base_portrait": 0.7}
    assert portrait["30-60"] == {"views": 2, "faces": 1, "identity_distance_to_base_portrait": 0.5}
    with pytest.raises(ValueError, match="one entry per view"):
        yaw_bucket_report([0, 1], {"target": [0.1], "base": [0.1, 0.2]})


def test_summarise() -> None:
    records = [{"a": 1.0, "b": None}, {"a": 2.0}, {"a": 6.0, "b": None}, {"a": None, "b": None}]
    assert summarise(records, ["a", "b"]) == {"a_median": 2.0, "a_mean": 3.0, "b_median": None, "b_mean": None}
    assert summarise([{"a": 1 / 3}, {"a": 2 / 3}], ["a"]) == {"a_median": 0.5, "a_mean": 0.5}
    assert summarise([], ["a"]) == {"a_median": None, "a_mean": None}
