"""Learned per-frame pose corrections of a 4D model's cameras, as nerfstudio's CameraOptimizer
(SO3xR3 mode) and BARF / NeRF-- refine theirs.

A tracked clip's head poses are off by a few degrees. Each frame gets a 6-d correction (an
axis-angle rotation and a translation, zero at the start) applied to its camera-to-head transform
before its rays are made. Unlike nerfstudio's (a motion of the camera about its own centre), it is
a rigid motion of the head coordinates about the scene box centre, the head: a head-pose error is
then one small rotation, not a rotation plus the long translation that would undo it at the head.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from implicit_deepfake.render.cameras import Cameras


def _skew(w: Tensor) -> Tensor:
    """(N, 3) -> (N, 3, 3) cross-product matrices."""
    zero = torch.zeros_like(w[:, 0])
    x, y, z = w.unbind(1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=1).view(-1, 3, 3)


def axis_angle_matrices(w: Tensor) -> Tensor:
    """Rodrigues' formula, (N, 3) axis-angle vectors -> (N, 3, 3) rotations; smooth through 0 (a
    Taylor series below 1e-3 rad), so a zero correction still has gradients."""
    theta2 = (w * w).sum(1)[:, None, None]
    small = theta2 < 1e-6
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / theta**2)
    k = _skew(w)
    return torch.eye(3, dtype=w.dtype, device=w.device) + a * k + b * (k @ k)


class PoseCorrection(nn.Module):
    """`frames` zero-initialised 6-d corrections (axis-angle, translation in world units) of
    head-coordinate motions about `center` (3,)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.params = nn.Parameter(torch.zeros(frames, 6))

    def __len__(self) -> int:
        return len(self.params)

    def motions(self, frames: Tensor, center: Tensor) -> tuple[Tensor, Tensor]:
        """Frames (B,) -> rotations (B, 3, 3) and shifts (B, 3) of x -> R x + shift = R (x - c) + c + t."""
        rotation = axis_angle_matrices(self.params[frames, :3])
        shift = center + self.params[frames, 3:] - (rotation @ center)
        return rotation, shift

    def rays(self, origins: Tensor, directions: Tensor, frames: Tensor, center: Tensor) -> tuple[Tensor, Tensor]:
        """World rays (B, 3) of frames (B,) -> the corrected frames' rays."""
        rotation, shift = self.motions(frames, center)
        return (rotation @ origins[..., None])[..., 0] + shift, (rotation @ directions[..., None])[..., 0]

    def cameras(self, cameras: Cameras, center: Tensor) -> Cameras:
        """`cameras` (one per correction) with the corrections folded into their poses."""
        rotation, shift = self.motions(torch.arange(len(cameras), device=self.params.device), center)
        inverse = torch.eye(4, device=rotation.device).repeat(len(cameras), 1, 1)
        inverse[:, :3, :3] = rotation.transpose(1, 2)
        inverse[:, :3, 3] = -(rotation.transpose(1, 2) @ shift[..., None])[..., 0]
        world_to_camera = cameras.world_to_camera @ inverse.to(cameras.world_to_camera)
        return Cameras(world_to_camera.detach(), cameras.intrinsics, cameras.width, cameras.height)

    def penalty(self) -> Tensor:
        """The corrections' mean L2 norm (rotation in radians and translation together)."""
        return self.params.norm(dim=1).mean()
