"""The view a viewer opens on: from the training cameras, looking at the head from the front."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from implicit_deepfake.data.cameras import Cameras


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


def initial_view(cameras: Cameras) -> InitialView:
    """The training camera nearest the views' mean direction from the point they look at (the front of
    a head seen over +-70 degrees), with the cameras' mean up."""
    target = cameras.look_at_point()
    c2w = cameras.camera_to_world  # OpenCV axes: y down
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
