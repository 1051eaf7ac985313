"""Orbit cameras around a dataset's subject, and H.264 mp4 writing marked as synthetic media."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import torch
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE, atomic_path
from implicit_deepfake.render.cameras import Cameras, look_at


def _world_up(right: Tensor, up: Tensor) -> Tensor:
    """The world's up (3,): the average camera up, tilted so every camera's right axis is level.

    The average up alone leans toward the subject when the views cover only part of a circle
    (a face seen from the front, cameras looking slightly down), which would tilt the orbit.
    Cameras without roll have right axes perpendicular to the true up: minimise sum (r_i . u)^2
    with a small pull toward the average up, which picks the right solution when that null
    space is a plane (all right axes equal) and still works with some roll.
    """
    mean_up = up.mean(0)
    pull = 1e-4
    system = right.T @ right / len(right) + pull * torch.eye(3, dtype=right.dtype)
    return torch.nn.functional.normalize(torch.linalg.solve(system, pull * mean_up), dim=0)


FULL_TURN_GAP_DEG = 90.0  # views with no azimuth gap wider than this surround the subject


@dataclass(frozen=True)
class ViewRange:
    """Where a dataset's cameras sit around the point they look at: azimuth (counter-clockwise seen
    from above, from the cameras' mean horizontal direction) and elevation ranges in degrees, and
    whether the views surround the subject (no azimuth gap wider than FULL_TURN_GAP_DEG)."""

    azimuth_deg: tuple[float, float]
    elevation_deg: tuple[float, float]
    all_around: bool


@dataclass(frozen=True)
class _Frame:
    """The orbit's coordinate frame: centre, world up, start and side directions, mean distance."""

    target: Tensor
    up: Tensor
    start: Tensor
    side: Tensor
    distance: Tensor

    def angles(self, centers: Tensor) -> tuple[Tensor, Tensor]:
        """(azimuth, elevation) in radians of camera centres (N, 3); azimuth in (-pi, pi]."""
        offsets = centers - self.target
        elevation = torch.asin((offsets @ self.up / offsets.norm(dim=1)).clamp(-1.0, 1.0))
        return torch.atan2(offsets @ self.side, offsets @ self.start), elevation


def _orbit_frame(cameras: Cameras) -> _Frame:
    c2w = cameras.camera_to_world.to(torch.float64)  # OpenCV axes: x right, y down, z forward
    centers, right, down = c2w[:, :3, 3], c2w[:, :3, 0], c2w[:, :3, 1]
    target = cameras.look_at_point().to(torch.float64)
    up = _world_up(right, -down)
    offsets = centers - target
    distance = offsets.norm(dim=1).mean()
    # Start toward the cameras' mean horizontal direction.
    start = offsets.mean(0) - (offsets.mean(0) @ up) * up
    if start.norm() < 1e-6 * distance:  # cameras evenly all around: any direction will do
        start = torch.linalg.cross(up, torch.eye(3, dtype=up.dtype)[int(up.abs().argmin())])
    start = torch.nn.functional.normalize(start, dim=0)
    return _Frame(target, up, start, torch.linalg.cross(up, start), distance)


def view_range(cameras: Cameras) -> ViewRange:
    """The azimuth and elevation ranges `cameras` cover around the point they look at (see ViewRange)."""
    frame = _orbit_frame(cameras)
    azimuth, elevation = (torch.rad2deg(a) for a in frame.angles(cameras.centers.to(torch.float64)))
    ordered = torch.sort(azimuth).values
    gaps = torch.diff(torch.cat([ordered, ordered[:1] + 360.0]))  # the last one wraps around the back
    widest = int(gaps.argmax())
    # The arc the views cover runs from just after the widest gap round to just before it.
    low = float(ordered[(widest + 1) % len(ordered)])
    high = float(ordered[widest])
    if high < low:
        high += 360.0
    return ViewRange(
        (low, high), (float(elevation.min()), float(elevation.max())), bool(gaps.max() <= FULL_TURN_GAP_DEG)
    )


