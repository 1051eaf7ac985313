"""The Gaussian cloud: visual-hull initialisation, scene bounds, and the 3DGS .ply round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import Frames
from implicit_deepfake.data.sparse_points import SPARSE_POINTS, sparse_points, write_points_ply
from implicit_deepfake.models.gaussian_init import hull_points, initial_points, neighbour_scales, scene_scale
from implicit_deepfake.models.gaussians import GaussianCloud
from tests.conftest import orbit_cameras

RADIUS = 0.8


def sphere_colour(points: torch.Tensor) -> torch.Tensor:
    """The sphere's texture: RGB from the direction of the surface point, the same from every view."""
    return 0.5 + 0.45 * torch.nn.functional.normalize(points, dim=-1)


def sphere_frames(n: int = 8, size: int = 48) -> Frames:
    """Views of a textured sphere of RADIUS at the origin; alpha is its exact silhouette."""
    cameras = orbit_cameras(n, size)
    c2w = cameras.camera_to_world
    k = cameras.intrinsics[0]
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    rays = torch.stack([(xs - k[0, 2]) / k[0, 0], (ys - k[1, 2]) / k[1, 1], torch.ones_like(xs)], -1)
    directions = torch.nn.functional.normalize(torch.einsum("nij,hwj->nhwi", c2w[:, :3, :3], rays), dim=-1)
    origins = c2w[:, None, None, :3, 3].expand_as(directions)
    along = -(origins * directions).sum(-1)  # ray parameter of the point closest to the centre
    miss2 = (origins + along[..., None] * directions).square().sum(-1)
    alpha = (miss2 < RADIUS**2).float()[..., None]
    hit = origins + (along - (RADIUS**2 - miss2).clamp_min(0).sqrt())[..., None] * directions
    rgb = sphere_colour(hit) * alpha + (1 - alpha)
    as_uint8 = lambda x: (x * 255).round().to(torch.uint8).contiguous()  # noqa: E731
    return Frames(cameras, as_uint8(rgb), as_uint8(alpha), [f"train/r_{i}.png" for i in range(n)])


def test_cameras_focus_and_scale():
    cameras = orbit_cameras(6, 32, distance=4.0)
    assert torch.allclose(cameras.look_at_point(), torch.zeros(3), atol=1e-4)
    centers = cameras.centers
    assert scene_scale(cameras) == pytest.approx(1.1 * float((centers - centers.mean(0)).norm(dim=1).max()))


def test_hull_points_lie_on_the_silhouettes_surface_with_pixel_colours():
    frames = sphere_frames()
    points, colors = hull_points(frames, 2000, seed=0)
    radius = points.norm(dim=1)
    # The visual hull of a sphere seen from a ring hugs it: first hits are on or just outside it,
    # give or take the masks' pixel footprint at the sphere (~0.07).
    pixel = 4.0 / float(frames.cameras.intrinsics[0, 0, 0])
    assert radius.quantile(0.05) > RADIUS - 0.6 * pixel and radius.min() > RADIUS - pixel
    assert radius.median() < RADIUS * 1.08
    # Each point carries the colour of the pixel its ray came through: the sphere's colour there
    # (up to where the hull leaves the sphere, at grazing rays).
    error = (colors - sphere_colour(points)).abs().max(1).values
    assert error.median() < 0.02 and error.quantile(0.9) < 0.1


def test_hull_points_without_alpha_fill_the_visible_ball():
    frames = sphere_frames()
    opaque = Frames(frames.cameras, frames.rgb8, None, frames.relpaths)
    points, _ = hull_points(opaque, 500, seed=0)
    distance = 4.0 * math.sqrt(1 + 0.5**2 / 16)
    assert points.norm(dim=1).max() <= distance * math.sin(0.4) + 1e-4


def test_sparse_points_inside_the_hull_start_the_cloud_and_the_hull_fills_it_up(tmp_path):
    """A COLMAP scene's points (data=colmap, data=capture): those on the sphere are kept with their
    colours, the room's (outside the masks) are not, and hull points make up the number asked for."""
    frames = sphere_frames()
    rng = np.random.default_rng(0)
    on_sphere = rng.normal(size=(300, 3))
    on_sphere = RADIUS * on_sphere / np.linalg.norm(on_sphere, axis=1, keepdims=True)
    room = rng.uniform(-1, 1, (200, 3)) * 0.3 + np.array([1.6, 0.0, 0.0])  # beside the sphere, in no mask
    colors = rng.integers(0, 256, (500, 3), dtype=np.uint8)
    write_points_ply(tmp_path / SPARSE_POINTS, np.concatenate([on_sphere, room]).astype(np.float32), colors)
    sparse = sparse_points(tmp_path)
    assert sparse is not None and np.allclose(sparse[0][:300], on_sphere, atol=1e-6)
    assert sparse_points(tmp_path / "elsewhere") is None

    points, start_colors = initial_points(frames, 1000, seed=0, sparse=sparse)
    assert points.shape == (1000, 3) and start_colors.shape == (1000, 3)
    torch.testing.assert_close(points[:300], torch.from_numpy(on_sphere).float())
    torch.testing.assert_close(start_colors[:300], torch.from_numpy(colors[:300]).float() / 255.0)
    assert points[:, 0].max() < 1.3 <= float(room[:, 0].min())  # the rest from the hull, none from the room
    fewer, _ = initial_points(frames, 100, seed=0, sparse=sparse)  # more sparse points than asked: a sample
    assert len(fewer) == 100 and (fewer.norm(dim=1) - RADIUS).abs().max() < 1e-5


