"""Learned pose corrections of the 4D model (lit/pose_correction.py): the rotation against SciPy's,
a zero correction is the identity, corrected rays are those of the corrected cameras, training rays
take their frame's correction and the loss's gradient reaches it (through the voxel grid), a frozen
model's photometric fit recovers most of a known pose error, data=video turns it on, and
checkpoints from before pose refinement still load."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation
from torch import Tensor

from implicit_deepfake.data.datamodule import Frames
from implicit_deepfake.lit.nerf import LitNeRF
from implicit_deepfake.lit.nerface import LitNeRFace
from implicit_deepfake.lit.pose_correction import PoseCorrection, axis_angle_matrices
from implicit_deepfake.models.grid_field import VoxelGrid
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.rays import pixel_rays

SIZE = 40


def _cameras(rotations: np.ndarray, size: int = SIZE) -> Cameras:
    """Cameras 3 units from the origin, looking at it, turned by `rotations` (N, 3, 3) world -> camera."""
    w2c = torch.eye(4).repeat(len(rotations), 1, 1)
    w2c[:, :3, :3] = torch.from_numpy(rotations).float()
    w2c[:, 2, 3] = 3.0
    k = torch.tensor([[1.4 * size, 0.0, size / 2], [0.0, 1.4 * size, size / 2], [0.0, 0.0, 1.0]])
    return Cameras(w2c, k.repeat(len(rotations), 1, 1), size, size)


def _views(n: int) -> np.ndarray:
    return Rotation.from_euler("yx", np.c_[np.linspace(-25, 25, n), np.linspace(-10, 10, n)], degrees=True).as_matrix()


def test_axis_angle_matches_scipy_and_is_smooth_at_zero():
    w = torch.from_numpy(np.r_[np.random.default_rng(0).normal(0, 0.5, (6, 3)), [[1e-5, 0, 0], [0, 0, 0]]])
    expected = Rotation.from_rotvec(w.numpy()).as_matrix()
    np.testing.assert_allclose(axis_angle_matrices(w).numpy(), expected, atol=1e-12)
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    jacobian = torch.autograd.functional.jacobian(lambda v: axis_angle_matrices(v)[0], zero)[:, :, 0]
    for axis in range(3):  # d R / d w_axis at 0: the cross-product matrix of the axis (rows e_i x axis)
        unit = torch.zeros(3, dtype=torch.float64)
        unit[axis] = 1.0
        np.testing.assert_allclose(jacobian[..., axis].numpy(), np.cross(np.eye(3), unit.numpy()), atol=1e-12)


def test_zero_correction_is_the_identity_and_rays_follow_the_corrected_cameras():
    cameras, center = _cameras(_views(3)), torch.tensor([0.1, -0.2, 0.05])
    view, pixels = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([[3, 4], [20, 21], [39, 0], [5, 30], [12, 12]])
    origins, directions = pixel_rays(cameras, view, pixels)
    correction = PoseCorrection(3)
    same = correction.rays(origins, directions, view, center)
    assert torch.equal(same[0], origins) and torch.equal(same[1], directions)
    assert torch.equal(correction.cameras(cameras, center).world_to_camera, cameras.world_to_camera)
    with torch.no_grad():
        step = torch.tensor([0.05, -0.02, 0.03, 0.01, 0.0, -0.02])
        correction.params.copy_(step * torch.arange(1.0, 4.0)[:, None])
    moved = correction.rays(origins, directions, view, center)
    expected = pixel_rays(correction.cameras(cameras, center), view, pixels)  # the dense reference
    torch.testing.assert_close(moved[0], expected[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(moved[1], expected[1], atol=1e-6, rtol=0)
    # The head's centre moves only by the translation: the rotation is about it.
    rotation, shift = correction.motions(view, center)
    torch.testing.assert_close(rotation @ center + shift, center + correction.params[view, 3:], atol=1e-6, rtol=0)


def test_voxel_grid_gives_points_their_gradient():
    torch.manual_seed(0)
    grid = VoxelGrid(5, 3, init_std=1.0).double()
    points = (torch.rand(7, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(grid, (points,))
    # The table's gradient is unchanged: against PyTorch's own trilinear interpolation.
    table = grid.table.detach().view(5, 5, 5, 3).permute(3, 0, 1, 2)[None]  # (1, C, x, y, z)
    reference = torch.nn.functional.grid_sample(table, points.flip(-1)[None, None, None], align_corners=True)
    torch.testing.assert_close(grid(points), reference[0, :, 0, 0].T)


def _scene(size: int = SIZE) -> LitNeRFace:
    """A frozen random 4D 'model': a textured cloud filling the box, no training needed."""
    torch.manual_seed(0)
    field = {
        "_target_": "implicit_deepfake.models.grid_field.ConditionedGridField",
        "condition_dims": 6,
        "resolution": 24,
        "features": 8,
        "hidden": 16,
        "initial_density": 0.8,
    }
    model = {
        "_target_": "implicit_deepfake.models.grid_field.MarchedField",
        "march_steps": 64,
        "field": field,
        "occupancy": {"_target_": "implicit_deepfake.models.grid_field.OccupancyGrid", "resolution": 8},
    }
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True}
    module = LitNeRFace(
        model, optimizer, {"field": 1e-3}, expression_dims=4, latent_dims=2, latent_lr=1e-3, latent_weight=5e-4,
        pose_refine=True, pose_lr=1e-3, pose_weight=1e-3, lr_decay=0.1, lr_decay_steps=1000, chunk=4096,
        box_scale=1.0, seed=0,
    )  # fmt: skip
    with torch.no_grad():
        module.model.field.feature_grid.table.normal_(0.0, 1.0)
    module.latents = torch.nn.Parameter(torch.zeros(2, 2))
    module.train_expressions = torch.zeros(2, 4)
    module.background_image = torch.full((size, size, 3), 0.5)
    module.box_radius.fill_(0.9)
    return module.eval()


def _angle_deg(a: Tensor, b: Tensor) -> np.ndarray:
    relative = a[:, :3, :3].transpose(1, 2) @ b[:, :3, :3]
    return np.degrees(Rotation.from_matrix(relative.double().numpy()).magnitude())


def test_fitting_a_frozen_model_recovers_a_known_pose_error():
    module = _scene()
    truth = _cameras(_views(4))
    expressions = torch.zeros(4, 4)
    images = module.render_views(truth, expressions)
    # The tracker's error: the head turned 3 degrees about a different axis in each frame.
    axes = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.3, 0.0, 1.0], [1, 1, 0]]))
    error = PoseCorrection(4)
    with torch.no_grad():
        error.params[:, :3] = axes * np.radians(3.0)
    tracked = error.cameras(truth, module.box_center)
    assert _angle_deg(tracked.world_to_camera, truth.world_to_camera) == pytest.approx(3.0, abs=1e-3)
    rgb8 = (images * 255).round().to(torch.uint8)
    frames = Frames(tracked, rgb8, None, [f"{i}" for i in range(4)], expressions, None, module.background_image)
    fitted, degrees = module.fit_view_poses(frames, steps=60, rays=1024, lr=5e-3)
    left = _angle_deg(fitted.world_to_camera, truth.world_to_camera)
    assert (left < 1.3).all() and np.median(left) < 1.0, left  # most of the 3 degrees recovered in every frame
    np.testing.assert_allclose(degrees.numpy(), 3.0, atol=1.0)  # the fit found a correction of the error's size
    assert all(p.requires_grad for p in module.parameters())  # the model is thawed again


@pytest.mark.parametrize(("data", "refine", "steps"), [("video", True, 100), ("synthetic4d", False, 0)])
def test_tracked_poses_are_refined_and_known_ones_are_not(compose_cfg, data: str, refine: bool, steps: int):
    cfg = compose_cfg(
        "train", [f"data={data}", "data.path=clip.mp4" if data == "video" else "swap=none", "model=nerface"]
    )
    assert cfg.model.module.pose_refine is refine and cfg.evaluate.test_pose_steps == steps


def test_training_rays_take_their_frames_corrections_which_learn(monkeypatch):
    module, cameras = _scene(), _cameras(_views(2))
    module.pose_correction = PoseCorrection(2)
    with torch.no_grad():
        module.pose_correction.params[1, :3] = torch.tensor([0.0, 0.03, 0.0])
    frames, pixels = torch.tensor([0, 1, 1]), torch.tensor([[20, 20], [10, 25], [30, 5]])
    origins, directions = pixel_rays(cameras, frames, pixels)
    batch = {"origins": origins, "directions": directions, "frame": frames, "rgb": torch.full((3, 3), 0.2)}
    batch |= {"expression": torch.zeros(3, 4), "background": torch.full((3, 3), 0.5)}
    seen = {}
    monkeypatch.setattr(LitNeRF, "training_step", lambda self, b, i: seen.update(b) or torch.tensor(0.0))
    module.training_step(batch, 0)
    expected = pixel_rays(module.pose_correction.cameras(cameras, module.box_center), frames, pixels)
    torch.testing.assert_close(seen["origins"], expected[0], atol=1e-5, rtol=0)
    assert torch.equal(seen["origins"][0], origins[0])  # frame 0's correction is still zero
    # the corrections get the loss's gradient, their own learning rate and their penalty
    _, background, condition = module.training_rays(seen)
    out = module.render_rays(seen["origins"], seen["directions"], background, False, condition)
    torch.nn.functional.mse_loss(out.rgb, seen["rgb"]).backward()
    assert module.pose_correction.params.grad[1].abs().sum() > 0
    group = module.param_groups()[-1]
    assert group["params"][0] is module.pose_correction.params and group["lr"] == module.hparams.pose_lr
    penalty = module.hparams.pose_weight * 0.03 / 2  # mean norm over the 2 frames
    latents = module.hparams.latent_weight * module.latents.norm(dim=1).mean()
    assert module.regularization().item() == pytest.approx(latents.item() + penalty)


def test_training_cameras_carry_the_learned_corrections():
    module, cameras = _scene(), _cameras(_views(2))
    assert module.training_cameras(cameras) is cameras  # nothing learned
    module.pose_correction = PoseCorrection(2)
    with torch.no_grad():
        module.pose_correction.params[1] = torch.tensor([0.0, 0.05, 0.0, 0.01, 0.0, 0.0])
    corrected = module.training_cameras(cameras).world_to_camera
    assert torch.equal(corrected[0], cameras.world_to_camera[0])
    expected = module.pose_correction.cameras(cameras, module.box_center).world_to_camera
    assert torch.equal(corrected, expected) and _angle_deg(corrected[1:], cameras.world_to_camera[1:]) > 2.8


def test_checkpoints_without_pose_corrections_still_load():
    module = _scene()
    state = {k: v for k, v in module.state_dict().items() if not k.startswith("pose_correction")}
    checkpoint = {"state_dict": state}
    fresh = _scene()
    fresh.on_load_checkpoint(checkpoint)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert len(fresh.pose_correction) == 0
