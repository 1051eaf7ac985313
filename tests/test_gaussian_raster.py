"""The CPU Gaussian rasterizers against the dense reference, hand-computed renders and gsplat's DefaultStrategy.

Every test that renders runs once per CPU rasterizer (`rasterize` fixture): the compiled "numba"
one and the PyTorch reference "torch".
"""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.render.cameras import Cameras, look_at
from implicit_deepfake.render.gaussians import rasterize_gaussians
from implicit_deepfake.render.gaussians_dense import _composite_chunk, rasterize_dense
from implicit_deepfake.render.sh import rgb_to_sh

WIDTH, HEIGHT = 32, 24
F64 = torch.float64
# A camera at the origin looking down +z (OpenCV axes), principal point on the centre of pixel
# (16, 12), so a Gaussian on the optical axis peaks exactly on one pixel centre.
FOCAL = 40.0
AXIS_PIXEL = (12, 16)  # (row, column)
IDENTITY_VIEW = torch.eye(4, dtype=F64)[None]
AXIS_K = torch.tensor([[[FOCAL, 0.0, 16.5], [0.0, FOCAL, 12.5], [0.0, 0.0, 1.0]]], dtype=F64)


@pytest.fixture(params=["numba", "torch"])
def rasterize(request):
    """`rasterize_gaussians` with one of the CPU rasterizers."""
    return partial(rasterize_gaussians, rasterizer=request.param)


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


def assert_matches_dense(rasterize, params: list[Tensor], viewmats: Tensor, Ks: Tensor, **options) -> None:
    render, alphas, grads = renders_and_grads(rasterize, params, viewmats, Ks, **options)
    ref_render, ref_alphas, ref_grads = renders_and_grads(rasterize_dense, params, viewmats, Ks, **options)
    assert alphas.max() > 0.9 and (alphas > 0).float().mean() > 0.3  # a real scene, not an empty image
    torch.testing.assert_close(render, ref_render, rtol=0, atol=1e-9)
    torch.testing.assert_close(alphas, ref_alphas, rtol=0, atol=1e-9)
    for name, grad, ref in zip(("means", "quats", "scales", "opacities", "colors"), grads, ref_grads):
        if ref is None:  # colours do not reach a depth-only render
            assert grad is None or not grad.any(), name
            continue
        assert grad is not None and ref.abs().max() > 0, name
        torch.testing.assert_close(grad, ref, rtol=1e-6, atol=1e-9 * float(ref.abs().max()), msg=name)


CASES = {
    "rgb": ({}, (None, 3)),
    "sh0": ({"sh_degree": 0}, (None, 16, 3)),
    "sh1": ({"sh_degree": 1}, (None, 16, 3)),
    "sh2": ({"sh_degree": 2}, (None, 9, 3)),
    "sh3": ({"sh_degree": 3}, (None, 16, 3)),
    "per_camera_rgb": ({}, (2, None, 3)),
    "background": ({"backgrounds": torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=F64)}, (None, 3)),
    "rgb_ed_background": (
        {"render_mode": "RGB+ED", "backgrounds": torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=F64)},
        (None, 3),
    ),
    "rgb_d": ({"render_mode": "RGB+D"}, (None, 3)),
    "depth_only": ({"render_mode": "D"}, (None, 3)),
    "expected_depth": ({"render_mode": "ED"}, (None, 3)),
    "antialiased": ({"rasterize_mode": "antialiased"}, (None, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_matches_dense_reference(rasterize, case: str):
    options, color_shape = CASES[case]
    viewmats, Ks = ring_cameras(2)
    params = random_scene(150, seed=len(case), color_shape=color_shape)
    if "sh_degree" in options:  # SH coefficients of a plausible size: DC around grey, small higher bands
        with torch.no_grad():
            params[4].sub_(0.5).mul_(0.8)
    assert_matches_dense(rasterize, params, viewmats, Ks, **options)


def test_matches_dense_reference_where_pixels_terminate(rasterize):
    # Near-opaque Gaussians: many pixels stop early (T would fall to <= 1e-4) and some alphas clamp at 0.999.
    viewmats, Ks = ring_cameras(2)
    params = random_scene(300, seed=4)
    params[3] = (1.0 - 0.01 * torch.rand(300, generator=torch.Generator().manual_seed(4), dtype=F64)).requires_grad_()
    assert_matches_dense(rasterize, params, viewmats, Ks)


def test_per_camera_sh_matches_dense_reference(rasterize):
    viewmats, Ks = ring_cameras(2)
    params = random_scene(120, seed=7)
    params[4] = (torch.rand(2, 120, 9, 3, dtype=F64) - 0.5).requires_grad_()
    assert_matches_dense(rasterize, params, viewmats, Ks, sh_degree=2)


def test_matches_dense_reference_across_tiles_and_cameras(rasterize):
    # 53x37 is no multiple of the compiled kernel's 16-px tiles: Gaussians straddle tile edges and partial tiles.
    width, height = 53, 37
    viewmats, Ks = ring_cameras(3, width, height)
    params = random_scene(200, seed=21)
    render, alphas, grads = renders_and_grads(rasterize, params, viewmats, Ks, width=width, height=height)
    ref_render, ref_alphas, ref_grads = renders_and_grads(rasterize_dense, params, viewmats, Ks, width=width,
                                                          height=height)  # fmt: skip
    assert (alphas > 0.5).float().mean() > 0.3
    torch.testing.assert_close(render, ref_render, rtol=0, atol=1e-9)
    torch.testing.assert_close(alphas, ref_alphas, rtol=0, atol=1e-9)
    for grad, ref in zip(grads, ref_grads):
        torch.testing.assert_close(grad, ref, rtol=1e-6, atol=1e-9 * float(ref.abs().max()))


def test_compiled_rasterizer_matches_the_torch_one_in_float32_on_any_thread_count():
    # The training set-up: float32, SH degree 3, a background, absgrad; one and two threads split the tiles differently.
    viewmats, Ks = (t.float() for t in ring_cameras(2, 64, 48))
    params = [t.detach().float().requires_grad_() for t in random_scene(3000, seed=8, color_shape=(None, 16, 3))]
    with torch.no_grad():
        params[2].mul_(0.5)
        params[4].sub_(0.5).mul_(0.8)
    options = {"sh_degree": 3, "backgrounds": torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.2, 0.4]]), "absgrad": True}
    results = {}
    threads = torch.get_num_threads()
    for name, n_threads in (("torch", threads), ("numba", 1), ("numba", 2)):
        torch.set_num_threads(n_threads)
        try:
            render, alphas, meta = rasterize_gaussians(*params, viewmats, Ks, 64, 48, rasterizer=name, **options)
            meta["means2d"].retain_grad()
            loss = (torch.rand(render.shape, generator=torch.Generator().manual_seed(2)) * render).sum() + alphas.sum()
            grads = torch.autograd.grad(loss, [*params, meta["means2d"]])
            results[name, n_threads] = (render.detach(), alphas.detach(), *grads, meta["means2d"].absgrad)
        finally:
            torch.set_num_threads(threads)
    names = ("render", "alphas", "means", "quats", "scales", "opacities", "sh", "means2d", "absgrad")
    reference = results["torch", threads]
    assert reference[1].max() > 0.9 and (reference[1] > 0).float().mean() > 0.3
    for key in (("numba", 1), ("numba", 2)):
        for name, value, ref in zip(names, results[key], reference):
            scale = float(ref.abs().max())
            torch.testing.assert_close(value, ref, rtol=1e-3, atol=1e-4 * scale, msg=f"{key} {name}")
    for name, one, two in zip(names, results["numba", 1], results["numba", 2]):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6 * float(one.abs().max()), msg=name)


