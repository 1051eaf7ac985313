"""User-supplied insightface ONNX models, loaded through insightface's own model zoo.

The weights (inswapper_128.onnx, buffalo_l's w600k_r50.onnx) are not redistributable, so users put
them in a folder themselves; this module checks that folder, turns every way a file can be wrong
into a `DeepfakeError` that says what to put where, and bridges our mediapipe `Face` to
insightface's `Face` (no SCRFD detector weights needed: the 5 keypoints come from `faces.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
from google.protobuf.message import DecodeError
from insightface.app.common import Face as InsightFace
from insightface.model_zoo import ArcFaceONNX, get_model
from insightface.model_zoo.inswapper import INSwapper
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.faces.landmarks import Face

#: What each model file is, for messages telling the user which file to download.
DESCRIPTIONS = {
    INSwapper: "insightface's face swapper inswapper_128.onnx",
    ArcFaceONNX: "the buffalo_l recognition model w600k_r50.onnx",
}
# What onnxruntime / onnx raise for a file that is not a loadable ONNX model.
_BAD_MODEL_ERRORS = (
    DecodeError,
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidArgument,
    ort_errors.InvalidGraph,
    ort_errors.NotImplemented,
    ort_errors.Fail,
)

ModelT = TypeVar("ModelT", INSwapper, ArcFaceONNX)


def require_model_files(model_dir: str | Path, field: str, files: dict[str, type]) -> dict[str, Path]:
    """Check that every file name in `files` (name -> insightface model class) is in `model_dir`.

    `field` is the config key that set `model_dir`, named in the error with the fix.
    Returns name -> path.
    """
    folder = Path(model_dir).expanduser()
    paths = {name: folder / name for name in files}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if missing:
        problem = "folder does not exist" if not folder.is_dir() else "missing " + ", ".join(missing)
        wanted = " and ".join(DESCRIPTIONS[files[name]] for name in missing)
        raise DeepfakeError(
            f"{field}={model_dir}: {problem}. Download {wanted} yourself (they are not "
            f"redistributable by this project) and put {', '.join(missing)} in {folder}, "
            f"or pass {field}=<folder>."
        )
    return paths


def load_model(path: Path, kind: type[ModelT], providers: list[str] | None = None) -> ModelT:
    """Load one ONNX file with `insightface.model_zoo.get_model`, which routes it to a model class
    by its input shapes; the result must be a `kind`. `providers`: onnxruntime execution providers
    (None: insightface's default, CUDA when available, else CPU)."""
    try:
        model = get_model(str(path), providers=providers)
    except _BAD_MODEL_ERRORS as err:
        raise DeepfakeError(
            f"{path}: not a valid ONNX model ({err}). Replace it with the original "
            f"{DESCRIPTIONS[kind]} (the download may be incomplete)."
        ) from err
    if not isinstance(model, kind):
        found = type(model).__name__ if model is not None else "no known model type"
        raise DeepfakeError(
            f"{path}: insightface reads this file as {found}, not {kind.__name__}. "
            f"Put {DESCRIPTIONS[kind]} under this name."
        )
    return model


def insightface_face(face: Face) -> InsightFace:
    """insightface's `Face` for one of our detections: bbox, 5 keypoints, det_score 1."""
    return InsightFace(bbox=face.bbox, kps=face.kps5, det_score=1.0)


def embed_face(arcface: ArcFaceONNX, rgb: np.ndarray, face: Face) -> InsightFace:
    """insightface's `Face` for `face` in `rgb` (HxWx3 uint8) with its ArcFace embedding set;
    `.normed_embedding` is then the (512,) unit identity vector."""
    # insightface follows cv2: images are BGR (ArcFaceONNX swaps to RGB itself before the net).
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    target = insightface_face(face)
    arcface.get(bgr, target)
    return target
