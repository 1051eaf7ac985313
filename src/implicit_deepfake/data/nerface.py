"""The NeRFace dataset format (Gafni et al., CVPR 2021): a monocular video of a talking head.

Per split `transforms_<split>.json` = {"intrinsics": [fx, fy, cx, cy] (or only `camera_angle_x`),
"frames": [{"file_path", "transform_matrix" (the head pose folded into an OpenGL camera-to-world),
"expression" (NeRFace's are 76 Face2Face blendshape weights), "bbox"? }]} and one static background
image the person was filmed against (`bg/00050.png` in their releases, `background.png` in ours).
Frames are RGB; RGBA frames are composited onto the background. The split index, the images and
the cameras are read by `blender.py` (shared checks, `split_camera.py` for the intrinsics); this
module adds the per-frame expression and bbox, and the background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.blender import (
    SPLITS,
    SplitIndex,
    load_blender_split,
    load_resized,
    read_split_index,
    transforms_path,
)
from implicit_deepfake.data.source import GivenTargetPhoto
from implicit_deepfake.render.cameras import Cameras

EXPRESSION_DIM = 76  # NeRFace's expression vectors
# Where the static background is looked for, in this order (relative to the dataset root).
BACKGROUND_FILES = ("background.png", "bg/00050.png")
# NeRFace's loader uses the whole frame for a frame without a bbox.
FULL_FRAME_BBOX = (0.0, 1.0, 0.0, 1.0)
NERFACE_URL = "https://gafniguy.github.io/4D-Facial-Avatars/"
NERFACE_REPO = "https://github.com/gafniguy/4D-Facial-Avatars"
NERFACE_LAYOUT = """\
  {root}/
    famous.jpg                      the target photo (the person to swap in): your choice
    bg/00050.png                    the static background (or background.png)
    train/ val/ test/               f_<i>.png frames of the video (RGB)
    transforms_train.json           intrinsics [fx, fy, cx, cy] + frames[file_path, transform_matrix,
    transforms_val.json               expression (76 floats), bbox]
    transforms_test.json"""


def find_background(root: str | Path) -> Path | None:
    """The dataset's static background image (the first of BACKGROUND_FILES there), or None."""
    return next((Path(root) / name for name in BACKGROUND_FILES if (Path(root) / name).is_file()), None)


def _number_list(value: object, length: int | None) -> bool:
    return (
        isinstance(value, list)
        and (length is None or len(value) == length)
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )


def is_nerface_split(root: str | Path, split: str) -> bool:
    """Whether the split's frames carry NeRFace's `expression` (else it is a Blender-format split)."""
    return any("expression" in frame for frame in read_split_index(root, split).frames)


def read_expressions(index: SplitIndex) -> np.ndarray:
    """(N, D) float32 per-frame `expression` vectors; all frames of a split have the same length D."""
    path = transforms_path(index.root, index.split)
    rows: list[list[float]] = []
    for i, frame in enumerate(index.frames):
        value = frame.get("expression")
        if not _number_list(value, None) or not value:
            raise DeepfakeError(
                f"{path} frames[{i}]: field `expression` must be a non-empty list of finite numbers "
                f"(NeRFace's are {EXPRESSION_DIM} blendshape weights)."
            )
        if rows and len(value) != len(rows[0]):
            raise DeepfakeError(
                f"{path} frames[{i}]: field `expression` has {len(value)} values, frames[0] has "
                f"{len(rows[0])}; all frames need the same length."
            )
        rows.append(value)
    return np.asarray(rows, np.float32)


def read_bboxes(index: SplitIndex) -> np.ndarray | None:
    """(N, 4) float32 face boxes [top, bottom, left, right] as fractions of height and width (NeRFace's
    order, from its `find_bbox`), the whole frame where a frame has none; None when no frame has one."""
    if not any("bbox" in frame for frame in index.frames):
        return None
    path = transforms_path(index.root, index.split)
    rows = []
    for i, frame in enumerate(index.frames):
        box = frame.get("bbox", list(FULL_FRAME_BBOX))
        if not _number_list(box, 4) or not (0 <= box[0] <= box[1] <= 1 and 0 <= box[2] <= box[3] <= 1):
            raise DeepfakeError(
                f"{path} frames[{i}]: field `bbox` must be [top, bottom, left, right] as fractions "
                f"of the frame (0 <= top <= bottom <= 1, 0 <= left <= right <= 1), got {box!r}."
            )
        rows.append(box)
    return np.asarray(rows, np.float32)


