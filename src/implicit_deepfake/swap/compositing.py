"""Seam-free compositing of a warped face into a frame: what a person sees as a pasted mask is
removed here, in four steps, each its own function.

- `skin_weight`: which of the target photo's pixels are its skin. Gaussians in LAB fitted on the
  target's own cheeks and nose, and on its whole face below the eyes (its shaded side, its blush);
  the eyes, brows, nose and lips are always kept. `skin_fill` paints hair over the forehead,
  glasses rims and background beside a cheek over with the skin around them (the frame's own
  forehead, wrinkles and glasses would show through otherwise), and leaves out only eyes covered
  by dark lenses, and their brows, where the frame keeps its own.
- `silhouette_alpha`: the blend mask from the face mesh's silhouette in the frame (every
  front-facing triangle, edge-on ones included, smoothed), feathered by distance to its edge, so
  no triangle edge or dropped triangle shows in it; the frame's open mouth and its eyes (inside the
  lids: its gaze) are cut out softly, so they stay the frame's.
- `relight`: each frame's own light on the target's skin, a ratio of smoothed luminances (the
  frame's shading over the target photo's), so a head turning towards a lamp brightens and the
  photo's own shadows do not travel with its face.
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
from scipy.ndimage import binary_fill_holes

from implicit_deepfake.faces.landmarks import face_oval_indices

# ColourTransfer's gain bounds per LAB channel (lightness, a, b).
_GAIN_LOW = np.array([0.67, 0.5, 0.5])
_GAIN_HIGH = np.array([1.5, 2.0, 2.0])
# A feature whose brightest tenth is darker than this share of the skin's lightness is covered (dark lenses).
_COVERED_FEATURE = 0.45
# The share of the lower face's pixels, nearest its own skin Gaussian, that the Gaussian is refitted on.
_SKIN_TRIM = 0.6
_FOREHEAD_BAND = 0.08  # the forehead's band above a brow that tells a fringe over it, in face sizes
_LOWER_LIDS = (145, 374)  # mesh landmarks: the middle of each lower eyelid
_BROW_TINT = 0.45  # a brow's colour over its skin when no hair shows in its hull to take it from
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


def _skin_gaussian(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse covariance of LAB skin samples (N, 3), with a floor on each spread (uint8 LAB
    units): a flat-lit photo must not call its own shading "not skin"."""
    covariance = np.cov(samples.T) + np.diag([36.0, 4.0, 4.0])
    return samples.mean(0), np.linalg.inv(covariance)


