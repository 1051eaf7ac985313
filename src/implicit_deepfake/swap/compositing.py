"""Seam-free compositing of a warped face into a frame: what a person sees as a pasted mask is
removed here, each step its own function. The target photo's skin, painted over where hair, rims or
background cover it, comes from `target_skin.py`.

- `silhouette_alpha`: the blend mask from the face mesh's silhouette in the frame (every
  front-facing triangle, edge-on ones included, smoothed), feathered by distance to its edge, so
  no triangle edge or dropped triangle shows in it; the frame's open mouth and its eyes (inside the
  lids: its gaze) are cut out softly, so they stay the frame's.
- `relight`: each frame's own light on the target's skin, a ratio of smoothed luminances (the
  frame's shading over the target photo's), so a head turning towards a lamp brightens and the
  photo's own shadows do not travel with its face; `lay_brows`: the frame's brows on a target whose
  own hang under a fringe.
- `ColourTransfer`: Reinhard's LAB mean/std transfer, fitted on one frame or pooled over a whole
  sequence (one transfer for every frame: a video does not flicker, views agree).
- `pyramid_blend`: Burt and Adelson's multi-band blend, so low frequencies (shading, skin tone)
  mix over a wide band and fine detail over a narrow one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from implicit_deepfake.faces.landmarks import face_oval_indices
from implicit_deepfake.swap.warp import signed_areas, triangles_mask

# ColourTransfer's gain bounds per LAB channel (lightness, a, b).
_GAIN_LOW = np.array([0.67, 0.5, 0.5])
_GAIN_HIGH = np.array([1.5, 2.0, 2.0])


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


def disk(radius: float) -> np.ndarray:
    """An elliptic structuring element of `radius` pixels (rounded, at least 1) for cv2's morphology."""
    size = 2 * max(1, round(radius)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def hull_mask(points: np.ndarray, shape: tuple[int, ...], convex: bool = True) -> np.ndarray:
    """HxW uint8, 1 inside the polygon (its convex hull by default) through `points` (P, 2)."""
    mask = np.zeros(shape, np.uint8)
    polygon = np.round(points).astype(np.int32)
    if convex:
        cv2.fillConvexPoly(mask, cv2.convexHull(polygon), (1,))
    else:
        cv2.fillPoly(mask, [polygon], (1,))
    return mask


def silhouette_alpha(
    landmarks: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, ...],
    feather: float,
    keep: Sequence[np.ndarray] = (),
    keep_feather: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """HxW float32 blend weight of the face whose mesh is `landmarks` (P, 2+) in a frame of `shape`.

    The union of the front-facing (counter-clockwise) `triangles`, smoothed by a blur of 1.5% of the
    face size and thresholded, then ramped from 0 on its edge to 1 at `feather` x face size inside
    (a smoothstep of the distance to the edge). `keep`: polygons (M, 2) whose inside keeps the frame
    (the open mouth, the eyes), cut out with a `keep_feather` x face size soft edge. Returns the
    alpha and the kept regions' own soft weight (HxW float32; the frame is laid over the blend there,
    so no band of the blend reaches into them)."""
    xy = landmarks[:, :2]
    mask = triangles_mask(xy, triangles[signed_areas(xy, triangles) > 0], shape)
    size = face_size(landmarks)
    smooth = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), max(0.5, 0.015 * size))
    inside = (smooth > 0.5).astype(np.uint8)
    hole: np.ndarray = np.zeros(shape, np.float32)
    if not inside.any():
        return hole, hole
    ramp = np.clip(cv2.distanceTransform(inside, cv2.DIST_L2, 5) / max(1.5, feather * size), 0.0, 1.0)
    alpha = (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)
    if len(keep):
        hole = np.zeros(shape, np.float32)
        polygons = [np.round((polygon - 0.5) * 16).astype(np.int32) for polygon in keep]
        cv2.fillPoly(hole, polygons, (1.0,), lineType=cv2.LINE_AA, shift=4)
        hole = np.clip(2.0 * cv2.GaussianBlur(hole, (0, 0), max(0.5, keep_feather * size)), 0.0, 1.0)
        alpha *= 1.0 - hole  # what the frame keeps stays whole to its edge
    return alpha, hole