def test_a_sparse_point_file_that_is_not_ours_is_refused_with_what_to_do(tmp_path):
    (tmp_path / SPARSE_POINTS).write_bytes(b"ply\nformat ascii 1.0\nelement vertex 1\nend_header\n0 0 0\n")
    with pytest.raises(DeepfakeError, match=r"points3D.ply: not a sparse-point .ply.*delete it"):
        sparse_points(tmp_path)


def test_neighbour_scales_of_a_grid():
    grid = torch.stack(torch.meshgrid(*[torch.arange(5.0)] * 3, indexing="ij"), -1).reshape(-1, 3) * 0.1
    assert neighbour_scales(grid)[62].item() == pytest.approx(0.1)  # an interior point: 3 neighbours at 0.1


def random_cloud(n: int = 50, sh_degree: int = 3) -> GaussianCloud:
    torch.manual_seed(0)
    cloud = GaussianCloud(sh_degree, n)
    for p in cloud.params.values():
        p.data.normal_()
    return cloud


def test_ply_round_trip(tmp_path):
    cloud = random_cloud()
    cloud.save_ply(tmp_path / "scene.ply")
    header = (tmp_path / "scene.ply").read_bytes().split(b"end_header")[0].decode()
    names = [line.split()[-1] for line in header.splitlines() if line.startswith("property")]
    # The 3DGS layout the viewers expect: 62 float properties for SH degree 3.
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert "AIGenerated: true" in header
    loaded = GaussianCloud.load_ply(tmp_path / "scene.ply")
    assert loaded.sh_degree == 3 and len(loaded) == 50
    for name, p in cloud.params.items():
        assert torch.equal(loaded.params[name], p.detach()), name
    # f_rest is channel-major: f_rest_{c * 15 + k} is coefficient k of channel c.
    assert loaded.params["shN"][7, 4, 2] == cloud.params["shN"][7, 4, 2]


def test_ply_of_lower_sh_degree_and_bad_files(tmp_path):
    cloud = random_cloud(10, sh_degree=1)
    cloud.save_ply(tmp_path / "deg1.ply")
    assert GaussianCloud.load_ply(tmp_path / "deg1.ply").sh_degree == 1
    (tmp_path / "bad.ply").write_bytes(b"not a ply")
    with pytest.raises(DeepfakeError, match="bad.ply"):
        GaussianCloud.load_ply(tmp_path / "bad.ply")


def test_initialised_cloud_renders_its_colours():
    frames = sphere_frames(n=4)
    points, colors = hull_points(frames, 3000, seed=0)
    cloud = GaussianCloud(sh_degree=1)
    cloud.initialize(points, colors, neighbour_scales(points) * 2, opacity=0.9)
    rgb, alpha, _ = cloud.render(frames.cameras[[0]], 0, torch.ones(3))
    inside = frames.alpha[0, ..., 0] > 0.5
    assert alpha[0, ..., 0][inside].mean() > 0.9 and alpha[0, ..., 0][~inside].mean() < 0.2
    assert (rgb[0][inside] - frames.rgb[0][inside]).abs().mean() < 0.25


def test_densify_strategy_resets_opacities_every_reset_every_steps():
    from implicit_deepfake.models.densify import DefaultStrategy

    cloud = random_cloud(20)
    cloud.params["opacities"].data.fill_(3.0)  # sigmoid ~0.95
    optimizers = {name: torch.optim.Adam([p], lr=0.0) for name, p in cloud.params.items()}
    strategy = DefaultStrategy(refine_start_iter=1000, reset_every=3, prune_opa=0.005)
    state = strategy.initialize_state()
    meta = {"means2d": torch.zeros(1, 20, 2, requires_grad=True), "radii": torch.ones(1, 20, 2, dtype=torch.int32),
            "width": 8, "height": 8, "n_cameras": 1, "gaussian_ids": None}  # fmt: skip
    meta["means2d"].sum().backward()
    for step in (1, 2):
        strategy.step_post_backward(cloud.params, optimizers, state, step, meta)
    assert torch.sigmoid(cloud.params["opacities"]).min() > 0.9  # no reset before step 3
    strategy.step_post_backward(cloud.params, optimizers, state, 3, meta)
    assert torch.sigmoid(cloud.params["opacities"]).max().item() == pytest.approx(0.01, rel=1e-4)  # 2 x prune_opa
