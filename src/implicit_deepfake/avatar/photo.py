"""What one portrait shows around its face: the person, their skin and their hair.

The person is mediapipe's selfie segmentation (its weights ship in the wheel); skin is a colour
model fitted to the face's own skin (cheeks, forehead, nose: the face oval minus eyes, brows and
lips), robust to glasses and shadows; hair is the person above the chin that is neither the face
nor skin and hangs from above the eyes (a hat counts as hair: it is what the head wears).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import map_coordinates

from implicit_deepfake.faces.landmarks import Face, face_oval_indices

# mediapipe face-mesh landmarks of the eyes with their brows, and of the lips
_EYES = (
    (
        7,
        33,
        133,
        144,
        145,
        153,
        154,
        155,
        157,
        158,
        159,
        160,
        161,
        163,
        173,
        246,
        46,
        52,
        53,
        55,
        63,
        65,
        66,
        70,
        105,
        107,
    ),
    (
        249,
        263,
        362,
        373,
        374,
        380,
        381,
        382,
        384,
        385,
        386,
        387,
        388,
        390,
        398,
        466,
        276,
        282,
        283,
        285,
        293,
        295,
        296,
        300,
        334,
        336,
    ),
)
_LIPS = (0, 17, 37, 39, 40, 61, 84, 91, 146, 181, 185, 267, 269, 270, 291, 314, 321, 375, 405, 409)
_CHIN = 152
_NASION = 168  # between the eyes: hair that reaches above this row grows from the scalp


def _fill(shape: tuple[int, ...], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], (1,))
    return mask.astype(bool)


def _hull(shape: tuple[int, ...], points: np.ndarray) -> np.ndarray:
    return _fill(shape, cv2.convexHull(points.astype(np.float32))[:, 0])


def _from_scalp(hair: np.ndarray, row: float) -> np.ndarray:
    """(H, W) bool: the parts of `hair` (H, W) bool connected to some of it above `row`: hair hangs
    from the scalp; a patch only beside the cheek or jaw is a shadow or a collar, not hair."""
    _, labels = cv2.connectedComponents(hair.astype(np.uint8), connectivity=8)
    top = max(0, int(row))
    scalp = np.unique(labels[:top][hair[:top]])
    return np.isin(labels, scalp[scalp > 0])


def person_mask(rgb: np.ndarray) -> np.ndarray:
    """(H, W) float32 in [0, 1]: mediapipe's selfie segmentation of the person (general model)."""
    import mediapipe as mp

    with mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0) as segmenter:
        mask = segmenter.process(np.ascontiguousarray(rgb)).segmentation_mask
    return np.clip(np.asarray(mask, np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class PhotoMaps:
    """Maps (H, W) float32 in [0, 1] of one portrait: person, face (inside the face oval), skin
    (likelihood), hair; skin_color (3,) the face's median skin in [0, 1]; face_height in pixels."""

    person: np.ndarray
    face: np.ndarray
    skin: np.ndarray
    hair: np.ndarray
    skin_color: np.ndarray
    face_height: float

    @property
    def has_hair(self) -> bool:
        """Some hair (or a hat) shows above the face: more than 3% of the face's area."""
        return float(self.hair.sum()) > 0.03 * float(self.face.sum())


def skin_likelihood(rgb: np.ndarray, sample: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) likelihood that each pixel is the same skin as the pixels `sample` (H, W) bool, and
    their median colour (3,) in [0, 1]. Chroma decides, within a wide band of brightness (shadows
    and highlights are still skin); on a greyscale photo brightness alone."""
    ycc = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    values = ycc[sample]
    median = np.median(values, axis=0)
    spread = np.maximum(1.4826 * np.median(np.abs(values - median), axis=0), [12.0, 3.0, 3.0])
    grey = bool(np.all(np.abs(ycc[..., 1:] - 128.0).mean((0, 1)) < 2.0))  # a black-and-white photo
    z = (ycc - median) / (np.array([2.0 if grey else 3.0, 2.5, 2.5]) * spread)
    likelihood = np.exp(-0.5 * (z**2).sum(-1)).astype(np.float32)
    return likelihood, np.median(rgb[sample], axis=0) / 255.0


def photo_maps(rgb: np.ndarray, face: Face) -> PhotoMaps:
    """The maps of `rgb` (H, W, 3 uint8) whose face is `face`."""
    shape = rgb.shape[:2]
    lm = face.landmarks[:, :2]
    face_height = float(np.ptp(lm[:, 1]))
    oval = _fill(shape, lm[face_oval_indices()])
    features = _hull(shape, lm[list(_EYES[0])]) | _hull(shape, lm[list(_EYES[1])]) | _hull(shape, lm[list(_LIPS)])
    grow = max(1, int(0.03 * face_height))
    features = cv2.dilate(features.astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
    inner = cv2.erode(oval.astype(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)
    sample = inner & ~features
    if sample.sum() < 20:
        sample = oval
    skin, skin_color = skin_likelihood(rgb, sample)
    person = person_mask(rgb)
    rows = np.arange(shape[0], dtype=np.float32)[:, None]
    above_chin = 1.0 - np.clip((rows - lm[_CHIN, 1]) / (0.05 * face_height) + 1.0, 0.0, 1.0)
    around_face = cv2.dilate(oval.astype(np.uint8), np.ones((grow, grow), np.uint8)).astype(bool)
    hair = person * (1.0 - skin) * above_chin * ~around_face
    hair *= _from_scalp(hair > 0.1, lm[_NASION, 1])
    hair = cv2.GaussianBlur(hair.astype(np.float32), (0, 0), max(1.0, 0.01 * face_height))
    return PhotoMaps(
        person=person,
        face=oval.astype(np.float32),
        skin=skin,
        hair=np.clip(hair, 0.0, 1.0),
        skin_color=skin_color,
        face_height=face_height,
    )


def sample_map(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear lookup of an (H, W) or (H, W, C) map at pixel coordinates (N, 2) (x, y; pixel centres
    at +0.5) -> (N,) or (N, C); the edge value outside."""
    coords = [points[:, 1] - 0.5, points[:, 0] - 0.5]
    if image.ndim == 2:
        return map_coordinates(image, coords, order=1, mode="nearest")
    return np.stack([map_coordinates(image[..., c], coords, order=1, mode="nearest") for c in range(image.shape[2])], 1)
