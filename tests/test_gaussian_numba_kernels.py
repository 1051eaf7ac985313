"""The compiled projection and SH kernels against PyTorch autograd of the reference ones (float64), and
what the compositing kernels rely on: the tile lists' room for the forward's records, an inference
render (nothing recorded) equal to a training one, and the records' arrays reused only once freed.

`gaussians_numba_projection.project_gaussians_numba` vs `gaussians_cpu.project_gaussians`, and
`sh_numba.sh_colors_numba` vs `sh.sh_colors` (gsplat's basis): values and the gradients of a random
weighting of every output, over several cameras, antialiased, with the EWA Jacobian's clamp active,
and with Gaussians behind the camera, beyond the far plane or off screen (culled: no gradient).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor

from implicit_deepfake.render import gaussians_numba
from implicit_deepfake.render.cameras import Cameras, look_at
from implicit_deepfake.render.gaussians import rasterize_gaussians
from implicit_deepfake.render.gaussians_cpu import project_gaussians
from implicit_deepfake.render.gaussians_numba_pairs import TILE, bin_tiles
from implicit_deepfake.render.gaussians_numba_projection import project_gaussians_numba
from implicit_deepfake.render.numba_support import ScratchPool
from implicit_deepfake.render.sh import sh_colors
from implicit_deepfake.render.sh_numba import sh_colors_numba

F64 = torch.float64
WIDTH, HEIGHT = 40, 30


def cameras(n: int) -> tuple[Tensor, Tensor]:
    """n cameras around the origin at distance 2.5, looking at it -> viewmats (n, 4, 4), Ks (n, 3, 3)."""
    angles = torch.linspace(-1.0, 1.0, n)
    eye = torch.stack([2.5 * torch.sin(angles), -2.5 * torch.cos(angles), 0.3 * angles], 1)
    cams = Cameras.from_blender(look_at(eye, torch.zeros(n, 3), torch.tensor([0.0, 0.0, 1.0])), 0.8, WIDTH, HEIGHT)
    return cams.world_to_camera.to(F64), cams.intrinsics.to(F64)


def gaussians(n: int, seed: int) -> list[Tensor]:
    """means, quats (unnormalised), scales, opacities (float64, requiring gradients); some culled or clamped."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(n, 3, generator=g, dtype=F64) * 0.8
    means[:3] = torch.tensor([[0.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 40.0, 0.0]], dtype=F64)
    means[3:6] = torch.tensor([[2.4, 0.0, 0.0], [-2.6, 0.0, 0.3], [0.0, 0.0, 2.2]], dtype=F64)  # near the image edges
    quats = torch.randn(n, 4, generator=g, dtype=F64)
    scales = torch.rand(n, 3, generator=g, dtype=F64) * 0.15 + 0.005
    scales[3:6] = 0.6  # large, off screen: visible through the Jacobian's clamp
    opacities = torch.rand(n, generator=g, dtype=F64) * 0.98 + 0.002  # some below 1/255 after antialiasing
    return [t.requires_grad_() for t in (means, quats, scales, opacities)]


def clamped_jacobian(means: Tensor, viewmats: Tensor, Ks: Tensor) -> Tensor:
    """(C, N) pairs whose x/z lies beyond 1.3x the field of view, where the EWA Jacobian is clamped."""
    cam = torch.einsum("cij,nj->cni", viewmats[:, :3, :3], means.detach()) + viewmats[:, None, :3, 3]
    fx, cx = Ks[:, 0, 0, None], Ks[:, 0, 2, None]
    u = cam[..., 0] / cam[..., 2]
    return (u < -cx / fx - 0.15 * WIDTH / fx) | (u > (WIDTH - cx) / fx + 0.15 * WIDTH / fx)


