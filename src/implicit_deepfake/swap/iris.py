"""The frame's gaze in the target's eyes: the frame's irises kept, in the target's eye colour.

A video's swapped frames keep what their eyes do (`keep_eyes`). Keeping the whole eyeball inside the
lids keeps the frame person's eyes too: their whites, lid margins and lash line, and their iris colour,
which face recognition reads as identity (on real clips, dlib: the photo's whole eyes brought frames
0.015 nearer the target, and made the gaze the photo's). So where the mesh has irises (the refined
478-point mesh) and the photo shows its own eyes, only each iris is kept, a disc of KEPT_RADIUS iris
radii inside the lids, and the target's eye is drawn around it; and the kept iris takes the photo's
colour ring by ring, from the pupil out to the rim: each pixel moves by the photo's colour at its
distance from the iris centre less the frame's own there, so the pupil stays dark, the limbal ring
stays, and the frame's texture and glints ride on top.
"""

from __future__ import annotations

import cv2
import numpy as np

from implicit_deepfake.avatar.mesh import smoothstep
from implicit_deepfake.faces.landmarks import EYE_OUTLINES, IRISES
from implicit_deepfake.swap.compositing import to_lab

RINGS = 6  # rings of the iris, from its centre (the pupil) to its rim
REACH = 1.15  # the colour change fades out from the rim to this many iris radii (the rim's blur)
# The frame's own pixels kept around each iris centre, in iris radii: the iris and a little white, so no
# rim of the photo's iris (drawn there by the warp, of another size) shows around the frame's.
KEPT_RADIUS = 1.35
DARKER = 0.85  # an iris is at most this share of the face's median lightness (else: a lid, painted skin)
_MIN_PIXELS = 3  # a ring measured on fewer visible pixels than this is taken from its neighbours
_MIN_RINGS = 4  # an eye with fewer rings measured (shut) has no colour to give or take
# A ring's colour is this percentile of its pixels': below a glint (a photo's catch-light in the pupil,
# a few of its pixels, would turn the frame's pupils grey under the median); the same for both eyes compared.
DARK_SHARE = 30
SEEN_SHARE = 0.25  # the photo's iris ring is measured where this share of it shows (not a slit of a shut eye)


def _iris(landmarks: np.ndarray, eye: int) -> tuple[np.ndarray, float]:
    """One eye's iris centre (2,) and radius in pixels (the mean distance of its four rim points)."""
    points = landmarks[list(IRISES[eye]), :2].astype(np.float64)
    return points[0], float(np.linalg.norm(points[1:] - points[0], axis=1).mean())


def kept_eye(landmarks: np.ndarray, outline: tuple[int, ...], iris_only: bool) -> np.ndarray:
    """(K, 2) the polygon of the frame's eye that stays the frame's: with `iris_only` (the photo's own eye
    is drawn around it) and where the mesh `landmarks` (P, 2+) has irises, its iris (KEPT_RADIUS) inside
    the lids' `outline` (no points where none of it shows); else the whole eye inside the lids."""
    lids = landmarks[list(outline), :2].astype(np.float32)
    if not iris_only or len(landmarks) < 478:
        return lids
    centre, radius = _iris(landmarks, EYE_OUTLINES.index(outline))
    angles = np.linspace(0.0, 2.0 * np.pi, 24, endpoint=False)
    disc = (centre + KEPT_RADIUS * radius * np.stack([np.cos(angles), np.sin(angles)], 1)).astype(np.float32)
    area, clipped = cv2.intersectConvexConvex(disc, cv2.convexHull(lids)[:, 0])
    return clipped[:, 0] if area > 0 and clipped is not None else np.zeros((0, 2), np.float32)


def _eye_pixels(rgb: np.ndarray, landmarks: np.ndarray, eye: int) -> tuple[np.ndarray, np.ndarray, tuple] | None:
    """One eye's pixels of `rgb` (HxWx3 uint8) within REACH iris radii of the iris centre: their radius in
    iris radii, their LAB, and where they lie (rows, cols, the lids' polygon's weight there). None for an
    iris under a pixel."""
    centre, radius = _iris(landmarks, eye)
    if radius < 1.0:
        return None
    height, width = rgb.shape[:2]
    top, left = (max(0, int(np.floor(c - REACH * radius))) for c in centre[::-1])
    bottom = min(height, int(np.ceil(centre[1] + REACH * radius)) + 1)
    right = min(width, int(np.ceil(centre[0] + REACH * radius)) + 1)
    if bottom <= top or right <= left:
        return None
    lids = np.zeros((bottom - top, right - left), np.float32)
    outline = np.round((landmarks[list(EYE_OUTLINES[eye]), :2] - [left, top] - 0.5) * 16).astype(np.int32)
    cv2.fillPoly(lids, [outline], (1.0,), lineType=cv2.LINE_AA, shift=4)
    ys, xs = np.mgrid[top:bottom, left:right] + 0.5
    r = np.hypot(xs - centre[0], ys - centre[1]) / radius
    return r, to_lab(rgb[top:bottom, left:right]), (slice(top, bottom), slice(left, right), lids)


