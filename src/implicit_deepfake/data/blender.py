"""The NeRF/Blender dataset format: `<split>/r_<i>.png` + `transforms_<split>.json`.

A json holds `camera_angle_x` (radians) and `frames`, each with `file_path` (relative to the
dataset root, extension optional as in the original NeRF data) and a 4x4 camera-to-world
`transform_matrix` in OpenGL axes. NeRFace-format jsons (`nerface.py`) are read here too: their
`intrinsics` stand in for `camera_angle_x` (`split_camera.py`) and their extra frame fields are
kept. Every check raises `DeepfakeError` naming the file and field.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_image, read_json, write_json
from implicit_deepfake.data.split_camera import SplitCamera, read_split_camera
from implicit_deepfake.render.cameras import Cameras

SPLITS = ("train", "val", "test")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class SplitIndex:
    """A validated `transforms_<split>.json`: what is needed to find and place every frame."""

    root: Path
    split: str
    camera: SplitCamera  # camera_angle_x and/or NeRFace's intrinsics, as written
    frames: list[dict]  # the json's frame entries, unchanged (extra fields are kept)
    image_paths: list[Path]

    @property
    def relpaths(self) -> list[str]:
        return [p.relative_to(self.root.resolve()).as_posix() for p in self.image_paths]

    @property
    def camera_to_world_gl(self) -> torch.Tensor:
        return torch.tensor([f["transform_matrix"] for f in self.frames], dtype=torch.float32)


def transforms_path(root: Path, split: str) -> Path:
    return Path(root) / f"transforms_{split}.json"


def _resolve_image(root: Path, file_path: str, where: str) -> Path:
    candidate = (root / file_path).resolve()
    if not candidate.is_relative_to(root.resolve()):
        raise DeepfakeError(f"{where}: file_path '{file_path}' points outside the dataset root {root}.")
    if candidate.suffix.lower() in _IMAGE_SUFFIXES:
        if candidate.is_file():
            return candidate
    else:
        for suffix in _IMAGE_SUFFIXES:
            if candidate.with_name(candidate.name + suffix).is_file():
                return candidate.with_name(candidate.name + suffix)
    raise DeepfakeError(f"{where}: image for file_path '{file_path}' not found under {root}.")


def read_split_index(root: str | Path, split: str) -> SplitIndex:
    """Read and validate `transforms_<split>.json` (the images are checked to exist, not read)."""
    root = Path(root)
    if not root.is_dir():
        raise DeepfakeError(f"Dataset folder {root} does not exist. Check `data.root` / `paths.data_dir`.")
    path = transforms_path(root, split)
    if not path.is_file():
        raise DeepfakeError(f"{path} is missing: a Blender-format dataset needs transforms_{{train,val,test}}.json.")
    meta = read_json(path)
    if not isinstance(meta, dict):
        raise DeepfakeError(f"{path}: expected a JSON object with `camera_angle_x` and `frames`.")
    camera = read_split_camera(path, meta)
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames:
        raise DeepfakeError(f"{path}: field `frames` must be a non-empty list.")
    image_paths = []
    for i, frame in enumerate(frames):
        where = f"{path} frames[{i}]"
        if not isinstance(frame, dict) or not isinstance(frame.get("file_path"), str):
            raise DeepfakeError(f"{where}: missing field `file_path` (a path relative to the dataset root).")
        matrix = np.asarray(frame.get("transform_matrix", None), dtype=object)
        if matrix.shape != (4, 4) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in matrix.flat):
            raise DeepfakeError(f"{where}: field `transform_matrix` must be a 4x4 list of finite numbers.")
        image_paths.append(_resolve_image(root, frame["file_path"], where))
    return SplitIndex(root, split, camera, frames, image_paths)


@dataclass(frozen=True)
class BlenderSplit:
    """One split loaded: cameras and images (N, H, W, C) uint8 with C = 4 (RGBA) or 3 (RGB)."""

    index: SplitIndex
    cameras: Cameras
    images: np.ndarray


def load_resized(path: Path, factor: int) -> np.ndarray:
    """An image box-downscaled by the integer `factor` (which must divide its size)."""
    image = read_image(path)
    if factor == 1:
        return image
    height, width = image.shape[:2]
    if height % factor or width % factor:
        raise DeepfakeError(f"{path}: size {width}x{height} is not divisible by downscale factor {factor}.")
    resized = Image.fromarray(image).resize((width // factor, height // factor), Image.Resampling.BOX)
    return np.asarray(resized)


def load_blender_split(root: str | Path, split: str, downscale: int = 1) -> BlenderSplit:
    """Load one split; `downscale` (an integer factor) box-filters the images and scales intrinsics."""
    if not isinstance(downscale, int) or downscale < 1:
        raise DeepfakeError(f"data.downscale must be a positive integer, got {downscale!r}.")
    index = read_split_index(root, split)
    images = [load_resized(p, downscale) for p in index.image_paths]
    first = images[0]
    for path, image in zip(index.image_paths, images):
        if image.shape != first.shape:
            raise DeepfakeError(
                f"{path}: size/channels {image.shape} differ from {index.image_paths[0].name} {first.shape}; "
                "all frames of a dataset must have the same size."
            )
    height, width = first.shape[:2]
    # Intrinsics are given for the frames as stored: build them at full size, then scale.
    cameras = index.camera.cameras(index.camera_to_world_gl, width * downscale, height * downscale).scaled(
        1 / downscale
    )
    return BlenderSplit(index, cameras, np.stack(images))


def write_split_index(
    root: str | Path,
    split: str,
    camera_angle_x: float | None,
    frames: list[dict],
    intrinsics: Sequence[float] | None = None,
) -> None:
    """Write `transforms_<split>.json` atomically; `intrinsics` is NeRFace's [fx, fy, cx, cy] (left out when None)."""
    header = {"camera_angle_x": camera_angle_x, "intrinsics": None if intrinsics is None else list(intrinsics)}
    write_json(
        transforms_path(Path(root), split), {**{k: v for k, v in header.items() if v is not None}, "frames": frames}
    )
