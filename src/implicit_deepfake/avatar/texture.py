"""The head's colours where the photo does not see it, made from the photo's own skin and hair.

Each material (hair, skin) gets a mean colour and a detail texture. The hair's mean colour follows
the height of the head: each photo row's mean hair colour (a cap over grey hair stays a cap over
grey hair all round). The detail is the photo's own fine texture (pixels minus their local mean,
inside the material's mask) turned into a periodic tile by spot noise (the patch convolved with
white noise: same spectrum and colour correlations, so curls stay curls and strands stay strands,
and no seam). The renderer wraps the tiles around the head (a cylinder about the vertical axis,
blended into a plane over the crown) in the photo's own pixel scale.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

TILE = 256  # detail tile size in texels (one texel = one working-photo pixel)


def _local_mean(rgb: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean colour of the pixels where `weight` is high (normalised convolution)."""
    blur = lambda a: cv2.GaussianBlur(a, (0, 0), sigma)  # noqa: E731
    return blur(rgb * weight[..., None]) / np.maximum(blur(weight), 1e-6)[..., None]


def spot_noise(rgb: np.ndarray, weight: np.ndarray, sigma: float, size: int = TILE, seed: int = 0) -> np.ndarray:
    """(size, size, 3) float32, zero mean, periodic: the detail of `rgb` (H, W, 3 in [0, 1]) inside
    `weight` (H, W in [0, 1]) above its local mean (Gaussian `sigma` px), as stationary texture;
    zeros when the weight is empty. Its per-channel spread matches the detail's."""
    if weight.sum() < 16:
        return np.zeros((size, size, 3), np.float32)
    detail = rgb - _local_mean(rgb, weight, sigma)
    # Outliers (a badge on a cap, a glint on glasses) are things, not texture: clip them.
    spread = 1.4826 * np.median(np.abs(detail[weight > 0.5]), axis=0) if (weight > 0.5).any() else 0.05
    detail = np.clip(detail, -2.5 * spread, 2.5 * spread) * weight[..., None]
    rows, cols = np.nonzero(weight > 0.05)
    detail = detail[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    energy = (weight[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] ** 2).sum()
    if max(detail.shape[:2]) > size:  # keep the most weighted window of the tile's size
        detail = detail[:size, :size]
    spot = np.zeros((size, size, 3), np.float32)
    h, w = detail.shape[:2]
    spot[(size - h) // 2 : (size - h) // 2 + h, (size - w) // 2 : (size - w) // 2 + w] = detail
    noise = np.random.default_rng(seed).normal(size=(size, size))
    texture = np.fft.irfft2(
        np.fft.rfft2(spot, axes=(0, 1)) * np.fft.rfft2(noise)[..., None], s=(size, size), axes=(0, 1)
    )
    texture *= np.sqrt(size * size / max(float(min(energy, h * w)), 1.0)) / size
    return (texture - texture.mean((0, 1))).astype(np.float32)


def row_colours(rgb: np.ndarray, weight: np.ndarray, sigma: float) -> np.ndarray | None:
    """(H, 3) each photo row's mean colour where `weight` (H, W) is high, smoothed over `sigma`
    rows and held past the first and last rows that have some; None when the weight is empty."""
    totals = weight.sum(1)
    if totals.sum() < 16:
        return None
    sums = (rgb * weight[..., None]).sum(1)
    kernel = np.exp(-0.5 * (np.arange(-int(3 * sigma), int(3 * sigma) + 1) / sigma) ** 2)
    smooth = lambda v: np.convolve(v, kernel, mode="same")  # noqa: E731
    totals_s = smooth(totals)
    colours = np.stack([smooth(sums[:, c]) for c in range(3)], 1) / np.maximum(totals_s, 1e-6)[:, None]
    valid = totals_s > 0.05 * totals_s.max()
    rows = np.arange(len(totals))
    return np.stack([np.interp(rows, rows[valid], colours[valid, c]) for c in range(3)], 1)


def sample_periodic(textures: Tensor, u: Tensor, v: Tensor) -> Tensor:
    """Bilinear lookup of periodic tiles (K, T, T, 3) at tile coordinates u, v (...,) (1 = one
    tile; v grows down the tile) -> (K, ..., 3)."""
    k, size = textures.shape[0], textures.shape[1]
    padded = F.pad(textures.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="circular")
    x = (torch.remainder(u, 1.0) * size + 1) / (size + 2) * 2 - 1
    y = (torch.remainder(v, 1.0) * size + 1) / (size + 2) * 2 - 1
    grid = torch.stack([x, y], -1).reshape(1, 1, -1, 2).expand(k, 1, -1, 2)
    sampled = F.grid_sample(padded, grid, align_corners=False, mode="bilinear")  # (K, 3, 1, N)
    return sampled[:, :, 0].permute(0, 2, 1).reshape(k, *u.shape, 3)


def wrapped_detail(textures: Tensor, rest: Tensor, crown: Tensor, frame: Tensor) -> Tensor:
    """(K, ..., 3) detail of each tile at surface points `rest` (..., 3): a cylinder about the
    vertical axis, blended into a plane over the crown by `crown` (...,) in [0, 1], with the
    variance kept through the blend. frame: [tile size in world units, tiles around, axis y]."""
    tile, around, axis_y = frame[0], frame[1], frame[2]
    angle = torch.atan2(rest[..., 1] - axis_y, rest[..., 0])
    side = sample_periodic(textures, angle / (2 * torch.pi) * around, -rest[..., 2] / tile)
    top = sample_periodic(textures, rest[..., 0] / tile, rest[..., 1] / tile)
    w = crown[None, ..., None]
    return ((1 - w) * side + w * top) / torch.sqrt((1 - w) ** 2 + w**2)
