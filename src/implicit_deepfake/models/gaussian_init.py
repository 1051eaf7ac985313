"""Where the Gaussians start: the scene's scale and points on the visual hull of the training masks.

A COLMAP scene or a capture (`data=colmap`, `data=capture`) brings its structure-from-motion points,
where 3DGS starts: those inside the visual hull are kept (the room behind the person is not the
head). Other datasets come without them: instead of 3DGS's random cube (most of whose points land
in empty space and cost CPU steps to prune), rays through foreground pixels are marched until they
first enter the visual hull (inside every view's alpha mask), which puts each point on the object's
outer surface with the colour of the pixel it came from; they also fill up a sparse cloud of fewer
than the points asked for. Datasets without alpha fall back to random points in the ball every
camera sees.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from implicit_deepfake.data.datamodule import Frames
from implicit_deepfake.render.cameras import Cameras

_MASK_THRESHOLD = 0.5
_DEPTH_SAMPLES = 64
_BISECTIONS = 5
_CARVING_VIEWS = 24
_RAY_CHUNK = 1024
_SPARSE_MARGIN_PX = 2  # how far outside a mask a sparse point may project and still count as inside


def scene_scale(cameras: Cameras) -> float:
    """gsplat's scene scale: 1.1 x the largest distance of a camera centre from their mean."""
    centers = cameras.centers
    return 1.1 * float((centers - centers.mean(0)).norm(dim=1).max())


def visible_radius(cameras: Cameras, focus: Tensor) -> float:
    """Radius of the ball around `focus` that the narrowest camera field of view still holds."""
    distance = (cameras.centers - focus).norm(dim=1).mean()
    k = cameras.intrinsics[0]
    half_fov = min(math.atan(0.5 * cameras.width / k[0, 0]), math.atan(0.5 * cameras.height / k[1, 1]))
    return float(distance * math.sin(half_fov))


