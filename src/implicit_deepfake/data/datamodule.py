"""One LightningDataModule over a (swapped) Blender-format dataset, for every model.

Each split is decoded once into uint8 arrays on disk and memory-mapped (`frame_cache.py`): RGB
composited onto the configured background, alpha, cameras, and for a NeRFace-format video each
frame's expression and face bbox and the static background; batches convert to floats as they are
read, so a 5,500-frame video costs its pages, not 17 GB of floats.
`mode="images"` serves whole images with their cameras (Gaussian splatting); `mode="rays"` serves
random batches of rays from all training images (NeRFs), made per batch from the cameras, so no
split's rays are ever held in memory (NeRFace's own loader precomputes them all: 80 GB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import image_size
from implicit_deepfake.data.blender import read_split_index
from implicit_deepfake.data.frame_cache import PixelReader, cached_frames, decode_frames
from implicit_deepfake.data.nerface import is_nerface_split, read_background, read_bboxes, read_expressions
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.rays import pixel_coordinates, pixel_rays


@dataclass(frozen=True)
class Frames:
    """One split: rgb8 (N, H, W, 3) uint8 on the background and alpha8 (N, H, W, 1) uint8 (None:
    opaque frames), memory-mapped for the training data and read per batch. A NeRFace video adds
    expressions (N, D), bboxes (N, 4) [top, bottom, left, right] fractions (None: no frame has one)
    and background_image (H, W, 3) in [0, 1], the static scene behind the head."""

    cameras: Cameras
    rgb8: Tensor
    alpha8: Tensor | None
    relpaths: list[str]
    expressions: Tensor | None = None
    bboxes: Tensor | None = None
    background_image: Tensor | None = None
    # Readers of scattered pixels of memory-mapped rgb8 / alpha8 (see frame_cache.PixelReader).
    readers: tuple[PixelReader | None, PixelReader | None] = field(default=(None, None), repr=False)

    def __len__(self) -> int:
        return len(self.cameras)

    def colors(self, *index: Tensor | int | slice) -> Tensor:
        """Pixels (or whole frames) at `index` into (N, H, W) as floats in [0, 1], (..., 3)."""
        return self._read(self.rgb8, self.readers[0], index)

    def opacities(self, *index: Tensor | int | slice) -> Tensor:
        """Alpha at `index` into (N, H, W) as floats in [0, 1], (..., 1)."""
        if self.alpha8 is None:
            return torch.ones(1).expand(self.rgb8.shape[:3])[index][..., None]  # expand: no memory
        return self._read(self.alpha8, self.readers[1], index)

    @staticmethod
    def _read(array: Tensor, reader: PixelReader | None, index: tuple) -> Tensor:
        if reader is not None and len(index) == 3 and all(isinstance(i, Tensor) for i in index):
            return torch.from_numpy(reader(*(i.numpy() for i in index)).copy()).float() / 255.0
        if reader is not None and len(index) == 1 and isinstance(index[0], int):  # one whole frame
            return torch.from_numpy(reader.frame(index[0]).copy()).float() / 255.0
        return array[index].float() / 255.0

    @property
    def rgb(self) -> Tensor:
        """(N, H, W, 3) floats of the whole split: for the small splits (val, test)."""
        return self.colors(slice(None))

    @property
    def alpha(self) -> Tensor:
        """(N, H, W, 1) floats of the whole split: for the small splits, or a few views' masks."""
        return self.opacities(slice(None))