def _profile(r: np.ndarray, lab: np.ndarray, seen_share: float = 0.0, radius: float = 0.0) -> np.ndarray | None:
    """(RINGS, 3) the LAB per ring (each channel's DARK_SHARE percentile) of pixels at radii `r` (N,),
    in iris radii, with colours `lab` (N, 3); rings seen too little taken from their neighbours; None
    when most rings are unseen. A ring is seen on _MIN_PIXELS pixels and on `seen_share` of its area
    for an iris of `radius` pixels."""
    ring = np.floor(r * RINGS).astype(int)
    rows = np.full((RINGS, 3), np.nan)
    for k in range(1, RINGS):  # the centre ring, a catch-light's place more often than not, takes the next's
        area = np.pi * radius**2 * ((k + 1) ** 2 - k**2) / RINGS**2
        if (ring == k).sum() >= max(_MIN_PIXELS, seen_share * area):
            rows[k] = np.percentile(lab[ring == k], DARK_SHARE, axis=0)
    seen = ~np.isnan(rows[:, 0])
    if seen.sum() < _MIN_RINGS:
        return None
    rings = np.arange(RINGS)
    return np.stack([np.interp(rings, rings[seen], rows[seen, c]) for c in range(3)], 1)


def iris_colour(rgb: np.ndarray, landmarks: np.ndarray, usable: np.ndarray | None = None) -> np.ndarray | None:
    """(RINGS, 3) the LAB colour of a photo's irises ring by ring (both eyes pooled), or None where the
    mesh has no irises (468 points), the eyes show too little of them (shut), they are covered (`usable`,
    HxW in [0, 1], under one half: behind a dark lens) or what shows is no iris (not darker than the
    face: a lid). rgb: HxWx3 uint8 photo; landmarks: its (478, 2+) refined mesh."""
    if len(landmarks) < 478:
        return None
    radii, colours, area = [], [], 0.0
    for eye in range(len(IRISES)):
        pixels = _eye_pixels(rgb, landmarks, eye)
        if pixels is None:
            continue
        r, colour, (rows, cols, lids) = pixels
        seen = (lids > 0.5) & (r < 1.0) & (True if usable is None else usable[rows, cols] > 0.5)
        radii.append(r[seen])
        colours.append(colour[seen])
        area += _iris(landmarks, eye)[1] ** 2
    if not radii:
        return None
    profile = _profile(np.concatenate(radii), np.concatenate(colours), SEEN_SHARE, np.sqrt(area))
    if profile is None:
        return None
    (x0, y0), (x1, y1) = np.floor(landmarks[:, :2].min(0)).astype(int), np.ceil(landmarks[:, :2].max(0)).astype(int)
    face = float(np.median(to_lab(rgb[max(0, y0) : y1, max(0, x0) : x1])[..., 0]))
    return profile if profile[RINGS // 2 :, 0].mean() < DARKER * face else None


def recolour_irises(rgb: np.ndarray, landmarks: np.ndarray, colour: np.ndarray, where: np.ndarray) -> np.ndarray:
    """`rgb` (HxWx3 uint8) with each iris of the face whose refined mesh is `landmarks` (478, 2+) moved
    ring by ring from its own colour to `colour` ((RINGS, 3) LAB, `iris_colour`'s), weighted by `where`
    (HxW in [0, 1]: the frame's kept eyes) and faded out past the rim. An eye showing too little of its
    iris (shut) is left as it is."""
    if len(landmarks) < 478:
        return rgb
    out = rgb.copy()
    centres = (np.arange(RINGS) + 0.5) / RINGS
    for eye in range(len(IRISES)):
        pixels = _eye_pixels(rgb, landmarks, eye)
        if pixels is None:
            continue
        r, eye_lab, (rows, cols, lids) = pixels
        seen = (lids > 0.5) & (r < 1.0)
        own = _profile(r[seen], eye_lab[seen])
        if own is None:
            continue
        change = np.stack([np.interp(r, centres, colour[:, c] - own[:, c]) for c in range(3)], -1)
        weight = (smoothstep(REACH, 1.0, r) * lids * where[rows, cols])[..., None]
        moved = cv2.cvtColor((eye_lab + weight * change).astype(np.float32), cv2.COLOR_LAB2RGB)
        out[rows, cols] = np.where(weight > 0, np.clip(moved * 255.0 + 0.5, 0, 255), out[rows, cols]).astype(np.uint8)
    return out