def landmark_bbox(xy: np.ndarray, width: int, height: int) -> list[float]:
    """NeRFace's face box [top, bottom, left, right] (fractions of the frame) around face landmarks
    (P, 2) in pixels, grown like its `find_bbox`: 27% up for the forehead, 15% on the other sides."""
    (left, top), (right, bottom) = np.asarray(xy, np.float64).min(0), np.asarray(xy, np.float64).max(0)
    box_h, box_w = bottom - top, right - left
    box = [
        (top - 0.27 * box_h) / height,
        (bottom + 0.15 * box_h) / height,
        (left - 0.15 * box_w) / width,
        (right + 0.15 * box_w) / width,
    ]
    return [round(float(np.clip(v, 0.0, 1.0)), 5) for v in box]


def read_background(root: str | Path, downscale: int, shape: tuple[int, ...]) -> np.ndarray:
    """The background (H, W, 3) uint8, box-downscaled like the frames; `shape` is the frames' (H, W)."""
    path = find_background(root)
    if path is None:
        raise DeepfakeError(
            f"{root}: no static background image; a NeRFace dataset needs one of "
            f"{', '.join(BACKGROUND_FILES)} (the empty scene the video was filmed against)."
        )
    background = load_resized(path, downscale)[..., :3]
    if background.shape[:2] != shape:
        raise DeepfakeError(
            f"{path}: size {background.shape[1]}x{background.shape[0]} differs from the frames' "
            f"{shape[1]}x{shape[0]} (after data.downscale={downscale}); it must match them."
        )
    return background


@dataclass(frozen=True)
class NerfaceSplit:
    """One split: images (N, H, W, 3) uint8, expressions (N, D) float32, bboxes (N, 4) float32
    [top, bottom, left, right] fractions or None, background (H, W, 3) uint8."""

    index: SplitIndex
    cameras: Cameras
    images: np.ndarray
    expressions: np.ndarray
    bboxes: np.ndarray | None
    background: np.ndarray


def load_nerface_split(root: str | Path, split: str, downscale: int = 1) -> NerfaceSplit:
    """Load one split of a NeRFace-format dataset; `downscale` box-filters frames and background."""
    loaded = load_blender_split(root, split, downscale)
    background = read_background(root, downscale, loaded.images.shape[1:3])
    images = loaded.images
    if images.shape[-1] == 4:  # transparent where the background shows
        alpha = images[..., 3:].astype(np.float32) / 255.0
        images = (images[..., :3] * alpha + background * (1.0 - alpha) + 0.5).astype(np.uint8)
    return NerfaceSplit(
        loaded.index, loaded.cameras, images, read_expressions(loaded.index), read_bboxes(loaded.index), background
    )


class NerfaceSource(GivenTargetPhoto):
    """A NeRFace-format video on disk (one person's sequence) plus the target photo to swap in."""

    name = "nerface"

    def __init__(self, root: str, target_photo: str | None = None) -> None:
        self.root = Path(root)
        self.given_target_photo = Path(target_photo) if target_photo else None

    def prepare(self) -> Path:
        missing = [p.name for p in (transforms_path(self.root, s) for s in SPLITS) if not p.is_file()]
        if find_background(self.root) is None:
            missing.append(" or ".join(BACKGROUND_FILES))
        if not self.root.is_dir() or missing:
            what = "does not exist" if not self.root.is_dir() else f"is incomplete (missing {', '.join(missing)})"
            raise DeepfakeError(
                f"NeRFace dataset at {self.root} {what}.\n"
                f"The NeRFace video sequences are shared by their authors on request: see {NERFACE_URL} and "
                f"{NERFACE_REPO} (README, 'Dataset and License'; CC BY-NC-SA). Unpack one person's sequence "
                f"so that it looks like:\n{NERFACE_LAYOUT.format(root=self.root)}\n"
                "or point paths.data_dir (or data.source.root) at the folder that holds it."
            )
        if not self.target_photo.is_file():
            raise DeepfakeError(
                f"Target photo {self.target_photo} not found: put a photo of the person to swap in there, "
                "or set data.source.target_photo=<path to a photo with one clear, frontal face>."
            )
        return self.root
