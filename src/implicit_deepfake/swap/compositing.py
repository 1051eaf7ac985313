"""Seam-free compositing of a warped face into a frame: what a person sees as a pasted mask is
removed here, in four steps, each its own function.

- `skin_weight`: which of the target photo's pixels are its skin. A Gaussian in LAB fitted on the
  target's own cheeks and nose; the eyes, brows, nose and lips are always kept. Hair over the
  forehead, glasses rims and background beside a cheek fall out, and the frame shows there.
- `silhouette_alpha`: the blend mask from the face mesh's silhouette in the frame (every
  front-facing triangle, edge-on ones included, smoothed), feathered by distance to its edge, so
  no triangle edge or dropped triangle shows in it; the frame's open mouth is cut out softly.
- `ColourTransfer`: Reinhard's LAB mean/std transfer, fitted on one frame or pooled over a whole
  sequence (one transfer for every frame: a video does not flicker, views agree).
- `pyramid_blend`: Burt and Adelson's multi-band blend, so low frequencies (shading, skin tone)
  mix over a wide band and fine detail over a narrow one.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from scipy.ndimage import binary_fill_holes

# Mesh landmarks on the cheeks and the nose: where the target's skin colour is sampled.
SKIN_SAMPLES = (50, 280, 205, 425, 187, 411, 117, 346, 101, 330, 36, 266, 4, 5, 195, 197, 45, 275)


@lru_cache(maxsize=1)
def feature_regions() -> list[np.ndarray]:
    """Mesh indices of each eye, each brow, the nose and the lips (mediapipe's connection sets):
    kept whatever their colour. Each region is its own hull, so glasses rims between them are not."""
    import mediapipe as mp

    mesh = mp.solutions.face_mesh
    sets = (
        mesh.FACEMESH_LEFT_EYE,
        mesh.FACEMESH_RIGHT_EYE,
        mesh.FACEMESH_LEFT_EYEBROW,
        mesh.FACEMESH_RIGHT_EYEBROW,
        mesh.FACEMESH_NOSE,
        mesh.FACEMESH_LIPS,
    )
    return [np.unique(np.array(list(edges))) for edges in sets]


def face_size(landmarks: np.ndarray) -> float:
    """The face's size in pixels: the larger side of its landmarks' box."""
    return float(np.max(np.ptp(landmarks[:, :2], 0)))


def skin_weight(image: np.ndarray, landmarks: np.ndarray, threshold: tuple[float, float] = (2.5, 4.0)) -> np.ndarray:
    """HxW float32 in [0, 1]: how surely each pixel of `image` (HxWx3 uint8) is the face's skin.

    LAB Mahalanobis distance to the skin samples' Gaussian: 1 below threshold[0] standard deviations,
    0 beyond threshold[1]; 1 inside each feature's hull (eyes, brows, nose, lips) and in holes the
    skin encloses. The skin region is then opened (specks), eroded (its edge moves inside the skin,
    so no hair bleeds in through the soft edge) and smoothed, so it never cuts a hard edge."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    size = face_size(landmarks)
    radius = max(1, round(0.03 * size))
    samples = []
    for x, y in landmarks[list(SKIN_SAMPLES), :2].astype(int):
        patch = lab[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
        samples.append(patch.reshape(-1, 3))
    samples = np.concatenate(samples)
    mean = samples.mean(0)
    # A floor on each spread (uint8 LAB units): a flat-lit photo must not call its own shading "not skin".
    covariance = np.cov(samples.T) + np.diag([36.0, 4.0, 4.0])
    offset = lab.reshape(-1, 3) - mean
    distance = np.sqrt(np.einsum("ni,ij,nj->n", offset, np.linalg.inv(covariance), offset)).reshape(image.shape[:2])
    low, high = threshold
    weight = np.clip((high - distance) / (high - low), 0.0, 1.0).astype(np.float32)
    features = np.zeros(image.shape[:2], np.uint8)
    for region in feature_regions():
        cv2.fillConvexPoly(features, cv2.convexHull(np.round(landmarks[region, :2]).astype(np.int32)), 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    weight = cv2.morphologyEx(weight, cv2.MORPH_OPEN, kernel)
    # Hair, rims and background reach in from the face's border; what skin encloses is the face's own
    # (a shadow under an eye, a dark eye itself), and stays.
    weight = np.maximum(weight, binary_fill_holes(weight > 0.5).astype(np.float32))
    weight = cv2.erode(weight, kernel)
    weight = np.maximum(weight, cv2.dilate(features, kernel).astype(np.float32))
    return cv2.GaussianBlur(weight, (0, 0), max(0.5, 0.02 * size))


def silhouette_alpha(
    landmarks: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, int],
    feather: float,
    mouth: np.ndarray | None = None,
    mouth_feather: float = 0.01,
) -> np.ndarray:
    """HxW float32 blend weight of the face whose mesh is `landmarks` (P, 2+) in a frame of `shape`.

    The union of the front-facing (counter-clockwise) `triangles`, smoothed by a blur of 1.5% of the
    face size and thresholded, then ramped from 0 on its edge to 1 at `feather` x face size inside
    (a smoothstep of the distance to the edge). `mouth` (M, 2): a polygon whose inside keeps the
    frame (the open mouth), cut out with a `mouth_feather` x face size soft edge."""
    xy = landmarks[:, :2]
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    front = triangles[0.5 * np.cross(b - a, c - a) > 0]
    mask = np.zeros(shape, np.uint8)
    for tri in np.round((xy[front] - 0.5) * 16).astype(np.int32):
        cv2.fillConvexPoly(mask, tri, 255, lineType=cv2.LINE_8, shift=4)
    size = face_size(landmarks)
    smooth = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.015 * size))
    inside = (smooth > 0.5).astype(np.uint8)
    if not inside.any():
        return np.zeros(shape, np.float32)
    ramp = np.clip(cv2.distanceTransform(inside, cv2.DIST_L2, 5) / max(1.5, feather * size), 0.0, 1.0)
    alpha = (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)
    if mouth is not None:
        hole = np.zeros(shape, np.float32)
        cv2.fillPoly(hole, [np.round((mouth - 0.5) * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_AA, shift=4)
        hole = cv2.GaussianBlur(hole, (0, 0), max(0.5, mouth_feather * size))
        alpha *= 1.0 - np.clip(2.0 * hole, 0.0, 1.0)  # the frame's mouth stays whole to its edge
    return alpha


@dataclass(frozen=True)
class ColourTransfer:
    """Reinhard transfer in LAB: (lab - source_mean) * gain + target_mean, gain bounded."""

    source_mean: np.ndarray
    gain: np.ndarray
    target_mean: np.ndarray

    @classmethod
    def fit(cls, source_lab: np.ndarray, target_lab: np.ndarray) -> ColourTransfer:
        """source_lab, target_lab: (K, 3) float32 LAB samples of the warped face and of the frame."""
        gain = (target_lab.std(0) + 1e-3) / (source_lab.std(0) + 1e-3)
        # Bounded: a near-flat frame face (a plain render) must not flatten or blow up the target.
        return cls(source_lab.mean(0), np.clip(gain, 0.5, 2.0), target_lab.mean(0))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> HxWx3 uint8."""
        lab = to_lab(rgb)
        out = cv2.cvtColor(
            ((lab - self.source_mean) * self.gain + self.target_mean).astype(np.float32), cv2.COLOR_LAB2RGB
        )
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def record(self) -> dict:
        return {k: np.round(getattr(self, k), 3).tolist() for k in ("source_mean", "gain", "target_mean")}


def to_lab(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxWx3 float32 LAB (L in [0, 100])."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def blend_levels(size: float) -> int:
    """Pyramid levels for a face of `size` px: the coarsest band reaches ~3% of the face beyond its edge
    per level's doubling (about 13% in all), so the blend stays near the face."""
    return int(np.clip(np.round(np.log2(max(1.0, 0.03 * size))), 1, 5))


def pyramid_blend(foreground: np.ndarray, background: np.ndarray, alpha: np.ndarray, levels: int) -> np.ndarray:
    """Laplacian-pyramid blend of two HxWx3 images under the HxW weight `alpha` -> HxWx3 float32.

    Where `alpha` and its blurred levels are 0 the result is `background` exactly (up to float
    rounding); where all are 1 it is `foreground`."""
    fg, bg, weight = [foreground.astype(np.float32)], [background.astype(np.float32)], [alpha.astype(np.float32)]
    for _ in range(levels):
        fg.append(cv2.pyrDown(fg[-1]))
        bg.append(cv2.pyrDown(bg[-1]))
        weight.append(cv2.pyrDown(weight[-1]))
    out = weight[-1][..., None] * fg[-1] + (1.0 - weight[-1][..., None]) * bg[-1]
    for k in range(levels - 1, -1, -1):
        size = fg[k].shape[1::-1]
        detail_fg = fg[k] - cv2.pyrUp(fg[k + 1], dstsize=size)
        detail_bg = bg[k] - cv2.pyrUp(bg[k + 1], dstsize=size)
        out = cv2.pyrUp(out, dstsize=size) + weight[k][..., None] * detail_fg + (1.0 - weight[k][..., None]) * detail_bg
    return out
