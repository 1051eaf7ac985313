"""dlib's 128-d ResNet face descriptor (offline; models from the face_recognition_models wheel).

mediapipe (`FaceLandmarker`) finds the face, small and turned faces included; dlib's own HOG
detector then boxes it (`box="hog"`, the default: dlib's standard pipeline, whose boxes its
68-point shape predictor was trained on), searched in a crop around mediapipe's face (fast, and
the same face); mediapipe's box where HOG finds none (faces turned past ~60 degrees), or always
with `box="mediapipe"`. Past ~35 degrees of yaw mediapipe's box (all 468 landmarks, the hidden
side's included) is wider than dlib's, and the predictor's 68 points slip.
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
FACE_BOXES = ("hog", "mediapipe")


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


@functools.cache
def _hog_detector():
    import dlib

    return dlib.get_frontal_face_detector()


def hog_box(rgb: np.ndarray, near: np.ndarray) -> np.ndarray | None:
    """dlib's HOG box (x0, y0, x1, y1) of the face whose box (from another detector) is `near`: the
    detections (upsampled once, as dlib's face_recognition does) in a crop three times its size
    around it, at the image's own scale, so the boxes are those of the whole image; the largest whose
    centre lies inside `near`, or None."""
    x0, y0, x1, y1 = near
    pad = max(x1 - x0, y1 - y0)  # with less margin the boxes drift from the whole image's (by up to 20%)
    cx0, cy0 = max(0, int(x0 - pad)), max(0, int(y0 - pad))
    crop = np.ascontiguousarray(rgb[cy0 : int(y1 + pad) + 1, cx0 : int(x1 + pad) + 1])
    boxes = [
        np.array([b.left() + cx0, b.top() + cy0, b.right() + cx0, b.bottom() + cy0], np.float64)
        for b in _hog_detector()(crop, 1)
    ]
    inside = [b for b in boxes if x0 <= 0.5 * (b[0] + b[2]) <= x1 and y0 <= 0.5 * (b[1] + b[3]) <= y1]
    return max(inside, key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if inside else None


class DlibEmbedder(FaceEmbedder):
    """dlib face descriptor of the largest face; Euclidean distance, same person under 0.6.

    shape_predictor: "68" (dlib's default alignment) or "5" points.
    num_jitters: dlib's test-time augmentation (re-sampled crops averaged); 0 is fastest.
    box: the face box the shape predictor starts from: "hog" (dlib's own, mediapipe's where HOG
    finds none) or "mediapipe" (see the module doc).
    """

    same_person_threshold = 0.6  # dlib's documented threshold for its descriptor

    def __init__(
        self,
        shape_predictor: str = "68",
        num_jitters: int = 0,
        landmarker: FaceLandmarker | None = None,
        box: str = "hog",
    ) -> None:
        if shape_predictor not in _PREDICTORS:
            raise DeepfakeError(
                f"identity.shape_predictor must be one of {sorted(_PREDICTORS)}, got {shape_predictor!r}"
            )
        if box not in FACE_BOXES:
            raise DeepfakeError(f"identity.box must be one of {list(FACE_BOXES)}, got {box!r}")
        self.shape_predictor = shape_predictor
        self.num_jitters = num_jitters
        self.box = box
        self.name = f"dlib-{box}-box"  # the box is part of the measure: a swap cache measured with another is stale
        self._predictor, self._recognizer = _dlib_models(shape_predictor)
        self._landmarker = landmarker or FaceLandmarker()

    def __reduce__(self) -> tuple:
        """Pickled as its settings (a swap worker process loads its own dlib models)."""
        return type(self), (self.shape_predictor, self.num_jitters, self._landmarker, self.box)

    def embed(self, rgb: np.ndarray) -> np.ndarray | None:
        """rgb: HxWx3 uint8 -> (128,) float32 descriptor, or None without a face."""
        import dlib

        face = self._landmarker.detect(rgb)
        if face is None:
            return None
        image = np.ascontiguousarray(rgb[..., :3])
        box = hog_box(image, face.bbox) if self.box == "hog" else None
        x0, y0, x1, y1 = np.round(face.bbox if box is None else box).astype(int)
        shape = self._predictor(image, dlib.rectangle(int(x0), int(y0), int(x1), int(y1)))
        descriptor = self._recognizer.compute_face_descriptor(image, shape, self.num_jitters)
        return np.asarray(descriptor, np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(np.asarray(a, np.float32) - np.asarray(b, np.float32)))
