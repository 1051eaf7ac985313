"""Face detection and 468-point landmarks with mediapipe's face mesh (weights ship in the wheel);
478 with `refine=True`: the mesh's eyes and lips refined and the two irises added (468-477).

One detector serves the landmark swapper, the insightface backend (5 keypoints) and the identity
metrics, so every stage agrees on what "a face was found" means. `detect_all` adds mediapipe's
full-range detector over a tile pyramid, for photos with several or small faces (the target photo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import cv2
import numpy as np

from implicit_deepfake.core.errors import DeepfakeError

if TYPE_CHECKING:
    from mediapipe.python.solutions.face_detection import FaceDetection
    from mediapipe.python.solutions.face_mesh import FaceMesh

# Mesh indices of the 5 keypoints insightface aligns with, in its order (image left to right):
# eye centres, nose tip, mouth corners.
_KPS5 = ((33, 133), (362, 263), (1,), (61,), (291,))
# Mesh indices around the inner edge of the lips, in order (the outline of an open mouth).
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
# Mesh indices around each eye's lid margin, in order (the outline of the visible eyeball), image left
# eye first: corners 33 (outer) and 133 (inner); 362 (inner) and 263 (outer).
EYE_OUTLINES = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398),
)
# With refine=True: the iris centre and its four rim points, one iris each (mediapipe's order).
IRISES = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))
EYE_CORNERS = ((33, 133), (362, 263))  # image left eye (outer, inner), image right eye (inner, outer)
EYE_LIDS = ((159, 145), (386, 374))  # each eye's upper and lower lid midpoints


def eye_opening(landmarks: np.ndarray, eye: int) -> float:
    """An eye's lid gap across its corners' line over its width: 0 shut (or its lids crossed), ~0.3
    open; landmarks (P, 2+) of the mesh (image y down), eye 0 or 1."""
    xy = landmarks[:, :2].astype(np.float64)
    first, second = xy[EYE_CORNERS[eye][0]], xy[EYE_CORNERS[eye][1]]
    width = max(float(np.linalg.norm(second - first)), 1e-6)
    across = np.array([first[1] - second[1], second[0] - first[0]]) / width  # the eye's "down"
    upper, lower = xy[EYE_LIDS[eye][0]], xy[EYE_LIDS[eye][1]]
    return max(float((lower - upper) @ across), 0.0) / width


@dataclass(frozen=True)
class Face:
    """landmarks: (468, 3) float32 — pixel x, pixel y, depth in pixels (smaller is nearer); (478, 3)
    from a `refine=True` landmarker (the irises' points at 468-477)."""

    landmarks: np.ndarray

    @property
    def bbox(self) -> np.ndarray:
        """(4,) x0, y0, x1, y1 in pixels."""
        xy = self.landmarks[:, :2]
        return np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)

    @property
    def kps5(self) -> np.ndarray:
        """(5, 2) keypoints in insightface's order."""
        return np.stack([self.landmarks[list(ids), :2].mean(0) for ids in _KPS5]).astype(np.float32)


@dataclass(frozen=True)
class DetectedFace:
    """One face of `FaceLandmarker.detect_all`, in the full image's pixels.

    box: (4,) x0, y0, x1, y1 of the detector's box, clipped to the image. score: the detector's
    confidence; 0.0 when the face came from the whole-image mesh fallback, which gives none.
    """

    face: Face
    box: np.ndarray
    score: float


# detect_all: the finest tile is at least this many pixels (the full-range detector sees 192x192) and at
# most this many halvings of the long side below the whole image.
_MIN_TILE = 192
_TILE_LEVELS = 3
# A face crop reaches this far past the detector's box on each side (a fraction of the box) and is
# upscaled until the box is at least _MESH_FACE_PX: FaceMesh misses faces much smaller than its input.
_CROP_MARGIN = 0.6
_MESH_FACE_PX = 192
# Boxes overlapping more than this are one face (seen in several tiles); a mesh face must overlap its
# detector box at least _MATCH_IOU (measured 0.6-0.9 on real photos), else it is a neighbour in the margin.
_SAME_FACE_IOU = 0.3
_MATCH_IOU = 0.3
# Two mesh faces overlapping more than this are one face reached from two boxes.
_SAME_MESH_IOU = 0.5


