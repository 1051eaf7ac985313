"""Compiled (numba) spherical-harmonics colours of (camera, Gaussian) pairs, with a hand-written backward.

`sh.sh_colors` (gsplat's basis, Sloan's polynomial form, degrees 0-3; colour = SH + 0.5 clamped at
0) along the direction camera centre -> Gaussian, gathered and differentiated in one pass per pair:
dL/d coefficients = basis x dL/d colour, and dL/d mean through the basis' derivative in the unit
direction and the normalisation. Always computed in float64, returned in the coefficients' dtype.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from implicit_deepfake.render.numba_support import as_array, as_tensor, kernel_threads
from implicit_deepfake.render.sh import MAX_SH_DEGREE, num_sh_bases

# gsplat `_eval_sh_bases_fast` constants
_C1 = 0.48860251190292
_C2 = (1.092548430592079, 0.5462742152960395, 0.9461746957575601, 0.3153915652525201)
_C3 = (1.865881662950577, 1.119528997770346, 2.285228997322329, 0.4570457994644658, 1.445305721320277,
       0.5900435899266435)  # fmt: skip


@njit(cache=True, error_model="numpy")
def _unit(means, campos, g, cam):
    """(x, y, z, |d|) of the direction d = mean - camera centre, normalised as F.normalize (|d| >= 1e-12)."""
    dx, dy, dz = means[g, 0] - campos[cam, 0], means[g, 1] - campos[cam, 1], means[g, 2] - campos[cam, 2]
    norm = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
    return dx / norm, dy / norm, dz / norm, norm


@njit(cache=True, error_model="numpy")
def _basis(degree, x, y, z, b):
    """b (16,) = the basis values at the unit direction (x, y, z), up to `degree` (the rest left alone)."""
    b[0] = 0.2820947917738781
    if degree >= 1:
        b[1], b[2], b[3] = -_C1 * y, _C1 * z, -_C1 * x
    if degree >= 2:
        z2, c1, s1 = z * z, x * x - y * y, 2.0 * x * y
        b[4], b[5], b[6] = _C2[1] * s1, -_C2[0] * z * y, _C2[2] * z2 - _C2[3]
        b[7], b[8] = -_C2[0] * z * x, _C2[1] * c1
        if degree >= 3:
            tmp_c = -_C3[2] * z2 + _C3[3]
            c2, s2 = x * c1 - y * s1, x * s1 + y * c1
            b[9], b[10], b[11] = -_C3[5] * s2, _C3[4] * z * s1, tmp_c * y
            b[12], b[13], b[14], b[15] = z * (_C3[0] * z2 - _C3[1]), tmp_c * x, _C3[4] * z * c1, -_C3[5] * c2


@njit(cache=True, error_model="numpy")
def _direction_grad(degree, x, y, z, vb):
    """dL/d(x, y, z) of the unit direction, given vb (16,) = dL/d basis."""
    gx = gy = gz = 0.0
    if degree >= 1:
        gx, gy, gz = -_C1 * vb[3], -_C1 * vb[1], _C1 * vb[2]
    if degree >= 2:
        gx += _C2[1] * 2.0 * (y * vb[4] + x * vb[8]) - _C2[0] * z * vb[7]
        gy += _C2[1] * 2.0 * (x * vb[4] - y * vb[8]) - _C2[0] * z * vb[5]
        gz += -_C2[0] * (y * vb[5] + x * vb[7]) + 2.0 * _C2[2] * z * vb[6]
    if degree >= 3:
        tmp_c = -_C3[2] * z * z + _C3[3]
        c1, s1 = x * x - y * y, 2.0 * x * y
        d_c2 = 3.0 * (x * x - y * y)  # d c2 / dx = d s2 / dy
        gx += (-_C3[5] * (6.0 * x * y * vb[9] + d_c2 * vb[15]) + _C3[4] * z * 2.0 * (y * vb[10] + x * vb[14])
               + tmp_c * vb[13])  # fmt: skip
        gy += (-_C3[5] * (d_c2 * vb[9] - 6.0 * x * y * vb[15]) + _C3[4] * z * 2.0 * (x * vb[10] - y * vb[14])
               + tmp_c * vb[11])  # fmt: skip
        gz += (_C3[4] * (s1 * vb[10] + c1 * vb[14]) - 2.0 * _C3[2] * z * (y * vb[11] + x * vb[13])
               + (3.0 * _C3[0] * z * z - _C3[1]) * vb[12])  # fmt: skip
    return gx, gy, gz


@njit(parallel=True, cache=True, error_model="numpy")
def _sh_forward(degree, means, campos, coeffs, rows, gids, cams, chunks, out):
    """out (V, 3) = max(SH + 0.5, 0) of each pair's coefficient row along its camera -> Gaussian direction."""
    n_bases = (degree + 1) ** 2
    for chunk in prange(chunks):
        basis = np.empty(16)
        for i in range(chunk, len(rows), chunks):
            x, y, z, _ = _unit(means, campos, gids[i], cams[i])
            _basis(degree, x, y, z, basis)
            coef = coeffs[rows[i]]
            for ch in range(3):
                value = 0.5
                for k in range(n_bases):
                    value += basis[k] * coef[k, ch]
                out[i, ch] = max(value, 0.0)


