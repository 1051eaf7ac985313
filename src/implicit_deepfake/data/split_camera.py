"""The split-level camera fields of a `transforms_<split>.json`, in both NeRF-family formats.

Blender/NeRF-synthetic: `camera_angle_x`, the horizontal field of view in radians (square pixels,
principal point at the image centre). NeRFace (Gafni et al., CVPR 2021; its `real_to_nerf.py`
writes and `nerf/load_flame.py` reads): `intrinsics` = [fx, fy, cx, cy], and a `camera_angle_x`
derived from fx that the loader ignores when `intrinsics` is there — so do we (it is negative
when fx is).

Conventions assumed, read off NeRFace's code (`get_ray_bundle`): the ray through pixel (i, j) is
[(i - W cx) / fx, -(j - H cy) / fy, -1] in OpenGL camera axes, so fx and fy are in pixels of the
frames as stored and cx, cy are fractions of width and height; values of cx, cy above 1 are read
as pixels (converters other than theirs write those). Their Face2Face tracker gives fx < 0
(`fx = f_norm * -W`), a camera that mirrors x; such cameras are turned into proper ones by
mirroring the world's x axis instead (see `SplitCamera.cameras`), so every camera stays a
rotation and orbit cameras made with `look_at` see the scene the right way round. We also take
the principal point at cx * W in our convention (pixel centres at +0.5), as `Cameras.from_blender`
does for W / 2: NeRFace's integer pixel coordinates would put it half a pixel further.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TypeGuard

import torch
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.render.cameras import Cameras

_MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0], dtype=torch.float64))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SplitCamera:
    """The camera fields as written in the json (kept as they are, so a swap can write them back)."""

    source: Path  # the json, for error messages
    camera_angle_x: float | None
    intrinsics: tuple[float, float, float, float] | None  # NeRFace's [fx, fy, cx, cy]

    def pixel_intrinsics(self, width: int, height: int) -> tuple[float, float, float, float]:
        """fx, fy, cx, cy in pixels of a width x height frame (fx, fy keep their sign)."""
        if self.intrinsics is None:
            assert self.camera_angle_x is not None  # read_split_camera gives one of the two
            focal = 0.5 * width / math.tan(0.5 * self.camera_angle_x)
            return focal, focal, width / 2.0, height / 2.0
        fx, fy, cx, cy = self.intrinsics
        if abs(cx) <= 1.0 and abs(cy) <= 1.0:  # NeRFace's own files: fractions of the frame
            cx, cy = cx * width, cy * height
        if not (0.0 <= cx <= width and 0.0 <= cy <= height):
            raise DeepfakeError(
                f"{self.source}: field `intrinsics` puts the principal point at ({cx:g}, {cy:g}) px, outside the "
                f"{width}x{height} frames; cx, cy must be fractions of the frame (0..1) or pixels inside it."
            )
        return fx, fy, cx, cy

    def cameras(self, camera_to_world_gl: Tensor, width: int, height: int) -> Cameras:
        """Cameras for `transform_matrix` (N, 4, 4) (OpenGL axes) and frames of width x height pixels."""
        fx, fy, cx, cy = self.pixel_intrinsics(width, height)
        # A negative focal length flips that image axis: the same rays come from a camera whose
        # axis points the other way, with a positive focal length.
        flips = torch.diag(
            torch.tensor([math.copysign(1.0, fx), math.copysign(1.0, fy), 1.0, 1.0], dtype=torch.float64)
        )
        c2w = camera_to_world_gl.to(torch.float64) @ flips
        det = torch.linalg.det(c2w[:, :3, :3])
        if (det < 0).all():  # every camera mirrored: mirror the world instead, keeping them rotations
            c2w = _MIRROR_X @ c2w
        elif (det < 0).any():
            raise DeepfakeError(
                f"{self.source}: frames {torch.nonzero(det < 0).flatten().tolist()} have a mirrored "
                "`transform_matrix` (negative determinant) and the others do not; all must agree."
            )
        # from_blender converts the axes and inverts; its square, centred intrinsics are then replaced.
        cameras = Cameras.from_blender(c2w.to(torch.float32), 2.0 * math.atan(0.5 * width / abs(fx)), width, height)
        k = torch.tensor([[abs(fx), 0.0, cx], [0.0, abs(fy), cy], [0.0, 0.0, 1.0]])
        return dataclasses.replace(cameras, intrinsics=k.expand(len(cameras), 3, 3).clone())


def read_split_camera(path: Path, meta: dict) -> SplitCamera:
    """Validate the camera fields of the json at `path` (its parsed object `meta`)."""
    intrinsics = meta.get("intrinsics")
    angle = meta.get("camera_angle_x")
    if intrinsics is not None:
        if not isinstance(intrinsics, list) or len(intrinsics) != 4 or not all(map(_is_number, intrinsics)):
            raise DeepfakeError(
                f"{path}: field `intrinsics` must be 4 finite numbers [fx, fy, cx, cy], got {intrinsics!r}."
            )
        if intrinsics[0] == 0 or intrinsics[1] == 0:
            raise DeepfakeError(f"{path}: field `intrinsics` has a zero focal length (fx, fy = {intrinsics[:2]}).")
        fx, fy, cx, cy = map(float, intrinsics)
        return SplitCamera(path, float(angle) if _is_number(angle) else None, (fx, fy, cx, cy))
    if not _is_number(angle) or not 0 < angle < math.pi:
        raise DeepfakeError(
            f"{path}: field `camera_angle_x` must be the horizontal field of view in radians, got {angle!r} "
            "(or give NeRFace's `intrinsics` [fx, fy, cx, cy])."
        )
    return SplitCamera(path, float(angle), None)
