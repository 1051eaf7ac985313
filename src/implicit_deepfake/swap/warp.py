"""The piecewise-affine warp of a face from one set of mesh landmarks onto another.

`face_triangles` Delaunay-triangulates a face's landmarks once, in the face's own plane when their
depth is given (a photo of a turned head then gets a frontal face's triangles, which no frontal frame
folds over). `warp_triangles` gives every triangle the affine map from its output position back to the
source; triangles that are back-facing or collapsed in the output (a turned head) are dropped, the rest
rasterised far-to-near by landmark depth into a triangle-index map, so the near side of the face wins
where the mesh folds over itself, and one `cv2.remap` pulls the source's pixels through those maps.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.spatial import Delaunay

from implicit_deepfake.faces.landmarks import face_oval_indices

_RIGHT_CHEEK, _LEFT_CHEEK, _TOP, _CHIN = 234, 454, 10, 152  # mesh landmarks (the face's own right and left)


def face_triangles(landmarks: np.ndarray) -> np.ndarray:
    """landmarks: (468+, 2) mesh pixels of a roughly frontal face, or (468+, 3) with depth of any
    face, which is first turned to face the camera -> (T, 3) Delaunay triangles whose centroid lies
    inside the face oval (Delaunay also fills the hull's gaps beside the oval), all counter-clockwise
    (positive signed area in y-down pixels): the orientation of a triangle that faces the camera,
    in any view of the face. Turned frontal, a photo's compressed far side gets the triangles of a
    frontal face, which no frontal frame folds over."""
    xy = _frontal(landmarks) if landmarks.shape[1] == 3 else landmarks
    triangles = Delaunay(xy).simplices
    oval = xy[face_oval_indices()].astype(np.float32)
    centroids = xy[triangles].mean(1)
    inside = [cv2.pointPolygonTest(oval, (float(x), float(y)), False) >= 0 for x, y in centroids]
    triangles = triangles[np.array(inside)]
    flip = signed_areas(xy, triangles) < 0
    triangles[flip] = triangles[flip][:, ::-1]
    return triangles


def untangled(
    source: np.ndarray, moved: np.ndarray, triangles: np.ndarray, movable: np.ndarray, steps: int = 8
) -> np.ndarray:
    """`moved` (P, 2+) with its move from `source` (P, 2+) halved, step by step, at the `movable` (P,)
    corners of the triangles (T, 3; counter-clockwise facing the camera) it turns over that `source`
    has the right way round: a warp leaves a turned-over triangle out (a smear where it was) and
    stretches its neighbours over its place (shards of the photo). The source's own turned-over
    triangles (a turned head's far side) are left as they are."""
    source, offset = np.asarray(source, np.float64), np.asarray(moved, np.float64) - source
    upright = signed_areas(source[:, :2], triangles) > 0
    for _ in range(steps):
        over = upright & (signed_areas((source + offset)[:, :2], triangles) <= 0)
        corners = np.unique(triangles[over])
        corners = corners[movable[corners]]
        if not len(corners):
            break
        offset[corners] *= 0.5
    return (source + offset).astype(np.asarray(moved).dtype)


def _frontal(landmarks: np.ndarray) -> np.ndarray:
    """(P, 2): mesh points (P, 3) in the face's own plane, x from its right cheek to its left (as
    pixels run in a frontal view), y from its forehead to its chin."""
    points = landmarks[:, :3].astype(np.float64)
    across = points[_LEFT_CHEEK] - points[_RIGHT_CHEEK]
    down = points[_CHIN] - points[_TOP]
    x = across / np.linalg.norm(across)
    y = down - (down @ x) * x
    y /= np.linalg.norm(y)
    centred = points - points.mean(0)
    return np.stack([centred @ x, centred @ y], 1)


def signed_areas(xy: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """xy: (P, 2), triangles: (T, 3) -> (T,) signed areas (positive counter-clockwise in y-down)."""
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    return 0.5 * np.cross(b - a, c - a)


def triangles_mask(xy: np.ndarray, triangles: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """HxW uint8, 255 inside the union of `triangles` (T, 3) on the points `xy` (P, 2) (pixel centres
    at +0.5, rasterised to a 16th of a pixel, as the warp draws them)."""
    mask = np.zeros(shape, np.uint8)
    for tri in np.round((xy[triangles] - 0.5) * 16).astype(np.int32):
        cv2.fillConvexPoly(mask, tri, (255,), lineType=cv2.LINE_8, shift=4)
    return mask


def _affines(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """src, dst: (T, 3, 2) triangle corners -> (T, 2, 3) affine maps taking src onto dst."""
    homogeneous = np.concatenate([src, np.ones_like(src[..., :1])], axis=-1)  # (T, 3, 3)
    return np.linalg.solve(homogeneous, dst).transpose(0, 2, 1)


def warp_triangles(
    image: np.ndarray,
    src_xy: np.ndarray,
    dst_landmarks: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, ...],
    min_area_ratio: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-affine warp of `image` from `src_xy` onto `dst_landmarks`, hidden triangles left out.

    image: hxwxC uint8; src_xy: (P, 2) landmark pixels in `image`; dst_landmarks: (P, 3) pixel x,
    y and depth (smaller is nearer) in the output; triangles: (T, 3) landmark ids, counter-
    clockwise or all clockwise in `src_xy`. A triangle is drawn only when its output area keeps
    the source's sign and is at least `min_area_ratio` of the source area brought to the output's
    face size (back-facing and edge-on triangles of a turned head are not). Returns the HxWxC warped
    image and the HxW bool map of pixels some triangle covers. Landmark coordinates put pixel centres at +0.5.
    """
    dst_xy = dst_landmarks[:, :2]
    # A turn shrinks the face along one axis only: the other gives the scale between the faces.
    scale = np.max(np.ptp(dst_xy, 0) / np.ptp(src_xy, 0))
    ratio = signed_areas(dst_xy, triangles) / (signed_areas(src_xy, triangles) * scale**2)
    triangles = triangles[ratio > min_area_ratio]
    # Painter's algorithm: far triangles first, so the near side of a folded mesh wins.
    triangles = triangles[np.argsort(-dst_landmarks[triangles, 2].mean(1), kind="stable")]

    index = np.full(shape, -1, np.int32)
    corners = np.round((dst_xy[triangles] - 0.5) * 16).astype(np.int32)  # 4-bit sub-pixel
    for t, tri in enumerate(corners):
        cv2.fillConvexPoly(index, tri, (t,), lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(index >= 0)
    affine = _affines(dst_xy[triangles], src_xy[triangles])[index[ys, xs]]
    centres = np.stack([xs + 0.5, ys + 0.5, np.ones(len(xs))], -1)
    map_xy = np.full((*shape, 2), -1.0, np.float32)
    map_xy[ys, xs] = np.einsum("nij,nj->ni", affine, centres) - 0.5  # cv2.remap centres at +0
    # ignore: cv2's stubs refuse map2=None (map1 holds both coordinates), which OpenCV takes
    warped = cv2.remap(image, map_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)  # type: ignore[call-overload]
    return warped.reshape(*shape, -1), index >= 0
