"""Gaussians in Niantic's .spz (version 2): about a quarter of the .ply's size before gzip, so
viewer.html stays small. Quantised as the spz library packs (positions 24-bit fixed point, colour,
opacity, log-scale and rotation 8-bit, SH 5 bits for degree 1 and 4 above); no axis conversion, so the
page's world is the .ply's."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import torch

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.models.gaussians import GaussianCloud

SPZ_MAGIC = 0x5053474E  # "NGSP"
SPZ_VERSION = 2
FRACTIONAL_BITS = 12  # positions to 1/4096 unit, within +-2048 units
COLOR_SCALE = 0.15  # sh0 * COLOR_SCALE + 0.5 -> [0, 1]
SH1_BITS, SH_REST_BITS = 5, 4


def _uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def _quantize_sh(values: np.ndarray, bits: int) -> np.ndarray:
    bucket = 1 << (8 - bits)
    q = np.round(values * 128.0 + 128.0)
    return np.clip(np.floor((q + bucket / 2) / bucket) * bucket, 0, 255).astype(np.uint8)


def spz_bytes(cloud: GaussianCloud) -> bytes:
    """The cloud as a gzipped .spz (version 2)."""
    p = {name: t.detach().cpu().float().numpy() for name, t in cloud.params.items()}
    n = len(cloud)
    limit = 2 ** (23 - FRACTIONAL_BITS)
    if n and np.abs(p["means"]).max() >= limit:
        raise DeepfakeError(
            f".spz holds positions within +-{limit} units; this cloud reaches {np.abs(p['means']).max():.0f}."
        )
    fixed = np.round(p["means"] * (1 << FRACTIONAL_BITS)).astype(np.int32).reshape(-1)
    positions = fixed.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].reshape(-1)  # 24-bit two's complement
    alphas = _uint8(torch.sigmoid(torch.from_numpy(p["opacities"])).numpy() * 255.0)
    colors = _uint8(p["sh0"].reshape(n, 3) * (COLOR_SCALE * 255.0) + 0.5 * 255.0)
    scales = _uint8((p["scales"] + 10.0) * 16.0)
    quats = p["quats"] / np.linalg.norm(p["quats"], axis=1, keepdims=True).clip(1e-12)  # wxyz
    quats = quats * np.where(quats[:, :1] < 0, -1.0, 1.0)  # w >= 0: it is derived from xyz on reading
    rotations = _uint8(quats[:, 1:] * 127.5 + 127.5)
    sh_rest = p["shN"]  # (N, K - 1, 3): coefficient-major, colour inner, as .spz orders them
    sh = np.concatenate([_quantize_sh(sh_rest[:, :3], SH1_BITS), _quantize_sh(sh_rest[:, 3:], SH_REST_BITS)], axis=1)
    header = struct.pack("<IIIBBBB", SPZ_MAGIC, SPZ_VERSION, n, cloud.sh_degree, FRACTIONAL_BITS, 0, 0)
    body = b"".join(a.tobytes() for a in (positions, alphas, colors.reshape(-1), scales.reshape(-1), rotations, sh))
    return gzip.compress(header + body, mtime=0)