def test_culled_gaussians_get_zero_radii_and_finite_zero_gradients(rasterize):
    params = random_scene(80, seed=3)
    view = torch.eye(4, dtype=F64)[None]  # looking down +z from z = -2.5
    view[:, 2, 3] = 2.5
    Ks = AXIS_K
    culled = torch.tensor(
        [
            [0.0, 0.0, -3.5],  # behind the camera
            [0.0, 0.0, -2.495],  # in front, but nearer than the near plane (z = 0.005)
            [40.0, 0.0, 0.0],  # far off screen
            [0.0, 0.0, 20.0],  # beyond far_plane
        ],
        dtype=F64,
    )
    # Just off screen (x/z = 0.9 > the 1.3x field-of-view clamp of the EWA Jacobian) but large
    # enough to reach into the image: visible, and its footprint depends on the clamp.
    edge = torch.tensor([[2.25, 0.0, 0.0]], dtype=F64)
    with torch.no_grad():
        params[0][:4] = culled
        params[0][4] = edge
        params[2][4] = 0.5
    assert_matches_dense(rasterize, params, view, Ks, far_plane=20.0)

    render, alphas, meta = rasterize(*params, view, Ks, WIDTH, HEIGHT, far_plane=20.0)
    assert (meta["radii"][0, :4] == 0).all()
    assert (meta["radii"][0, 4] > 0).all() and meta["means2d"][0, 4, 0] > WIDTH + 10
    (render.sum() + alphas.sum()).backward()
    for param in params:
        assert torch.isfinite(param.grad).all()
        assert not param.grad[:4].any()
    assert params[0].grad[4].abs().sum() > 0


@pytest.mark.parametrize("n, z", [(0, 1.0), (5, -3.0)])
def test_no_gaussians_or_none_visible_render_the_background(rasterize, n: int, z: float):
    # No Gaussians at all, or all behind the camera: the background, zero alpha, zero (finite) gradients.
    means = torch.zeros(n, 3, dtype=F64)
    means[:, 2] = z
    params = [means, torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=F64).repeat(n, 1), torch.full((n, 3), 0.1, dtype=F64),
              torch.full((n,), 0.5, dtype=F64), torch.rand(n, 3, dtype=F64)]  # fmt: skip
    params = [t.requires_grad_() for t in params]
    background = torch.tensor([[0.1, 0.4, 0.7]], dtype=F64)
    render, alphas, meta = rasterize(*params, IDENTITY_VIEW, AXIS_K, WIDTH, HEIGHT, backgrounds=background,
                                     absgrad=True)  # fmt: skip
    assert torch.equal(render, background.expand(1, HEIGHT, WIDTH, 3)) and not alphas.any()
    assert meta["radii"].shape == (1, n, 2) and not meta["radii"].any()
    meta["means2d"].retain_grad()
    (render.sum() + alphas.sum()).backward()
    for param in params:
        assert param.grad.shape == param.shape and not param.grad.any()
    assert meta["means2d"].absgrad.shape == (1, n, 2)


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


