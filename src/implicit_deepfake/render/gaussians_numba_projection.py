"""Compiled (numba) EWA projection with a hand-written backward: `gaussians_cpu.project_gaussians`, fused.

The same math as the PyTorch projection (gsplat's `fully_fused_projection`): Sigma_2d = (J W M)(J W M)^T
+ eps2d I with M = R(q / |q|) diag(s), W the camera rotation and J the EWA Jacobian whose x/z, y/z
are clamped to 1.3x the field of view; conic = Sigma_2d^-1; antialiased opacity x sqrt(det Sigma /
det Sigma_2d); gsplat's opacity-aware boxes and culling. One pass per (camera, Gaussian) instead of
~60 small tensor ops, and its backward is the chain rule of those ops written out (gsplat's
`fully_fused_projection_bwd`), so autograd has one node. Always computed in float64, returned in
the input dtype; culled pairs (radii 0) get no gradient, as no render reaches them. viewmats and Ks
get no gradient: `project_gaussians_numba` falls back to the PyTorch projection when they ask.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from implicit_deepfake.render.gaussians_composite import ALPHA_MIN
from implicit_deepfake.render.gaussians_cpu import EXTEND_MAX, Projection, project_gaussians
from implicit_deepfake.render.numba_support import as_array, as_tensor, kernel_threads

_DET_MIN = 1e-10  # det Sigma_2d is clamped here before 1 / det, as in the PyTorch projection


@njit(cache=True, error_model="numpy")
def _rotation_scale(quat, scale, rotation, out):
    """rotation (3, 3) = R(q / |q|), out = R diag(s) -> (w, x, y, z) of q / |q| and |q| (>= 1e-12, as F.normalize)."""
    norm = max(math.sqrt(quat[0] ** 2 + quat[1] ** 2 + quat[2] ** 2 + quat[3] ** 2), 1e-12)
    w, x, y, z = quat[0] / norm, quat[1] / norm, quat[2] / norm, quat[3] / norm
    rotation[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    rotation[0, 1] = 2.0 * (x * y - w * z)
    rotation[0, 2] = 2.0 * (x * z + w * y)
    rotation[1, 0] = 2.0 * (x * y + w * z)
    rotation[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    rotation[1, 2] = 2.0 * (y * z - w * x)
    rotation[2, 0] = 2.0 * (x * z - w * y)
    rotation[2, 1] = 2.0 * (y * z + w * x)
    rotation[2, 2] = 1.0 - 2.0 * (x * x + y * y)
    for j in range(3):
        for i in range(3):
            out[j, i] = rotation[j, i] * scale[i]
    return w, x, y, z, norm


@njit(cache=True, error_model="numpy")
def _ewa_rows(view, intrinsics, mean, rot_scale, width, height, near, far, rm, rx, ry):
    """Camera-space mean, rows rx, ry (3,) of J W M (rm = W M) -> (x, y, depth, z, tx, ty, free_x, free_y).

    z is the depth, or 1 outside [near, far] (keeps culled pairs finite); tx = z clamp(x / z), free_x
    says the clamp is inactive (its gradient passes).
    """
    for k in range(3):
        for i in range(3):
            rm[k, i] = view[k, 0] * rot_scale[0, i] + view[k, 1] * rot_scale[1, i] + view[k, 2] * rot_scale[2, i]
    x = view[0, 0] * mean[0] + view[0, 1] * mean[1] + view[0, 2] * mean[2] + view[0, 3]
    y = view[1, 0] * mean[0] + view[1, 1] * mean[1] + view[1, 2] * mean[2] + view[1, 3]
    depth = view[2, 0] * mean[0] + view[2, 1] * mean[1] + view[2, 2] * mean[2] + view[2, 3]
    z = depth if near <= depth <= far else 1.0
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    lim_x, lim_y = 0.15 * width / fx, 0.15 * height / fy
    ux, uy = x / z, y / z
    ux_lo, ux_hi = -(cx / fx + lim_x), (width - cx) / fx + lim_x
    uy_lo, uy_hi = -(cy / fy + lim_y), (height - cy) / fy + lim_y
    tx, ty = z * min(max(ux, ux_lo), ux_hi), z * min(max(uy, uy_lo), uy_hi)
    for i in range(3):
        rx[i] = fx / z * rm[0, i] - fx * tx / (z * z) * rm[2, i]
        ry[i] = fy / z * rm[1, i] - fy * ty / (z * z) * rm[2, i]
    return x, y, depth, z, tx, ty, ux_lo <= ux <= ux_hi, uy_lo <= uy <= uy_hi


@njit(cache=True, error_model="numpy")
def _covariance_2d(rx, ry, eps2d):
    """The 2D covariance J Sigma J^T from its rows' factors rx, ry: its entries a0, b, c0, the blurred
    diagonal a, c (+ eps2d), their determinant and its clamped inverse (forward and backward alike)."""
    a0 = rx[0] * rx[0] + rx[1] * rx[1] + rx[2] * rx[2]
    b = rx[0] * ry[0] + rx[1] * ry[1] + rx[2] * ry[2]
    c0 = ry[0] * ry[0] + ry[1] * ry[1] + ry[2] * ry[2]
    a, c = a0 + eps2d, c0 + eps2d
    det = a * c - b * b
    return a0, b, c0, a, c, det, 1.0 / max(det, _DET_MIN)


@njit(parallel=True, cache=True, error_model="numpy")
def _project_forward(
    means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, radius_clip, antialiased, chunks,
    means2d, conics, depths, opacities_out, radii,
):  # fmt: skip
    """Fill means2d (C, N, 2), conics (C, N, 3), depths (C, N), opacities_out (C, N), radii (C, N, 2)."""
    n_cameras, n = viewmats.shape[0], means.shape[0]
    for chunk in prange(chunks):
        rotation, rot_scale, rm = np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
        rx, ry = np.empty(3), np.empty(3)
        for g in range(chunk, n, chunks):
            _rotation_scale(quats[g], scales[g], rotation, rot_scale)
            for cam in range(n_cameras):
                K = Ks[cam]
                x, y, depth, z, _, _, _, _ = _ewa_rows(
                    viewmats[cam], K, means[g], rot_scale, width, height, near, far, rm, rx, ry
                )
                mx, my = K[0, 0] * x / z + K[0, 2], K[1, 1] * y / z + K[1, 2]
                a0, b, c0, a, c, det, inv_det = _covariance_2d(rx, ry, eps2d)
                opacity = opacities[g]
                if antialiased:
                    opacity *= math.sqrt(max((a0 * c0 - b * b) * inv_det, 0.0))
                means2d[cam, g, 0], means2d[cam, g, 1] = mx, my
                conics[cam, g, 0], conics[cam, g, 1], conics[cam, g, 2] = c * inv_det, -b * inv_det, a * inv_det
                depths[cam, g] = depth
                opacities_out[cam, g] = opacity
                # Opacity-aware extent (gsplat, arXiv 2402.00525 B.2): alpha < 1/255 outside it.
                extend = min(math.sqrt(2.0 * math.log(max(opacity, ALPHA_MIN) / ALPHA_MIN)), EXTEND_MAX)
                half_x = math.ceil(extend * math.sqrt(max(a, 0.0)))
                half_y = math.ceil(extend * math.sqrt(max(c, 0.0)))
                keep = (
                    near <= depth <= far
                    and det > 0.0
                    and opacity >= ALPHA_MIN
                    and (half_x > radius_clip or half_y > radius_clip)
                    and mx + half_x > 0.0
                    and mx - half_x < width
                    and my + half_y > 0.0
                    and my - half_y < height
                )
                radii[cam, g, 0], radii[cam, g, 1] = (half_x, half_y) if keep else (0, 0)


@njit(parallel=True, cache=True, error_model="numpy")
def _project_backward(
    means, quats, scales, opacities, viewmats, Ks, width, height, near, far, eps2d, antialiased, chunks, radii,
    v_means2d, v_conics, v_depths, v_opacities_out, v_means, v_quats, v_scales, v_opacities,
):  # fmt: skip
    """Add the gradients of the kept pairs to v_means (N, 3), v_quats (N, 4), v_scales (N, 3), v_opacities (N,)."""
    n_cameras, n = viewmats.shape[0], means.shape[0]
    for chunk in prange(chunks):
        rotation, rot_scale, rm = np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
        rx, ry, v_rx, v_ry = np.empty(3), np.empty(3), np.empty(3), np.empty(3)
        v_rm, v_rot_scale = np.empty((3, 3)), np.empty((3, 3))
        for g in range(chunk, n, chunks):
            qw, qx, qy, qz, q_norm = _rotation_scale(quats[g], scales[g], rotation, rot_scale)
            v_rot_scale[:] = 0.0
            for cam in range(n_cameras):
                if radii[cam, g, 0] == 0 and radii[cam, g, 1] == 0:
                    continue
                view, K = viewmats[cam], Ks[cam]
                x, y, _, z, tx, ty, free_x, free_y = _ewa_rows(
                    view, K, means[g], rot_scale, width, height, near, far, rm, rx, ry
                )
                fx, fy = K[0, 0], K[1, 1]
                a0, b, c0, a, c, det, inv_det = _covariance_2d(rx, ry, eps2d)
                # conic = (c, -b, a) / det
                v_c = v_conics[cam, g, 0] * inv_det
                v_b = -v_conics[cam, g, 1] * inv_det
                v_a = v_conics[cam, g, 2] * inv_det
                v_inv_det = v_conics[cam, g, 0] * c - v_conics[cam, g, 1] * b + v_conics[cam, g, 2] * a
                v_opacity = v_opacities_out[cam, g]
                v_det_orig = 0.0
                if antialiased:  # opacity x sqrt(det_orig / det)
                    det_orig = a0 * c0 - b * b
                    ratio = det_orig * inv_det
                    compensation = math.sqrt(max(ratio, 0.0))
                    if ratio > 0.0:
                        v_ratio = v_opacity * opacities[g] * 0.5 / compensation
                        v_det_orig = v_ratio * inv_det
                        v_inv_det += v_ratio * det_orig
                    v_opacity *= compensation
                v_opacities[g] += v_opacity
                v_det = -v_inv_det * inv_det * inv_det if det >= _DET_MIN else 0.0
                v_a0 = v_a + v_det * c + v_det_orig * c0
                v_c0 = v_c + v_det * a + v_det_orig * a0
                v_b += -2.0 * b * (v_det + v_det_orig)
                for i in range(3):
                    v_rx[i] = 2.0 * v_a0 * rx[i] + v_b * ry[i]
                    v_ry[i] = v_b * rx[i] + 2.0 * v_c0 * ry[i]
                # rx = fx / z rm_0 - fx tx / z^2 rm_2, ry likewise with fy, ty, rm_1
                v_kx = v_rx[0] * rm[0, 0] + v_rx[1] * rm[0, 1] + v_rx[2] * rm[0, 2]
                v_ky = v_ry[0] * rm[1, 0] + v_ry[1] * rm[1, 1] + v_ry[2] * rm[1, 2]
                v_gx = -(v_rx[0] * rm[2, 0] + v_rx[1] * rm[2, 1] + v_rx[2] * rm[2, 2])
                v_gy = -(v_ry[0] * rm[2, 0] + v_ry[1] * rm[2, 1] + v_ry[2] * rm[2, 2])
                for i in range(3):
                    v_rm[0, i] = fx / z * v_rx[i]
                    v_rm[1, i] = fy / z * v_ry[i]
                    v_rm[2, i] = -fx * tx / (z * z) * v_rx[i] - fy * ty / (z * z) * v_ry[i]
                z2, z3 = z * z, z * z * z
                v_z = -(v_kx * fx + v_ky * fy) / z2 - 2.0 * (v_gx * fx * tx + v_gy * fy * ty) / z3
                v_tx, v_ty = v_gx * fx / z2, v_gy * fy / z2
                # tx = z clamp(x / z): through z always, through x / z where the clamp is inactive
                v_z += v_tx * tx / z + v_ty * ty / z
                v_x = v_tx if free_x else 0.0
                v_y = v_ty if free_y else 0.0
                if free_x:
                    v_z -= v_tx * x / z
                if free_y:
                    v_z -= v_ty * y / z
                # means2d = (fx x / z + cx, fy y / z + cy); depths = z
                v_mx, v_my = v_means2d[cam, g, 0], v_means2d[cam, g, 1]
                v_x += v_mx * fx / z
                v_y += v_my * fy / z
                v_z += -(v_mx * fx * x + v_my * fy * y) / z2 + v_depths[cam, g]
                for j in range(3):
                    v_means[g, j] += view[0, j] * v_x + view[1, j] * v_y + view[2, j] * v_z
                    for i in range(3):
                        v_rot_scale[j, i] += view[0, j] * v_rm[0, i] + view[1, j] * v_rm[1, i] + view[2, j] * v_rm[2, i]
            # rot_scale[j, i] = R[j, i] s_i
            for i in range(3):
                for j in range(3):
                    v_scales[g, i] += v_rot_scale[j, i] * rotation[j, i]
                    v_rot_scale[j, i] *= scales[g, i]  # now dL/dR
            _quat_backward(qw, qx, qy, qz, q_norm, v_rot_scale, v_quats[g])


@njit(cache=True, error_model="numpy")
def _quat_backward(w, x, y, z, norm, g, out):
    """Add dL/dq to out (4,) given g = dL/dR (3, 3) at the unit quaternion (w, x, y, z) = q / norm."""
    v_w = 2.0 * (-z * g[0, 1] + y * g[0, 2] + z * g[1, 0] - x * g[1, 2] - y * g[2, 0] + x * g[2, 1])
    v_x = 2.0 * (
        y * g[0, 1] + z * g[0, 2] + y * g[1, 0] - 2.0 * x * g[1, 1] - w * g[1, 2] + z * g[2, 0] + w * g[2, 1]
        - 2.0 * x * g[2, 2]
    )  # fmt: skip
    v_y = 2.0 * (
        -2.0 * y * g[0, 0] + x * g[0, 1] + w * g[0, 2] + x * g[1, 0] + z * g[1, 2] - w * g[2, 0] + z * g[2, 1]
        - 2.0 * y * g[2, 2]
    )  # fmt: skip
    v_z = 2.0 * (
        -2.0 * z * g[0, 0] - w * g[0, 1] + x * g[0, 2] + w * g[1, 0] - 2.0 * z * g[1, 1] + y * g[1, 2] + x * g[2, 0]
        + y * g[2, 1]
    )  # fmt: skip
    # q / |q|: dL/dq = (v - u (u . v)) / |q|
    dot = w * v_w + x * v_x + y * v_y + z * v_z
    out[0] += (v_w - w * dot) / norm
    out[1] += (v_x - x * dot) / norm
    out[2] += (v_y - y * dot) / norm
    out[3] += (v_z - z * dot) / norm


class _Project(torch.autograd.Function):
    """(means, quats, scales, opacities) -> means2d, conics, depths, opacities (C, N, ...), radii by the kernels."""

    @staticmethod
    def forward(ctx, means, quats, scales, opacities, viewmats, Ks, settings):
        arrays = [as_array(t) for t in (means, quats, scales, opacities, viewmats, Ks)]
        n_cameras, n = len(viewmats), len(means)
        outputs = [np.empty((n_cameras, n, 2)), np.empty((n_cameras, n, 3)), np.empty((n_cameras, n)),
                   np.empty((n_cameras, n)), np.empty((n_cameras, n, 2), np.int32)]  # fmt: skip
        _project_forward(*arrays, *settings, kernel_threads(), *outputs)
        ctx.arrays, ctx.settings, ctx.radii = arrays, settings[:5] + settings[6:], outputs[4]  # all but radius_clip
        results = [as_tensor(array, means.dtype) for array in outputs[:4]]
        radii = torch.from_numpy(outputs[4])
        ctx.mark_non_differentiable(radii)
        return (*results, radii)

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_opacities, _):
        means, quats, scales, opacities = ctx.arrays[:4]
        grads = [np.zeros_like(means), np.zeros_like(quats), np.zeros_like(scales), np.zeros_like(opacities)]
        v_out = [as_array(t) for t in (v_means2d, v_conics, v_depths, v_opacities)]
        _project_backward(*ctx.arrays, *ctx.settings, kernel_threads(), ctx.radii, *v_out, *grads)
        return (*(as_tensor(grad, v_means2d.dtype) for grad in grads), None, None, None)


def project_gaussians_numba(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    antialiased: bool = False,
) -> Projection:
    """`gaussians_cpu.project_gaussians` by the compiled kernels (by PyTorch when viewmats or Ks need gradients)."""
    if viewmats.requires_grad or Ks.requires_grad:
        return project_gaussians(
            means, quats, scales, opacities, viewmats, Ks, width, height,
            near_plane, far_plane, eps2d, radius_clip, antialiased,
        )  # fmt: skip
    settings = (width, height, float(near_plane), float(far_plane), float(eps2d), float(radius_clip), antialiased)
    return Projection(*_Project.apply(means, quats, scales, opacities, viewmats, Ks, settings))
