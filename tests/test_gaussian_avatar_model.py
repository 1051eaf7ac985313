"""The expression-driven Gaussians (models/gaussian_avatar.py): a code poses them by their offsets, the
code map starts at the expressions' whitened principal components, gsplat's densification keeps each
Gaussian's offsets, and a pose correction applied to the Gaussians renders what the corrected camera
sees."""

from __future__ import annotations

import pytest
import torch
from gsplat.strategy.ops import duplicate, remove, split

from implicit_deepfake.lit.gaussian_avatar import bbox_weights
from implicit_deepfake.lit.pose_correction import PoseCorrection
from implicit_deepfake.models.gaussian_avatar import OFFSET_NAMES, ExpressionCloud, ExpressionCode, moved
from tests.conftest import orbit_cameras


def _cloud(n: int = 200, k: int = 3, seed: int = 0) -> ExpressionCloud:
    generator = torch.Generator().manual_seed(seed)
    cloud = ExpressionCloud(sh_degree=1, code_dims=k)
    points = 0.5 * torch.randn(n, 3, generator=generator)
    cloud.initialize(points, torch.rand(n, 3, generator=generator), torch.full((n,), 0.08), opacity=0.8)
    with torch.no_grad():
        for name in OFFSET_NAMES:
            cloud.params[name].normal_(0.0, 0.05, generator=generator)
    return cloud


def test_a_code_poses_the_gaussians_by_their_offsets():
    cloud = _cloud()
    p = {name: t.detach() for name, t in cloud.params.items()}
    assert cloud.params["means_offsets"].shape == (200, 3, 3) and cloud.params["opacities_offsets"].shape == (200, 3)
    code = torch.tensor([0.5, -1.0, 2.0])
    posed = cloud.posed(code)
    for i in (0, 17, 199):
        assert torch.allclose(posed["means"][i], p["means"][i] + code @ p["means_offsets"][i], atol=1e-6)
        assert torch.allclose(posed["sh0"][i, 0], p["sh0"][i, 0] + code @ p["sh0_offsets"][i], atol=1e-6)
        assert torch.allclose(posed["opacities"][i], p["opacities"][i] + code @ p["opacities_offsets"][i], atol=1e-6)
    neutral = cloud.posed(torch.zeros(3))
    assert all(torch.equal(neutral[name], p[name]) for name in ("scales", "quats", "shN"))
    assert torch.equal(neutral["means"], p["means"])
    assert torch.equal(cloud.neutral().params["means"], p["means"]) and len(cloud.neutral()) == 200
    # Gradients reach the offsets through the posed values.
    posed["means"].sum().backward()
    assert torch.allclose(cloud.params["means_offsets"].grad[5], code[:, None].expand(3, 3))


def test_code_map_starts_at_whitened_principal_components():
    generator = torch.Generator().manual_seed(0)
    expressions = torch.zeros(200, 76)
    expressions[:, :3] = torch.randn(200, 3, generator=generator) * torch.tensor([0.3, 0.1, 0.02]) + 0.4
    code = ExpressionCode(76, code_dims=5, latent_dims=2)
    code.initialize(expressions)
    codes = code(expressions, torch.zeros(200, 2))
    assert torch.allclose(codes[:, :3].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(codes[:, :3].std(0), torch.ones(3), atol=1e-4)  # unit variance
    assert torch.equal(codes[:, 3:], torch.zeros(200, 2))  # no more directions vary: zero rows
    assert torch.allclose(code(expressions.mean(0, keepdim=True), torch.zeros(1, 2)), torch.zeros(1, 5), atol=1e-5)
    latent_columns = code.linear.weight[:, 76:]
    assert latent_columns.abs().max() > 0  # small and random, so a latent code gets a gradient from the start


def test_densification_resizes_the_offsets_with_the_gaussians():
    cloud = _cloud(n=10)
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in cloud.params.items()}
    before = {name: p.detach().clone() for name, p in cloud.params.items()}
    state: dict = {}
    duplicate(cloud.params, optimizers, state, torch.arange(10) < 2)
    assert torch.equal(cloud.params["means_offsets"][10:], before["means_offsets"][:2])
    split(cloud.params, optimizers, state, torch.arange(12) == 11)  # the second duplicate splits in two
    assert len(cloud) == 13 and cloud.params["sh0_offsets"].shape == (13, 3, 3)
    assert torch.equal(cloud.params["opacities_offsets"][11:], before["opacities_offsets"][[1, 1]])
    remove(cloud.params, optimizers, state, torch.arange(13) == 0)
    assert all(p.shape[0] == 12 for p in cloud.params.values())
    assert torch.equal(cloud.params["means_offsets"][0], before["means_offsets"][1])
    assert optimizers["means_offsets"].param_groups[0]["params"][0] is cloud.params["means_offsets"]


def test_moving_the_gaussians_renders_what_the_corrected_camera_sees():
    cloud = _cloud(n=300, k=2)
    cameras = orbit_cameras(2, 48)
    correction = PoseCorrection(2)
    with torch.no_grad():
        correction.params.copy_(
            torch.tensor([[0.1, -0.05, 0.08, 0.03, -0.02, 0.04], [-0.06, 0.02, 0.0, 0.0, 0.05, 0.0]])
        )
    center = torch.tensor([0.05, -0.1, 0.02])
    corrected = correction.cameras(cameras, center)
    for frame in range(2):
        rotation, shift = correction.motions(torch.tensor([frame]), center)
        values = moved(cloud.posed(torch.zeros(2)), correction.params[frame, :3], rotation[0], shift[0])
        with torch.no_grad():
            by_gaussians = cloud.render_values(values, cameras[frame], 1, torch.ones(3))[0]
            by_camera = cloud.render(corrected[frame], 1, torch.ones(3))[0]
        # The same image; SH band 1 sees the same directions, up to float rounding.
        assert (by_gaussians - by_camera).abs().max() < 2e-3
        assert (by_camera - cloud.render(cameras[frame], 1, torch.ones(3))[0]).abs().max() > 0.05


def test_bbox_weights_favour_the_face_by_their_ratio():
    weights = bbox_weights(torch.tensor([0.25, 0.75, 0.5, 1.0]), 40, 20, 0.9)
    assert weights.shape == (40, 20) and float(weights.mean()) == pytest.approx(1.0)
    assert float(weights[10:30, 10:20].mean() / weights[:10].mean()) == pytest.approx(9.0)
    assert torch.equal(bbox_weights(None, 4, 4, 0.9), torch.ones(4, 4))
