"""CPU Gaussian-splatting rasterizer with the semantics of gsplat's `rasterization()` (unpacked).

Projection reuses gsplat's pure-torch reference math (`_quat_scale_to_covar_preci`,
`_world_to_cam`, `_persp_proj`: EWA Jacobian with x/z, y/z clamped to 1.3x the field of view) and
is differentiated by autograd; blur, antialiasing compensation, culling and radii follow gsplat's
CUDA kernel (opacity-aware 3.33-sigma box, cull below alpha 1/255, near/far, off-screen,
radius_clip). The steps (projection, SH colours, splatting: depth order, boxes and compositing) are
the PyTorch ones here, the reference, or their compiled twins (`gaussians_numba.rasterize_numba`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from implicit_deepfake.render.gaussians_composite import ALPHA_MIN, composite
from implicit_deepfake.render.sh import sh_colors

EXTEND_MAX = 3.33  # box half-size in sigmas; opacity-aware boxes are tighter
RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
Projector = Callable[..., "Projection"]  # the signature of project_gaussians
PairShColors = Callable[..., Tensor]  # the signature of pair_sh_colors
Splatter = Callable[..., tuple[Tensor, Tensor]]  # the signature of splat_pairs


@dataclass(frozen=True)
class Projection:
    """Per (camera, Gaussian) screen-space quantities; entries with radii == 0 are culled."""

    means2d: Tensor  # (C, N, 2) pixels, differentiable
    conics: Tensor  # (C, N, 3) upper triangle of the inverse blurred 2D covariance, differentiable
    depths: Tensor  # (C, N) camera z
    opacities: Tensor  # (C, N) opacity (times the antialiasing compensation)
    radii: Tensor  # (C, N, 2) int32 half-sizes of the box in pixels, 0 when culled


def _covariance_factor(quats: Tensor, scales: Tensor) -> Tensor:
    """M = R(q) diag(s) (3, 3, N), channel-first, so that Sigma = M M^T (gsplat `_quat_scale_to_matrix`)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).t()
    rotation = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ]
    ).reshape(3, 3, -1)  # fmt: skip
    return rotation * scales.t()[None]


