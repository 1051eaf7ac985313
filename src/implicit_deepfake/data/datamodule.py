"""One LightningDataModule over a (swapped) Blender-format dataset, for every model.

Frames are small (the paper's 100 + 50 + 10 views at 800 px are ~1 GB as float32 at most), so each
split is loaded once into tensors: RGB composited onto the configured background, alpha, cameras.
`mode="images"` serves whole images with their cameras (Gaussian splatting).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from implicit_deepfake.data.blender import load_blender_split
from implicit_deepfake.data.cameras import Cameras
from implicit_deepfake.errors import DeepfakeError


@dataclass(frozen=True)
class Frames:
    """One split in memory: rgb (N, H, W, 3) in [0, 1] on the background, alpha (N, H, W, 1)."""

    cameras: Cameras
    rgb: Tensor
    alpha: Tensor
    relpaths: list[str]

    def __len__(self) -> int:
        return len(self.cameras)


def load_frames(root: str | Path, split: str, background: tuple[float, float, float], downscale: int = 1) -> Frames:
    """Load a split and composite it onto `background` (RGB frames count as fully opaque)."""
    loaded = load_blender_split(root, split, downscale)
    images = torch.from_numpy(loaded.images).float() / 255.0
    rgb = images[..., :3]
    alpha = images[..., 3:] if images.shape[-1] == 4 else torch.ones_like(rgb[..., :1])
    rgb = rgb * alpha + torch.tensor(background, dtype=rgb.dtype) * (1.0 - alpha)
    return Frames(loaded.cameras, rgb, alpha, loaded.index.relpaths)


class ImageDataset(Dataset):
    """Whole images: {"index", "rgb" (H, W, 3), "alpha" (H, W, 1), "world_to_camera" (4, 4), "intrinsics" (3, 3)}."""

    def __init__(self, frames: Frames) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        f = self.frames
        return {
            "index": torch.tensor(i),
            "rgb": f.rgb[i],
            "alpha": f.alpha[i],
            "world_to_camera": f.cameras.world_to_camera[i],
            "intrinsics": f.cameras.intrinsics[i],
        }


def batch_cameras(batch: dict[str, Tensor], width: int, height: int) -> Cameras:
    """The cameras of an image batch."""
    return Cameras(batch["world_to_camera"], batch["intrinsics"], width, height)


DATASETS = {"images": ImageDataset}


class FrameDataModule(pl.LightningDataModule):
    """train/val/test splits of the dataset at `root` (the swapped frames), batched per `mode`."""

    def __init__(
        self,
        root: str,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        downscale: int = 1,
        mode: str = "images",
        batch_size: int = 1,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        if mode not in DATASETS:
            raise DeepfakeError(f"datamodule.mode={mode!r} is not one of {sorted(DATASETS)}.")
        self.root = Path(root)
        self.background = tuple(float(c) for c in background)
        self.downscale, self.mode = downscale, mode
        self.batch_size, self.num_workers = batch_size, num_workers
        self.splits: dict[str, Frames] = {}

    def frames(self, split: str) -> Frames:
        """The split's frames, loaded on first use."""
        if split not in self.splits:
            self.splits[split] = load_frames(self.root, split, self.background, self.downscale)
        return self.splits[split]

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        dataset = DATASETS[self.mode](self.frames(split)) if split == "train" else ImageDataset(self.frames(split))
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True, batch_size=self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, batch_size=1)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, batch_size=1)