class FaceLandmarker:
    """mediapipe FaceMesh in static-image mode; `detect` returns the largest face or None.

    refine: mediapipe's attention mesh, 478 points (irises included) instead of 468, for the
    expression and gaze measures; the swap and the geometry use the 468-point mesh."""

    def __init__(self, min_detection_confidence: float = 0.5, max_faces: int = 2, refine: bool = False) -> None:
        import mediapipe as mp

        self._confidence = min_detection_confidence
        self._refine = refine
        self._args = (min_detection_confidence, max_faces, refine)
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=max_faces,
            refine_landmarks=refine,
            min_detection_confidence=min_detection_confidence,
        )
        # built on first detect_all: each mediapipe graph costs time and memory
        self._detector: FaceDetection | None = None
        self._crop_mesh: FaceMesh | None = None

    @property
    def points(self) -> int:
        """Landmarks per face: 478 refined (irises included), else 468."""
        return 478 if self._refine else 468

    def __reduce__(self) -> tuple:
        """Pickled as its settings (a swap worker process builds its own mediapipe graphs)."""
        return type(self), self._args

    def detect(self, rgb: np.ndarray) -> Face | None:
        """rgb: HxWx3 uint8."""
        faces = _mesh_faces(self._mesh, _checked(rgb))
        if not faces:
            return None
        areas = [np.prod(f[:, :2].max(0) - f[:, :2].min(0)) for f in faces]
        return Face(faces[int(np.argmax(areas))])

    def detect_all(self, rgb: np.ndarray) -> list[DetectedFace]:
        """Every face in `rgb` (HxWx3 uint8), largest detector box first.

        FaceMesh alone finds only a few large faces (its detector sees the image at 128x128), so the
        full-range detector runs over a pyramid of overlapping tiles, and FaceMesh then runs on an
        upscaled crop around each box. Falls back to FaceMesh on the whole image if that finds nothing.
        """
        rgb = _checked(rgb)
        found: list[DetectedFace] = []
        for score, box in _non_max_suppression(self._detect_boxes(rgb)):
            face = self._mesh_in_box(rgb, box)
            # a part of a face cut by a tile edge can survive suppression, then mesh a face already found
            if face is not None and all(_iou(face.bbox, d.face.bbox) <= _SAME_MESH_IOU for d in found):
                found.append(DetectedFace(face, box, score))
        if not found:
            found = [DetectedFace(Face(f), Face(f).bbox, 0.0) for f in _mesh_faces(self._mesh, rgb)]
        return sorted(found, key=lambda d: -_area(d.box))

    def detect_required(self, rgb: np.ndarray, source: str) -> Face:
        """Like `detect`, but a photo without a face is a user error naming `source`."""
        face = self.detect(rgb)
        if face is None:
            raise DeepfakeError(f"{source}: no face found. Use a photo with one clearly visible, roughly frontal face.")
        return face

    def _detect_boxes(self, rgb: np.ndarray) -> list[tuple[float, np.ndarray]]:
        """(score, box) of the full-range detector on the whole image and on tiles of 1/2, 1/4, 1/8 its long side.

        Tiles overlap by half, so a face up to half a tile wide lies whole in some tile, where it is
        big enough for the detector's 192x192 input.
        """
        if self._detector is None:
            import mediapipe as mp

            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=self._confidence
            )
        height, width = rgb.shape[:2]
        side, boxes = max(height, width), []
        for level in range(_TILE_LEVELS + 1):
            if level and side < _MIN_TILE:
                break
            for y in _tile_starts(height, side):
                for x in _tile_starts(width, side):
                    tile = np.ascontiguousarray(rgb[y : y + side, x : x + side])
                    h, w = tile.shape[:2]
                    for det in self._detector.process(tile).detections or []:
                        b = det.location_data.relative_bounding_box
                        box = np.array([b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h])
                        box = np.clip(box + (x, y, x, y), 0, (width, height, width, height)).astype(np.float32)
                        if _area(box) > 0:
                            boxes.append((float(det.score[0]), box))
            side //= 2
        return boxes

    def _mesh_in_box(self, rgb: np.ndarray, box: np.ndarray) -> Face | None:
        """FaceMesh on an upscaled crop around a detector box, mapped back to `rgb`'s pixels; None if absent."""
        if self._crop_mesh is None:
            import mediapipe as mp

            # up to 3 faces: neighbours inside the margin must not hide the face in the middle
            self._crop_mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True,
                max_num_faces=3,
                refine_landmarks=self._refine,
                min_detection_confidence=self._confidence,
            )
        height, width = rgb.shape[:2]
        size = box[2:] - box[:2]
        x0, y0 = np.maximum(np.floor(box[:2] - _CROP_MARGIN * size), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(box[2:] + _CROP_MARGIN * size), [width, height]).astype(int)
        crop, scale = rgb[y0:y1, x0:x1], max(1.0, _MESH_FACE_PX / float(size.max()))
        if scale > 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        scale_xy = np.array([crop.shape[1] / (x1 - x0), crop.shape[0] / (y1 - y0)], np.float32)  # exact, after rounding
        best, best_iou = None, _MATCH_IOU
        for f in _mesh_faces(self._crop_mesh, crop):
            f[:, :2] = f[:, :2] / scale_xy + [x0, y0]
            f[:, 2] /= scale_xy[0]
            overlap = _iou(Face(f).bbox, box)
            if overlap >= best_iou:
                best, best_iou = Face(f), overlap
        return best


