"""The view a viewer opens on: a training camera, the one that sees the face most frontally."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from implicit_deepfake.render.cameras import Cameras, look_at
from implicit_deepfake.swap.report import head_yaws


@dataclass(frozen=True)
class InitialView:
    """A camera in world coordinates: where it is, what it looks at, which way is up (3-tuples), its
    vertical field of view and clipping distances."""

    position: tuple[float, float, float]
    look_at: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_y_deg: float
    near: float
    far: float

    def cameras(self, width: int, height: int) -> Cameras:
        """This view as a project camera rendering width x height pixels."""
        c2w = look_at(torch.tensor([self.position]), torch.tensor([self.look_at]), torch.tensor(self.up))
        angle_x = 2.0 * math.atan(math.tan(math.radians(self.fov_y_deg) / 2) * width / height)
        return Cameras.from_blender(c2w, angle_x, width, height)


def initial_view(cameras: Cameras, yaws_deg: Sequence[float] | None = None) -> InitialView:
    """The training camera whose view of the face has the smallest yaw (`yaws_deg`, one per camera),
    or without yaws the one nearest the views' mean direction from the point they look at (the front
    of a head filmed from the front); with the cameras' mean up, looking at that point."""
    target = cameras.look_at_point()
    c2w = cameras.camera_to_world  # OpenCV axes: y down
    if yaws_deg is not None:
        front = int(torch.tensor(yaws_deg).abs().argmin())
    else:
        directions = torch.nn.functional.normalize(c2w[:, :3, 3] - target, dim=1)
        front = int((directions @ directions.mean(0)).argmax())
    up = torch.nn.functional.normalize(-c2w[:, :3, 1].mean(0), dim=0)
    distance = float((c2w[front, :3, 3] - target).norm())
    fov_y = 2.0 * math.atan(0.5 * cameras.height / float(cameras.intrinsics[front, 1, 1]))
    return InitialView(
        position=tuple(c2w[front, :3, 3].tolist()),
        look_at=tuple(target.tolist()),
        up=tuple(up.tolist()),
        fov_y_deg=math.degrees(fov_y),
        near=0.01 * distance,
        far=100.0 * distance,
    )


def front_view(cameras: Cameras, swapped_root: str | Path) -> InitialView:
    """`initial_view` of a run's training cameras, with their yaws against the face mesh the swap
    triangulated (in `swapped_root`'s manifest) where it has one: views all around a head need it."""
    return initial_view(cameras, head_yaws(Path(swapped_root), cameras))