def orbit_cameras(cameras: Cameras, n_frames: int, elevation_deg: float | None = None, turn: str = "auto") -> Cameras:
    """`n_frames` cameras orbiting the point `cameras` look at, as a loop that ends where it starts.

    `turn="full"`, or "auto" where the views surround the subject: a full turn counter-clockwise
    (seen from above) from the cameras' mean azimuth, at their mean elevation. "auto" with views
    from one side only (a face seen from the front): an ellipse over the azimuth and elevation
    ranges the views cover, so the video never shows what no camera saw. `elevation_deg` fixes the
    elevation. The orbit keeps the cameras' mean distance to that point, their world up, and the
    intrinsics and size of the first camera. Returns Cameras with (n_frames, 4, 4) world_to_camera.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if turn not in ("auto", "full"):
        raise DeepfakeError(f"evaluate.orbit={turn!r}: use auto (the range the cameras saw) or full (a full turn).")
    if elevation_deg is not None and not abs(elevation_deg) < 89.0:  # straight above or below, up is undefined
        raise DeepfakeError(f"orbit video: elevation_deg must be within (-89, 89), got {elevation_deg}.")
    frame = _orbit_frame(cameras)
    seen = view_range(cameras)
    phase = torch.arange(n_frames, dtype=torch.float64) * (2.0 * math.pi / n_frames)
    if turn == "full" or seen.all_around:
        azimuth = phase
        elevation = torch.full_like(phase, float(frame.angles(cameras.centers.to(torch.float64))[1].mean()))
    else:
        az_low, az_high = (math.radians(a) for a in seen.azimuth_deg)
        el_low, el_high = (math.radians(e) for e in seen.elevation_deg)
        azimuth = (az_low + az_high) / 2 + (az_high - az_low) / 2 * torch.sin(phase)
        elevation = (el_low + el_high) / 2 + (el_high - el_low) / 2 * torch.cos(phase)
    if elevation_deg is not None:
        elevation = torch.full_like(phase, math.radians(elevation_deg))

    ring = torch.cos(azimuth)[:, None] * frame.start + torch.sin(azimuth)[:, None] * frame.side
    eyes = frame.target + frame.distance * (
        torch.cos(elevation)[:, None] * ring + torch.sin(elevation)[:, None] * frame.up
    )
    c2w_gl = look_at(eyes.float(), frame.target.float().expand(n_frames, 3), frame.up.float())
    first = cameras[0]
    # from_blender owns the OpenGL -> OpenCV axis flip; its centred intrinsics give way to the first camera's.
    orbit = Cameras.from_blender(c2w_gl, first.to_blender()[1], cameras.width, cameras.height)
    intrinsics = first.intrinsics.expand(n_frames, 3, 3).clone()
    return Cameras(orbit.world_to_camera, intrinsics, cameras.width, cameras.height)


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad (edge-replicate) to even height and width: H.264 in yuv420p needs even dimensions."""
    height, width = frame.shape[:2]
    return np.pad(frame, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float = 24, quality: float = 7) -> int:
    """Write frames (each (H, W, 3) uint8, all the same size) as an H.264 mp4; returns the frame count.

    Written atomically (temp file + rename) with imageio-ffmpeg's bundled ffmpeg. The container's
    comment and description carry `io.SYNTHETIC_NOTICE`, the text PNG outputs carry.
    Odd sizes are padded by one edge-replicated row/column. `quality` is imageio-ffmpeg's 1-10
    scale (7 = x264 crf 15).
    """
    # The standard iTunes-style atoms most players and exiftool show; mp4 drops non-standard keys
    # (and `-movflags use_metadata_tags` would move even these into QuickTime `mdta` keys).
    output_params = []
    for key in ("comment", "description"):
        output_params += ["-metadata", f"{key}={SYNTHETIC_NOTICE}"]

    count, size = 0, None
    with atomic_path(path) as tmp:
        writer = None
        try:
            for frame in frames:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise ValueError(f"write_video: frame {count} is {frame.dtype} {frame.shape}, not (H, W, 3) uint8")
                if writer is None:
                    size = frame.shape
                    padded = _even(frame).shape
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp),
                        (padded[1], padded[0]),
                        fps=fps,
                        quality=quality,
                        codec="libx264",
                        macro_block_size=2,
                        output_params=output_params,
                    )
                    writer.send(None)  # start ffmpeg
                elif frame.shape != size:
                    raise ValueError(f"write_video: frame {count} is {frame.shape}, the first was {size}")
                writer.send(np.ascontiguousarray(_even(frame)))
                count += 1
            if writer is None:
                raise ValueError(f"write_video: no frames to write to {path}")
        finally:
            if writer is not None:
                writer.close()
    return count


def uint8_images(images: torch.Tensor) -> list[np.ndarray]:
    """(N, H, W, 3) floats in [0, 1] -> N uint8 images."""
    return list((images.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy())
