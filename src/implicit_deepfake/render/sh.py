"""Spherical-harmonics colour, degrees 0-3, with the constants of 3DGS / gsplat.

The basis evaluation is gsplat's own pure-torch implementation (`_spherical_harmonics`, the
reference its CUDA kernel is tested against), so CPU and CUDA renders share one definition.
"""

from __future__ import annotations

from gsplat.cuda._torch_impl import _spherical_harmonics
from torch import Tensor

# Degree-0 basis constant, 1 / (2 sqrt(pi)): the DC coefficient of an RGB colour.
SH_C0 = 0.28209479177387814
MAX_SH_DEGREE = 3


def num_sh_bases(degree: int) -> int:
    """Coefficients per colour channel for SH up to `degree`: (degree + 1)^2."""
    return (degree + 1) ** 2


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] (..., 3) -> DC coefficient (..., 3) that renders back to `rgb` (3DGS convention)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(dc: Tensor) -> Tensor:
    """DC coefficient (..., 3) -> the view-independent RGB it renders to (before clamping)."""
    return dc * SH_C0 + 0.5


def sh_colors(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """View-dependent RGB as gsplat's `rasterization` makes it: SH value + 0.5, clamped at 0.

    degree <= 3 bands used; dirs (..., 3) view directions (camera centre -> Gaussian, any length);
    coeffs (..., K, 3) with K >= (degree + 1)^2 -> colours (..., 3).
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    return (_spherical_harmonics(degree, dirs, coeffs) + 0.5).clamp_min(0.0)
