"""`Cameras`: the one camera type of the project.

Convention (OpenCV, as gsplat): world-to-camera 4x4 with camera x right, y down, z forward;
pinhole intrinsics in pixels, pixel (i, j) covers [i, i+1) x [j, j+1) so its centre is (i+0.5, j+0.5).
Blender/NeRF files store camera-to-world in OpenGL convention (y up, looking down -z); the
conversion happens here, once, in `from_blender` / `to_blender`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError

# Flips camera y and z: OpenGL camera axes <-> OpenCV camera axes (its own inverse).
_GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


@dataclass(frozen=True)
class Cameras:
    """world_to_camera: (N, 4, 4); intrinsics: (N, 3, 3) [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]."""

    world_to_camera: Tensor
    intrinsics: Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        n = self.world_to_camera.shape[0]
        if self.world_to_camera.shape != (n, 4, 4) or self.intrinsics.shape != (n, 3, 3):
            raise ValueError(
                f"Cameras: expected (N,4,4) and (N,3,3), got {tuple(self.world_to_camera.shape)} "
                f"and {tuple(self.intrinsics.shape)}"
            )

    def __len__(self) -> int:
        return self.world_to_camera.shape[0]

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> Cameras:
        if isinstance(index, int):
            index = [index]
        return Cameras(self.world_to_camera[index], self.intrinsics[index], self.width, self.height)

    def to(self, device: torch.device | str) -> Cameras:
        return Cameras(self.world_to_camera.to(device), self.intrinsics.to(device), self.width, self.height)

    @property
    def camera_to_world(self) -> Tensor:
        """(N, 4, 4), OpenCV camera axes."""
        return torch.linalg.inv(self.world_to_camera)

    @property
    def centers(self) -> Tensor:
        """(N, 3) camera centres in world coordinates."""
        return self.camera_to_world[:, :3, 3]

    def look_at_point(self) -> Tensor:
        """(3,) the least-squares closest point to every camera's optical axis: what they look at."""
        c2w = self.camera_to_world.to(torch.float64)
        centers, forward = c2w[:, :3, 3], c2w[:, :3, 2]
        projectors = torch.eye(3, dtype=centers.dtype) - forward[:, :, None] * forward[:, None, :]
        system = projectors.mean(0)
        # Parallel axes (one camera, or all looking the same way) have no single point they meet near.
        if torch.linalg.eigvalsh(system)[0] < 1e-6:
            raise DeepfakeError(
                "the cameras all look in the same direction, so there is no point they look at "
                "(needed for the orbit video and the scene bounds); use views from several directions."
            )
        return torch.linalg.solve(system, (projectors @ centers[:, :, None]).mean(0))[:, 0].to(
            self.world_to_camera.dtype
        )

    def project(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """points (P, 3) world -> pixel coordinates (N, P, 2) and camera depth z (N, P)."""
        homogeneous = torch.cat([points, torch.ones_like(points[:, :1])], dim=1)
        cam = torch.einsum("nij,pj->npi", self.world_to_camera, homogeneous)[..., :3]
        depth = cam[..., 2]
        pix = torch.einsum("nij,npj->npi", self.intrinsics, cam / depth[..., None])[..., :2]
        return pix, depth

    def scaled(self, factor: float) -> Cameras:
        """Cameras for images resized by `factor` (0.5 = half size); the field of view is unchanged."""
        width, height = round(self.width * factor), round(self.height * factor)
        scale = torch.tensor([width / self.width, height / self.height, 1.0], dtype=self.intrinsics.dtype)
        return Cameras(self.world_to_camera, self.intrinsics * scale[:, None], width, height)

    @classmethod
    def from_blender(cls, camera_to_world_gl: Tensor, camera_angle_x: float, width: int, height: int) -> Cameras:
        """Blender/NeRF-synthetic `transform_matrix` (N, 4, 4) and `camera_angle_x` (radians)."""
        c2w = camera_to_world_gl.to(torch.float64) @ _GL_TO_CV.to(torch.float64)
        focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
        k = torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
        return cls(
            torch.linalg.inv(c2w).to(torch.float32),
            k.expand(len(c2w), 3, 3).clone(),
            width,
            height,
        )

    def to_blender(self) -> tuple[Tensor, float]:
        """Inverse of `from_blender`: (N, 4, 4) camera-to-world (OpenGL axes) and camera_angle_x."""
        c2w_gl = torch.linalg.inv(self.world_to_camera.to(torch.float64)) @ _GL_TO_CV.to(torch.float64)
        camera_angle_x = 2.0 * math.atan(0.5 * self.width / float(self.intrinsics[0, 0, 0]))
        return c2w_gl.to(torch.float32), camera_angle_x


def look_at(eye: Tensor, target: Tensor, up: Tensor) -> Tensor:
    """Camera-to-world (N, 4, 4) in Blender/OpenGL axes for cameras at `eye` (N, 3) looking at `target`."""
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.nn.functional.normalize(torch.linalg.cross(forward, up.expand_as(forward)), dim=-1)
    true_up = torch.linalg.cross(right, forward)
    c2w = torch.eye(4).repeat(len(eye), 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, true_up, -forward, eye
    return c2w
