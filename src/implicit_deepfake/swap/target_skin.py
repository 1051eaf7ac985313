"""Which of the target photo's pixels are its skin, and the photo with the rest painted over.

`skin_weight`: Gaussians in LAB fitted on the target's own cheeks and nose, and on its whole face
below the eyes (its shaded side, its blush); the eyes, brows, nose and lips are always kept.
`skin_fill` paints hair over the forehead, glasses rims and background beside a cheek over with the
skin around them (the frame's own forehead, wrinkles and glasses would show through otherwise), and
leaves out only eyes covered by dark lenses, and their brows, where the frame keeps its own; for a
video, brows under a fringe are painted over too, and each frame's own are laid on
(`compositing.lay_brows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.ndimage import binary_fill_holes

from implicit_deepfake.faces.landmarks import face_oval_indices
from implicit_deepfake.swap.compositing import disk, face_size, feature_regions, hull_mask

# A feature whose brightest tenth is darker than this share of the skin's lightness is covered (dark lenses).
_COVERED_FEATURE = 0.45
# The share of the lower face's pixels, nearest its own skin Gaussian, that the Gaussian is refitted on.
_SKIN_TRIM = 0.6
_FOREHEAD_BAND = 0.08  # the forehead's band above a brow that tells a fringe over it, in face sizes
_LOWER_LIDS = (145, 374)  # mesh landmarks: the middle of each lower eyelid
_BROW_TINT = 0.45  # a brow's colour over its skin when no hair shows in its hull to take it from
# Mesh landmarks on the cheeks and the nose: where the target's skin colour is sampled.
SKIN_SAMPLES = (50, 280, 205, 425, 187, 411, 117, 346, 101, 330, 36, 266, 4, 5, 195, 197, 45, 275)


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
    weight, covered, fringe, hulls = _skin(image, landmarks, frame_brows=frame_brows)
    size = face_size(landmarks)
    grown = cv2.dilate(covered, disk(0.03 * size)).astype(np.float32)  # as _skin grows the features shown
    usable = 1.0 - cv2.GaussianBlur(grown, (0, 0), max(0.5, 0.02 * size))
    source, tint = None, None
    if fringe:  # the fill's colour from bare skin: the lashes and the fringe's tips would smear it dark
        source = weight * (cv2.dilate(np.bitwise_or.reduce(hulls), disk(0.03 * size)) == 0)
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
) -> tuple[np.ndarray, np.ndarray, bool, list[np.ndarray]]:
    """(skin_weight's weight, HxW uint8 1 on the features covered by something far darker than the
    skin, whether the brows are under a fringe (asked only with `frame_brows`): then they are left to
    the skin test like any hair; each feature's hull, HxW uint8 in `feature_regions`' order)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    size = face_size(landmarks)
    radius = max(1, round(0.03 * size))
    kernel = disk(radius)
    patches = []
    for x, y in landmarks[list(SKIN_SAMPLES), :2].astype(int):
        patch = lab[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1]
        patches.append(patch.reshape(-1, 3))
    mean, inverse = _skin_gaussian(np.concatenate(patches))
    hulls = [hull_mask(landmarks[region, :2], image.shape[:2]) for region in feature_regions()]
    oval = hull_mask(landmarks[face_oval_indices(), :2], image.shape[:2], convex=False)
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
    return cv2.GaussianBlur(weight, (0, 0), max(0.5, 0.02 * size)), covered & (1 - features), fringe, hulls


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
