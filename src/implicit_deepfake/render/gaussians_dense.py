"""Dense reference for the Gaussian rasterizer: every Gaussian against every pixel, no tiles or boxes.

For tests and benchmarks only. Projection is gsplat's own pure-torch `_fully_fused_projection`
(independent of `gaussians_cpu.project_gaussians`); compositing is a per-pixel cumulative product
over all visible Gaussians in depth order with gsplat's rules (alpha = min(0.999, o exp(-sigma)),
skip alpha < 1/255 or sigma < 0, stop before T would reach <= 1e-4). Pixels are processed in
chunks, and each chunk is recomputed in the backward pass, so memory stays bounded; time is
O(pixels x Gaussians).
"""

from __future__ import annotations

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci
from torch import Tensor

from implicit_deepfake.render.gaussians_composite import ALPHA_MAX, ALPHA_MIN, T_MIN
from implicit_deepfake.render.gaussians_cpu import finish_render, gaussian_features

# (pixels x Gaussians) elements per chunk: ~10 float32 temporaries of this size live at once.
_CHUNK_ELEMENTS = 1 << 23


def _composite_chunk(pixels: Tensor, xy: Tensor, conic: Tensor, opacity: Tensor, features: Tensor) -> Tensor:
    """pixels (P, 2) centres, Gaussians (V, ...) in depth order -> (P, D + 1) features and alpha."""
    d = xy[None, :, :] - pixels[:, None, :]
    sigma = 0.5 * (conic[:, 0] * d[..., 0] ** 2 + conic[:, 2] * d[..., 1] ** 2) + conic[:, 1] * d[..., 0] * d[..., 1]
    alpha = (opacity * torch.exp(-sigma)).clamp_max(ALPHA_MAX)
    alpha = torch.where((alpha >= ALPHA_MIN) & (sigma >= 0), alpha, torch.zeros_like(alpha))
    with torch.no_grad():
        alive = torch.cumprod(1.0 - alpha.double(), dim=1) > T_MIN
    alpha = alpha * alive
    t_after = torch.cumprod(1.0 - alpha, dim=1)
    weight = alpha * torch.cat([torch.ones_like(t_after[:, :1]), t_after[:, :-1]], dim=1)
    return torch.cat([weight @ features, weight.sum(1, keepdim=True)], dim=1)


class _ChunkedComposite(torch.autograd.Function):
    """`_composite_chunk` over all pixels, chunk by chunk, recomputing each chunk's graph in backward.

    Not `torch.utils.checkpoint` per chunk: the non-reentrant variant keeps a graph of small nodes
    per chunk between the chunks' large temporaries, which fragments glibc's heap so much that RSS
    grows by ~150 MB per chunk (6 GB at 20k Gaussians, 128x128), although live memory stays ~0.3 GB.
    Here the forward keeps nothing per chunk and each backward chunk frees all it allocates.
    """

    @staticmethod
    def forward(ctx, pixels: Tensor, chunk: int, *gaussians: Tensor) -> Tensor:
        out = pixels.new_empty(len(pixels), gaussians[-1].shape[1] + 1)
        for i in range(0, len(pixels), chunk):
            out[i : i + chunk] = _composite_chunk(pixels[i : i + chunk], *gaussians)
        ctx.save_for_backward(pixels, *gaussians)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        pixels, *gaussians = ctx.saved_tensors
        grads = [torch.zeros_like(g) for g in gaussians]
        for i in range(0, len(pixels), ctx.chunk):
            with torch.enable_grad():
                inputs = [g.detach().requires_grad_() for g in gaussians]
                out = _composite_chunk(pixels[i : i + ctx.chunk], *inputs)
                for total, grad in zip(grads, torch.autograd.grad(out, inputs, grad_out[i : i + ctx.chunk])):
                    total += grad
        return None, None, *grads


def rasterize_dense(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backgrounds: Tensor | None = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
) -> tuple[Tensor, Tensor]:
    """Same inputs and outputs as `rasterize_gaussians` (without meta): render (C, H, W, D'), alphas (C, H, W, 1)."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d, near_plane, far_plane,
        calc_compensations=rasterize_mode == "antialiased",
    )  # fmt: skip
    opacity = opacities.expand_as(depths) if compensations is None else opacities * compensations
    features = gaussian_features(colors, means, viewmats, sh_degree, depths, render_mode)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2).to(means.dtype) + 0.5
    images = []
    for cam in range(viewmats.shape[0]):
        ids = torch.nonzero((radii[cam] > 0).all(-1)).squeeze(1)
        ids = ids[torch.argsort(depths[cam, ids], stable=True)]
        args = (means2d[cam, ids], conics[cam, ids], opacity[cam, ids], features[cam, ids])
        chunk = max(1, _CHUNK_ELEMENTS // max(1, len(ids)))
        images.append(_ChunkedComposite.apply(pixels, chunk, *args).reshape(height, width, -1))
    out = torch.stack(images)
    return finish_render(out[..., :-1], out[..., -1:], backgrounds, render_mode)
