"""The target photo: the one photo of the person to swap in, read robustly and its face chosen.

Users bring phone shots, scans and group photos, so the photo goes through `read_photo` (orientation,
odd modes, huge sizes) and `detect_all` (several or small faces); `target_face` picks one face.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_photo, sha256_file
from implicit_deepfake.data.source import DatasetSource
from implicit_deepfake.faces.landmarks import Face, FaceLandmarker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetPhoto:
    """rgb: the whole photo (HxWx3 uint8, after read_photo); face: the chosen face in rgb's pixels.

    index: the chosen face's rank by box area (0 = largest) among `faces_found`; boxes: every face's
    detector box [x0, y0, x1, y1] in that order.
    """

    path: Path
    rgb: np.ndarray = field(repr=False)
    face: Face = field(repr=False)
    index: int
    faces_found: int
    boxes: list[list[float]]

    def record(self) -> dict:
        """What the run's manifest keeps of the photo: enough to tell which face of which file was used."""
        return {
            "path": str(self.path),
            "sha256": sha256_file(self.path),
            "size": [int(self.rgb.shape[1]), int(self.rgb.shape[0])],
            "faces_found": self.faces_found,
            "index": self.index,
            "box": self.boxes[self.index],
            "boxes": self.boxes,
        }

    def crop(self, margin: float = 0.5) -> tuple[np.ndarray, Face]:
        """The photo around the chosen face (margin: a fraction of the landmarks' extent, clipped to the
        photo) and the face shifted into the crop, for swappers that want one face filling the frame."""
        height, width = self.rgb.shape[:2]
        box = self.face.bbox
        pad = margin * (box[2:] - box[:2])
        x0, y0 = np.maximum(np.floor(box[:2] - pad), 0).astype(int)
        x1, y1 = np.minimum(np.ceil(box[2:] + pad), [width, height]).astype(int)
        landmarks = self.face.landmarks.copy()
        landmarks[:, :2] -= np.array([x0, y0], np.float32)
        return self.rgb[y0:y1, x0:x1].copy(), Face(landmarks)


def load_target(path: str | Path, face_index: int = 0, landmarker: FaceLandmarker | None = None) -> TargetPhoto:
    """Read the target photo and pick face `face_index` (0 = largest); a user error if there is none."""
    path = Path(path)
    rgb = read_photo(path)
    faces = (landmarker or FaceLandmarker()).detect_all(rgb)
    if not faces:
        raise DeepfakeError(
            f"{path}: no face found in the target photo. Use a photo with one clearly visible face "
            "(the person to swap in)."
        )
    if not 0 <= face_index < len(faces):
        raise DeepfakeError(
            f"{path}: target_face={face_index} is out of range: the target photo has {len(faces)} "
            f"face{'s' if len(faces) > 1 else ''} (largest first). Set target_face=<0..{len(faces) - 1}> to pick one."
        )
    boxes = [[round(float(v), 1) for v in d.box] for d in faces]
    if len(faces) > 1:
        log.info(
            "%s: %d faces found; using face %d (box %s; target_face=<0..%d> picks another)",
            path,
            len(faces),
            face_index,
            boxes[face_index],
            len(faces) - 1,
        )
    return TargetPhoto(path, rgb, faces[face_index].face, face_index, len(faces), boxes)


def target_photo(cfg: DictConfig, source: DatasetSource) -> Path:
    """The run's target photo: `target=<photo>`, or the dataset source's own famous.jpg."""
    return Path(cfg.target) if cfg.get("target") else Path(source.target_photo)


def target_image(cfg: DictConfig, source: DatasetSource) -> np.ndarray:
    """The run's target photo around its chosen face (`target_face`): what identity is measured against."""
    return load_target(target_photo(cfg, source), cfg.get("target_face", 0)).crop()[0]
