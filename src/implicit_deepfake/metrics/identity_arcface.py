"""ArcFace identity embeddings (insightface's buffalo_l w600k_r50.onnx, supplied by the user)."""

from __future__ import annotations

import numpy as np
from insightface.model_zoo import ArcFaceONNX

from implicit_deepfake.faces.insightface_models import embed_face, load_model, require_model_files
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.identity import FaceEmbedder

FIELD = "identity.model_dir"


class ArcFaceEmbedder(FaceEmbedder):
    """Unit-norm ArcFace embedding (512,) of the largest face; distance = 1 - cosine similarity.

    providers: onnxruntime execution providers (None: CUDA when available, else CPU).
    """

    name = "arcface"
    #: Cosine similarity 0.45 for the same person: insightface's own default for buffalo_l
    #: (insightface/app/person/config.py, face_similarity_threshold = 0.45), and deepface's
    #: verification threshold for Buffalo_L (deepface/config/threshold.py, cosine distance 0.55).
    same_person_threshold = 0.55

    def __init__(
        self, model_dir: str, arcface_file: str = "w600k_r50.onnx", providers: list[str] | None = None
    ) -> None:
        paths = require_model_files(model_dir, FIELD, {arcface_file: ArcFaceONNX})
        self._arcface = load_model(paths[arcface_file], ArcFaceONNX, providers)
        self._landmarker = FaceLandmarker()

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        face = self._landmarker.detect(rgb)
        if face is None:
            return None
        return embed_face(self._arcface, rgb, face).normed_embedding.astype(np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(1.0 - np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))