def _mahalanobis(lab: np.ndarray, mean: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    offset = lab - mean
    return np.sqrt(np.einsum("...i,ij,...j->...", offset, inverse, offset))


def skin_weight(image: np.ndarray, landmarks: np.ndarray, threshold: tuple[float, float] = (2.5, 4.0)) -> np.ndarray:
    """HxW float32 in [0, 1]: how surely each pixel of `image` (HxWx3 uint8) is the face's skin.

    The LAB Mahalanobis distance to the nearer of two skin Gaussians: one fitted on patches at the
    cheeks and the nose, one on the face oval below the eyes without its features, trimmed to its
    nearest _SKIN_TRIM share thrice (a beard or a shadow falls out of that fit, while a side-lit
    face's shaded half and a cheek's blush stay in); 1 below threshold[0] standard
    deviations, 0 beyond threshold[1]; 1 inside each feature's hull (eyes, brows, nose, lips) and in
    holes the skin encloses. The skin region is then opened (specks), eroded (its edge moves inside
    the skin, so no hair bleeds in through the soft edge) and smoothed, so it never cuts a hard edge."""
    return _skin(image, landmarks, threshold)[0]


def skin_fill(
    image: np.ndarray, landmarks: np.ndarray, frame_brows: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The target photo `image` (HxWx3 uint8) with what covers its face painted over with its skin,
    where its face may be used (HxW float32 in [0, 1]), and the tint of the frames' brows laid on it
    (None: the target's own brows stay).

    Inside the face, a pixel that is not skin (`skin_weight`: hair over the forehead, glasses rims,
    background beside a cheek) takes the colour of the skin around it (`_fill_from`), so the frame's
    own forehead, wrinkles or glasses never show through the swapped face; a feature covered by
    something far darker than the skin (sunglasses' lenses) is left out instead, with the brow above
    a covered eye: the frame keeps its own there. frame_brows: brows under a fringe (their hulls hold
    the fringe's tips as much as the brows) are painted over with bare skin too, and each frame's own
    brows are laid on the face (`lay_brows`) in the colour of the hair in the hulls (their pixels
    clearly darker than the skin) over the bare skin's (the third value): for frames whose brows are
    a face's (a video's), not a multi-view head's, whose base may wear glasses just under them."""
    weight, covered, fringe = _skin(image, landmarks, frame_brows=frame_brows)
    size = face_size(landmarks)
    grown = cv2.dilate(covered, _disk(0.03 * size)).astype(np.float32)  # as _skin grows the features shown
    usable = 1.0 - cv2.GaussianBlur(grown, (0, 0), max(0.5, 0.02 * size))
    source, tint = None, None
    if fringe:  # the fill's colour from bare skin: the lashes and the fringe's tips would smear it dark
        hulls = [_hull_mask(landmarks[r, :2], weight.shape) for r in feature_regions()]
        source = weight * (cv2.dilate(np.bitwise_or.reduce(hulls), _disk(0.03 * size)) == 0)
        in_brows = image[np.bitwise_or.reduce(hulls[2:4]) > 0].astype(np.float32)
        bare = image[source > 0.5].astype(np.float32)
        skin = np.median(bare, 0) if len(bare) else in_brows.max(0, initial=255.0)
        hair = in_brows[in_brows.mean(1) < 0.8 * skin.mean()]  # clearly darker than the skin: the hair
        tint = np.full(3, _BROW_TINT, np.float32)
        if len(hair) >= 16:
            tint = np.clip((np.median(hair, 0) + 1.0) / (skin + 1.0), 0.15, 0.9).astype(np.float32)
    return _fill_from(image, weight, size, source), np.clip(usable, 0.0, 1.0).astype(np.float32), tint


def _fill_from(image: np.ndarray, weight: np.ndarray, size: float, source: np.ndarray | None = None) -> np.ndarray:
    """`image` (HxWx3 uint8) where `weight` (HxW in [0, 1]) is low replaced by the local mean colour
    of the pixels where `source` (default: `weight`) is high: a normalised convolution at growing
    scales (2-30% of `size`), each filling what the finer ones left, then the mean of them all. A
    colour field, not texture: the frame's relight and the blend put shading on it."""
    rgb = image.astype(np.float32)
    known = ((weight if source is None else source) > 0.5).astype(np.float32)
    if known.sum() < 16:
        return image
    filled, reached = np.zeros_like(rgb), np.zeros(weight.shape, np.float32)
    for scale in (0.02, 0.05, 0.12, 0.3):
        sigma = max(1.0, scale * size)
        support = cv2.GaussianBlur(known, (0, 0), sigma)
        mean = cv2.GaussianBlur(rgb * known[..., None], (0, 0), sigma) / np.maximum(support, 1e-6)[..., None]
        take = np.clip(support / 0.1, 0.0, 1.0) * (1.0 - reached)
        filled += take[..., None] * mean
        reached += take
    filled += (1.0 - reached)[..., None] * rgb[known > 0].mean(0)
    out = weight[..., None] * rgb + (1.0 - weight[..., None]) * filled
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _skin(
    image: np.ndarray, landmarks: np.ndarray, threshold: tuple[float, float] = (2.5, 4.0), frame_brows: bool = False
) -> tuple[np.ndarray, np.ndarray, bool]:
    """(skin_weight's weight, HxW uint8 1 on the features covered by something far darker than the
    skin, whether the brows are under a fringe (asked only with `frame_brows`): then they are left to
    the skin test like any hair)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    size = face_size(landmarks)
    radius = max(1, round(0.03 * size))
    kernel = _disk(radius)
    patches = []
    for x, y in landmarks[list(SKIN_SAMPLES), :2].astype(int):
        patch = lab[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
        patches.append(patch.reshape(-1, 3))
    mean, inverse = _skin_gaussian(np.concatenate(patches))
    hulls = [_hull_mask(landmarks[region, :2], image.shape[:2]) for region in feature_regions()]
    oval = _hull_mask(landmarks[face_oval_indices(), :2], image.shape[:2], convex=False)
    region = (oval > 0) & (cv2.dilate(np.bitwise_or.reduce(hulls), kernel) == 0)
    region[: int(landmarks[list(_LOWER_LIDS), 1].max())] = False  # hair and glasses seldom reach below the eyes
    samples = lab[region]
    distance = _mahalanobis(lab, mean, inverse)
    if len(samples) > 50:
        oval_mean, oval_inverse = _skin_gaussian(samples)
        for _ in range(3):
            near = _mahalanobis(samples, oval_mean, oval_inverse)
            oval_mean, oval_inverse = _skin_gaussian(samples[near <= np.quantile(near, _SKIN_TRIM)])
        distance = np.minimum(distance, _mahalanobis(lab, oval_mean, oval_inverse))
    low, high = threshold
    weight: np.ndarray = np.clip((high - distance) / (high - low), 0.0, 1.0).astype(np.float32)
    # A feature far darker than the skin is covered (sunglasses' lenses): the skin test decides there.
    # Its brightest tenth decides, not its median: an eye's white stays bright beside a large dark iris.
    hidden = [np.percentile(lab[..., 0][hull > 0], 90) < _COVERED_FEATURE * mean[0] for hull in hulls]
    fringe = frame_brows and _under_fringe(hulls[2:4], weight, oval, size)
    for eye in (0, 1):  # a lens over an eye reaches up into its brow (feature_regions' order)
        hidden[eye + 2] = hidden[eye + 2] or hidden[eye]
    features, covered = np.zeros(image.shape[:2], np.uint8), np.zeros(image.shape[:2], np.uint8)
    for k, (hull, is_hidden) in enumerate(zip(hulls, hidden)):
        if is_hidden:
            covered |= hull
        elif not (fringe and k in (2, 3)):
            features |= hull
    weight = cv2.morphologyEx(weight, cv2.MORPH_OPEN, kernel)
    # Hair, rims and background reach in from the face's border; what skin encloses is the face's own
    # (a shadow under an eye, a dark eye itself), and stays.
    weight = np.maximum(weight, binary_fill_holes(weight > 0.5).astype(np.float32))
    weight = cv2.erode(weight, kernel)
    weight = np.maximum(weight, cv2.dilate(features, kernel).astype(np.float32))
    return cv2.GaussianBlur(weight, (0, 0), max(0.5, 0.02 * size)), covered & (1 - features), fringe


def _under_fringe(brows: Sequence[np.ndarray], weight: np.ndarray, oval: np.ndarray, size: float) -> bool:
    """Whether hair hangs over the brows (HxW uint8 hulls): the forehead just above them, inside the
    face, is mostly not skin (`weight`). Their hulls then hold the fringe's tips as much as the brows,
    and both brows come from the frame (a pair: one of each would look lopsided)."""
    bands = np.zeros(weight.shape, bool)
    height = max(1, round(_FOREHEAD_BAND * size))
    for brow in brows:
        rows, columns = np.nonzero(brow.any(1))[0], np.nonzero(brow.any(0))[0]
        if len(rows):
            bands[max(0, rows[0] - height) : rows[0], columns[0] : columns[-1] + 1] = True
    bands &= oval > 0
    return bool(bands.any()) and float(weight[bands].mean()) < 0.5


def _disk(radius: float) -> np.ndarray:
    """An elliptic structuring element of `radius` pixels (rounded, at least 1) for cv2's morphology."""
    size = 2 * max(1, round(radius)) + 1
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def _hull_mask(points: np.ndarray, shape: tuple[int, ...], convex: bool = True) -> np.ndarray:
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
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    front = triangles[0.5 * np.cross(b - a, c - a) > 0]
    mask = np.zeros(shape, np.uint8)
    for tri in np.round((xy[front] - 0.5) * 16).astype(np.int32):
        cv2.fillConvexPoly(mask, tri, (255,), lineType=cv2.LINE_8, shift=4)
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


def skin_only(weight: np.ndarray, landmarks: np.ndarray, grow: float = 0.03) -> np.ndarray:
    """HxW bool: where `weight` (the blend alpha) is, less the eyes, brows and lips of the face whose
    mesh is `landmarks` (their hulls grown by `grow` x face size): the skin, whose light is shading."""
    eyes_brows_lips = [region for k, region in enumerate(feature_regions()) if k != 4]  # not the nose
    features = np.bitwise_or.reduce([_hull_mask(landmarks[region, :2], weight.shape) for region in eyes_brows_lips])
    grown_features = cv2.dilate(features, _disk(grow * face_size(landmarks)))
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


def lay_brows(face: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, tint: np.ndarray) -> np.ndarray:
    """`face` (HxWx3 uint8, the warped target) with the frame's brows on it, in the target's colour:
    inside each brow's hull (grown by 4% of the face size, soft-edged), how much darker the frame is
    than its own skin around the brows (a Gaussian mean outside the brows' and eyes' hulls), scaled so
    the brows' darkest tenth is 1, blends the face towards the face times `tint` (3,): the target's
    brow colour over its skin (`skin_fill`). The frame's brow shape and movement, the target's hair
    colour, and none of the frame's skin around them."""
    size = face_size(landmarks)
    # Only a box around the eyes and brows is touched: wide enough for the skin's blur (3 sigma)
    points = landmarks[np.concatenate(feature_regions()[:4]), :2]
    pad = 0.25 * size
    (x0, y0), (x1, y1) = np.maximum(points.min(0) - pad, 0).astype(int), (points.max(0) + pad).astype(int)
    box = (slice(y0, y1 + 1), slice(x0, x1 + 1))
    out = face.copy()
    out[box] = _lay_brows_in(face[box], frame[box], landmarks[:, :2] - (x0, y0), size, tint)
    return out


def _lay_brows_in(
    face: np.ndarray, frame: np.ndarray, landmarks: np.ndarray, size: float, tint: np.ndarray
) -> np.ndarray:
    """lay_brows on a crop (`landmarks` in its pixels, `size` the face's)."""
    hulls = [_hull_mask(landmarks[r], face.shape[:2]) for r in feature_regions()[:4]]  # eyes, brows
    brows = np.bitwise_or.reduce(hulls[2:])
    region = cv2.dilate(brows, _disk(0.04 * size)).astype(np.float32)
    known = (cv2.dilate(np.bitwise_or.reduce(hulls), _disk(0.02 * size)) == 0).astype(np.float32)
    blur = lambda image: cv2.GaussianBlur(image, (0, 0), max(1.0, 0.05 * size))  # noqa: E731
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32) + 1.0
    skin = blur(grey * known) / np.maximum(blur(known), 1e-3)
    depth = np.clip(1.0 - grey / skin, 0.0, 1.0)
    full = max(float(np.percentile(depth[brows > 0], 90)) if brows.any() else 0.0, 0.1)
    soft = cv2.GaussianBlur(region, (0, 0), max(0.5, 0.01 * size))
    amount = (np.clip(depth / full, 0.0, 1.0) * soft)[..., None]
    gain = 1.0 - amount * (1.0 - np.asarray(tint, np.float32))
    return np.clip(face.astype(np.float32) * gain + 0.5, 0, 255).astype(np.uint8)


def is_grey(image: np.ndarray, where: np.ndarray, max_chroma: float = 5.0) -> bool:
    """Whether `image` (HxWx3 uint8) is black and white where `where` (HxW bool) is: its median LAB
    chroma is below `max_chroma` (skin has 15-25)."""
    lab = to_lab(image)[where]
    return bool(len(lab)) and float(np.median(np.hypot(lab[:, 1], lab[:, 2]))) < max_chroma


def frame_chroma(face: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """A black-and-white face (HxWx3 uint8) coloured by the frame's own chroma at each pixel: the
    face is landmark-aligned to the frame, so its brows take brow colour and its lips lip colour
    (one transfer of means would give every feature the skin's hue)."""
    lab = to_lab(face)
    lab[..., 1:] = to_lab(frame)[..., 1:]
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
