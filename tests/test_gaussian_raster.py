"""The CPU Gaussian rasterizers against the dense reference and gsplat's DefaultStrategy; bad input.

Every test that renders runs once per CPU rasterizer (the `rasterize` fixture, conftest.py): the
compiled "numba" one and the PyTorch reference "torch". Renders computed by hand: test_gaussian_raster_by_hand.py.
"""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.render.gaussians import rasterize_gaussians
from implicit_deepfake.render.gaussians_dense import rasterize_dense
from implicit_deepfake.render.sh import rgb_to_sh
from tests.gaussian_scenes import (
    AXIS_K,
    F64,
    HEIGHT,
    IDENTITY_VIEW,
    WIDTH,
    random_scene,
    renders_and_grads,
    ring_cameras,
)


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
