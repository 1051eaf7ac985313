"""Face detection and 468-point landmarks with mediapipe's face mesh (weights ship in the wheel).

One detector serves the landmark swapper, the insightface backend (5 keypoints) and the identity
metrics, so every stage agrees on what "a face was found" means.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from implicit_deepfake.errors import DeepfakeError

# Mesh indices of the 5 keypoints insightface aligns with, in its order (image left to right):
# eye centres, nose tip, mouth corners.
_KPS5 = ((33, 133), (362, 263), (1,), (61,), (291,))
# Mesh indices around the inner edge of the lips, in order (the outline of an open mouth).
INNER_LIPS = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)


@dataclass(frozen=True)
class Face:
    """landmarks: (468, 3) float32 — pixel x, pixel y, depth in pixels (smaller is nearer)."""

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


class FaceLandmarker:
    """mediapipe FaceMesh in static-image mode; `detect` returns the largest face or None."""

    def __init__(self, min_detection_confidence: float = 0.5, max_faces: int = 2) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=True,
            max_num_faces=max_faces,
            refine_landmarks=False,
            min_detection_confidence=min_detection_confidence,
        )

    def detect(self, rgb: np.ndarray) -> Face | None:
        """rgb: HxWx3 uint8."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected HxWx3 uint8, got {rgb.shape} {rgb.dtype}")
        height, width = rgb.shape[:2]
        result = self._mesh.process(np.ascontiguousarray(rgb))
        if not result.multi_face_landmarks:
            return None
        faces = [
            np.array([[p.x * width, p.y * height, p.z * width] for p in lms.landmark], np.float32)
            for lms in result.multi_face_landmarks
        ]
        areas = [np.prod(f[:, :2].max(0) - f[:, :2].min(0)) for f in faces]
        return Face(faces[int(np.argmax(areas))])

    def detect_required(self, rgb: np.ndarray, source: str) -> Face:
        """Like `detect`, but a photo without a face is a user error naming `source`."""
        face = self.detect(rgb)
        if face is None:
            raise DeepfakeError(
                f"{source}: no face found. Use a photo with one clearly visible, roughly frontal face."
            )
        return face


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
