"""What a swap must keep of its frame: the expression, gaze and steadiness of the face.

Per frame, from mediapipe's 478-point mesh (`FaceLandmarker(refine=True)`: irises at 468-477), a few
distances a viewer reads a face by, each over the inter-ocular distance (outer eye corners) so that
they do not depend on the face's size in pixels: mouth opening and width, each eye's opening, brow
height over the eye, and gaze (the iris centre along its eye's corner-to-corner axis, -0.5..0.5).
Per clip, a swapped frame's measures against its base frame's: the median absolute difference over
the base clip's own spread (well under 1 when the swap keeps the expression) and the correlation
(near 1). Flicker: how much the face region changes from one frame to the next once consecutive
frames are aligned by the base's landmarks, swapped over base (1.0: as steady as the base).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from implicit_deepfake.data.face_tracking import similarity_fit
from implicit_deepfake.faces.landmarks import EYE_CORNERS, EYE_LIDS, IRISES, face_oval_indices

_OUTER_CORNERS = (33, 263)
_BROWS = ((70, 63, 105, 66, 107), (300, 293, 334, 296, 336))  # upper brow edge, image left then right
_LIPS_INNER = (13, 14)  # upper, lower inner lip midpoints
_MOUTH_CORNERS = (61, 291)
MEASURES = (
    "mouth_opening",
    "mouth_width",
    "eye_opening_left",
    "eye_opening_right",
    "brow_height",
    "gaze_x",
)


def _distance(xy: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(xy[a] - xy[b]))


def _line_distance(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Distances of (P, 2) points from the line through start and end."""
    axis = (end - start) / np.linalg.norm(end - start)
    offset = points - start
    return np.abs(offset[:, 0] * axis[1] - offset[:, 1] * axis[0])


def _gaze(xy: np.ndarray, eye: int) -> float:
    """Where the iris centre lies between its eye's corners: -0.5 at the image-left corner, 0.5 at the
    image-right one (so both eyes read the same for one gaze, and a mirror image negates it)."""
    left, right = (xy[i] for i in sorted(EYE_CORNERS[eye], key=lambda i: xy[i, 0]))
    iris = xy[IRISES[eye][0]]
    axis = right - left
    return float(np.dot(iris - left, axis) / np.dot(axis, axis) - 0.5)


def expression_measures(landmarks: np.ndarray) -> dict[str, float]:
    """The MEASURES of one face: landmarks (478, 2+) from a `refine=True` landmarker (pixels)."""
    if len(landmarks) < 478:
        raise ValueError(f"expression_measures needs the 478-point mesh with irises, got {len(landmarks)} points")
    xy = landmarks[:, :2].astype(np.float64)
    scale = _distance(xy, *_OUTER_CORNERS)
    brows = [
        float(_line_distance(xy[list(brow)], xy[corners[0]], xy[corners[1]]).mean())
        for brow, corners in zip(_BROWS, EYE_CORNERS)
    ]
    return {
        "mouth_opening": _distance(xy, *_LIPS_INNER) / scale,
        "mouth_width": _distance(xy, *_MOUTH_CORNERS) / scale,
        "eye_opening_left": _distance(xy, *EYE_LIDS[0]) / scale,
        "eye_opening_right": _distance(xy, *EYE_LIDS[1]) / scale,
        "brow_height": float(np.mean(brows)) / scale,
        "gaze_x": float(np.mean([_gaze(xy, eye) for eye in (0, 1)])),
    }


def clip_agreement(base: Sequence[dict | None], swapped: Sequence[dict | None]) -> dict[str, dict | None]:
    """Per measure over the frames measured in both: {"difference_over_spread": median |swapped -
    base| over the base's standard deviation, "correlation": Pearson's r, "frames"}; None where fewer
    than 3 frames or the base does not vary."""
    pairs = [(b, s) for b, s in zip(base, swapped) if b is not None and s is not None]
    report: dict[str, dict | None] = {}
    for key in MEASURES:
        b = np.array([p[0][key] for p in pairs])
        s = np.array([p[1][key] for p in pairs])
        spread = float(b.std()) if len(b) else 0.0
        if len(b) < 3 or spread < 1e-9 or float(s.std()) < 1e-12:
            report[key] = None
            continue
        report[key] = {
            "difference_over_spread": round(float(np.median(np.abs(s - b))) / spread, 4),
            "correlation": round(float(np.corrcoef(b, s)[0, 1]), 4),
            "frames": len(b),
        }
    return report


def _face_mask(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(landmarks[face_oval_indices(), :2] - 0.5).astype(np.int32)], (1,))
    return mask.astype(bool)


def _aligned_change(previous: np.ndarray, current: np.ndarray, from_xy: np.ndarray, to_xy: np.ndarray) -> np.ndarray:
    """|current - previous warped onto current| per pixel (grey levels), previous aligned by the
    similarity taking its landmarks `from_xy` onto `to_xy`."""
    scale, rotation, shift = similarity_fit(from_xy, to_xy)
    matrix = np.hstack([scale * rotation, (shift + scale * rotation @ [0.5, 0.5] - [0.5, 0.5])[:, None]])
    warped = cv2.warpAffine(
        previous, matrix, current.shape[1::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    return np.abs(
        cv2.cvtColor(current, cv2.COLOR_RGB2GRAY).astype(np.float32) - cv2.cvtColor(warped, cv2.COLOR_RGB2GRAY)
    )


@dataclass(frozen=True)
class FramePair:
    """Two consecutive frames of a clip, base and swapped (HxWx3 uint8), and the base's (468+, 2+) mesh
    landmarks in each."""

    base: tuple[np.ndarray, np.ndarray]
    swapped: tuple[np.ndarray, np.ndarray]
    landmarks: tuple[np.ndarray, np.ndarray]


def flicker(pairs: Iterable[FramePair]) -> float | None:
    """How unsteady the swapped face is from frame to frame, relative to its base: the mean aligned
    change inside the face (its oval) over the pairs, swapped over base. Both clips are aligned by
    the base's landmarks, so a swapped face that stays put on the head is as steady as the head.
    None without a pair."""
    change: dict[str, list[float]] = {"base": [], "swapped": []}
    for pair in pairs:
        before, after = (lm[:468, :2].astype(np.float64) for lm in pair.landmarks)
        inside = _face_mask(pair.landmarks[1], pair.base[1].shape[:2])
        if not inside.any():
            continue
        for name, (previous, current) in (("base", pair.base), ("swapped", pair.swapped)):
            change[name].append(float(_aligned_change(previous, current, before, after)[inside].mean()))
    if not change["base"]:
        return None
    return round(float(np.mean(change["swapped"]) / max(float(np.mean(change["base"])), 1e-6)), 4)
