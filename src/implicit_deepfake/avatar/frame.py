"""The head's world frame, read off one photo's face mesh, and the head proportions it sets.

World axes: z up, the face looks toward -y (a camera at (0, -d, 0) sees it frontally), x to the
image right of a frontal view; the skull (chin to crown, without hair) is SKULL_HEIGHT units tall,
its chin at z = -0.5 and the middle of its length at y = 0. Photo space is (pixel x, depth,
-pixel y) in pixels (mediapipe's depth is scaled like x): world = scale * rotation @ (photo - origin).
The rotation turns the face to frontal and upright, so a photo of a turned or nodding head still
makes a head whose face looks down -y; the photo's camera then sees the head from `view_direction`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from implicit_deepfake.faces.landmarks import Face, face_oval_indices

# mediapipe face-mesh landmarks
CHIN, FOREHEAD, NASION, NOSE_TIP, NOSE_BASE, MOUTH = 152, 10, 168, 1, 2, 13
BROWS = (105, 334)  # upper edge of the brows
CHEEKS = (234, 454)  # the face's sides at the cheekbones, just in front of the ears
# Mirror pairs (image left, image right) whose differences give the face's left-to-right axis.
_PAIRS = ((234, 454), (33, 263), (133, 362), (61, 291), (172, 397), (58, 288), (127, 356), (93, 323))
# Head proportions in face heights (forehead-top landmark to chin), from adult anthropometry: the
# crown is this far above the forehead landmark, the skull this long front to back.
CROWN_ABOVE_FOREHEAD = 0.36
HEAD_LENGTH = 1.12
BREADTH_OVER_FACE = 1.04  # skull breadth over the width between the cheek landmarks
# mediapipe's canonical face model, upright, has its chin landmark 0.7 degrees behind the forehead one.
UPRIGHT_CHIN_BEHIND_DEG = 0.7
SKULL_HEIGHT = 0.9  # chin to crown in world units: with hair on top the head stays in the default frames


@dataclass(frozen=True)
class HeadFrame:
    """rotation (3, 3): rows are the face's right, backward and up axes in photo space;
    origin (3,): the photo-space point at the world origin; scale: world units per photo pixel."""

    rotation: np.ndarray
    origin: np.ndarray
    scale: float

    def to_world(self, photo: np.ndarray) -> np.ndarray:
        """(N, 3) photo-space points -> world."""
        return self.scale * (photo - self.origin) @ self.rotation.T

    def to_photo(self, world: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> photo space."""
        return world @ self.rotation / self.scale + self.origin

    def uv(self, world: np.ndarray) -> np.ndarray:
        """(N, 2) photo pixel coordinates (x right, y down) of world points."""
        photo = self.to_photo(world)
        return np.stack([photo[:, 0], -photo[:, 2]], 1)

    @property
    def view_direction(self) -> np.ndarray:
        """(3,) unit world direction from the head toward the photo's camera."""
        return self.rotation @ np.array([0.0, -1.0, 0.0])

    def moved(self, shift: np.ndarray, factor: float) -> HeadFrame:
        """The frame whose world is (world - shift) * factor."""
        origin = self.origin + self.rotation.T @ np.asarray(shift) / self.scale
        return HeadFrame(self.rotation, origin, self.scale * factor)


def photo_space(face: Face) -> np.ndarray:
    """(468, 3) landmarks in photo space (x, depth, -y), float64."""
    lm = face.landmarks.astype(np.float64)
    return np.stack([lm[:, 0], lm[:, 2], -lm[:, 1]], 1)


def face_rotation(points: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose rows are the face's right, backward and up axes in photo space: right
    from the landmarks' mirror pairs (it undoes a turned or tilted head); up the photo's own up made
    square to it, then turned about right until the forehead-to-chin line leans as in the upright
    canonical face (it undoes a nod, or a camera above or below the face: eight of eleven portraits
    tried leaned theirs 7-12 degrees further, Tom Hanks' 25, and their heads looked down at the views
    from above)."""
    right = np.mean([points[b] - points[a] for a, b in _PAIRS], axis=0)
    right /= np.linalg.norm(right)
    up = np.array([0.0, 0.0, 1.0]) - right[2] * right
    up /= np.linalg.norm(up)
    back = np.cross(up, right)
    line = points[FOREHEAD] - points[CHIN]
    nod = np.arctan2(-(line @ back), line @ up) - np.radians(UPRIGHT_CHIN_BEHIND_DEG)
    up = np.cos(nod) * up - np.sin(nod) * back
    return np.stack([right, np.cross(up, right), up])


@dataclass(frozen=True)
class Proportions:
    """Where the head's parts are, in world units (see the module doc): the face's landmarks
    (468, 3); the skull's crown, chin, front and back; its breadth; the ears' box."""

    landmarks: np.ndarray
    crown: float
    chin: float
    front: float
    back: float
    breadth: float

    @property
    def face_height(self) -> float:
        return float(self.landmarks[FOREHEAD, 2] - self.landmarks[CHIN, 2])

    @property
    def face_width(self) -> float:
        return float(abs(self.landmarks[CHEEKS[1], 0] - self.landmarks[CHEEKS[0], 0]))

    @property
    def oval(self) -> np.ndarray:
        """(36, 3) the face oval, in order around the face."""
        return self.landmarks[face_oval_indices()]

    @property
    def brow(self) -> float:
        return float(self.landmarks[list(BROWS), 2].mean())

    @property
    def nose_base(self) -> float:
        return float(self.landmarks[NOSE_BASE, 2])

    @property
    def ear_depth(self) -> float:
        """y of the ear canals: behind the cheek landmarks (the zygomatic arches' sides), near the
        middle of the skull's length."""
        cheeks = float(self.landmarks[list(CHEEKS), 1].mean())
        return max(cheeks + 0.12 * self.face_height, self.front + 0.52 * (self.back - self.front))


def head_frame(face: Face, crown_above: float = CROWN_ABOVE_FOREHEAD) -> tuple[HeadFrame, Proportions]:
    """The world frame and proportions of the head whose face is `face` (see the module doc).

    crown_above: the crown's height above the forehead landmark, in face heights.
    """
    points = photo_space(face)
    rotation = face_rotation(points)
    height = float((points[FOREHEAD] - points[CHIN]) @ rotation[2])
    frame = HeadFrame(rotation, points[NASION].copy(), 1.0 / height)  # face units: nasion at 0, face 1 tall
    lm = frame.to_world(points)
    crown, chin = lm[FOREHEAD, 2] + crown_above, lm[CHIN, 2]
    front = float(np.min(lm[[FOREHEAD, 151, 9, 108, 337], 1]))
    unit = SKULL_HEIGHT / (crown - chin)
    # the chin at z = -0.5, the skull's middle (front to back) at y = 0
    frame = frame.moved(np.array([0.0, front + 0.5 * HEAD_LENGTH, chin + 0.5 / unit]), unit)
    lm = frame.to_world(points)
    breadth = BREADTH_OVER_FACE * abs(lm[CHEEKS[1], 0] - lm[CHEEKS[0], 0])
    half_length = 0.5 * HEAD_LENGTH * unit
    return frame, Proportions(lm, SKULL_HEIGHT - 0.5, -0.5, -half_length, half_length, breadth)
