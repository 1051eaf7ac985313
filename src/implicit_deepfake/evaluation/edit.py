"""Expression editing of a trained 4D model (`python evaluate.py ckpt=... edit.expressions_from=...`).

The test frames are rendered twice, with their own expressions and with other ones (a training
frame's, or those in a file), and written side by side (original | changed) as PNGs and an mp4 of
the test sequence. How much the edit changed the mouth, and how little the rest of the image, is
measured in the mouth region found by the face mesh's lip landmarks on the test frame.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import synthetic_metadata, write_json, write_png
from implicit_deepfake.data.datamodule import FrameDataModule
from implicit_deepfake.evaluation.evaluate import SEQUENCE_FPS, view_cameras
from implicit_deepfake.faces.landmarks import FaceLandmarker, lip_indices
from implicit_deepfake.lit.base import SceneModule
from implicit_deepfake.render.video import uint8_images, write_video

log = logging.getLogger(__name__)
# The mouth region: the lips' convex hull grown about its centre by this factor (an open jaw
# moves the lower lip and chin below the closed lips).
_MOUTH_GROWTH = 1.6


def _vectors(value: object, source: str) -> np.ndarray:
    """A JSON value -> (K, D): one vector, a list of them, or NeRFace transforms' frames' `expression`s."""
    if isinstance(value, dict):
        if "frames" in value:
            value = [frame.get("expression") for frame in value["frames"]]
        elif "expression" in value:
            value = value["expression"]
    try:
        return np.atleast_2d(np.asarray(value, dtype=np.float32))
    except (TypeError, ValueError) as err:
        raise DeepfakeError(
            f"edit.expressions_from={source}: not a list of numbers or of expression vectors ({err})."
        ) from err


def load_expressions(source: int | str, train_expressions: Tensor) -> Tensor:
    """`edit.expressions_from` -> (K, D) expressions: an int is that training frame's; a path a
    .npy, .txt (one vector per line) or .json file (a vector, a list of vectors, or a NeRFace
    transforms file) of expressions of the model's length."""
    count, dims = train_expressions.shape
    if isinstance(source, int):
        if not -count <= source < count:
            raise DeepfakeError(f"edit.expressions_from={source}: the model was trained on frames 0..{count - 1}.")
        return train_expressions[source][None]
    path = Path(source)
    if not path.is_file():
        raise DeepfakeError(
            f"edit.expressions_from={source}: no such file. "
            "Give a training frame number or a .npy/.txt/.json file of expressions."
        )
    if path.suffix == ".npy":
        vectors = np.atleast_2d(np.load(path).astype(np.float32))
    elif path.suffix == ".json":
        vectors = _vectors(json.loads(path.read_text()), source)
    else:
        vectors = np.atleast_2d(np.loadtxt(path, dtype=np.float32))
    if vectors.ndim != 2 or vectors.shape[1] != dims or not len(vectors):
        raise DeepfakeError(
            f"{path}: expressions must be vectors of {dims} numbers (the model's), got shape {vectors.shape}."
        )
    if not np.isfinite(vectors).all():
        raise DeepfakeError(f"{path}: expressions hold NaN or infinite values.")
    return torch.from_numpy(vectors).to(train_expressions)


def mouth_mask(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) bool: the lips' convex hull (landmarks (468, 2+) in pixels), grown by _MOUTH_GROWTH."""
    lips = landmarks[lip_indices(), :2]
    center = lips.mean(0)
    hull = cv2.convexHull(((lips - center) * _MOUTH_GROWTH + center).round().astype(np.int32))
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, (1,))
    return mask.astype(bool)


def mouth_change(original: np.ndarray, changed: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Mean absolute difference (0-255) of two uint8 images inside and outside the mouth mask."""
    diff = np.abs(original.astype(np.float32) - changed.astype(np.float32)).mean(2)
    return {"mouth": float(diff[mask].mean()), "outside": float(diff[~mask].mean())}


def edit_dir(run_dir: Path, source: int | str) -> Path:
    """Where an edit of a run goes: <run_dir>/edits/frame_<n> or edits/file_<the file's stem>."""
    return run_dir / "edits" / (f"frame_{source}" if isinstance(source, int) else f"file_{Path(source).stem}")


def edit_expressions(
    module: SceneModule, datamodule: FrameDataModule, source: int | str, run_dir: Path, pose_steps: int = 0
) -> dict:
    """Render the test frames with their own and with `source`'s expressions (test frame i takes
    the i-th, cycling) -> edit_dir(run_dir, source)/{frames/*.png, edit.mp4, edit.json}; returns
    edit.json's content. pose_steps: fit the test frames' poses first, as evaluation does."""
    out_dir = edit_dir(run_dir, source)
    train_expressions = getattr(module, "train_expressions", None)
    if train_expressions is None:
        raise DeepfakeError(
            "edit.expressions_from needs an expression-conditioned run "
            "(model=nerface, nerface_paper or gaussian_avatar)."
        )
    module.eval()
    test = datamodule.frames("test")
    expressions = load_expressions(source, train_expressions)
    changed_expressions = expressions[torch.arange(len(test)) % len(expressions)]
    cameras, _ = view_cameras(module, test, pose_steps, datamodule.bbox_weight)
    assert test.expressions is not None  # the run trained on a NeRFace-format dataset
    originals = uint8_images(module.render_views(cameras, test.expressions.to(module.device)))
    changed = uint8_images(module.render_views(cameras, changed_expressions))

    landmarker, frames, pairs = FaceLandmarker(), [], []
    targets = uint8_images(test.rgb)  # the sharp frames the renders are aligned to
    for relpath, target, before, after in zip(test.relpaths, targets, originals, changed):
        pair = np.concatenate([before, after], axis=1)
        pairs.append(pair)
        name = Path(relpath).with_suffix(".png").name
        write_png(out_dir / "frames" / name, pair, source=f"original | expressions_from={source}, test frame {relpath}")
        face = landmarker.detect(target)
        row: dict[str, Any] = {"frame": relpath}
        if face is not None:
            row |= mouth_change(before, after, mouth_mask(face.landmarks, before.shape[:2]))
        frames.append(row)
    write_video(out_dir / "edit.mp4", pairs, fps=SEQUENCE_FPS)

    measured = [row for row in frames if "mouth" in row]
    mouth = float(np.mean([row["mouth"] for row in measured])) if measured else None
    outside = float(np.mean([row["outside"] for row in measured])) if measured else None
    report = {
        "expressions_from": source,
        "mouth_difference": mouth,
        "outside_difference": outside,
        "mouth_to_outside": None if mouth is None or outside is None else mouth / max(outside, 1e-6),
        "frames_measured": len(measured),
        "frames": frames,
        "video": str(out_dir / "edit.mp4"),
        "synthetic": synthetic_metadata(),
    }
    write_json(out_dir / "edit.json", report)
    log.info("edit (%s): mouth %s, outside %s (mean |difference|, 0-255)", out_dir, mouth, outside)
    return report
