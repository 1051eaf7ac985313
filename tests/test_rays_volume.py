"""Rays, sampling and volume compositing against hand-computed values; the NeRF network's shape."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from implicit_deepfake.data.datamodule import Frames, RayDataset
from implicit_deepfake.models.nerf import CoarseFineNeRF, NeRFMLP, positional_encoding, render_samples
from implicit_deepfake.render.rays import (
    marching_samples,
    pixel_coordinates,
    pixel_rays,
    ray_box,
    sample_pdf,
    stratified_samples,
)
from implicit_deepfake.render.volume import composite, interval_lengths, render_weights
from tests.conftest import orbit_cameras

RED, WHITE = torch.tensor([1.0, 0.0, 0.0]), torch.ones(3)


def test_rays_pass_through_pixel_centres_as_cameras_project():
    cameras = orbit_cameras(3, 20)
    flat = torch.tensor([0, 19, 210, 399])
    view = torch.tensor([0, 1, 2, 1])
    pixels = pixel_coordinates(flat, 20)
    assert pixels.tolist() == [[0, 0], [19, 0], [10, 10], [19, 19]]
    origins, directions = pixel_rays(cameras, view, pixels)
    assert torch.allclose(directions.norm(dim=1), torch.ones(4))
    assert torch.allclose(origins, cameras.centers[view], atol=1e-5)
    points = origins + 2.5 * directions
    for i in range(4):
        pix, depth = cameras[int(view[i])].project(points[i : i + 1])
        assert pix[0, 0].tolist() == pytest.approx((pixels[i] + 0.5).tolist(), abs=1e-3)
        assert float(depth[0, 0]) > 0


def test_ray_box_entry_exit_and_misses():
    origins = torch.tensor([[-3.0, 0.0, 0.0], [-3.0, 5.0, 0.0], [0.0, 0.0, 0.0], [-3.0, -3.0, 0.0]])
    directions = torch.nn.functional.normalize(
        torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]), dim=1
    )
    near, far = ray_box(origins, directions)
    hits = torch.tensor([0, 2, 3])
    # From inside, the ray starts at its origin; diagonally it enters through an edge.
    assert near[hits].tolist() == pytest.approx([2.0, 0.0, 2 * math.sqrt(2)], abs=1e-5)
    assert far[hits].tolist() == pytest.approx([4.0, 1.0, 4 * math.sqrt(2)], abs=1e-5)
    assert near[1] == far[1]  # the miss has no length to sample


def test_opaque_slab_gives_its_colour_and_entry_depth():
    t = torch.linspace(1.0, 3.0, 21)[None]  # every 0.1
    inside = (t >= 1.95) & (t <= 2.45)
    sigma = torch.where(inside, 1e4, 0.0)
    weights, transmittance = render_weights(sigma, interval_lengths(t, torch.tensor([3.0])))
    rgb = torch.where(inside[..., None], RED, torch.tensor([0.0, 1.0, 0.0]))
    color, acc, depth = composite(weights, rgb, t, WHITE)
    assert color[0].tolist() == pytest.approx(RED.tolist(), abs=1e-6)
    assert float(acc) == pytest.approx(1.0) and float(depth) == pytest.approx(2.0, abs=1e-5)
    assert transmittance[0, :11].tolist() == pytest.approx([1.0] * 11) and transmittance[0, 11:].max() < 1e-6


def test_half_transparent_samples_composite_onto_the_background():
    # Two samples of opacity 1/2 (sigma * delta = ln 2): weights 1/2 and 1/4, background the rest 1/4.
    t = torch.tensor([[1.0, 2.0, 3.0]])
    sigma = torch.tensor([[math.log(2.0), math.log(2.0), 0.0]])
    weights, _ = render_weights(sigma, interval_lengths(t, torch.tensor([4.0])))
    assert weights[0].tolist() == pytest.approx([0.5, 0.25, 0.0])
    rgb = torch.stack([RED, torch.tensor([0.0, 0.0, 1.0]), RED])[None]
    color, acc, depth = composite(weights, rgb, t, WHITE)
    assert color[0].tolist() == pytest.approx([0.5 + 0.25, 0.25, 0.25 + 0.25])
    assert float(acc) == pytest.approx(0.75) and float(depth) == pytest.approx(0.5 * 1 + 0.25 * 2)


def test_zero_length_intervals_are_empty():
    t = torch.tensor([[0.5, 0.5, 0.5]])
    weights, _ = render_weights(torch.full((1, 3), 1e3), interval_lengths(t, torch.tensor([0.5])))
    assert weights.abs().max() == 0


def test_stratified_samples_stay_in_their_bins():
    near, far = torch.tensor([2.0, 1.0]), torch.tensor([6.0, 2.0])
    even = stratified_samples(near, far, 5, perturb=False)
    assert even[0].tolist() == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.0])
    jittered = stratified_samples(
        near.repeat(500), far.repeat(500), 5, perturb=True, generator=torch.Generator().manual_seed(0)
    )
    lower = torch.tensor([2.0, 2.5, 3.5, 4.5, 5.5])
    upper = torch.tensor([2.5, 3.5, 4.5, 5.5, 6.0])
    first = jittered[::2]
    assert ((first >= lower) & (first <= upper)).all() and (jittered.diff(dim=1) >= 0).all()
    assert first.mean(0).tolist() == pytest.approx(((lower + upper) / 2).tolist(), abs=0.05)


def test_sample_pdf_inverts_the_cdf():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]])
    uniform = sample_pdf(bins, torch.ones(1, 4), 5, perturb=False)
    assert uniform[0].tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0, 4.0], abs=1e-4)
    # Three quarters of the weight on [1, 2], a quarter on [3, 4]: quantiles split 3:1 between them.
    skewed = sample_pdf(bins, torch.tensor([[0.0, 3.0, 0.0, 1.0]]), 1001, perturb=False)[0]
    in_second, in_fourth = (
        ((skewed >= 1) & (skewed <= 2)).float().mean(),
        ((skewed >= 3) & (skewed <= 4)).float().mean(),
    )
    assert float(in_second) == pytest.approx(0.75, abs=0.01) and float(in_fourth) == pytest.approx(0.25, abs=0.01)
    drawn = sample_pdf(
        bins.expand(2000, 5),
        torch.tensor([[0.0, 3.0, 0.0, 1.0]]).expand(2000, 4),
        1,
        perturb=True,
        generator=torch.Generator().manual_seed(0),
    )
    assert float(((drawn >= 1) & (drawn <= 2)).float().mean()) == pytest.approx(0.75, abs=0.03)


def test_marching_samples_every_step_up_to_far():
    t, valid = marching_samples(torch.tensor([0.0, 1.0]), torch.tensor([0.35, 1.1]), 0.1, perturb=False)
    assert t.shape == (2, 4)
    assert t[0].tolist() == pytest.approx([0.05, 0.15, 0.25, 0.35])
    assert valid.tolist() == [[True, True, True, False], [True, False, False, False]]


class SlabField(nn.Module):
    """Opaque red where 0.2 <= z <= 0.4 (box units), empty elsewhere."""

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        inside = (x[:, 2] >= 0.2) & (x[:, 2] <= 0.4)
        return torch.where(inside, 200.0, 0.0), RED.expand(len(x), 3)


def test_hierarchical_sampling_puts_fine_samples_on_the_slab():
    # Rays down the z axis from z = -1 to 1; the slab starts 1.2 in. 16 coarse samples land only ~2 in it.
    n = 64
    origins = torch.stack([torch.linspace(-0.5, 0.5, n), torch.zeros(n), torch.full((n,), -1.0)], 1)
    directions = torch.tensor([[0.0, 0.0, 1.0]]).expand(n, 3)
    near, far = torch.zeros(n), torch.full((n,), 2.0)
    t = stratified_samples(near, far, 16, perturb=True, generator=torch.Generator().manual_seed(0))
    points = (origins[:, None] + t[..., None] * directions[:, None]).reshape(-1, 3)
    sigma = SlabField()(points, directions.repeat_interleave(16, 0))[0].view(n, 16)
    weights, _ = render_weights(sigma, interval_lengths(t, far))
    fine = sample_pdf(
        0.5 * (t[:, 1:] + t[:, :-1]), weights[:, 1:-1], 32, perturb=True, generator=torch.Generator().manual_seed(1)
    )
    near_slab = ((fine >= 1.0) & (fine <= 1.5)).float().mean()
    assert near_slab > 0.9, float(near_slab)

    model = CoarseFineNeRF(SlabField(), SlabField(), n_coarse=16, n_fine=32)
    out = model(origins, directions, near, far, WHITE, perturb=False)
    assert torch.allclose(out.rgb, RED.expand(n, 3), atol=1e-4) and torch.allclose(out.acc, torch.ones(n), atol=1e-4)
    # The coarse samples (every 2/15) first hit the slab at 4/3; the fine ones, spread between the
    # midpoints around that sample, from 1.27 on: nearer its front at 1.2.
    coarse, _ = render_samples(SlabField(), origins, directions, stratified_samples(near, far, 16, False), far, WHITE)
    assert torch.allclose(coarse.depth, torch.full((n,), 4 / 3), atol=1e-3)
    assert ((out.depth > 1.2) & (out.depth < 1.28)).all() and out.samples == n * (16 + 48)
    assert torch.allclose(out.extra_rgb[0], RED.expand(n, 3), atol=1e-3)


def test_positional_encoding_and_nerf_pytorch_network_size():
    x = torch.tensor([[0.5, -1.0, 2.0]])
    encoded = positional_encoding(x, 2)
    expected = [
        0.5,
        -1.0,
        2.0,
        *torch.sin(x[0]).tolist(),
        *torch.cos(x[0]).tolist(),
        *torch.sin(2 * x[0]).tolist(),
        *torch.cos(2 * x[0]).tolist(),
    ]
    assert encoded[0].tolist() == pytest.approx(expected)
    network = NeRFMLP()
    # nerf-pytorch's NeRF(D=8, W=256, input_ch=63, input_ch_views=27, skips=[4], use_viewdirs=True).
    assert sum(p.numel() for p in network.parameters()) == 595_844
    sigma, rgb = network(torch.rand(5, 3), torch.nn.functional.normalize(torch.randn(5, 3), dim=1))
    assert sigma.shape == (5,) and (sigma >= 0).all() and rgb.shape == (5, 3) and ((rgb > 0) & (rgb < 1)).all()


def test_ray_batches_carry_the_pixels_they_pass_through():
    cameras = orbit_cameras(2, 8)
    rgb = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    alpha = torch.randint(0, 256, (2, 8, 8, 1), dtype=torch.uint8)
    dataset = RayDataset(Frames(cameras, rgb, alpha, ["a", "b"]), batch_size=50)
    assert len(dataset) == 3  # 128 pixels in batches of 50
    batch = dataset[0]
    assert batch["origins"].shape == batch["directions"].shape == batch["rgb"].shape == (50, 3)
    # Each ray projects onto a pixel centre whose colour and alpha it carries.
    for i in range(50):
        point = batch["origins"][i : i + 1] + 3.0 * batch["directions"][i : i + 1]
        view = int(torch.argmin((cameras.centers - batch["origins"][i]).norm(dim=1)))
        pix, _ = cameras[view].project(point)
        x, y = (pix[0, 0] - 0.5).round().long().tolist()
        assert torch.equal(batch["rgb"][i], rgb[view, y, x] / 255.0) and torch.equal(
            batch["alpha"][i], alpha[view, y, x] / 255.0
        )
