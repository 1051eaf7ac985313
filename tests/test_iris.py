"""The target's iris colour in the frame's own eyes (`swap/iris.py`), on drawn eyes whose colours are
known, and on a real portrait swapped into a real face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from implicit_deepfake.faces.landmarks import EYE_OUTLINES, IRISES, FaceLandmarker
from implicit_deepfake.metrics.expression import expression_measures
from implicit_deepfake.swap.compositing import to_lab
from implicit_deepfake.swap.iris import RINGS, iris_colour, recolour_irises
from implicit_deepfake.swap.landmark import LandmarkSwapper
from tests.test_identity import load_photo
from tests.test_landmark_swap import _closed_eyes, _inside, _sunglasses

SKIN, SCLERA, PUPIL = (200, 160, 140), (235, 232, 228), (15, 12, 12)
BROWN, BLUE = (95, 60, 35), (60, 95, 150)
RADIUS = 9.0  # iris radius in pixels


def drawn_eyes(iris: tuple[int, int, int], opening: float = 0.6, glint: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 120x200 skin-coloured image with two eyes (white, an `iris`-coloured disc with a dark pupil
    inside lids `opening` x the eye's half-width apart) and its (478, 3) landmarks: each eye's outline
    and iris points where mediapipe puts them, the rest at the image centre."""
    image = np.full((120, 200, 3), SKIN, np.uint8)
    landmarks = np.zeros((478, 3), np.float32)
    landmarks[:, :2] = (100.0, 60.0)
    for eye, centre in enumerate(((60.0, 60.0), (140.0, 60.0))):
        angles = np.linspace(0.0, 2.0 * np.pi, len(EYE_OUTLINES[eye]), endpoint=False)
        outline = np.array(centre) + np.stack([22.0 * np.cos(angles), 22.0 * opening * np.sin(angles)], 1)
        landmarks[list(EYE_OUTLINES[eye]), :2] = outline
        rim = [(RADIUS, 0.0), (0.0, -RADIUS), (-RADIUS, 0.0), (0.0, RADIUS)]
        landmarks[list(IRISES[eye]), :2] = np.array(centre) + np.array([(0.0, 0.0), *rim])
        lids = np.zeros(image.shape[:2], np.uint8)
        cv2.fillPoly(lids, [np.round(outline - 0.5).astype(np.int32)], 1)
        ball = image.copy()
        cv2.fillPoly(ball, [np.round(outline - 0.5).astype(np.int32)], SCLERA)
        ys, xs = np.mgrid[0:120, 0:200] + 0.5
        r = np.hypot(xs - centre[0], ys - centre[1]) / RADIUS
        ball[r < 1.0] = iris
        ball[r < 0.35] = PUPIL
        if glint:
            ball[(np.hypot(xs - centre[0] - 4, ys - centre[1] + 3) < 1.5)] = (250, 250, 250)
        image[lids > 0] = ball[lids > 0]
    return image, landmarks


def _lab(colour: tuple[int, int, int]) -> np.ndarray:
    return to_lab(np.array([[colour]], np.uint8))[0, 0]


def test_the_iris_colour_is_read_ring_by_ring() -> None:
    image, landmarks = drawn_eyes(BLUE)
    colour = iris_colour(image, landmarks)
    assert colour is not None and colour.shape == (RINGS, 3)
    assert np.abs(colour[0] - _lab(PUPIL)).max() < 3, colour[0]  # the pupil
    assert np.abs(colour[3:] - _lab(BLUE)).max() < 3, colour[3:]  # the iris, out to its rim


def test_no_iris_colour_without_irises_to_read() -> None:
    image, landmarks = drawn_eyes(BLUE)
    assert iris_colour(image, landmarks[:468]) is None  # a mesh without irises
    assert iris_colour(image, landmarks, usable=np.zeros(image.shape[:2], np.float32)) is None  # behind lenses
    shut, shut_landmarks = drawn_eyes(BLUE, opening=0.05)
    assert iris_colour(shut, shut_landmarks) is None
    painted, _ = drawn_eyes(SKIN)  # eyes painted over with skin (a shut eye's lid under an open eye's mesh)
    assert iris_colour(painted, landmarks) is None