def load_frames(
    root: str | Path, split: str, background: tuple[float, float, float], downscale: int = 1, cache: bool = True
) -> Frames:
    """Load a split composited onto `background` (RGB frames count as fully opaque); a NeRFace-format
    split (frames with an `expression`) comes with its expressions, bboxes and background image,
    its frames composited on that image. cache: decode into `<root>/.frames` once and memory-map
    (a folder this tool wrote, such as a swap cache); False: decode into memory (a small split of
    someone else's folder)."""
    if not isinstance(downscale, int) or downscale < 1:
        raise DeepfakeError(f"data.downscale must be a positive integer, got {downscale!r}.")
    index = read_split_index(root, split)
    height, width = image_size(index.image_paths[0])
    cameras = index.camera.cameras(index.camera_to_world_gl, width, height).scaled(1 / downscale)
    video = is_nerface_split(root, split)
    shape = (cameras.height, cameras.width)
    backdrop = (
        read_background(root, downscale, shape).astype(np.float32)
        if video
        else np.asarray(background, np.float32) * 255.0
    )
    if cache:
        rgb, alpha = cached_frames(Path(root), split, index.image_paths, backdrop, downscale)
    else:
        rgb, alpha = decode_frames(index.image_paths, backdrop, downscale)
    rgb8, alpha8 = torch.from_numpy(rgb), None if alpha is None or video else torch.from_numpy(alpha)
    if not video:
        return Frames(cameras, rgb8, alpha8, index.relpaths, readers=(_reader(rgb), _reader(alpha)))
    bboxes = read_bboxes(index)
    return Frames(
        cameras,
        rgb8,
        None,
        index.relpaths,
        torch.from_numpy(read_expressions(index)),
        None if bboxes is None else torch.from_numpy(bboxes),
        torch.from_numpy(backdrop / 255.0),
        readers=(_reader(rgb), None),
    )


def _reader(array: np.ndarray | None) -> PixelReader | None:
    return PixelReader(array) if isinstance(array, np.memmap) else None