def project_gaussians(
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
    """EWA projection of N Gaussians into C pinhole cameras (gsplat `fully_fused_projection`, unpacked).

    means (N, 3), quats (N, 4) wxyz, scales (N, 3), opacities (N,), viewmats (C, 4, 4) world->camera
    (OpenCV), Ks (C, 3, 3). Written as broadcast element-wise ops over (C, ., N): batched 3x3
    matmuls (einsum/bmm) cost ~10x more on a CPU.
    """
    rot, trans = viewmats[:, :3, :3, None], viewmats[:, :3, 3, None]
    cam = (rot * means.t()[None, None]).sum(2) + trans  # (C, 3, N)
    # Rows of J R_cam M, with J the EWA Jacobian; Sigma_2d = (J R M)(J R M)^T.
    rm = (rot[..., None] * _covariance_factor(quats, scales)[None, None]).sum(2)  # (C, 3, 3, N)
    depths = cam[:, 2]
    in_depth = (depths >= near_plane) & (depths <= far_plane)
    # Culled points at z ~ 0 would put inf into the graph, and 0 * inf = NaN in backward.
    z = torch.where(in_depth, depths, 1.0)
    fx, fy, cx, cy = (Ks[:, i, j, None] for i, j in ((0, 0), (1, 1), (0, 2), (1, 2)))
    # gsplat clamps x/z, y/z to 1.3x the field of view in the Jacobian only.
    lim_x, lim_y = 0.15 * width / fx, 0.15 * height / fy
    tx = z * torch.clamp(cam[:, 0] / z, -(cx / fx + lim_x), (width - cx) / fx + lim_x)
    ty = z * torch.clamp(cam[:, 1] / z, -(cy / fy + lim_y), (height - cy) / fy + lim_y)
    row_x = (fx / z)[:, None] * rm[:, 0] - (fx * tx / (z * z))[:, None] * rm[:, 2]  # (C, 3, N)
    row_y = (fy / z)[:, None] * rm[:, 1] - (fy * ty / (z * z))[:, None] * rm[:, 2]
    means2d = torch.stack([fx * cam[:, 0] / z + cx, fy * cam[:, 1] / z + cy], dim=-1)  # (C, N, 2)

    a, b, c = (row_x * row_x).sum(1), (row_x * row_y).sum(1), (row_y * row_y).sum(1)
    det_orig = a * c - b * b
    a, c = a + eps2d, c + eps2d
    det = a * c - b * b
    inv_det = 1.0 / det.clamp_min(1e-10)
    conics = torch.stack([c * inv_det, -b * inv_det, a * inv_det], dim=-1)
    opacities = opacities.expand_as(depths)
    if antialiased:
        opacities = opacities * torch.sqrt((det_orig * inv_det).clamp_min(0.0))

    with torch.no_grad():
        # Opacity-aware extent (gsplat, arXiv 2402.00525 B.2): alpha < 1/255 outside it.
        visible_opacity = opacities >= ALPHA_MIN
        extend = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp_max(EXTEND_MAX)
        radii = torch.stack(
            [torch.ceil(extend * a.clamp_min(0).sqrt()), torch.ceil(extend * c.clamp_min(0).sqrt())], dim=-1
        )
        mx, my = means2d[..., 0], means2d[..., 1]
        rx, ry = radii[..., 0], radii[..., 1]
        keep = (
            in_depth
            & (det > 0)
            & visible_opacity
            & ((rx > radius_clip) | (ry > radius_clip))
            & (mx + rx > 0)
            & (mx - rx < width)
            & (my + ry > 0)
            & (my - ry < height)
        )
        radii = torch.where(keep[..., None], radii, 0.0).to(torch.int32)
    return Projection(means2d, conics, depths, opacities, radii)


def pair_sh_colors(
    degree: int, means: Tensor, campos: Tensor, coeffs: Tensor, rows: Tensor, gids: Tensor, cams: Tensor
) -> Tensor:
    """SH colours (V, 3) of (camera, Gaussian) pairs: coefficient rows `rows` of coeffs (R, K, 3) seen along
    camera centre campos[cams] -> means[gids]. PyTorch; `sh_numba.sh_colors_numba` is the compiled twin."""
    return sh_colors(degree, means[gids] - campos[cams], coeffs[rows])


def gaussian_features(
    colors: Tensor,
    means: Tensor,
    viewmats: Tensor,
    sh_degree: int | None,
    depths: Tensor,
    render_mode: str,
    index: Tensor | None = None,
    sh: PairShColors = pair_sh_colors,
) -> Tensor:
    """Channels each (camera, Gaussian) splats: colours (SH evaluated by `sh` if sh_degree), then depth.

    colors (N, D) | (C, N, D) | SH (N, K, 3) | (C, N, K, 3); depths (C, N). With `index` (V,) into
    the flattened (C * N) pairs, in camera order, only those rows are computed -> (V, D'); else (C, N, D').
    """
    n_cameras, n = depths.shape
    flat = torch.arange(n_cameras * n, device=depths.device) if index is None else index
    cam, gid = flat // n, flat % n
    per_camera = colors.dim() == (3 if sh_degree is None else 4)
    table, rows = (colors.flatten(0, 1), flat) if per_camera else (colors, gid)
    if sh_degree is not None:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]
        values = sh(sh_degree, means, campos, table, rows, gid, cam)
    else:
        values = table.index_select(0, rows)  # its backward (index_add) is 2x that of table[rows]
    if render_mode == "RGB":
        features = values
    else:
        depth = depths.flatten()[flat, None]
        features = depth if render_mode in ("D", "ED") else torch.cat([values, depth], dim=-1)
    return features if index is not None else features.reshape(n_cameras, n, -1)