def test_the_frames_irises_take_the_target_colour_and_keep_their_light() -> None:
    target = iris_colour(*drawn_eyes(BLUE))
    frame, landmarks = drawn_eyes(BROWN, glint=True)
    kept = np.ones(frame.shape[:2], np.float32)
    out = recolour_irises(frame, landmarks, target, kept)
    moved = iris_colour(out, landmarks)
    assert np.abs(moved[2:] - _lab(BLUE)).max() < 4, moved  # brown -> blue, ring by ring
    assert moved[0, 0] < _lab(PUPIL)[0] + 3, moved[0]  # the pupil stays dark
    glint = to_lab(out)[57, 64, 0]
    assert glint > moved[3, 0] + 30, glint  # the frame's highlight rides on top
    ys, xs = np.mgrid[0:120, 0:200] + 0.5
    far = np.hypot(xs - 60, ys - 60) > 1.2 * RADIUS
    far &= np.hypot(xs - 140, ys - 60) > 1.2 * RADIUS
    assert (out[far] == frame[far]).all()  # nothing moves beyond the iris's rim
    assert (recolour_irises(frame, landmarks, target, np.zeros_like(kept)) == frame).all()  # not a kept eye


def test_the_frames_irises_stay_in_the_targets_eyes_and_colour(refined: FaceLandmarker) -> None:
    """Grace Hopper's photo swapped with the astronaut (refined meshes, as a video's frames get): her
    irises stay hers (the gaze), in the astronaut's colour; around them, inside the lids, the
    astronaut's eye. Without irises in the mesh the whole eye inside the lids stays the frame's."""
    frame, target = load_photo("grace_hopper"), load_photo("astronaut")
    face = refined.detect(frame)
    swapper = LandmarkSwapper(landmarker=refined)
    swapper.prepare(target, {})
    swapped = swapper.swap(frame, "x.png", face)
    colours = [iris_colour(image, face.landmarks) for image in (frame, swapped)]
    photo = iris_colour(target, refined.detect(target).landmarks)
    assert all(c is not None for c in (*colours, photo))
    before, after = (float(np.abs(c[2:] - photo[2:]).mean()) for c in colours)
    assert after < 0.5 * before, (before, after)
    change = np.abs(swapped.astype(np.int16) - frame).max(-1)
    for eye, outline in enumerate(EYE_OUTLINES):
        lids = _inside(face.landmarks, outline, frame.shape[:2], erode=0)
        centre = face.landmarks[IRISES[eye][0], :2]
        radius = np.linalg.norm(face.landmarks[list(IRISES[eye][1:]), :2] - centre, axis=1).mean()
        ys, xs = np.mgrid[0 : frame.shape[0], 0 : frame.shape[1]] + 0.5
        r = np.hypot(xs - centre[0], ys - centre[1]) / radius
        assert np.median(change[lids & (r > 1.6)]) > 10  # the white of the eye and the lid margins: hers
    gaze = [expression_measures(refined.detect(image).landmarks)["gaze_x"] for image in (frame, swapped)]
    assert abs(gaze[1] - gaze[0]) < 0.03, gaze


@pytest.mark.parametrize("odd", ["sunglasses", "closed_eyes"])
def test_a_photo_hiding_its_eyes_leaves_the_frames_whole_eyes(refined: FaceLandmarker, odd: str) -> None:
    """The photo's eyes behind dark lenses or under shut lids give no eye to draw and no colour: the
    frame keeps its whole eye inside the lids, as it is."""
    frame, astronaut = load_photo("grace_hopper"), load_photo("astronaut")
    face, photo_face = refined.detect(frame), refined.detect(astronaut)
    target = (_sunglasses if odd == "sunglasses" else _closed_eyes)(astronaut, photo_face.landmarks)
    swapper = LandmarkSwapper(landmarker=refined)
    swapper.prepare(target, {}, photo_face)
    swapped = swapper.swap(frame, "x.png", face)
    change = np.abs(swapped.astype(np.int16) - frame).max(-1)
    for outline in EYE_OUTLINES:
        assert np.median(change[_inside(face.landmarks, outline, frame.shape[:2], erode=2)]) <= 3