class ImageDataset(Dataset):
    """Whole images: {"index", "rgb" (H, W, 3), "alpha" (H, W, 1), "world_to_camera" (4, 4), "intrinsics"
    (3, 3)}, and "expression" (D,) for a NeRFace video."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        f = self.frames
        item = {
            "index": torch.tensor(i),
            "rgb": f.colors(i),
            "alpha": f.opacities(i),
            "world_to_camera": f.cameras.world_to_camera[i],
            "intrinsics": f.cameras.intrinsics[i],
        }
        if f.expressions is not None:
            item["expression"] = f.expressions[i]
        return item


def batch_cameras(batch: dict[str, Tensor], width: int, height: int) -> Cameras:
    """The cameras of an image batch."""
    return Cameras(batch["world_to_camera"], batch["intrinsics"], width, height)


def bbox_pixels(
    bboxes: Tensor, width: int, height: int, weight: float, generator: torch.Generator | None = None
) -> Tensor:
    """One random pixel (x, y) per box (R, 4) [top, bottom, left, right] fractions -> (R, 2): a pixel
    inside its box `weight / (1 - weight)` times as likely as one outside (NeRFace's sampling map:
    0.9 inside, 0.1 outside). Pixels inside: uniform in the box; outside: uniform in the rest."""
    top, bottom = (bboxes[:, 0] * height).round().long(), (bboxes[:, 1] * height).round().long()
    left, right = (bboxes[:, 2] * width).round().long(), (bboxes[:, 3] * width).round().long()
    inside_area = ((bottom - top) * (right - left)).float()
    outside_area = width * height - inside_area
    p_inside = weight * inside_area / (weight * inside_area + (1.0 - weight) * outside_area).clamp_min(1e-12)
    r = len(bboxes)
    inside = torch.rand(r, generator=generator) < p_inside
    u, v = torch.rand(r, 2, generator=generator).unbind(1)
    x = torch.where(inside, left + (u * (right - left)).long().clamp_max((right - left - 1).clamp_min(0)), 0)
    y = torch.where(inside, top + (v * (bottom - top)).long().clamp_max((bottom - top - 1).clamp_min(0)), 0)
    todo = ~inside  # uniform over the frame until the pixel is outside its box
    while todo.any():
        index = todo.nonzero()[:, 0]
        x[index] = torch.randint(width, (len(index),), generator=generator)
        y[index] = torch.randint(height, (len(index),), generator=generator)
        todo[index] = (
            (x[index] >= left[index])
            & (x[index] < right[index])
            & (y[index] >= top[index])
            & (y[index] < bottom[index])
        )
    return torch.stack([x, y], dim=1)


class RayDataset(Dataset):
    """Random batches of `batch_size` rays through pixels of all the frames: {"origins" (B, 3),
    "directions" (B, 3) unit, "rgb" (B, 3) on the background, "alpha" (B, 1)}; for a NeRFace video
    also "frame" (B,), "expression" (B, D) and "background" (B, 3) (the background image's pixel),
    and where the frames have face bboxes a pixel inside one is `bbox_weight / (1 - bbox_weight)`
    times as likely as one outside.

    One item is one whole batch; an epoch holds as many rays as the frames have pixels. Rays are
    made per batch from the cameras, so memory stays that of the frames (100 x 800^2 is fine).
    `generator` draws them (each DDP process needs its own, or all would train on the same rays).
    """

    def __init__(
        self, frames: Frames, batch_size: int, bbox_weight: float = 0.9, generator: torch.Generator | None = None
    ) -> None:
        if not 0.0 < bbox_weight < 1.0:
            raise DeepfakeError(f"datamodule.bbox_weight must be in (0, 1), got {bbox_weight}.")
        self.frames, self.batch_size, self.bbox_weight, self.generator = frames, batch_size, bbox_weight, generator
        self.pixels = frames.cameras.width * frames.cameras.height

    def __len__(self) -> int:
        return -(-len(self.frames) * self.pixels // self.batch_size)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        f = self.frames
        view = torch.randint(len(f), (self.batch_size,), generator=self.generator)
        if f.bboxes is None:
            pixels = pixel_coordinates(
                torch.randint(self.pixels, (self.batch_size,), generator=self.generator), f.cameras.width
            )
        else:
            pixels = bbox_pixels(f.bboxes[view], f.cameras.width, f.cameras.height, self.bbox_weight, self.generator)
        origins, directions = pixel_rays(f.cameras, view, pixels)
        x, y = pixels.unbind(1)
        batch = {
            "origins": origins,
            "directions": directions,
            "rgb": f.colors(view, y, x),
            "alpha": f.opacities(view, y, x),
        }
        if f.expressions is not None:
            assert f.background_image is not None  # a NeRFace split has both
            batch |= {"frame": view, "expression": f.expressions[view], "background": f.background_image[y, x]}
        return batch


# mode -> the training split's dataset and the loader's batch size (None: the items are batches).
DATASETS = {
    "images": lambda dm, frames: (ImageDataset(frames), dm.batch_size),
    "rays": lambda dm, frames: (RayDataset(frames, dm.batch_size, dm.bbox_weight, dm.rank_generator()), None),
}


class FrameDataModule(pl.LightningDataModule):
    """train/val/test splits of the dataset at `root` (the swapped frames), batched per `mode`;
    bbox_weight: how much rays favour a NeRFace frame's face box (see RayDataset)."""

    def __init__(
        self,
        root: str,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        downscale: int = 1,
        mode: str = "images",
        batch_size: int = 1,
        num_workers: int = 0,
        bbox_weight: float = 0.9,
    ) -> None:
        super().__init__()
        if mode not in DATASETS:
            raise DeepfakeError(f"datamodule.mode={mode!r} is not one of {sorted(DATASETS)}.")
        self.root = Path(root)
        self.background = cast(tuple[float, float, float], tuple(float(c) for c in background))
        self.downscale, self.mode = downscale, mode
        self.batch_size, self.num_workers, self.bbox_weight = batch_size, num_workers, bbox_weight
        self.splits: dict[str, Frames] = {}

    def frames(self, split: str) -> Frames:
        """The split's frames, loaded on first use."""
        if split not in self.splits:
            self.splits[split] = load_frames(self.root, split, self.background, self.downscale)
        return self.splits[split]

    def rank_generator(self) -> torch.Generator:
        """A random generator seeded by the run's seed and this process's rank (DDP)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        return torch.Generator().manual_seed(torch.initial_seed() + rank)

    def _views(self, split: str) -> DataLoader:
        return DataLoader(ImageDataset(self.frames(split)), batch_size=1, shuffle=False, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        dataset, batch_size = DATASETS[self.mode](self, self.frames("train"))
        return DataLoader(dataset, batch_size=batch_size, shuffle=batch_size is not None, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._views("val")

    def test_dataloader(self) -> DataLoader:
        return self._views("test")
