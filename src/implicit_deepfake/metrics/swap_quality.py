"""Face-swap quality beyond identity: the pose and expression errors face-swap papers report
(FaceForensics++ protocol), the visibility of the blend seam, and colour consistency across views.

A swap should keep the driving frame's head pose and expression and change only the identity;
the seam measures how visible the pasted region's border is; the multi-view difference measures
whether the swapped frames agree where they see the same surface point (a 3D avatar trained on
them can only be as consistent as they are). All pixel coordinates put pixel centres at +0.5.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations, pairwise

import cv2
import numpy as np

from implicit_deepfake.data.face_tracking import similarity_fit

# Outer eye corners of the mediapipe mesh (image left, image right): the inter-ocular distance.
OUTER_EYE_CORNERS = (33, 263)
# Pixel values differing by more than this (max over channels) count as changed by the swap.
_CHANGE_THRESHOLD = 8
# Sobel gradient magnitude floor for a flat band (a plain render), so the seam score stays finite.
_GRADIENT_FLOOR = 1.0


def _camera(image_size: tuple[int, ...]) -> np.ndarray:
    """(3, 3) pinhole intrinsics for an (H, W) image, principal point at the centre, with a focal
    100 x max(H, W): near-orthographic, as the reference face (already projected landmarks) is."""
    height, width = image_size
    focal = 100.0 * max(height, width)
    return np.array([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]])


def head_rotation(landmarks: np.ndarray, image_size: tuple[int, ...], model: np.ndarray) -> np.ndarray:
    """(3, 3) rotation taking the 3D reference face `model` (468, 3) to the camera frame.

    landmarks: (468, 2+) pixel landmarks (only x, y are used); image_size: (H, W). The model is
    in OpenCV camera axes (x right, y down, z away from the camera), which are the mesh's own
    (pixel x, pixel y, depth with smaller nearer), so a mesh's landmarks serve as a model as-is.
    EPnP gives a start that Levenberg-Marquardt refines on the reprojection error.
    """
    points = np.ascontiguousarray(model - model.mean(0), np.float64)
    image_points = np.ascontiguousarray(landmarks[:, :2], np.float64)
    camera, distortion = _camera(image_size), np.zeros(4)
    ok, rvec, tvec = cv2.solvePnP(points, image_points, camera, distortion, flags=cv2.SOLVEPNP_EPNP)
    if not ok:
        raise ValueError("solvePnP found no pose for the landmarks")
    rvec, _ = cv2.solvePnPRefineLM(points, image_points, camera, distortion, rvec, tvec)
    return cv2.Rodrigues(rvec)[0]


def pose_error_deg(swapped: np.ndarray, base: np.ndarray, image_size: tuple[int, ...]) -> float:
    """Angle (degrees) of the head rotation between a swapped frame and its base (driving) frame.

    swapped, base: (468, 3) mesh landmarks of the two frames; image_size: (H, W). No canonical
    3D face ships with mediapipe, so both are posed by PnP against the base's own landmarks (a
    weak-perspective 3D face in pixels): the error is that of the swapped head relative to the base.
    A near-orthographic camera poses that already-projected face without a second perspective
    (a mesh turned by exactly 15 deg reads 14.96; a focal of max(H, W) read 12.2).
    """
    model = base.astype(np.float64)
    relative = head_rotation(swapped, image_size, model) @ head_rotation(base, image_size, model).T
    cosine = np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.degrees(np.arccos(cosine)))


def expression_error(swapped: np.ndarray, base: np.ndarray) -> float:
    """Mean 2D landmark distance between the frames once head pose and size are aligned away.

    swapped, base: (468, 2+) mesh landmarks (x, y used). The swapped landmarks get the similarity
    (Umeyama) best fitting the base's; what is left is expression. Divided by the base's
    inter-ocular distance (outer eye corners), so it does not depend on the face's size in pixels.
    """
    base_xy = base[:, :2].astype(np.float64)
    swapped_xy = swapped[:, :2].astype(np.float64)
    scale, rotation, shift = similarity_fit(swapped_xy, base_xy)
    aligned = scale * swapped_xy @ rotation.T + shift
    inter_ocular = np.linalg.norm(base_xy[OUTER_EYE_CORNERS[0]] - base_xy[OUTER_EYE_CORNERS[1]])
    return float(np.linalg.norm(aligned - base_xy, axis=1).mean() / inter_ocular)


def _changed_region(swapped: np.ndarray, base: np.ndarray) -> np.ndarray:
    """HxW bool: the largest connected region where the images differ by more than the threshold,
    opened (drops JPEG-like speckle) and closed (fills pinholes where the swap matched the frame)."""
    diff = np.abs(swapped.astype(np.int16) - base.astype(np.int16)).max(-1)
    mask = (diff > _CHANGE_THRESHOLD).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(cv2.morphologyEx(mask, cv2.MORPH_OPEN, kernel), cv2.MORPH_CLOSE, kernel)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count < 2:
        return np.zeros(mask.shape, bool)
    return labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))


def _gradient_magnitude(rgb: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> HxW float32 Sobel gradient magnitude of the grey image (0-255 scale)."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3))


def seam_score(
    swapped: np.ndarray, base: np.ndarray, changed: np.ndarray | None = None, band: int | None = None
) -> float | None:
    """How visible the border of the swapped region is: 1.0 = no more edge than the base had there.

    swapped, base: HxWx3 uint8 (the swap's output and the frame it was pasted into); changed: HxW
    bool region the swap changed (default: pixels differing by more than 8 in some channel,
    cleaned, largest connected component); band: width in pixels of the strip measured, centred
    on the region's border (at least 2; default 2% of the square root of the region's area). The
    score is the mean Sobel gradient magnitude of `swapped` in that strip over that of `base`
    (floored at 1, so a flat strip stays finite): a hard paste edge adds gradient the base did not
    have. Grey-level gradients only: a seam of pure chroma (equal luminance) scores ~1.
    None when nothing changed, or the region fills the image (no border).
    """
    region = _changed_region(swapped, base) if changed is None else changed.astype(bool)
    area = int(region.sum())
    if area == 0:
        return None
    if band is None:
        band = max(2, round(0.02 * np.sqrt(area)))
    mask = region.astype(np.uint8)
    border = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))  # 2 px wide
    in_band = cv2.dilate(border, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (max(1, band - 1),) * 2)) > 0
    if not in_band.any():
        return None
    swapped_edge = _gradient_magnitude(swapped)[in_band].mean()
    base_edge = _gradient_magnitude(base)[in_band].mean()
    return float(swapped_edge / max(base_edge, _GRADIENT_FLOOR))


def _sample(image: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """Bilinear colours (P, 3) float32 of HxWx3 `image` at (P, 2) pixel coordinates (centres +0.5)."""
    maps = (pixels.astype(np.float32) - 0.5)[None]  # (1, P, 2): cv2.remap puts centres at +0
    sampled = cv2.remap(image, maps[..., 0], maps[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return sampled.reshape(-1, image.shape[2]).astype(np.float32)


def multiview_colour_difference(
    images: Sequence[np.ndarray], pixels: np.ndarray, visible: np.ndarray, max_pairs: int = 200
) -> float | None:
    """Median colour disagreement (0-255) between views at the surface points both views see.

    images: N views, each HxWx3 uint8; pixels: (N, P, 2) where P 3D surface points project in
    each view; visible: (N, P) bool (not occluded). Points projecting outside an image count as
    not visible. Pairs: all view pairs, or `max_pairs` evenly spread over them. A sample is the
    mean absolute channel difference of one point in one pair; None when no point is seen twice.
    """
    heights = np.array([image.shape[0] for image in images])[:, None]
    widths = np.array([image.shape[1] for image in images])[:, None]
    inside = (pixels[..., 0] >= 0) & (pixels[..., 0] <= widths) & (pixels[..., 1] >= 0) & (pixels[..., 1] <= heights)
    seen = np.asarray(visible, bool) & inside
    colours = [_sample(image, view_pixels) for image, view_pixels in zip(images, pixels)]
    pairs = list(combinations(range(len(images)), 2))
    if len(pairs) > max_pairs:
        pairs = [pairs[k] for k in np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)]
    samples = []
    for i, j in pairs:
        both = seen[i] & seen[j]
        samples.append(np.abs(colours[i][both] - colours[j][both]).mean(-1))
    values = np.concatenate(samples) if samples else np.empty(0)
    return float(np.median(values)) if values.size else None


def _mean(values: Sequence[float]) -> float | None:
    return round(float(np.mean(values)), 4) if values else None


def yaw_bucket_report(
    yaws_deg: Sequence[float],
    distances: Mapping[str, Sequence[float | None]],
    edges: Sequence[float] = (0, 30, 60, 90),
) -> dict:
    """Identity distances per head-yaw bucket: swaps usually degrade as the head turns away.

    yaws_deg: each view's yaw; distances: {reference name: each view's identity distance to that
    reference (None: no face found)}, e.g. "target", "base". Buckets split |yaw| at `edges`
    ("0-30", ...; the last includes its upper edge), plus ">90" (above the last edge) when some
    view is there. Returns {bucket: {"views", "faces" (views with some distance),
    "identity_distance_to_<name>" (mean over the views with one, 4 decimals, or None) ...}}.
    """
    if any(len(values) != len(yaws_deg) for values in distances.values()):
        raise ValueError("yaws_deg and every list of distances must have one entry per view")
    angles = np.abs(np.asarray(yaws_deg, np.float64))
    buckets = {f"{low:g}-{high:g}": (angles >= low) & (angles < high) for low, high in pairwise(edges)}
    buckets[f"{edges[-2]:g}-{edges[-1]:g}"] |= angles == edges[-1]
    beyond = angles > edges[-1]
    if beyond.any():
        buckets[f">{edges[-1]:g}"] = beyond
    report = {}
    for name, members in buckets.items():
        views = np.flatnonzero(members)
        report[name] = {
            "views": len(views),
            "faces": sum(any(values[v] is not None for values in distances.values()) for v in views),
            **{
                f"identity_distance_to_{reference}": _mean([values[v] for v in views if values[v] is not None])
                for reference, values in distances.items()
            },
        }
    return report


def summarise(records: Sequence[dict], keys: Sequence[str]) -> dict:
    """{"<key>_median", "<key>_mean"} for each key over the records whose value is not None
    (missing counts as None), rounded to 4 decimals; both None when no record has a value."""
    summary = {}
    for key in keys:
        values = [record[key] for record in records if record.get(key) is not None]
        summary[f"{key}_median"] = round(float(np.median(values)), 4) if values else None
        summary[f"{key}_mean"] = _mean(values)
    return summary