def _eyes_brows_lips(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """HxW uint8, 1 inside the hulls of the eyes, the brows and the lips (not the nose, which is skin)
    of the face whose mesh is `landmarks` (P, 2+)."""
    regions = [region for k, region in enumerate(feature_regions()) if k != 4]
    return np.bitwise_or.reduce([hull_mask(landmarks[region, :2], shape) for region in regions])


def skin_only(weight: np.ndarray, landmarks: np.ndarray, grow: float = 0.03) -> np.ndarray:
    """HxW bool: where `weight` (the blend alpha) is, less the eyes, brows and lips of the face whose
    mesh is `landmarks` (their hulls grown by `grow` x face size): the skin, whose light is shading."""
    grown_features = cv2.dilate(_eyes_brows_lips(landmarks, weight.shape), disk(grow * face_size(landmarks)))
    return (weight > 0.5) & (grown_features == 0)  # surely the target's skin: its soft edge is often hair


def relight(face: np.ndarray, frame: np.ndarray, skin: np.ndarray, sigma: float, limit: float = 2.0) -> np.ndarray:
    """`face` (HxWx3 uint8, the warped, colour-matched target) with the frame's shading instead of its own.

    The gain per pixel is the frame's luminance over the face's, each a Gaussian mean (`sigma`
    pixels) over the `skin` (HxW bool, `skin_only`) alone: light and shadow wider than sigma move from
    the frame to the face, detail finer than it (the target's pores, the frame's wrinkles) does not,
    and neither do features (brows, eyes, lips), whose darkness is not light. Bounded to
    [1/limit, limit], so a dark hole in either never blows up the other."""
    mask = skin.astype(np.float32)
    blur = lambda image: cv2.GaussianBlur(image, (0, 0), sigma)  # noqa: E731
    luminance = lambda rgb: cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1.0  # noqa: E731
    # Normalised convolution: both means over the skin only; 1 where no skin is near.
    gain = blur(luminance(frame) * mask) / np.maximum(blur(luminance(face) * mask), 1e-3)
    gain = np.where(blur(mask) > 1e-3, np.clip(gain, 1.0 / limit, limit), 1.0)
    return np.clip(face.astype(np.float32) * gain[..., None] + 0.5, 0, 255).astype(np.uint8)


# The frame's darkest brow pixels (this percentile) take the full tint, the rest their share of it: the brow
# keeps its hairs' texture (at the 90th a tenth of it saturated into one flat fill, a drawn-on brow).
_BROW_FULL = 99
# How much of the tint's colour a brow takes: the tint is read off the photo's hair, whose lit strands
# are more saturated than a brow's sparse hairs on skin (in full, a rust-orange brow).
_BROW_SATURATION = 0.5


def lay_brows(face: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """`face` (HxWx3 uint8, the warped target) with the frame's brows on it, in the target's colour:
    inside each brow's hull (grown by 4% of the face size, soft-edged), how much darker the frame is
    than its own skin around the brows (a Gaussian mean outside the brows' and eyes' hulls), scaled so
    the brows' darkest hundredth is 1, blends the face towards the face times `tint` (3,): the target's
    brow colour over its skin (`skin_fill`), half-way to grey (_BROW_SATURATION). The frame's brow shape,
    texture and movement, the target's hair colour, and none of the frame's skin around them."""
    size = face_size(landmarks)
    # Only a box around the eyes and brows is touched: wide enough for the skin's blur (3 sigma)
    box, corner = _box(landmarks[np.concatenate(feature_regions()[:4]), :2], 0.25 * size)
    out = face.copy()
    out[box] = _lay_brows_in(face[box], frame[box], landmarks[:, :2] - corner, size, tint)
    return out


def _box(points: np.ndarray, pad: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """The rows and columns of the box around `points` (P, 2) grown by `pad` pixels (clipped at the
    image's top left; numpy clips the rest), and its top-left corner (x, y)."""
    (x0, y0), (x1, y1) = np.maximum(points.min(0) - pad, 0).astype(int), (points.max(0) + pad).astype(int)
    return (slice(y0, y1 + 1), slice(x0, x1 + 1)), np.array([x0, y0])


def _lay_brows_in(
    face: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, size: float, tint: np.ndarray
) -> np.ndarray:
    """lay_brows on a crop (`landmarks` in its pixels, `size` the face's)."""
    hulls = [hull_mask(landmarks[r], face.shape[:2]) for r in feature_regions()[:4]]  # eyes, brows
    brows = np.bitwise_or.reduce(hulls[2:])
    region = cv2.dilate(brows, disk(0.04 * size)).astype(np.float32)
    known = (cv2.dilate(np.bitwise_or.reduce(hulls), disk(0.02 * size)) == 0).astype(np.float32)
    blur = lambda image: cv2.GaussianBlur(image, (0, 0), max(1.0, 0.05 * size))  # noqa: E731
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1.0
    skin = blur(grey * known) / np.maximum(blur(known), 1e-3)
    depth = np.clip(1.0 - grey / skin, 0.0, 1.0)
    full = max(float(np.percentile(depth[brows > 0], _BROW_FULL)) if brows.any() else 0.0, 0.1)
    soft = cv2.GaussianBlur(region, (0, 0), max(0.5, 0.01 * size))
    amount = (np.clip(depth / full, 0.0, 1.0) * soft)[..., None]
    tint = np.asarray(tint, np.float32)
    tint = tint + (1.0 - _BROW_SATURATION) * (tint.mean() - tint)
    gain = 1.0 - amount * (1.0 - tint)
    return np.clip(face.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def is_grey(image: np.ndarray, where: np.ndarray, max_chroma: float = 5.0) -> bool:
    """Whether `image` (HxWx3 uint8) is black and white where `where` (HxW bool) is: its median LAB
    chroma is below `max_chroma` (skin has 15-25)."""
    lab = to_lab(image)[where]
    return bool(len(lab)) and float(np.median(np.hypot(lab[:, 1], lab[:, 2]))) < max_chroma


def frame_chroma(face: np.ndarray, frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """A black-and-white face (HxWx3 uint8) coloured by the frame's own chroma: inside the eyes',
    brows' and lips' hulls (grown by 2% of the face size, soft-edged) the frame's at each pixel, so
    its brows take brow colour and its lips lip colour (one transfer of means would give every feature
    the skin's hue); elsewhere the frame's chroma under a median over 8% of the face size (hair and
    background outside the face oval left out), so thin lines of colour on the frame's skin (glasses
    rims, a wrinkle's shade) do not draw themselves across the target's face. `landmarks`: the face's
    mesh in the frame; only a box around it (as wide as the blend reaches) is coloured."""
    size = face_size(landmarks)
    box, corner = _box(landmarks[:, :2], 0.2 * size)
    out = face.copy()
    out[box] = _frame_chroma_in(face[box], frame[box], landmarks[:, :2] - corner, size)
    return out


def _frame_chroma_in(face: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, size: float) -> np.ndarray:
    """frame_chroma on a crop (`landmarks` in its pixels, `size` the face's)."""
    lab, frame_lab = to_lab(face), to_lab(frame)
    grown = cv2.dilate(_eyes_brows_lips(landmarks, face.shape[:2]), disk(0.02 * size)).astype(np.float32)
    exact = cv2.GaussianBlur(grown, (0, 0), max(0.5, 0.01 * size))[..., None]
    chroma = np.clip(frame_lab[..., 1:] + 128.0, 0, 255).astype(np.uint8)  # cv2's wide median wants 8 bits
    oval = hull_mask(landmarks[face_oval_indices()], face.shape[:2], convex=False) > 0
    if oval.any():
        chroma[~oval] = np.median(chroma[oval], 0)  # hair and background never tint the face's edge
    width = 2 * max(1, round(0.04 * size)) + 1
    smooth = np.dstack([cv2.medianBlur(np.ascontiguousarray(chroma[..., c]), width) for c in (0, 1)])
    lab[..., 1:] = exact * frame_lab[..., 1:] + (1.0 - exact) * (smooth - np.float32(128.0))
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2RGB) * 255.0 + 0.5, 0, 255).astype(np.uint8)


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
        # Bounded: a near-flat frame face (a plain render) must not flatten the target, nor a contrasty
        # frame blow up the photo's faint shadows and freckles into dark blotches (the frame's own light
        # comes from `relight`, so lightness is matched by its mean, its spread only a little).
        return cls(source_lab.mean(0), np.clip(gain, _GAIN_LOW, _GAIN_HIGH), target_lab.mean(0))

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> HxWx3 uint8."""
        lab = to_lab(rgb)
        out = cv2.cvtColor(
            ((lab - self.source_mean) * self.gain + self.target_mean).astype(np.float32), cv2.COLOR_LAB2RGB
        )
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)

    @property
    def exposure(self) -> float:
        """The frame's skin lightness over the photo's: what the photo's other colours (an iris, far from
        the skin, which the gain would push further out) are scaled by to sit in the frame's light."""
        return float(self.target_mean[0]) / max(float(self.source_mean[0]), 1.0)

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
    fg: list[np.ndarray] = [foreground.astype(np.float32)]
    bg: list[np.ndarray] = [background.astype(np.float32)]
    weight: list[np.ndarray] = [alpha.astype(np.float32)]
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
