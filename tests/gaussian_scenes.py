"""Gaussian scenes and cameras shared by the rasterizer tests (CPU here, gsplat's CUDA in test_gsplat_cuda)."""

from __future__ import annotations

import torch
from torch import Tensor

from implicit_deepfake.render.cameras import Cameras, look_at

WIDTH, HEIGHT = 32, 24
F64 = torch.float64
# A camera at the origin looking down +z (OpenCV axes), principal point on the centre of pixel
# (16, 12), so a Gaussian on the optical axis peaks exactly on one pixel centre.
FOCAL = 40.0
AXIS_PIXEL = (12, 16)  # (row, column)
IDENTITY_VIEW = torch.eye(4, dtype=F64)[None]
AXIS_K = torch.tensor([[[FOCAL, 0.0, 16.5], [0.0, FOCAL, 12.5], [0.0, 0.0, 1.0]]], dtype=F64)


def ring_cameras(n: int, width: int = WIDTH, height: int = HEIGHT) -> tuple[Tensor, Tensor]:
    """n cameras at distance 2.5 from the origin with different poses -> viewmats (n, 4, 4), Ks (n, 3, 3)."""
    angles = torch.linspace(-0.5, 0.5, n) if n > 1 else torch.zeros(1)
    eye = torch.stack([2.5 * torch.sin(angles), -2.5 * torch.cos(angles), 0.4 * torch.ones(n)], 1)
    cams = Cameras.from_blender(look_at(eye, torch.zeros(n, 3), torch.tensor([0.0, 0.0, 1.0])), 0.8, width, height)
    return cams.world_to_camera.to(F64), cams.intrinsics.to(F64)


def random_scene(n: int, seed: int, color_shape: tuple[int | None, ...] = (None, 3)) -> list[Tensor]:
    """Means around the origin, random rotations, anisotropic scales, opacities; colours of color_shape, None -> n."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=F64) * 0.45
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = torch.rand(n, 3, generator=g, dtype=F64) * 0.09 + 0.01
    opacities = torch.rand(n, generator=g, dtype=F64) * 0.9 + 0.05
    colors = torch.rand([n if size is None else size for size in color_shape], generator=g, dtype=F64)
    return [t.requires_grad_() for t in (means, quats, scales, opacities, colors)]


def renders_and_grads(
    rasterize, params: list[Tensor], viewmats: Tensor, Ks: Tensor, width: int = WIDTH, height: int = HEIGHT, **options
):
    """(render, alphas) and the gradients of params under a fixed random weighting of every output channel."""
    render, alphas = rasterize(*params, viewmats, Ks, width, height, **options)[:2]
    g = torch.Generator().manual_seed(123)
    loss = (torch.rand(render.shape, generator=g, dtype=F64) * render).sum()
    loss = loss + (torch.rand(alphas.shape, generator=g, dtype=F64) * alphas).sum()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return render.detach(), alphas.detach(), grads
