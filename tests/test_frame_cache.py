"""Frames held as uint8: decoded once into a memory-mapped cache, converted to floats per batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from implicit_deepfake.core.io import composite, read_image, write_png
from implicit_deepfake.data.datamodule import ImageDataset, load_frames
from implicit_deepfake.data.frame_cache import CACHE_DIR
from tests.conftest import write_tiny_dataset

BACKGROUND = (1.0, 0.5, 0.0)


def test_frames_are_uint8_decoded_once_and_mapped_after(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "data", size=16, per_split=3)
    frames = load_frames(root, "train", BACKGROUND)
    assert frames.rgb8.dtype == torch.uint8 and frames.alpha8.dtype == torch.uint8
    for i, path in enumerate(sorted((root / "train").glob("r_*.png"))):
        rgba = read_image(path)
        np.testing.assert_array_equal(frames.rgb8[i].numpy(), composite(rgba, BACKGROUND))
        np.testing.assert_array_equal(frames.alpha8[i, ..., 0].numpy(), rgba[..., 3])
    # A ray batch's scattered pixels are read from the cache file (not through the map): the same values.
    view, y, x = torch.tensor([0, 2, 1, 2]), torch.tensor([3, 0, 15, 9]), torch.tensor([5, 15, 0, 9])
    assert frames.readers[0] is not None
    assert torch.equal(frames.colors(view, y, x), frames.rgb8[view, y, x] / 255.0)
    assert torch.equal(frames.opacities(view, y, x), frames.alpha8[view, y, x] / 255.0)
    # So are whole frames (an image batch): a run that reads every frame keeps none of them mapped.
    assert torch.equal(frames.colors(2), frames.rgb8[2] / 255.0) and torch.equal(frames.colors(-1), frames.colors(2))
    assert torch.equal(frames.opacities(0), frames.alpha8[0] / 255.0)
    # Per batch, floats in [0, 1], as before.
    item = ImageDataset(frames)[1]
    assert item["rgb"].dtype == torch.float32 and torch.equal(item["rgb"], frames.rgb8[1] / 255.0)
    assert torch.equal(item["alpha"], frames.alpha8[1] / 255.0)

    cached = sorted((root / CACHE_DIR).glob("train-*"))
    assert {p.suffix for p in cached} >= {".npy", ".done"}
    stamps = {p: p.stat().st_mtime_ns for p in cached}
    again = load_frames(root, "train", BACKGROUND)
    assert {p: p.stat().st_mtime_ns for p in cached} == stamps  # mapped, not decoded again
    assert torch.equal(again.rgb8, frames.rgb8)
    # In memory, for a folder that is not ours: the same arrays.
    assert torch.equal(load_frames(root, "train", BACKGROUND, cache=False).rgb8, frames.rgb8)

    # Another background or downscale (a parallel job's) has a cache of its own and keeps this one.
    other = load_frames(root, "train", (0.0, 0.0, 0.0), downscale=2)
    assert other.rgb8.shape == (3, 8, 8, 3) and all(p.exists() for p in cached)
    others = set((root / CACHE_DIR).glob("train-*")) - set(cached)
    assert {p.suffix for p in others} >= {".npy", ".done"}

    # A changed frame makes a new cache; the old one of the same variant is removed, the other's too
    # once it is asked for.
    write_png(root / "train" / "r_0.png", np.full((16, 16, 4), 77, np.uint8), synthetic=False)
    changed = load_frames(root, "train", BACKGROUND)
    assert int(changed.rgb8[0, 8, 8, 0]) == round(77 * 77 / 255 + 255 * (1 - 77 / 255))
    assert not any(p.exists() for p in cached if p.suffix != ".lock")
    assert all(p.exists() for p in others)
    load_frames(root, "train", (0.0, 0.0, 0.0), downscale=2)
    assert not any(p.exists() for p in others if p.suffix != ".lock")


def test_opaque_frames_have_no_alpha_array(tmp_path: Path) -> None:
    root = write_tiny_dataset(tmp_path / "data", size=8, per_split=2, rgba=False)
    frames = load_frames(root, "train", BACKGROUND)
    assert frames.alpha8 is None and torch.equal(frames.alpha, torch.ones(2, 8, 8, 1))
    assert torch.equal(
        frames.opacities(torch.tensor([1, 0]), torch.tensor([2, 3]), torch.tensor([4, 5])), torch.ones(2, 1)
    )
    assert not list((root / CACHE_DIR).glob("train-*.alpha.npy"))