@pytest.mark.parametrize("antialiased", [False, True])
def test_compiled_projection_matches_the_torch_one_with_its_gradients(antialiased: bool):
    params = gaussians(400, seed=int(antialiased))
    viewmats, Ks = cameras(3)
    args = (viewmats, Ks, WIDTH, HEIGHT, 0.01, 20.0, 0.3, 0.0, antialiased)
    reference = project_gaussians(*params, *args)
    compiled = project_gaussians_numba(*params, *args)
    kept = (reference.radii > 0).all(-1)
    assert torch.equal(compiled.radii, reference.radii)
    assert 0.3 < kept.float().mean() < 0.99  # culled pairs exist, most are kept
    assert not kept[:, 2].any()  # 40 units along +y: beyond the far plane for every camera
    assert (kept & clamped_jacobian(params[0], viewmats, Ks)).sum() >= 10  # the clamp's gradient path is tested
    g = torch.Generator().manual_seed(5)
    names = ("means2d", "conics", "depths", "opacities")
    weights = [torch.randn(getattr(reference, name).shape, generator=g, dtype=F64) for name in names]
    losses = []
    for projection in (reference, compiled):
        outputs = [getattr(projection, name) for name in names]
        for name, value, ref in zip(names, outputs, [getattr(reference, name) for name in names]):
            torch.testing.assert_close(value, ref, rtol=1e-10, atol=1e-12, msg=name)
        # Culled pairs reach no render: only kept ones carry a loss.
        loss = sum((w * v * (kept[..., None] if v.dim() == 3 else kept)).sum() for w, v in zip(weights, outputs))
        losses.append(torch.autograd.grad(loss, params))
    for name, grad, ref in zip(("means", "quats", "scales", "opacities"), losses[1], losses[0]):
        assert ref.abs().max() > 0, name
        torch.testing.assert_close(grad, ref, rtol=1e-8, atol=1e-10 * float(ref.abs().max()), msg=name)


