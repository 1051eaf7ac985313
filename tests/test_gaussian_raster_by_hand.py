"""The CPU Gaussian rasterizers on scenes whose renders are computed by hand: one Gaussian on the
optical axis of a camera at the origin (its peak, footprint, antialiasing, SH colour, depth order,
early termination, the alpha clamp) and the absolute gradients gsplat's strategy reads.

Every test runs once per CPU rasterizer (the `rasterize` fixture, conftest.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from implicit_deepfake.render.gaussians_dense import _composite_chunk, rasterize_dense
from implicit_deepfake.render.sh import rgb_to_sh
from tests.gaussian_scenes import (
    AXIS_K,
    AXIS_PIXEL,
    F64,
    FOCAL,
    HEIGHT,
    IDENTITY_VIEW,
    WIDTH,
    random_scene,
    renders_and_grads,
    ring_cameras,
)


def _axis_gaussian(z: float, scale: float, opacity: float, color: list[float]) -> list[Tensor]:
    """One isotropic Gaussian on the optical axis of the identity camera."""
    return [
        torch.tensor([[0.0, 0.0, z]], dtype=F64, requires_grad=True),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64, requires_grad=True),
        torch.full((1, 3), scale, dtype=F64, requires_grad=True),
        torch.tensor([opacity], dtype=F64, requires_grad=True),
        torch.tensor([color], dtype=F64, requires_grad=True),
    ]


def _stack(*gaussians: list[Tensor]) -> list[Tensor]:
    return [torch.cat(parts).detach().requires_grad_() for parts in zip(*gaussians)]


def _render_axis(rasterize, params: list[Tensor], **options) -> tuple[Tensor, Tensor]:
    render, alphas, _ = rasterize(*params, IDENTITY_VIEW, AXIS_K, WIDTH, HEIGHT, **options)
    return render[0], alphas[0, ..., 0]


def test_single_gaussian_peak_value_and_footprint(rasterize):
    z, scale, opacity, color = 4.0, 0.4, 0.7, [0.2, 0.9, 0.5]
    background = torch.tensor([[0.1, 0.1, 0.6]], dtype=F64)
    with torch.no_grad():
        render, alphas = _render_axis(rasterize, _axis_gaussian(z, scale, opacity, color), backgrounds=background)
    row, col = AXIS_PIXEL
    expected_peak = opacity * torch.tensor(color, dtype=F64) + (1 - opacity) * background[0]
    torch.testing.assert_close(render[row, col], expected_peak, rtol=0, atol=1e-12)
    assert alphas[row, col] == pytest.approx(opacity, abs=1e-12) and alphas.max() == alphas[row, col]

    # The footprint is the projected sigma f s / z = 4 px, blurred by eps2d = 0.3 px^2.
    sigma = math.sqrt((FOCAL * scale / z) ** 2 + 0.3)
    d = torch.arange(1, 11, dtype=F64)
    for profile in (alphas[row, col + 1 : col + 11], alphas[row + 1 : row + 11, col]):
        fitted = torch.sqrt(-(d**2) / (2 * torch.log(profile / opacity)))
        torch.testing.assert_close(fitted, torch.full_like(d, sigma), rtol=1e-9, atol=0)
    assert abs(sigma - FOCAL * scale / z) > 0.03  # the blur is visible at this tolerance
    half_width = sigma * math.sqrt(2 * math.log(2))  # 4.75 px: alpha falls to half between 4 and 5
    assert alphas[row, col + math.floor(half_width)] > opacity / 2 > alphas[row, col + math.ceil(half_width)]
    # Alpha below 1/255 is dropped: the image is exactly background outside that radius.
    cutoff = sigma * math.sqrt(2 * math.log(255 * opacity))
    ys, xs = torch.meshgrid(torch.arange(HEIGHT) - row, torch.arange(WIDTH) - col, indexing="ij")
    radius = torch.sqrt((xs**2 + ys**2).to(F64))
    assert (alphas[radius > cutoff + 1e-6] == 0).all() and (alphas[radius < cutoff - 1e-6] > 0).all()


def test_single_gaussian_antialiased_opacity_and_depth_channels(rasterize):
    z, scale, opacity = 4.0, 0.4, 0.7
    params = [t.detach() for t in _axis_gaussian(z, scale, opacity, [0.2, 0.9, 0.5])]
    row, col = AXIS_PIXEL
    _, alphas = _render_axis(rasterize, params, rasterize_mode="antialiased")
    var = (FOCAL * scale / z) ** 2
    assert alphas[row, col] == pytest.approx(opacity * var / (var + 0.3), abs=1e-12)  # sqrt(det ratio)

    render, alphas = _render_axis(rasterize, params, render_mode="RGB+D")
    torch.testing.assert_close(render[..., 3], z * alphas, rtol=1e-12, atol=0)
    render, alphas = _render_axis(rasterize, params, render_mode="ED")
    assert render.shape == (HEIGHT, WIDTH, 1)
    torch.testing.assert_close(render[alphas > 0][:, 0], torch.full(((alphas > 0).sum(),), z, dtype=F64))


def test_sh_colour_is_evaluated_along_the_camera_to_gaussian_direction(rasterize):
    c1 = 0.4886025119029199  # degree-1 basis constant: bases (C0, -C1 y, C1 z, -C1 x)
    coeffs = torch.zeros(1, 4, 3, dtype=F64)
    coeffs[0, 0] = rgb_to_sh(torch.tensor([0.3, 0.6, 0.5], dtype=F64))
    coeffs[0, 2] = torch.tensor([0.2, -0.1, -0.9], dtype=F64) / c1  # along +z
    coeffs[0, 3] = torch.tensor([-0.4, 0.1, 0.0], dtype=F64) / c1  # along +x
    params = _axis_gaussian(4.0, 0.3, 0.8, [0.0, 0.0, 0.0])
    params[4] = coeffs
    # Camera 1 at (-4, 0, 4) looks along world +x at the same Gaussian, also on its optical axis.
    side = torch.tensor([[0.0, 0.0, -1.0, 4.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 4.0], [0, 0, 0, 1]], dtype=F64)
    render, _, _ = rasterize(
        *params, torch.cat([IDENTITY_VIEW, side[None]]), AXIS_K.repeat(2, 1, 1), WIDTH, HEIGHT, sh_degree=1
    )
    front = torch.tensor([0.3 + 0.2, 0.6 - 0.1, 0.0], dtype=F64)  # 0.5 - 0.9 < 0 is clamped to 0
    beside = torch.tensor([0.3 + 0.4, 0.6 - 0.1, 0.5], dtype=F64)  # -C1 x with x = +1
    row, col = AXIS_PIXEL
    torch.testing.assert_close(render[:, row, col], 0.8 * torch.stack([front, beside]), rtol=0, atol=1e-12)

    # Degree 0 of the same coefficients is the view-independent DC colour.
    rgb = rasterize(*params[:4], torch.tensor([[0.3, 0.6, 0.5]], dtype=F64), IDENTITY_VIEW, AXIS_K,
                              WIDTH, HEIGHT)[0]  # fmt: skip
    sh0 = rasterize(*params, IDENTITY_VIEW, AXIS_K, WIDTH, HEIGHT, sh_degree=0)[0]
    torch.testing.assert_close(sh0, rgb, rtol=0, atol=1e-12)


def test_per_camera_colours_are_used_by_their_camera(rasterize):
    viewmats, Ks = ring_cameras(2)
    params = random_scene(100, seed=11)
    per_camera = torch.rand(2, 100, 3, dtype=F64)
    both = rasterize(*params[:4], per_camera, viewmats, Ks, WIDTH, HEIGHT)[0]
    for cam in range(2):
        alone = rasterize(*params[:4], per_camera[cam], viewmats[cam : cam + 1], Ks[cam : cam + 1],
                                    WIDTH, HEIGHT)[0]  # fmt: skip
        torch.testing.assert_close(both[cam], alone[0], rtol=0, atol=1e-12)


def test_nearer_gaussian_dominates_regardless_of_input_order(rasterize):
    # Same 4 px screen footprint: the near one at z = 2 with scale 0.2, the far one at z = 4 with 0.4.
    near = _axis_gaussian(2.0, 0.2, 0.8, [1.0, 0.0, 0.0])
    far = _axis_gaussian(4.0, 0.4, 0.8, [0.0, 1.0, 0.0])
    row, col = AXIS_PIXEL
    front_first, _ = _render_axis(rasterize, _stack(near, far))
    back_first, _ = _render_axis(rasterize, _stack(far, near))
    torch.testing.assert_close(front_first, back_first, rtol=0, atol=0)
    expected = torch.tensor([0.8, 0.2 * 0.8, 0.0], dtype=F64)  # near alpha, then what it lets through
    torch.testing.assert_close(front_first[row, col], expected, rtol=0, atol=1e-12)


def test_early_termination_gives_hidden_gaussians_zero_gradient(rasterize):
    # Two huge 0.999-opacity layers: after the first, T = 1e-3; the second would take T to 1e-6
    # <= 1e-4, so every pixel stops there and neither it nor the small Gaussian behind contributes.
    wall = [_axis_gaussian(z, 20.0, 0.999, [0.9, 0.1, 0.1]) for z in (2.0, 2.1)]
    hidden = _axis_gaussian(4.0, 0.1, 0.9, [0.0, 1.0, 0.0])
    params = _stack(*wall, hidden)
    render, alphas = _render_axis(rasterize, params)
    assert alphas.min() > 0.997
    torch.testing.assert_close(render, alphas[..., None] * params[4][0], rtol=0, atol=1e-12)  # the front layer only
    (render.sum() + alphas.sum()).backward()
    for param in params:
        assert torch.isfinite(param.grad).all() and not param.grad[1:].any()
    assert params[4].grad[0].abs().min() > 0  # the front layer's colour is seen everywhere

    # One layer leaves T = 1e-3: the Gaussian behind shows, and gets gradient.
    params = _stack(wall[0], hidden)
    render, alphas = _render_axis(rasterize, params)
    (render.sum() + alphas.sum()).backward()
    assert params[3].grad[1] != 0 and params[4].grad[1, 1] > 0


def test_alpha_clamped_at_0999_passes_no_gradient(rasterize):
    # Opacity 1 on a pixel centre: alpha = min(0.999, 1) is clamped there, so that pixel adds
    # nothing to the opacity gradient (all other pixels have alpha < 0.999 and do).
    params = _axis_gaussian(4.0, 0.4, 1.0, [0.2, 0.9, 0.5])
    _, alphas = _render_axis(rasterize, params)
    row, col = AXIS_PIXEL
    assert alphas[row, col] == 0.999 and (alphas < 0.999).sum() == alphas.numel() - 1
    _, _, grads = renders_and_grads(rasterize, params, IDENTITY_VIEW, AXIS_K)
    _, _, ref_grads = renders_and_grads(rasterize_dense, params, IDENTITY_VIEW, AXIS_K)
    torch.testing.assert_close(grads[3], ref_grads[3], rtol=1e-9, atol=0)
    assert grads[3].abs() > 0


def test_absgrad_is_the_sum_over_pixels_of_absolute_mean2d_gradients(rasterize):
    width = height = 8
    viewmats, Ks = ring_cameras(1, width, height)
    params = random_scene(12, seed=5)
    with torch.no_grad():
        params[0].mul_(0.5)
        params[2].mul_(3.0)
    render, alphas, meta = rasterize(*params, viewmats, Ks, width, height, absgrad=True)
    weights = torch.rand(height * width, 4, dtype=F64, generator=torch.Generator().manual_seed(1))
    meta["means2d"].retain_grad()
    (torch.cat([render, alphas], -1).reshape(-1, 4) * weights).sum().backward()
    absgrad = meta["means2d"].absgrad
    assert absgrad.shape == (1, 12, 2)

    # Reference: the dense compositor, one loss per pixel, differentiated w.r.t. the 2D means.
    ids = torch.nonzero((meta["radii"][0] > 0).all(-1)).squeeze(1)
    ids = ids[torch.argsort(meta["depths"][0, ids].detach())]
    assert len(ids) >= 8
    xy = meta["means2d"][0, ids].detach().requires_grad_()
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    pixels = torch.stack([xs, ys], -1).reshape(-1, 2).to(F64) + 0.5
    args = (meta["conics"][0, ids].detach(), meta["opacities"][0, ids].detach(), params[4][ids].detach())

    def per_pixel_loss(xy: Tensor) -> Tensor:
        return (_composite_chunk(pixels, xy, *args) * weights).sum(1)

    jacobian = torch.autograd.functional.jacobian(per_pixel_loss, xy)  # (pixels, V, 2)
    expected = torch.zeros(12, 2, dtype=F64).index_copy_(0, ids, jacobian.abs().sum(0))
    torch.testing.assert_close(absgrad[0], expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(meta["means2d"].grad[0, ids], jacobian.sum(0), rtol=1e-9, atol=1e-12)
    assert (absgrad[0, ids] > meta["means2d"].grad[0, ids].abs() + 1e-6).any()  # signs do cancel
