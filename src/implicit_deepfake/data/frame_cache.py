"""A split's frames decoded once into uint8 arrays on disk, memory-mapped by every run after.

A NeRFace video has ~5,500 frames of 512x512: 4.3 GB as uint8 RGB, 17 GB as float32. Held as
floats they do not fit a laptop (NeRFace's own loader needs 80 GB); decoded once into
`<root>/.frames/<split>-<key>.{rgb,alpha}.npy` and memory-mapped (whole frames) or read pixel by
pixel (`PixelReader`: a ray batch's scattered pixels), they cost what a step reads.
The cache is keyed by the frames' paths, sizes and modification times, the background and the
downscale factor (a newer swap's frames replace the older's; other backgrounds and downscales, which
parallel jobs may train on at once, keep theirs), built under a file lock (parallel jobs wait, then
map it) and renamed into place whole, so a killed build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from contextlib import ExitStack
from itertools import chain
from pathlib import Path
from typing import BinaryIO, cast

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, exclusive, sha256_json
from implicit_deepfake.data.blender import load_resized

CACHE_DIR = ".frames"


def _cache_name(split: str, paths: Sequence[Path], background: np.ndarray, downscale: int) -> tuple[str, str]:
    """`<split>-<variant>-<frames>` and its `<split>-<variant>-` prefix: the variant keys what a run
    asks of the frames (background, downscale: parallel jobs may ask differently and keep each
    other's caches), the rest the frames themselves (a newer swap's replaces an older one's)."""
    backdrop = hashlib.sha256(np.ascontiguousarray(background, np.float32).tobytes()).hexdigest()
    variant = sha256_json({"background": backdrop, "downscale": downscale})[:8]
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in paths]
    prefix = f"{split}-{variant}-"
    return prefix + sha256_json({"frames": stats})[:16], prefix


def _composite(image: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """HxWx{3,4} uint8 on `background` (3,) or (H, W, 3) floats in [0, 255] -> RGB uint8, alpha or None."""
    if image.shape[-1] == 3:
        return image, None
    alpha = image[..., 3:].astype(np.float32) / 255.0
    rgb = image[..., :3] * alpha + background * (1.0 - alpha)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), image[..., 3:]


def _decoded(paths: Sequence[Path], downscale: int):
    """Each frame (H, W, C) uint8, downscaled; all must have the first one's size and channels."""
    shape = None
    for path in paths:
        image = load_resized(path, downscale)
        if shape is not None and image.shape != shape:
            raise DeepfakeError(
                f"{path}: size/channels {image.shape} differ from {paths[0].name} {shape}; "
                "all frames of a dataset must have the same size."
            )
        shape = image.shape
        yield image


def decode_frames(
    paths: Sequence[Path], background: np.ndarray, downscale: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Like `cached_frames`, into memory (for a small split of a folder this tool may not write to)."""
    pairs = [_composite(image, background) for image in _decoded(paths, downscale)]
    # A split's frames are all RGBA or all RGB: the first tells.
    alpha = None if pairs[0][1] is None else np.stack([cast(np.ndarray, a) for _, a in pairs])
    return np.stack([rgb for rgb, _ in pairs]), alpha


def _build(rgb_path: Path, alpha_path: Path, paths: Sequence[Path], background: np.ndarray, downscale: int) -> bool:
    """Decode the frames into the two .npy files (alpha only for RGBA frames), one frame at a time,
    each file renamed into place when whole; returns whether the frames have alpha.

    Written with plain file writes, not through a memory map: every page written through a map
    counts in the process's memory until the map closes (4.3 GB for 5,500 frames of 512x512)."""
    frames = _decoded(paths, downscale)
    first = next(frames)
    count, (height, width), has_alpha = len(paths), first.shape[:2], first.shape[-1] == 4
    with ExitStack() as stack:

        def array(path: Path, channels: int) -> BinaryIO:
            file = stack.enter_context(open(stack.enter_context(atomic_path(path)), "wb"))
            header = {"descr": "|u1", "fortran_order": False, "shape": (count, height, width, channels)}
            np.lib.format.write_array_header_1_0(file, header)
            return file

        rgb, alpha = array(rgb_path, 3), array(alpha_path, 1) if has_alpha else None
        for image in chain([first], frames):
            colors, mask = _composite(image, background)
            rgb.write(np.ascontiguousarray(colors, dtype=np.uint8).tobytes())
            if alpha is not None:
                alpha.write(np.ascontiguousarray(mask, dtype=np.uint8).reshape(height, width, 1).tobytes())
    return has_alpha


def cached_frames(
    root: Path, split: str, paths: Sequence[Path], background: np.ndarray, downscale: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, H, W, 3) uint8 RGB on `background` and (N, H, W, 1) uint8 alpha (None: the frames are
    RGB, opaque), memory-mapped copy-on-write from the split's cache (built first if missing).

    background: (3,) or (H, W, 3) float32 in [0, 255], at the downscaled size."""
    name, variant = _cache_name(split, paths, background, downscale)
    base = Path(root) / CACHE_DIR / name
    rgb_path, alpha_path, done = (base.with_name(base.name + s) for s in (".rgb.npy", ".alpha.npy", ".done"))
    if not done.is_file():
        with exclusive(base, f"the decoded {split} frames"):
            if not done.is_file():
                for stale in base.parent.glob(f"{variant}*"):  # this variant's caches of older frames
                    if not stale.name.startswith(base.name):
                        stale.unlink(missing_ok=True)
                has_alpha = _build(rgb_path, alpha_path, paths, background, downscale)
                with atomic_path(done) as tmp:
                    tmp.write_text("alpha\n" if has_alpha else "opaque\n")
    rgb = np.load(rgb_path, mmap_mode="c")
    alpha = np.load(alpha_path, mmap_mode="c") if done.read_text().strip() == "alpha" else None
    return rgb, alpha


class PixelReader:
    """Scattered pixels of a memory-mapped cache array, read with `os.pread` instead of through the map.

    Ray batches read a few thousand pixels spread over every frame; through the map, each read maps
    its page's neighbourhood, and after a few dozen batches the whole file (4.3 GB for 5,500 frames
    of 512x512) counts in the process's memory. Read directly, memory stays one batch's."""

    def __init__(self, array: np.memmap) -> None:
        self.path, self.offset, self.shape = str(array.filename), array.offset, array.shape
        self._fd: int | None = None

    def __getstate__(self) -> dict:  # a DataLoader worker opens its own file
        return {**self.__dict__, "_fd": None}

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def frame(self, index: int) -> np.ndarray:
        """One whole frame (H, W, C) uint8: an image batch's read, which through the map would leave its
        pages counted in the process's memory, every frame a run has read (the whole file in the end)."""
        count, height, width, channels = self.shape
        size = height * width * channels
        data = os.pread(self._file(), size, self.offset + (index % count) * size)
        return np.frombuffer(data, np.uint8).reshape(height, width, channels)

    def __call__(self, view: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """(B,) frame, row, column indices -> (B, C) uint8 pixels."""
        fd = self._file()
        _, height, width, channels = self.shape
        offsets = self.offset + ((view.astype(np.int64) * height + y) * width + x) * channels
        data = b"".join(os.pread(fd, channels, int(offset)) for offset in offsets)
        return np.frombuffer(data, np.uint8).reshape(len(offsets), channels)