def seen_pixels(points: Tensor, cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """Pixel columns x, rows y and whether each view sees each point in front of it, all (M, P)."""
    pix, depth = cameras.project(points)
    x, y = pix[..., 0].floor().long(), pix[..., 1].floor().long()
    return x, y, (depth > 0) & (x >= 0) & (x < cameras.width) & (y >= 0) & (y < cameras.height)


def inside_hull(points: Tensor, cameras: Cameras, alpha: Tensor) -> Tensor:
    """(P,) True where no view that sees the point has it outside its mask; alpha (M, H, W)."""
    x, y, seen = seen_pixels(points, cameras)
    view = torch.arange(len(cameras))[:, None].expand_as(x)
    masked = alpha[view, y.clamp(0, cameras.height - 1), x.clamp(0, cameras.width - 1)] >= _MASK_THRESHOLD
    return (masked | ~seen).all(0)


def _random_ball(n: int, focus: Tensor, radius: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=1)
    r = radius * torch.rand(n, 1, generator=generator) ** (1 / 3)
    return focus + direction * r, torch.full((n, 3), 0.5)


def hull_points(frames: Frames, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """n points (n, 3) on the visual hull of the frames' alpha masks and their colours (n, 3)."""
    generator = torch.Generator().manual_seed(seed)
    cameras, alpha = frames.cameras, frames.alpha[..., 0]
    # Carving against a spread subset of views costs a fraction and loses little of the hull.
    carve = torch.linspace(0, len(cameras) - 1, min(len(cameras), _CARVING_VIEWS)).round().long()
    focus = cameras.look_at_point()
    radius = visible_radius(cameras, focus)
    foreground = torch.nonzero(alpha.flatten() >= _MASK_THRESHOLD).squeeze(1)
    if alpha.min() >= _MASK_THRESHOLD or len(foreground) == 0:
        return _random_ball(n, focus, radius, generator)

    pick = foreground[torch.randint(len(foreground), (n + n // 4,), generator=generator)]
    h, w = cameras.height, cameras.width
    view, y, x = pick // (h * w), (pick // w) % h, pick % w
    k = cameras.intrinsics[view]
    direction_cam = torch.stack(
        [(x + 0.5 - k[:, 0, 2]) / k[:, 0, 0], (y + 0.5 - k[:, 1, 2]) / k[:, 1, 1], torch.ones(len(pick))], dim=1
    )
    c2w = cameras.camera_to_world[view]
    origins, directions = c2w[:, :3, 3], (c2w[:, :3, :3] @ direction_cam[:, :, None])[..., 0]
    distance = (origins - focus).norm(dim=1, keepdim=True)
    depths = torch.linspace(0, 1, _DEPTH_SAMPLES) * 2 * radius + (distance - radius).clamp_min(1e-3)  # (R, D)
    point_chunks: list[Tensor] = []
    color_chunks: list[Tensor] = []
    for chunk in torch.arange(len(pick)).split(_RAY_CHUNK):
        samples = origins[chunk, None] + depths[chunk, :, None] * directions[chunk, None]  # (r, D, 3)
        inside = inside_hull(samples.reshape(-1, 3), cameras[carve], alpha[carve]).reshape(len(chunk), -1)
        hit = inside.any(1) & ~inside[:, 0]  # rays that start inside the hull have no surface crossing
        first = inside.float().argmax(1)[hit]
        rows = chunk[hit]
        outside, inside_depth = depths[rows, first - 1], depths[rows, first]
        for _ in range(_BISECTIONS):  # the crossing lies between the last outside and first inside sample
            middle = 0.5 * (outside + inside_depth)
            is_inside = inside_hull(origins[rows] + middle[:, None] * directions[rows], cameras[carve], alpha[carve])
            inside_depth, outside = (
                torch.where(is_inside, middle, inside_depth),
                torch.where(is_inside, outside, middle),
            )
        point_chunks.append(origins[rows] + inside_depth[:, None] * directions[rows])
        color_chunks.append(frames.colors(view[rows], y[rows], x[rows]))
    points, colors = torch.cat(point_chunks)[:n], torch.cat(color_chunks)[:n]
    if len(points) < n:  # masks that no view agrees on: fill up at random
        extra_points, extra_colors = _random_ball(n - len(points), focus, radius, generator)
        points, colors = torch.cat([points, extra_points]), torch.cat([colors, extra_colors])
    return points, colors


def initial_points(
    frames: Frames, n: int, seed: int = 0, sparse: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[Tensor, Tensor]:
    """The first Gaussians' centres (M, 3) and colours (M, 3): the sparse points (P, 3) and uint8
    colours inside the visual hull, at most n of them, filled up to n from the hull (`hull_points`)."""
    if sparse is None:
        return hull_points(frames, n, seed)
    points, colors = torch.from_numpy(sparse[0]).float(), torch.from_numpy(sparse[1]).float() / 255.0
    if frames.alpha8 is not None:
        carve = torch.linspace(0, len(frames) - 1, min(len(frames), _CARVING_VIEWS)).round().long()
        cameras, margin = frames.cameras[carve], _SPARSE_MARGIN_PX
        # Masks grown by a few pixels: a point on the surface projects onto the silhouette's edge in
        # the views that see it side-on, where a mask's pixel may just miss it.
        alpha = frames.alpha8[carve, ..., 0].float()[:, None] / 255.0
        grown = torch.nn.functional.max_pool2d(alpha, 2 * margin + 1, stride=1, padding=margin)[:, 0]
        seen = seen_pixels(points, cameras)[2].any(0)  # a point no view sees is not known to be inside
        inside = inside_hull(points, cameras, grown) & seen
        points, colors = points[inside], colors[inside]
    if len(points) > n:
        keep = torch.randperm(len(points), generator=torch.Generator().manual_seed(seed))[:n]
        points, colors = points[keep], colors[keep]
    if len(points) < n:
        extra_points, extra_colors = hull_points(frames, n - len(points), seed)
        points, colors = torch.cat([points, extra_points]), torch.cat([colors, extra_colors])
    return points, colors


def neighbour_scales(points: Tensor, k: int = 3) -> Tensor:
    """(N,) mean distance of each point to its k nearest neighbours (3DGS's initial Gaussian size)."""
    distances, _ = cKDTree(points.numpy()).query(points.numpy(), k=k + 1)
    return torch.from_numpy(distances[:, 1:].mean(1)).float().clamp_min(1e-7)
