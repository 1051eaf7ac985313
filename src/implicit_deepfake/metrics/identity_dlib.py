"""dlib's 128-d ResNet face descriptor (offline; models from the face_recognition_models wheel).

The face box comes from mediapipe (`FaceLandmarker`), which finds small and turned faces that
dlib's HOG detector misses; dlib's shape predictor then places its own landmarks inside that
box, so the descriptor sees the face aligned the way it was trained.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.identity import FaceEmbedder

_PREDICTORS = {"68": "shape_predictor_68_face_landmarks.dat", "5": "shape_predictor_5_face_landmarks.dat"}
_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"


def dlib_model_path(filename: str) -> str:
    """Path of one of face_recognition_models' files; DeepfakeError when it is not installed."""
    # find_spec, not import: the package's __init__ needs pkg_resources, which may be absent.
    spec = importlib.util.find_spec("face_recognition_models")
    path = os.path.join(os.path.dirname(spec.origin), "models", filename) if spec and spec.origin else ""
    if not os.path.isfile(path):
        raise DeepfakeError(
            f"dlib model file {filename} not found (identity backend 'dlib'). "
            "Run `pip install face_recognition_models`, or choose another identity backend."
        )
    return path


@functools.cache
def _dlib_models(shape_predictor: str) -> tuple:
    """(shape predictor, face recognizer), loaded once per process: loading takes ~0.6 s."""
    import dlib

    return (
        dlib.shape_predictor(dlib_model_path(_PREDICTORS[shape_predictor])),
        dlib.face_recognition_model_v1(dlib_model_path(_RECOGNITION)),
    )


class DlibEmbedder(FaceEmbedder):
    """dlib face descriptor of the largest face; Euclidean distance, same person under 0.6.

    shape_predictor: "68" (dlib's default alignment) or "5" points.
    num_jitters: dlib's test-time augmentation (re-sampled crops averaged); 0 is fastest.
    """

    name = "dlib"
    same_person_threshold = 0.6  # dlib's documented threshold for its descriptor

    def __init__(
        self,
        shape_predictor: str = "68",
        num_jitters: int = 0,
        landmarker: FaceLandmarker | None = None,
    ) -> None:
        if shape_predictor not in _PREDICTORS:
            raise DeepfakeError(
                f"identity.shape_predictor must be one of {sorted(_PREDICTORS)}, got {shape_predictor!r}"
            )
        self.shape_predictor = shape_predictor
        self.num_jitters = num_jitters
        self._predictor, self._recognizer = _dlib_models(shape_predictor)
        self._landmarker = landmarker or FaceLandmarker()

    def __reduce__(self) -> tuple:
        """Pickled as its settings (a swap worker process loads its own dlib models)."""
        return type(self), (self.shape_predictor, self.num_jitters, self._landmarker)

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb: HxWx3 uint8 -> (128,) float32 descriptor, or None without a face."""
        import dlib

        face = self._landmarker.detect(rgb)
        if face is None:
            return None
        x0, y0, x1, y1 = np.round(face.bbox).astype(int)
        image = np.ascontiguousarray(rgb)
        shape = self._predictor(image, dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
        descriptor = self._recognizer.compute_face_descriptor(image, shape, self.num_jitters)
        return np.asarray(descriptor, np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