@pytest.mark.parametrize("absgrad", [False, True])
def test_meta_drives_gsplat_default_strategy(rasterize, absgrad: bool):
    torch.manual_seed(0)
    n_small, n_large, n_faint = 24, 16, 8
    n = n_small + n_large + n_faint
    scales = torch.cat([torch.full((n_small,), 0.005), torch.full((n_large,), 0.05), torch.full((n_faint,), 0.02)])
    opacities = torch.cat([torch.full((n_small + n_large,), 0.6), torch.full((n_faint,), 3e-4)])
    params = torch.nn.ParameterDict(
        {
            "means": (torch.rand(n, 3) - 0.5) * 0.8,  # all in view of both cameras
            "scales": torch.log(scales)[:, None].repeat(1, 3),
            "quats": torch.randn(n, 4),
            "opacities": torch.logit(opacities),
            "sh0": rgb_to_sh(torch.rand(n, 1, 3)),
            "shN": torch.zeros(n, 15, 3),
        }
    )
    # One Adam per parameter, as gsplat's simple_trainer; scales stay put so they identify the Gaussians.
    lrs = {"means": 1e-4, "scales": 0.0, "quats": 1e-3, "opacities": 1e-2, "sh0": 2.5e-3, "shN": 1e-4}
    optimizers = {name: torch.optim.Adam([{"params": params[name], "lr": lrs[name], "name": name}]) for name in lrs}
    strategy = DefaultStrategy(refine_start_iter=1, refine_every=2, grow_grad2d=0.0, absgrad=absgrad)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    viewmats, Ks = (t.float() for t in ring_cameras(2))
    target = torch.rand(2, HEIGHT, WIDTH, 3)

    sizes = []
    for step in range(4):
        render, _, info = rasterize(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            torch.cat([params["sh0"], params["shN"]], 1), viewmats, Ks, WIDTH, HEIGHT, sh_degree=3, absgrad=absgrad,
        )  # fmt: skip
        strategy.step_pre_backward(params, optimizers, state, step, info)
        (render - target).abs().mean().backward()
        if step == 2:  # the refinement step: every Gaussian seen so far had a gradient
            seen = (state["count"] > 0) | (info["radii"] > 0).all(-1).any(0)
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sizes.append(len(params["means"]))

    assert seen[:-n_faint].all() and not seen[-n_faint:].any()  # faint ones fall below alpha 1/255: culled
    # Step 2: small ones cloned, large ones split in two at 1/1.6 the scale, faint ones pruned.
    assert sizes == [n, n, 2 * (n_small + n_large), 2 * (n_small + n_large)]
    max_scale = torch.exp(params["scales"]).max(1).values.detach()
    assert torch.isclose(max_scale, torch.tensor(0.005)).sum() == 2 * n_small
    assert torch.isclose(max_scale, torch.tensor(0.05 / 1.6)).sum() == 2 * n_large
    assert (torch.sigmoid(params["opacities"]) > strategy.prune_opa).all()
    for name, optimizer in optimizers.items():
        assert optimizer.param_groups[0]["params"][0] is params[name]
        for key in ("exp_avg", "exp_avg_sq"):
            assert optimizer.state[params[name]][key].shape == params[name].shape


def test_bad_render_mode_shapes_and_rasterizer_are_rejected():
    viewmats, Ks = ring_cameras(1)
    params = random_scene(5, seed=0)
    with pytest.raises(DeepfakeError, match="render_mode"):
        rasterize_gaussians(*params, viewmats, Ks, WIDTH, HEIGHT, render_mode="RGBD")
    with pytest.raises(DeepfakeError, match="rasterize_mode"):
        rasterize_gaussians(*params, viewmats, Ks, WIDTH, HEIGHT, rasterize_mode="fancy")
    with pytest.raises(ValueError, match="scales"):
        rasterize_gaussians(params[0], params[1], params[2][:, :2], *params[3:], viewmats, Ks, WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="opacities"):
        rasterize_gaussians(*params[:3], params[3][:, None], params[4], viewmats, Ks, WIDTH, HEIGHT)
    with pytest.raises(ValueError, match="Ks"):
        rasterize_gaussians(*params, viewmats, Ks.repeat(2, 1, 1), WIDTH, HEIGHT)
    with pytest.raises(DeepfakeError, match="rasterizer='fast'"):
        rasterize_gaussians(*params, viewmats, Ks, WIDTH, HEIGHT, rasterizer="fast")
    with pytest.raises(DeepfakeError, match="renders cuda tensors"):
        rasterize_gaussians(*params, viewmats, Ks, WIDTH, HEIGHT, rasterizer="gsplat")