def finish_render(
    render: Tensor, alphas: Tensor, backgrounds: Tensor | None, render_mode: str
) -> tuple[Tensor, Tensor]:
    """Background behind the splats and expected depth, as gsplat: render (C, H, W, D'), alphas (C, H, W, 1)."""
    if backgrounds is not None:
        n_depth = int("D" in render_mode)
        bg = backgrounds if render_mode.startswith("RGB") else backgrounds[:, :0]
        bg = torch.cat([bg, bg.new_zeros(bg.shape[0], n_depth)], dim=-1)
        render = render + bg[:, None, None, :] * (1.0 - alphas)
    if render_mode.endswith("ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp_min(1e-10)], dim=-1)
    return render, alphas


def splat_pairs(
    proj: Projection, features_of: Callable[[Tensor], Tensor], width: int, height: int, absgrad: bool
) -> tuple[Tensor, Tensor]:
    """Composite the visible pairs front to back (`gaussians_composite.composite`) -> render (C*H*W, D'), alpha.

    features_of(index) gives the channels (V, D') of the pairs at flat (camera * N + Gaussian) `index`.
    With absgrad, means2d gets `.absgrad` (C, N, 2) in backward.
    """
    n_cameras, n = proj.depths.shape
    with torch.no_grad():
        flat = _depth_order(proj.radii, proj.depths)
        xy = proj.means2d.detach().flatten(0, 1).index_select(0, flat)
        r = proj.radii.flatten(0, 1).index_select(0, flat).to(xy.dtype)
        # Pixel j (centre j + 0.5) is in the box when |j + 0.5 - x| <= r.
        lo = torch.ceil(xy - r - 0.5).clamp_min(0).long()
        hi = torch.floor(xy + r - 0.5).long().minimum(torch.tensor([width - 1, height - 1]))
    return composite(
        proj.means2d.flatten(0, 1).index_select(0, flat),
        proj.conics.flatten(0, 1).index_select(0, flat),
        proj.opacities.flatten().index_select(0, flat),
        features_of(flat),
        image=flat // n,
        lo=lo,
        size=(hi - lo + 1).clamp_min(0),
        n_images=n_cameras,
        width=width,
        height=height,
        on_absgrad=_absgrad_setter(proj.means2d, flat) if absgrad else None,
    )


def _depth_order(radii: Tensor, depths: Tensor) -> Tensor:
    """Flat (camera * N + Gaussian) indices of the visible pairs, in (camera, depth) order (V,).

    Sorted on integer keys (float32 bits made order-preserving, as gsplat does), which torch
    radix-sorts, where a float sort is several times slower.
    """
    flat = torch.nonzero((radii > 0).all(-1).flatten()).squeeze(1)
    bits = depths.detach().flatten().index_select(0, flat).float().view(torch.int32)
    ordered = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).long() + 2**31  # monotone in the float, >= 0
    key = (torch.div(flat, depths.shape[1], rounding_mode="floor") << 32) | ordered
    return flat.index_select(0, torch.sort(key, stable=True).indices)


def rasterize_cpu(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    backgrounds: Tensor | None = None,
    tile_size: int = 16,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
    project: Projector = project_gaussians,
    sh: PairShColors = pair_sh_colors,
    splat: Splatter = splat_pairs,
) -> tuple[Tensor, Tensor, dict]:
    """gsplat `rasterization(..., packed=False)` on the CPU; see `render.gaussians.rasterize_gaussians`.

    project, sh, splat: the PyTorch steps, or their compiled twins (`gaussians_numba.rasterize_numba`).
    """
    n_cameras = viewmats.shape[0]
    proj = project(
        means, quats, scales, opacities, viewmats, Ks, width, height,
        near_plane, far_plane, eps2d, radius_clip, rasterize_mode == "antialiased",
    )  # fmt: skip

    def features_of(index: Tensor) -> Tensor:
        return gaussian_features(colors, means, viewmats, sh_degree, proj.depths, render_mode, index=index, sh=sh)

    render, alpha = splat(proj, features_of, width, height, absgrad)
    render = render.reshape(n_cameras, height, width, -1)
    alphas = alpha.reshape(n_cameras, height, width, 1)
    render, alphas = finish_render(render, alphas, backgrounds, render_mode)
    meta = {
        "batch_ids": None,
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": proj.radii,
        "means2d": proj.means2d,
        "depths": proj.depths,
        "conics": proj.conics,
        "opacities": proj.opacities,
        "tile_size": tile_size,
        "tile_width": math.ceil(width / tile_size),
        "tile_height": math.ceil(height / tile_size),
        "width": width,
        "height": height,
        "n_batches": 1,
        "n_cameras": n_cameras,
    }
    return render, alphas, meta


def _absgrad_setter(means2d: Tensor, flat: Tensor):
    """Callback storing per-Gaussian sums of |dL/d mean2d| over pixels as means2d.absgrad (C, N, 2) (AbsGS)."""

    def set_absgrad(absgrad: Tensor) -> None:
        full = torch.zeros(means2d.numel() // 2, 2, dtype=absgrad.dtype).index_copy_(0, flat, absgrad)
        means2d.absgrad = full.reshape(means2d.shape)  # type: ignore[attr-defined]  # gsplat's extra attribute

    return set_absgrad