def _checked(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
    return rgb


def _mesh_faces(mesh: FaceMesh, rgb: np.ndarray) -> list[np.ndarray]:
    """(468, 3) float32 landmarks in pixels (depth scaled like x) of every face `mesh` finds."""
    height, width = rgb.shape[:2]
    result = mesh.process(np.ascontiguousarray(rgb))
    return [
        np.array([[p.x * width, p.y * height, p.z * width] for p in lms.landmark], np.float32)
        for lms in result.multi_face_landmarks or []
    ]


def _tile_starts(length: int, side: int) -> list[int]:
    """Offsets of tiles `side` long covering `length`, overlapping by half a tile."""
    if length <= side:
        return [0]
    return np.linspace(0, length - side, math.ceil((length - side) / (side / 2)) + 1).round().astype(int).tolist()


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0) * max(box[3] - box[1], 0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = _area(np.concatenate([np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])]))
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _non_max_suppression(boxes: list[tuple[float, np.ndarray]]) -> list[tuple[float, np.ndarray]]:
    """The most confident box of each group overlapping more than _SAME_FACE_IOU."""
    kept: list[tuple[float, np.ndarray]] = []
    for score, box in sorted(boxes, key=lambda sb: -sb[0]):
        if all(_iou(box, k) <= _SAME_FACE_IOU for _, k in kept):
            kept.append((score, box))
    return kept


@lru_cache(maxsize=1)
def lip_indices() -> np.ndarray:
    """Mesh indices of mediapipe's FACEMESH_LIPS (outer and inner edges of both lips), sorted."""
    import mediapipe as mp

    return np.unique(np.array(list(mp.solutions.face_mesh.FACEMESH_LIPS)))


@lru_cache(maxsize=1)
def face_oval_indices() -> np.ndarray:
    """(36,) mesh indices of mediapipe's FACE_OVAL, in order around the face."""
    import mediapipe as mp

    following = dict(mp.solutions.face_mesh.FACEMESH_FACE_OVAL)
    loop = [next(iter(following))]
    while following[loop[-1]] != loop[0]:
        loop.append(following[loop[-1]])
    return np.array(loop)