def test_compiled_projection_keeps_the_input_dtype_and_matches_in_float32():
    params = [t.detach().float().requires_grad_() for t in gaussians(200, seed=3)]
    viewmats, Ks = (t.float() for t in cameras(2))
    reference = project_gaussians(*params, viewmats, Ks, WIDTH, HEIGHT)
    compiled = project_gaussians_numba(*params, viewmats, Ks, WIDTH, HEIGHT)
    assert compiled.means2d.dtype == torch.float32 and compiled.radii.dtype == torch.int32
    kept = (reference.radii > 0).all(-1)
    torch.testing.assert_close(compiled.means2d[kept], reference.means2d[kept], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(compiled.conics[kept], reference.conics[kept], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
@pytest.mark.parametrize("per_camera", [False, True])
def test_compiled_sh_matches_gsplats_basis_with_its_gradients(degree: int, per_camera: bool):
    g = torch.Generator().manual_seed(degree)
    n, n_cameras = 300, 2
    means = (torch.randn(n, 3, generator=g, dtype=F64)).requires_grad_()
    campos = torch.tensor([[0.0, -2.5, 0.3], [1.5, 1.0, -0.5]], dtype=F64)
    shape = (n_cameras, n, 16, 3) if per_camera else (n, 16, 3)
    coeffs = (torch.randn(shape, generator=g, dtype=F64) * 0.4).requires_grad_()
    # Pairs in camera order, each camera seeing a different subset of the Gaussians.
    flat = torch.cat([torch.randperm(n, generator=g)[:250] + cam * n for cam in range(n_cameras)])
    cam, gid = flat // n, flat % n
    rows = flat if per_camera else gid
    colors = sh_colors_numba(degree, means, campos, coeffs.flatten(0, 1) if per_camera else coeffs, rows, gid, cam)
    reference = sh_colors(degree, means[gid] - campos[cam], (coeffs.flatten(0, 1) if per_camera else coeffs)[rows])
    assert (reference == 0).any() == (degree > 0)  # the clamp at 0 is exercised
    torch.testing.assert_close(colors, reference, rtol=1e-12, atol=1e-12)
    weights = torch.randn(reference.shape, generator=g, dtype=F64)
    grads = torch.autograd.grad((weights * colors).sum(), [means, coeffs], allow_unused=True)
    ref_grads = torch.autograd.grad((weights * reference).sum(), [means, coeffs], allow_unused=True)
    for name, grad, ref in zip(("means", "coeffs"), grads, ref_grads):
        if ref is None or not ref.any():  # degree 0: no direction dependence
            assert grad is None or not grad.any(), name
            continue
        torch.testing.assert_close(grad, ref, rtol=1e-9, atol=1e-12, msg=name)


def test_tile_lists_hold_each_box_and_room_for_its_pixels_in_the_tile():
    # The forward records at most one entry per (pair, box pixel in the tile), written from entry_start[tile] on
    # without bounds checks: the room per tile must be exactly the box pixels inside it.
    g = np.random.default_rng(3)
    tiles_x, tiles_y, n_images, width, height = 3, 2, 2, 3 * TILE, 2 * TILE
    lo = np.stack([g.integers(-5, width, 60), g.integers(-5, height, 60)], 1).clip(0)
    hi = lo + g.integers(-1, 25, (60, 2))  # some empty boxes (hi < lo)
    hi = np.minimum(hi, [width - 1, height - 1])
    image = g.integers(0, n_images, 60)
    start, rows, entry_start = bin_tiles(lo, hi, image, tiles_x, tiles_y, n_images * tiles_x * tiles_y)
    for tile in range(n_images * tiles_x * tiles_y):
        img, ty, tx = tile // (tiles_x * tiles_y), tile % (tiles_x * tiles_y) // tiles_x, tile % tiles_x
        x = np.clip(np.minimum(hi[:, 0], tx * TILE + TILE - 1) - np.maximum(lo[:, 0], tx * TILE) + 1, 0, None)
        y = np.clip(np.minimum(hi[:, 1], ty * TILE + TILE - 1) - np.maximum(lo[:, 1], ty * TILE) + 1, 0, None)
        inside = (image == img) & (x > 0) & (y > 0)
        assert list(rows[start[tile] : start[tile + 1]]) == list(np.flatnonzero(inside))  # depth (input) order
        assert entry_start[tile + 1] - entry_start[tile] == int((x * y)[inside].sum())


def test_inference_render_equals_a_training_render(monkeypatch: pytest.MonkeyPatch):
    # Without gradients the forward records nothing for a backward; the image must not change.
    viewmats, Ks = cameras(2)
    means, quats, scales, opacities = gaussians(300, seed=5)
    colors = torch.rand(300, 3, generator=torch.Generator().manual_seed(5), dtype=F64).requires_grad_()
    args = (means, quats, scales, opacities, colors, viewmats, Ks, WIDTH, HEIGHT)
    room = []  # per render: the records' sizes the forward got
    forward = gaussians_numba._forward
    monkeypatch.setattr(
        gaussians_numba, "_forward", lambda *a: room.append((a[-5], len(a[-3]))) or forward(*a)
    )  # fmt: skip
    render, alphas, _ = rasterize_gaussians(*args, rasterizer="numba")
    with torch.no_grad():
        plain_render, plain_alphas, _ = rasterize_gaussians(*args, rasterizer="numba")
    assert room[0][0] and room[0][1] > 0 and room[1] == (False, 0)
    assert alphas.max() > 0.9
    assert torch.equal(render.detach(), plain_render) and torch.equal(alphas.detach(), plain_alphas)


def test_scratch_arrays_are_reused_only_once_their_graph_is_freed():
    class Owner:  # stands for an autograd node
        pass

    pool = ScratchPool((np.float64, np.uint8))
    first, second = Owner(), Owner()
    alphas, pixels = pool.take(first, 100)
    assert alphas.dtype == np.float64 and pixels.dtype == np.uint8 and len(alphas) == len(pixels) == 100
    assert pool.take(second, 50)[0] is not alphas  # still owned: a backward may read it
    del first
    assert pool.take(Owner(), 80)[0] is alphas  # freed with its owner, large enough: reused
    assert len(pool.take(Owner(), 500)[0]) == 500  # nothing free holds 500
