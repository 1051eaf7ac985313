"""The `insightface` swap backend: insightface's INSwapper (inswapper_128.onnx) on our detections.

Faces and their 5 keypoints come from `FaceLandmarker`, so only the swapper and its ArcFace
recognition model are needed, both supplied by the user (see `insightface_models`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from insightface.app.common import Face as InsightFace
from insightface.model_zoo import ArcFaceONNX
from insightface.model_zoo.inswapper import INSwapper

from implicit_deepfake.core.io import sha256_file
from implicit_deepfake.faces.insightface_models import embed_face, insightface_face, load_model, require_model_files
from implicit_deepfake.faces.landmarks import Face, FaceLandmarker
from implicit_deepfake.swap.base import FaceSwapper

FIELD = "swap.model_dir"


class InsightFaceSwapper(FaceSwapper):
    """Swaps the target photo's identity into each frame with inswapper_128.

    model_dir: folder holding `swapper_file` and `arcface_file` (the recognition model inswapper
    was trained with: buffalo_l's w600k_r50). providers: onnxruntime execution providers
    (None: CUDA when available, else CPU).
    """

    name = "insightface"

    def __init__(
        self,
        model_dir: str,
        swapper_file: str = "inswapper_128.onnx",
        arcface_file: str = "w600k_r50.onnx",
        providers: list[str] | None = None,
    ) -> None:
        paths = require_model_files(model_dir, FIELD, {swapper_file: INSwapper, arcface_file: ArcFaceONNX})
        self._swapper = load_model(paths[swapper_file], INSwapper, providers)
        self._arcface = load_model(paths[arcface_file], ArcFaceONNX, providers)
        # Hashes, not paths, so replacing a model file invalidates the swapped-frame cache.
        self._config = {
            "name": self.name,
            "swapper_file": swapper_file,
            "swapper_sha256": sha256_file(paths[swapper_file]),
            "arcface_file": arcface_file,
            "arcface_sha256": sha256_file(paths[arcface_file]),
        }
        self._landmarker = FaceLandmarker()
        self._identity: InsightFace | None = None

    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]], face: Face | None = None) -> None:
        face = face or self._landmarker.detect_required(target, "target photo")
        self._identity = embed_face(self._arcface, target, face)

    def swap(self, frame: np.ndarray, relpath: str, face: Face | None = None) -> np.ndarray | None:
        if self._identity is None:
            raise RuntimeError("InsightFaceSwapper.swap called before prepare")
        face = face or self._landmarker.detect(frame)
        if face is None:
            return None
        # INSwapper.get(img, face to replace, face giving the identity): BGR in, BGR out (cv2).
        bgr = np.ascontiguousarray(frame[..., ::-1])
        swapped = self._swapper.get(bgr, insightface_face(face), self._identity, paste_back=True)
        return np.ascontiguousarray(swapped[..., ::-1])

    def config(self) -> dict:
        return dict(self._config)
