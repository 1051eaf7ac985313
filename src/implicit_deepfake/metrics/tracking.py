"""How well a tracked NeRFace dataset recovers known head poses and expressions (`data=video` against
`data=synthetic4d`, whose poses and expression weights are known).

NeRFace folds the head pose into the camera, and the tracker's head coordinates are its own (the
mean face, its own scale), so the two pose sets are first aligned by one similarity transform:
its rotation A is the mean of R_true^T R_tracked over the frames (a head-frame offset), then its
scale and shift map the tracked camera centres onto the true ones (least squares). The errors
are per frame: the angle between R_true A and R_tracked, and the distance between the aligned
camera centres, in the true dataset's units (the synthetic head is 1 unit tall).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from implicit_deepfake.data.blender import SPLITS, read_split_index
from implicit_deepfake.data.nerface import read_expressions

_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Track:
    """A NeRFace dataset's frames in time order: frame_index (N,) (the `frame_index` field, else the
    order), world_to_camera (N, 4, 4) OpenCV axes, expressions (N, D), split (N,) names."""

    frame_index: np.ndarray
    world_to_camera: np.ndarray
    expressions: np.ndarray
    split: np.ndarray


def read_track(root: str | Path) -> Track:
    """All splits of a NeRFace-format dataset, in the order of their frames' `frame_index`."""
    indices: list[int] = []
    poses, expressions, splits = [], [], []
    for split in SPLITS:
        index = read_split_index(root, split)
        indices += [frame.get("frame_index", len(indices) + i) for i, frame in enumerate(index.frames)]
        poses.append(np.linalg.inv(index.camera_to_world_gl.double().numpy() @ _GL_TO_CV))
        expressions.append(read_expressions(index))
        splits += [split] * len(index.frames)
    order = np.argsort(indices, kind="stable")
    return Track(
        np.asarray(indices)[order],
        np.concatenate(poses)[order],
        np.concatenate(expressions)[order],
        np.asarray(splits)[order],
    )


@dataclass(frozen=True)
class PoseErrors:
    """rotation_deg, translation: (N,) per frame; scale: tracked -> true units."""

    rotation_deg: np.ndarray
    translation: np.ndarray
    scale: float


def pose_errors(true_w2c: np.ndarray, tracked_w2c: np.ndarray) -> PoseErrors:
    """Errors of tracked world-to-camera poses (N, 4, 4) against the true ones, after one similarity."""
    r_true, r_tracked = true_w2c[:, :3, :3], tracked_w2c[:, :3, :3]
    offset = Rotation.from_matrix(np.einsum("nji,njk->nik", r_true, r_tracked)).mean().as_matrix()
    residual = np.einsum("nij,jk,nlk->nil", r_true, offset, r_tracked)
    rotation_deg = np.degrees(Rotation.from_matrix(residual).magnitude())
    centres_true = -np.einsum("nji,nj->ni", r_true, true_w2c[:, :3, 3])
    centres_tracked = -np.einsum("nji,nj->ni", r_tracked, tracked_w2c[:, :3, 3]) @ offset.T
    # centres_true ~ scale * centres_tracked + shift
    design = np.concatenate([centres_tracked.reshape(-1, 1), np.tile(np.eye(3), (len(true_w2c), 1))], 1)
    solution = np.linalg.lstsq(design, centres_true.reshape(-1), rcond=None)[0]
    aligned = solution[0] * centres_tracked + solution[1:]
    return PoseErrors(rotation_deg, np.linalg.norm(aligned - centres_true, axis=1), float(solution[0]))


def expression_r2(tracked: np.ndarray, true: np.ndarray, held_out: np.ndarray, components: int = 12) -> np.ndarray:
    """R^2 on the `held_out` frames (bool (N,)) of a linear map (with intercept) from the first
    `components` tracked expression coefficients (N, D) to each true weight (N, K), fitted by least
    squares on the other frames. Returns (K,)."""
    design = np.concatenate([tracked[:, :components], np.ones((len(tracked), 1))], 1)
    weights = np.linalg.lstsq(design[~held_out], true[~held_out], rcond=None)[0]
    predicted, actual = design[held_out] @ weights, true[held_out]
    return 1.0 - ((predicted - actual) ** 2).sum(0) / ((actual - actual.mean(0)) ** 2).sum(0)
