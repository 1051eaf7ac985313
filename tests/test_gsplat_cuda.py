"""The CPU rasterizers against gsplat's own CUDA `rasterization` on the same scene (gpu marker).

gsplat tests its CUDA kernels against a PyTorch reference, skipped without CUDA; this is the same
check the other way round: wherever a GPU is, our CPU backends must render and differentiate as
gsplat's kernels do, so a model trained on one device renders the same on the other.
"""

from __future__ import annotations

import pytest
import torch

from implicit_deepfake.render.gaussians import rasterize_gaussians
from tests.gaussian_scenes import random_scene, ring_cameras

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device for gsplat's kernels"),
]
WIDTH, HEIGHT = 64, 48


def _render_and_grads(params: list[torch.Tensor], viewmats, Ks, device: str, rasterizer: str, **options):
    leaves = [p.detach().float().to(device).requires_grad_() for p in params]
    render, alphas, _ = rasterize_gaussians(
        *leaves, viewmats.float().to(device), Ks.float().to(device), WIDTH, HEIGHT, rasterizer=rasterizer, **options
    )
    weights = torch.rand(render.shape, generator=torch.Generator().manual_seed(7)).to(device)
    loss = (weights * render).sum() + alphas.sum()
    grads = torch.autograd.grad(loss, leaves)
    return render.detach().cpu(), alphas.detach().cpu(), [g.cpu() for g in grads]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-12))


@pytest.mark.parametrize("rasterizer", ["numba", "torch"])
@pytest.mark.parametrize(
    "options",
    [{}, {"rasterize_mode": "antialiased"}, {"sh_degree": 1, "render_mode": "RGB+ED"}],
    ids=["classic", "antialiased", "sh-depth"],
)
def test_cpu_rasterizers_match_gsplat_cuda(rasterizer: str, options: dict):
    color_shape = (None, 4, 3) if "sh_degree" in options else (None, 3)
    params = random_scene(300, seed=3, color_shape=color_shape)
    viewmats, Ks = ring_cameras(3, WIDTH, HEIGHT)
    cuda = _render_and_grads(params, viewmats, Ks, "cuda", "gsplat", **options)
    cpu = _render_and_grads(params, viewmats, Ks, "cpu", rasterizer, **options)
    assert cuda[0].shape == cpu[0].shape and cuda[1].shape == cpu[1].shape
    assert (cpu[0] - cuda[0]).abs().max() < 5e-3
    assert (cpu[1] - cuda[1]).abs().max() < 5e-3
    for name, ours, theirs in zip(("means", "quats", "scales", "opacities", "colors"), cpu[2], cuda[2]):
        assert _relative(ours, theirs) < 2e-2, name
