"""A frame's shut eyes (a blink) stay shut and the frame's own (`swap/shut_eyes.py`, and the lids'
offset in `swap/reshape.py`), on Grace Hopper's face with its lids closed, swapped with the astronaut."""

from __future__ import annotations

import numpy as np
import pytest

from implicit_deepfake.faces.landmarks import EYE_LIDS, EYE_OUTLINES, Face, FaceLandmarker, eye_opening
from implicit_deepfake.swap.landmark import LandmarkSwapper
from implicit_deepfake.swap.reshape import ShapeOffset
from implicit_deepfake.swap.shut_eyes import HALF_AXES, shut_eyes
from tests.test_identity import load_photo
from tests.test_landmark_swap import _closed_eyes


def _shut(landmarks: np.ndarray, share: float = 0.0) -> np.ndarray:
    """The mesh with each eye's upper lid moved onto its lower lid, leaving `share` of the gap open."""
    out = landmarks.copy()
    for outline in EYE_OUTLINES:
        lower, upper = list(outline[1:8]), list(outline[9:16])[::-1]  # the lids' points, corner to corner
        out[upper] = out[lower] + share * (out[upper] - out[lower])
    return out


def _signed_gap(landmarks: np.ndarray, eye: int) -> float:
    upper, lower = EYE_LIDS[eye]
    return float(landmarks[lower, 1] - landmarks[upper, 1])


def test_eye_opening_reads_the_gap_across_the_eye(refined_hopper) -> None:
    _, landmarks = refined_hopper
    for eye in (0, 1):
        assert 0.2 < eye_opening(landmarks, eye) < 0.45  # measured 0.33, 0.32
        assert eye_opening(_shut(landmarks), eye) == 0.0
        assert abs(eye_opening(_shut(landmarks, 0.5), eye) - 0.5 * eye_opening(landmarks, eye)) < 0.02
        crossed = _shut(landmarks, -0.3)  # lids past each other: no gap, not a negative one read as open
        assert eye_opening(crossed, eye) == 0.0


def test_smaller_eyes_of_the_photo_keep_a_shut_eye_shut(refined_hopper) -> None:
    """The photo's lids are 40% nearer together than the base's: an open frame takes that, a shut one
    stays shut (added in full, the offset pushed its upper lid below its lower one: a blink inside out)."""
    _, landmarks = refined_hopper
    photo = landmarks.copy()
    for outline in EYE_OUTLINES:
        lower, upper = list(outline[1:8]), list(outline[9:16])[::-1]
        middle = (photo[upper] + photo[lower]) / 2
        photo[upper], photo[lower] = middle + 0.6 * (photo[upper] - middle), middle + 0.6 * (photo[lower] - middle)
    offset = ShapeOffset.fit([landmarks], photo, lids=True)
    still = ShapeOffset.fit([landmarks], photo)  # a multi-view head's: its lids never move, the offset is added
    assert eye_opening(still.apply(_shut(landmarks, 0.5)), 0) < 0.25 * eye_opening(photo, 0)
    for eye in (0, 1):
        opened = offset.apply(landmarks)
        assert abs(eye_opening(opened, eye) - eye_opening(photo, eye)) < 0.02
        shut = offset.apply(_shut(landmarks))
        assert abs(_signed_gap(shut, eye)) < 0.5, _signed_gap(shut, eye)  # pixels; it was -5
        half = offset.apply(_shut(landmarks, 0.5))  # half as open as usual: half the photo's opening
        assert abs(eye_opening(half, eye) - 0.5 * eye_opening(photo, eye)) < 0.03


def test_shut_eyes_are_kept_around_the_eye_only_when_shut(refined_hopper) -> None:
    frame, landmarks = refined_hopper
    width = np.linalg.norm(landmarks[33, :2] - landmarks[133, :2])
    assert shut_eyes(landmarks, landmarks, landmarks, frame.shape[:2]).max() == 0.0  # open as usual
    kept = shut_eyes(_shut(landmarks), landmarks, landmarks, frame.shape[:2])
    for outline in EYE_OUTLINES:
        x, y = landmarks[list(outline), :2].mean(0).astype(int)
        assert kept[y, x] > 0.99 and kept[y - int(0.15 * width), x] > 0.9  # the lids and their lashes
        assert kept[y - int(0.6 * width), x] < 0.01  # not the crease and brow above
    x, y = landmarks[list(EYE_OUTLINES[1]), :2].mean(0).astype(int)
    assert kept[y, x + int(1.5 * HALF_AXES[0] * width)] < 0.01  # the temple beside it
    assert kept[int(landmarks[1, 1]), int(landmarks[1, 0])] < 0.01  # the nose
    half = shut_eyes(_shut(landmarks, 0.35), landmarks, landmarks, frame.shape[:2])
    x, y = landmarks[list(EYE_OUTLINES[0]), :2].mean(0).astype(int)
    assert 0.2 < half[y, x] < 0.8  # between open and shut: partly the frame's


@pytest.mark.parametrize("reshape", [0.0, 1.0])
def test_a_blinking_frame_keeps_its_shut_eyes_and_an_open_one_takes_the_photos(
    refined: FaceLandmarker, refined_hopper, reshape: float
) -> None:
    """Grace Hopper with her lids shut (painted and in the mesh): the swap leaves her shut eyes and the
    lids above them as they are, where the photo's open eye was squeezed into streaks of lashes; her
    open eyes still take the astronaut's eye around their irises."""
    frame, landmarks = refined_hopper
    astronaut = load_photo("astronaut")
    shut_landmarks = _shut(landmarks)
    shut_frame = _closed_eyes(frame, landmarks)
    swapper = LandmarkSwapper(landmarker=refined, reshape=reshape)
    swapper.prepare(astronaut, {}, refined.detect(astronaut))
    swapper.calibrate([(frame, Face(landmarks))])
    swapped = {
        "shut": swapper.swap(shut_frame, "x.png", Face(shut_landmarks)),
        "open": swapper.swap(frame, "x.png", Face(landmarks)),
    }
    bent = swapper._reshaped(shut_frame, Face(shut_landmarks))[0]  # with `reshape`, the frame as bent to her outline
    width = np.linalg.norm(landmarks[33, :2] - landmarks[133, :2])
    for outline in EYE_OUTLINES:
        x, y = landmarks[list(outline), :2].mean(0).astype(int)
        lid = (slice(y - int(0.1 * width), y + int(0.1 * width)), slice(x - int(0.3 * width), x + int(0.3 * width)))
        shut_change = np.abs(swapped["shut"][lid].astype(np.int16) - bent[lid]).max(-1)
        open_change = np.abs(swapped["open"][lid].astype(np.int16) - frame[lid]).max(-1)
        assert np.median(shut_change) <= 3, np.median(shut_change)  # her shut eye and lid, as they were
        assert np.median(open_change) > 10, np.median(open_change)  # open: the astronaut's lids and lashes