@njit(parallel=True, cache=True, error_model="numpy")
def _sh_backward(degree, means, campos, coeffs, rows, gids, camera_start, chunks, v_out, v_means, v_coeffs):
    """Add the pairs' gradients to v_means (N, 3) and v_coeffs (R, K, 3).

    Pairs come grouped by camera (camera_start (C + 1,)), each Gaussian and row at most once per
    camera: cameras one after another, a camera's pairs in parallel without write conflicts.
    """
    n_bases = (degree + 1) ** 2
    for cam in range(len(camera_start) - 1):
        for chunk in prange(chunks):
            basis, vb, v = np.zeros(16), np.zeros(16), np.zeros(3)
            for i in range(camera_start[cam] + chunk, camera_start[cam + 1], chunks):
                g, row = gids[i], rows[i]
                x, y, z, norm = _unit(means, campos, g, cam)
                _basis(degree, x, y, z, basis)
                coef = coeffs[row]
                for ch in range(3):
                    value = 0.5
                    for k in range(n_bases):
                        value += basis[k] * coef[k, ch]
                    v[ch] = v_out[i, ch] if value >= 0.0 else 0.0  # clamp_min(0) passes the gradient at 0
                for k in range(n_bases):
                    vb[k] = 0.0
                    for ch in range(3):
                        v_coeffs[row, k, ch] += basis[k] * v[ch]
                        vb[k] += coef[k, ch] * v[ch]
                if degree == 0:
                    continue
                gx, gy, gz = _direction_grad(degree, x, y, z, vb)
                dot = x * gx + y * gy + z * gz  # through d / |d|
                v_means[g, 0] += (gx - x * dot) / norm
                v_means[g, 1] += (gy - y * dot) / norm
                v_means[g, 2] += (gz - z * dot) / norm


class _ShColors(torch.autograd.Function):
    @staticmethod
    def forward(ctx, degree, means, campos, coeffs, rows, gids, cams):
        arrays = [as_array(t) for t in (means, campos, coeffs)]
        index = [as_array(t, np.int64) for t in (rows, gids, cams)]
        out = np.empty((len(rows), 3))
        _sh_forward(degree, *arrays, *index, kernel_threads(), out)
        ctx.degree, ctx.arrays, ctx.index, ctx.n_cameras = degree, arrays, index, len(campos)
        return as_tensor(out, coeffs.dtype)

    @staticmethod
    def backward(ctx, v_colors):
        means, _, coeffs = ctx.arrays
        rows, gids, cams = ctx.index
        camera_start = np.searchsorted(cams, np.arange(ctx.n_cameras + 1))
        v_means, v_coeffs = np.zeros_like(means), np.zeros_like(coeffs)
        v_out = as_array(v_colors)
        _sh_backward(ctx.degree, *ctx.arrays, rows, gids, camera_start, kernel_threads(), v_out, v_means, v_coeffs)
        return None, as_tensor(v_means, v_colors.dtype), None, as_tensor(v_coeffs, v_colors.dtype), None, None, None


def sh_colors_numba(
    degree: int, means: Tensor, campos: Tensor, coeffs: Tensor, rows: Tensor, gids: Tensor, cams: Tensor
) -> Tensor:
    """Colours (V, 3) of V pairs: `sh.sh_colors(degree, means[gids] - campos[cams], coeffs[rows])`, compiled.

    means (N, 3); campos (C, 3) camera centres (no gradient); coeffs (R, K, 3) with K >= (degree + 1)^2;
    rows, gids, cams (V,) the pairs' coefficient row, Gaussian and camera, grouped by camera (cams
    non-decreasing) with each Gaussian and row at most once per camera.
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    if coeffs.shape[1] < num_sh_bases(degree):
        raise ValueError(f"SH degree {degree} needs {num_sh_bases(degree)} coefficients, got {coeffs.shape[1]}")
    return _ShColors.apply(degree, means, campos.detach(), coeffs, rows, gids, cams)
