"""The frame's shut eyes (a blink, a wink, a squeeze) kept as they are.

The warp draws the photo's open eye onto the frame's eye outline. As the frame's lids close, the
photo's eye opening is squeezed into a slit while its lashes, lid and crease are stretched down over
it: streaks of lashes and a dark smear where the frame shows a shut eye (looked at: a blink of d14
with every target). A photo has no shut eye to give, so where a frame's eye is open less than SHUT[0]
of its usual (each eye's lid gap over its width; the clip's mean face, or the photo) the frame's own
shut lids and lashes show through, fully below SHUT[1]: a soft-edged ellipse along the eye; the photo's
lid skin stays around it.
"""

from __future__ import annotations

import cv2
import numpy as np

from implicit_deepfake.avatar.mesh import smoothstep
from implicit_deepfake.faces.landmarks import EYE_CORNERS, eye_opening

SHUT = (0.45, 0.25)  # an eye's opening over its usual: the frame's own eye starts to show, shows whole
# The kept ellipse, in eye widths: half its width and height, and how far its centre sits above the eye's:
# the shut lids and their lashes, where the photo's squeezed lashes would lie. (Reaching up to the crease,
# 0.45 high, it also kept the frame's own lid and its shadow: a darker patch, and its person's look.)
HALF_AXES = (0.6, 0.25)
RAISE = 0.05
SOFT = 0.08  # its edge's blur, in eye widths


def _width_share(landmarks: np.ndarray, eye: int) -> float:
    """An eye's width over the span of both eyes (outer corner to outer corner): a turned head's far
    eye is foreshortened, a shut eye is not."""
    xy = landmarks[:, :2].astype(np.float64)
    span = float(np.linalg.norm(xy[EYE_CORNERS[0][0]] - xy[EYE_CORNERS[1][1]]))
    return float(np.linalg.norm(xy[EYE_CORNERS[eye][0]] - xy[EYE_CORNERS[eye][1]]) / max(span, 1e-6))


def shut_eyes(frame: np.ndarray, drawn: np.ndarray, usual: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """HxW float32 in [0, 1]: where a frame keeps its own eyes because they are shut. frame: its mesh
    (P, 2+); drawn: the mesh the swap draws there (the kept ellipse sits on its eyes); usual: a mesh of
    the same person with their eyes as usually open (the clip's mean face, or the photo), in any scale.
    Not a turned head's far eye, whose outline folds (its width under half its usual share of the eyes'
    span)."""
    kept = np.zeros(shape[:2], np.float32)
    for eye in (0, 1):
        shut = smoothstep(SHUT[0], SHUT[1], np.array(eye_opening(frame, eye) / max(eye_opening(usual, eye), 1e-6)))
        facing = smoothstep(0.4, 0.6, np.array(_width_share(frame, eye) / max(_width_share(usual, eye), 1e-6)))
        weight = float(shut * facing)
        if weight <= 0.0:
            continue
        a, b = (drawn[i, :2].astype(np.float64) for i in EYE_CORNERS[eye])
        width = float(np.linalg.norm(b - a))
        along = (b - a) / max(width, 1e-6)
        up = np.array([along[1], -along[0]])  # the corners run left to right: this points up the image
        centre = (a + b) / 2 + RAISE * width * up
        ellipse = np.zeros(shape[:2], np.float32)
        cv2.ellipse(
            ellipse,
            (round(centre[0] * 16), round(centre[1] * 16)),
            (round(HALF_AXES[0] * width * 16), round(HALF_AXES[1] * width * 16)),
            float(np.degrees(np.arctan2(along[1], along[0]))),
            0,
            360,
            (1.0,),
            -1,
            cv2.LINE_AA,
            4,
        )
        kept = np.maximum(kept, weight * cv2.GaussianBlur(ellipse, (0, 0), max(0.5, SOFT * width)))
    return kept
