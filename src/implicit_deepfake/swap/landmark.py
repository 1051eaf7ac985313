"""Offline face swap: warp the target's face onto each frame's 468 mediapipe landmarks.

The target's landmarks are Delaunay-triangulated once. For a frame, every triangle gets the
affine map from its frame position back to the target; triangles that are back-facing or
collapsed in the frame (a turned head) are dropped, and the rest are rasterised far-to-near by
landmark depth into a triangle-index map, so the near side of the face wins where the mesh
folds over itself. One `cv2.remap` then pulls the target's pixels through those maps; the
warped face is colour-matched to the frame in LAB and blended in with a feathered alpha, or
with Poisson (cv2.seamlessClone). Feathering is the default: Poisson pulls the colours on the
mask's edge (hair, glasses, a hat brim, the white background beside a turned cheek) into the
face, and scored worse on dlib identity distance in every setting tried. An open mouth in the
frame (inside its inner lips) stays the frame's, as learned swappers keep the driving frame's
expression: the target photo has no pixels for it, and the warp would only stretch its lips.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
from scipy.spatial import Delaunay

from implicit_deepfake.errors import DeepfakeError
from implicit_deepfake.faces import INNER_LIPS, FaceLandmarker, face_oval_indices
from implicit_deepfake.swap.base import FaceSwapper

_BLENDS = ("poisson", "feather")


def face_triangles(xy: np.ndarray) -> np.ndarray:
    """xy: (468, 2) mesh landmarks of a roughly frontal face -> (T, 3) Delaunay triangles whose
    centroid lies inside the face oval (Delaunay also fills the hull's gaps beside the oval)."""
    triangles = Delaunay(xy).simplices
    oval = xy[face_oval_indices()].astype(np.float32)
    centroids = xy[triangles].mean(1)
    inside = [cv2.pointPolygonTest(oval, (float(x), float(y)), False) >= 0 for x, y in centroids]
    return triangles[np.array(inside)]


def _signed_areas(xy: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """xy: (P, 2), triangles: (T, 3) -> (T,) signed areas (positive counter-clockwise in y-down)."""
    a, b, c = (xy[triangles[:, k]] for k in range(3))
    return 0.5 * np.cross(b - a, c - a)


def _affines(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """src, dst: (T, 3, 2) triangle corners -> (T, 2, 3) affine maps taking src onto dst."""
    homogeneous = np.concatenate([src, np.ones_like(src[..., :1])], axis=-1)  # (T, 3, 3)
    return np.linalg.solve(homogeneous, dst).transpose(0, 2, 1)


def warp_triangles(
    image: np.ndarray,
    src_xy: np.ndarray,
    dst_landmarks: np.ndarray,
    triangles: np.ndarray,
    shape: tuple[int, int],
    min_area_ratio: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-affine warp of `image` from `src_xy` onto `dst_landmarks`, hidden triangles left out.

    image: hxwxC uint8; src_xy: (P, 2) landmark pixels in `image`; dst_landmarks: (P, 3) pixel x,
    y and depth (smaller is nearer) in the output; triangles: (T, 3) landmark ids, counter-
    clockwise or all clockwise in `src_xy`. A triangle is drawn only when its output area keeps
    the source's sign and is at least `min_area_ratio` of the source area brought to the output's
    face size (back-facing and edge-on triangles of a turned head are not). Returns the HxWxC warped image and the HxW bool
    map of pixels some triangle covers. Landmark coordinates put pixel centres at +0.5.
    """
    dst_xy = dst_landmarks[:, :2]
    # A turn shrinks the face along one axis only: the other gives the scale between the faces.
    scale = np.max(np.ptp(dst_xy, 0) / np.ptp(src_xy, 0))
    ratio = _signed_areas(dst_xy, triangles) / (_signed_areas(src_xy, triangles) * scale**2)
    triangles = triangles[ratio > min_area_ratio]
    # Painter's algorithm: far triangles first, so the near side of a folded mesh wins.
    triangles = triangles[np.argsort(-dst_landmarks[triangles, 2].mean(1), kind="stable")]

    index = np.full(shape, -1, np.int32)
    corners = np.round((dst_xy[triangles] - 0.5) * 16).astype(np.int32)  # 4-bit sub-pixel
    for t, tri in enumerate(corners):
        cv2.fillConvexPoly(index, tri, t, lineType=cv2.LINE_8, shift=4)
    ys, xs = np.nonzero(index >= 0)
    affine = _affines(dst_xy[triangles], src_xy[triangles])[index[ys, xs]]
    centres = np.stack([xs + 0.5, ys + 0.5, np.ones(len(xs))], -1)
    map_xy = np.full((*shape, 2), -1.0, np.float32)
    map_xy[ys, xs] = np.einsum("nij,nj->ni", affine, centres) - 0.5  # cv2.remap centres at +0
    warped = cv2.remap(image, map_xy, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return warped.reshape(*shape, -1), index >= 0


def _match_colour(face: np.ndarray, frame: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Reinhard transfer: give `face` the frame's LAB mean/std, both measured where `inside`.

    face, frame: HxWx3 uint8; inside: HxW bool. Returns HxWx3 uint8."""
    if inside.sum() < 4:
        return face
    face_lab = cv2.cvtColor(face.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    frame_lab = cv2.cvtColor(frame.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    mu_face, sd_face = face_lab[inside].mean(0), face_lab[inside].std(0) + 1e-3
    mu_frame, sd_frame = frame_lab[inside].mean(0), frame_lab[inside].std(0) + 1e-3
    # Bounded gain: a near-flat frame face (a plain render) must not flatten or blow up the target.
    gain = np.clip(sd_frame / sd_face, 0.5, 2.0)
    matched = (face_lab - mu_face) * gain + mu_frame
    rgb = cv2.cvtColor(matched.astype(np.float32), cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _poisson(face: np.ndarray, frame: np.ndarray, mask: np.ndarray, pad: int) -> np.ndarray:
    """cv2.seamlessClone of `face` into `frame` under the binary uint8 `mask` (all HxW).

    The images are padded first: seamlessClone misbehaves when the mask touches the border."""
    padded = [cv2.copyMakeBorder(im, pad, pad, pad, pad, cv2.BORDER_REFLECT) for im in (face, frame)]
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(mask)
    # OpenCV places the mask's bounding box at centre - size // 2: this centre keeps it in place.
    out = cv2.seamlessClone(padded[0], padded[1], mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return out[pad:-pad, pad:-pad]


class LandmarkSwapper(FaceSwapper):
    """Piecewise-affine landmark warp of the target face, colour-matched and blended into frames.

    blend: "feather" (alpha only) or "poisson" (cv2.seamlessClone, then the feathered alpha).
    erode: mask erosion, as a fraction of the face size (square root of the mask area);
    feather: Gaussian sigma of the alpha edge, same unit.
    min_area_ratio: frame triangles smaller than this fraction of their target area (at the
    frame's face size) are treated as edge-on and left out.
    keep_mouth: keep the frame's pixels inside its inner lips (an open mouth).
    """

    name = "landmark"

    def __init__(
        self,
        blend: str = "feather",
        color_transfer: bool = True,
        erode: float = 0.02,
        feather: float = 0.04,
        min_area_ratio: float = 0.05,
        keep_mouth: bool = True,
        landmarker: FaceLandmarker | None = None,
    ) -> None:
        if blend not in _BLENDS:
            raise DeepfakeError(f"swap.blend must be one of {_BLENDS}, got {blend!r}")
        self.blend = blend
        self.color_transfer = color_transfer
        self.erode = erode
        self.feather = feather
        self.min_area_ratio = min_area_ratio
        self.keep_mouth = keep_mouth
        self.landmarker = landmarker or FaceLandmarker()
        self._target: np.ndarray | None = None

    def config(self) -> dict:
        return {
            "name": self.name,
            "blend": self.blend,
            "color_transfer": self.color_transfer,
            "erode": self.erode,
            "feather": self.feather,
            "min_area_ratio": self.min_area_ratio,
            "keep_mouth": self.keep_mouth,
        }

    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]]) -> None:
        face = self.landmarker.detect_required(target, "target photo")
        # Keep only a crop around the face: it is resized for every frame.
        x0, y0, x1, y1 = face.bbox
        margin = 0.1 * max(x1 - x0, y1 - y0)
        left, top = int(max(0, x0 - margin)), int(max(0, y0 - margin))
        right = int(min(target.shape[1], x1 + margin + 1))
        bottom = int(min(target.shape[0], y1 + margin + 1))
        crop = target[top:bottom, left:right]
        self._target_xy = face.landmarks[:, :2] - np.array([left, top], np.float32)
        self._target_extent = np.ptp(self._target_xy, 0)  # (2,) face width, height
        self._triangles = face_triangles(self._target_xy)
        oval = self._target_xy[face_oval_indices()]
        # The face-oval mask rides along as a 4th channel, so one remap warps image and mask.
        oval_mask = np.zeros(crop.shape[:2], np.uint8)
        cv2.fillPoly(oval_mask, [np.round(oval - 0.5).astype(np.int32)], 255)
        self._target = np.dstack([crop, oval_mask])

    def swap(self, frame: np.ndarray, relpath: str) -> np.ndarray | None:
        if self._target is None:
            raise RuntimeError("LandmarkSwapper.swap called before prepare")
        face = self.landmarker.detect(frame)
        if face is None:
            return None
        # Sample from a copy of the target no larger than the frame's face, so remap cannot alias.
        scale = min(1.0, float(np.max(np.ptp(face.landmarks[:, :2], 0) / self._target_extent)))
        target = self._target
        if scale < 1.0:
            size = (max(1, round(target.shape[1] * scale)), max(1, round(target.shape[0] * scale)))
            target = cv2.resize(target, size, interpolation=cv2.INTER_AREA)
        target_xy = self._target_xy * (np.array(target.shape[1::-1]) / self._target.shape[1::-1])
        warped, covered = warp_triangles(
            target, target_xy, face.landmarks, self._triangles, frame.shape[:2], self.min_area_ratio
        )
        mask = np.where((warped[..., 3] > 127) & covered, 255, 0).astype(np.uint8)
        if self.keep_mouth:
            mouth = np.round((face.landmarks[list(INNER_LIPS), :2] - 0.5) * 16).astype(np.int32)
            cv2.fillPoly(mask, [mouth], 0, lineType=cv2.LINE_8, shift=4)
        return self._blend(np.ascontiguousarray(warped[..., :3]), frame, mask)

    def _blend(self, warped: np.ndarray, frame: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
        """Colour-match `warped` and blend it into `frame` (HxWx3 uint8) inside the eroded,
        feathered `mask` (HxW uint8, 255 = visible face); None when no face pixel is left."""
        size = float(np.sqrt((mask > 0).sum()))
        radius = max(1, int(round(self.erode * size)))
        inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2))
        if inner.max() == 0:
            return None
        if self.color_transfer:
            warped = _match_colour(warped, frame, inner > 0)
        # Outside the mask the warp holds no face; the frame there keeps the feathered edge from
        # fading into the target's hair or the remap's border fill.
        warped = np.where(mask[..., None] > 0, warped, frame)
        if self.blend == "poisson":
            warped = _poisson(warped, frame, inner, pad=radius + 2)
        alpha = cv2.GaussianBlur(inner.astype(np.float32) / 255.0, (0, 0), max(0.5, self.feather * size))
        out = alpha[..., None] * warped.astype(np.float32) + (1.0 - alpha[..., None]) * frame
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
