"""The expression, gaze and flicker measures on frames whose answers are known: a frame against
itself, a mirrored and a shifted gaze, the synthetic head's jaw opening, a steady and a flickering clip."""

from __future__ import annotations

import numpy as np
import pytest

from implicit_deepfake.avatar.head import build_avatar, render_avatar
from implicit_deepfake.core.io import read_image
from implicit_deepfake.data.expressions import ExpressionRig, expression_vector
from implicit_deepfake.data.synthetic import BASE_PHOTO
from implicit_deepfake.data.synthetic4d import head_cameras
from implicit_deepfake.faces.landmarks import EYE_CORNERS, IRISES, FaceLandmarker
from implicit_deepfake.metrics.expression import MEASURES, FramePair, clip_agreement, expression_measures, flicker


def test_the_refined_mesh_has_irises_inside_their_eyes(refined_hopper) -> None:
    _, landmarks = refined_hopper
    assert landmarks.shape == (478, 3)
    for iris, corners in zip(IRISES, EYE_CORNERS):
        x = landmarks[iris[0], 0]
        assert min(landmarks[list(corners), 0]) < x < max(landmarks[list(corners), 0])


def test_a_frame_against_itself(refined_hopper, refined: FaceLandmarker) -> None:
    photo, landmarks = refined_hopper
    again = refined.detect(photo.copy()).landmarks
    assert expression_measures(again) == expression_measures(landmarks)
    measures = expression_measures(landmarks)
    assert set(measures) == set(MEASURES)
    assert 0.4 < measures["mouth_width"] < 0.8 and 0.05 < measures["eye_opening_left"] < 0.2
    assert measures["mouth_opening"] < 0.02  # a closed mouth
    assert abs(measures["gaze_x"]) < 0.1  # she looks at the camera


def test_a_mirrored_gaze_reads_negated_and_a_shifted_iris_reads_its_shift(refined_hopper) -> None:
    _, landmarks = refined_hopper
    mirrored = landmarks.copy()
    mirrored[:, 0] = 1000.0 - mirrored[:, 0]
    before, after = expression_measures(landmarks), expression_measures(mirrored)
    assert after["gaze_x"] == pytest.approx(-before["gaze_x"], abs=1e-6)
    for key in set(MEASURES) - {"gaze_x"}:
        assert after[key] == pytest.approx(before[key], rel=1e-6)
    shifted = landmarks.copy()
    for iris, corners in zip(IRISES, EYE_CORNERS):
        width = abs(landmarks[corners[1], 0] - landmarks[corners[0], 0])
        shifted[list(iris), 0] += 0.2 * width  # both irises a fifth of the eye to the image right
    assert expression_measures(shifted)["gaze_x"] - before["gaze_x"] == pytest.approx(0.2, abs=0.01)


def test_the_synthetic_heads_jaw_opening_is_read_as_a_mouth_opening(refined: FaceLandmarker) -> None:
    photo = read_image(BASE_PHOTO)[..., :3]
    avatar = build_avatar(photo, refined.detect(photo), resolution=128)
    rig = ExpressionRig.for_avatar(avatar)
    camera = head_cameras(np.zeros((1, 3)), 256, 0.6, 1.9)
    measures = []
    for jaw in (0.0, 1.0):
        rgba, _ = render_avatar(rig.apply(avatar, expression_vector(jaw_open=jaw)), camera)
        face = refined.detect(np.ascontiguousarray(rgba[0, ..., :3]))
        assert face is not None
        measures.append(expression_measures(face.landmarks))
    neutral, open_jaw = measures
    assert open_jaw["mouth_opening"] - neutral["mouth_opening"] > 0.05  # measured ~0.1
    for key in ("eye_opening_left", "eye_opening_right", "brow_height"):
        assert abs(open_jaw[key] - neutral[key]) < 0.3 * (open_jaw["mouth_opening"] - neutral["mouth_opening"]), key


def _clip(values: np.ndarray) -> list[dict]:
    return [{key: float(v) for key in MEASURES} for v in values]


def test_clip_agreement_sees_a_kept_a_frozen_and_a_reversed_expression() -> None:
    base = np.sin(np.linspace(0, 6, 40)) * 0.1 + 0.3
    noise = np.random.default_rng(0).normal(0, 0.01, base.shape)
    kept = clip_agreement(_clip(base), _clip(base + noise))
    assert all(kept[k]["correlation"] > 0.95 and kept[k]["difference_over_spread"] < 0.2 for k in MEASURES)
    assert kept["mouth_opening"]["frames"] == 40
    reversed_ = clip_agreement(_clip(base), _clip(base[::-1]))["gaze_x"]
    assert reversed_["correlation"] < 0.5 and reversed_["difference_over_spread"] > 0.5
    frozen = clip_agreement(_clip(base), _clip(np.full_like(base, 0.3)))
    assert frozen["mouth_opening"] is None  # the swap does not move at all: no correlation to read
    assert clip_agreement(_clip(base[:2]), _clip(base[:2]))["gaze_x"] is None  # too few frames
    assert clip_agreement([None, *_clip(base[1:])], _clip(base))["brow_height"]["frames"] == 39


def _moving_clip(photo: np.ndarray, landmarks: np.ndarray, frames: int) -> tuple[list, list]:
    """The photo shifted by a few pixels per frame with a camera's noise, its landmarks shifted with it."""
    images, marks, rng = [], [], np.random.default_rng(1)
    for t in range(frames):
        shift = (2 * t, t)
        noisy = np.roll(photo, shift[::-1], axis=(0, 1)).astype(np.float32) + rng.normal(0, 3, photo.shape)
        images.append(np.clip(noisy, 0, 255).astype(np.uint8))
        marks.append(landmarks + np.array([shift[0], shift[1], 0], np.float32))
    return images, marks


def test_flicker_is_one_for_a_steady_swap_and_grows_with_a_flickering_face(refined_hopper) -> None:
    photo, landmarks = refined_hopper
    images, marks = _moving_clip(photo, landmarks, 5)
    pairs = [
        FramePair((images[t - 1], images[t]), (images[t - 1], images[t]), (marks[t - 1], marks[t]))
        for t in (1, 2, 3, 4)
    ]
    assert flicker(pairs) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    flickering = [np.clip(im.astype(np.int16) + rng.integers(-12, 13), 0, 255).astype(np.uint8) for im in images]
    pairs = [
        FramePair((images[t - 1], images[t]), (flickering[t - 1], flickering[t]), (marks[t - 1], marks[t]))
        for t in (1, 2, 3, 4)
    ]
    assert flicker(pairs) > 1.3
    assert flicker([]) is None
