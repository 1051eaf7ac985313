"""Rays through the pixels of `Cameras`, and where along them a NeRF samples.

Rays follow `Cameras.project`'s convention (OpenCV axes, pixel (x, y) centred at (x + 0.5, y + 0.5)),
so a point `origin + t * direction` projects back onto the pixel's centre. Directions are unit
vectors: `t` is the distance from the camera centre. Sampling follows nerf-pytorch (`render_rays`,
`sample_pdf`): stratified samples between near and far, then inverse-CDF (importance) samples
where a coarse pass put its weights; grid models march in even steps instead.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from implicit_deepfake.render.cameras import Cameras


def pixel_coordinates(flat: Tensor, width: int) -> Tensor:
    """Row-major pixel indices (R,) of a `width`-wide image -> integer (x, y) pairs (R, 2)."""
    return torch.stack([flat % width, torch.div(flat, width, rounding_mode="floor")], dim=1)


def pixel_rays(cameras: Cameras, view: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Rays through pixel centres: camera index view (R,), integer (x, y) pixels (R, 2) ->
    origins (R, 3) and unit directions (R, 3) in world coordinates."""
    k = cameras.intrinsics[view]
    xy = pixels.to(k.dtype) + 0.5
    camera_dirs = torch.stack(
        [(xy[:, 0] - k[:, 0, 2]) / k[:, 0, 0], (xy[:, 1] - k[:, 1, 2]) / k[:, 1, 1], torch.ones_like(xy[:, 0])], dim=1
    )
    c2w = cameras.camera_to_world[view]
    directions = torch.nn.functional.normalize((c2w[:, :3, :3] @ camera_dirs[:, :, None])[..., 0], dim=1)
    return c2w[:, :3, 3].contiguous(), directions


def ray_box(origins: Tensor, directions: Tensor, low: float = -1.0, high: float = 1.0) -> tuple[Tensor, Tensor]:
    """Where rays (R, 3) enter and leave the box [low, high]^3 -> near, far (R,), near >= 0.

    Rays that miss the box get near == far (no length to sample)."""
    inverse = 1.0 / torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t_low, t_high = (low - origins) * inverse, (high - origins) * inverse
    near = torch.minimum(t_low, t_high).amax(dim=1).clamp_min(0.0)
    far = torch.maximum(t_low, t_high).amin(dim=1)
    return near, torch.maximum(far, near)


def stratified_samples(
    near: Tensor, far: Tensor, n: int, perturb: bool, generator: torch.Generator | None = None
) -> Tensor:
    """n depths per ray (R, n), sorted: evenly spaced in [near, far] (R,), or with perturb one
    uniform draw inside each of the n bins between the even samples' midpoints (nerf-pytorch)."""
    steps = torch.linspace(0.0, 1.0, n, device=near.device)
    t = near[:, None] * (1.0 - steps) + far[:, None] * steps
    if not perturb:
        return t
    mids = 0.5 * (t[:, 1:] + t[:, :-1])
    upper, lower = torch.cat([mids, t[:, -1:]], dim=1), torch.cat([t[:, :1], mids], dim=1)
    return lower + (upper - lower) * torch.rand(t.shape, generator=generator, device=t.device)


def sample_pdf(
    bins: Tensor, weights: Tensor, n: int, perturb: bool, generator: torch.Generator | None = None
) -> Tensor:
    """n depths per ray (R, n) drawn from the piecewise-constant density with `weights` (R, B) on
    the intervals between `bins` (R, B + 1): inverse transform sampling, as nerf-pytorch's sample_pdf
    (evenly spaced quantiles without perturb). No gradient flows to bins or weights."""
    weights = weights.detach() + 1e-5  # keeps the CDF strictly increasing where weights are 0
    cdf = torch.cumsum(weights / weights.sum(dim=1, keepdim=True), dim=1)
    cdf = torch.cat([torch.zeros_like(cdf[:, :1]), cdf], dim=1)  # (R, B + 1)
    if perturb:
        u = torch.rand((len(cdf), n), generator=generator, device=cdf.device)
    else:
        u = torch.linspace(0.0, 1.0, n, device=cdf.device).expand(len(cdf), n)
    u = u.contiguous()
    above = torch.searchsorted(cdf, u, right=True).clamp(max=cdf.shape[1] - 1)
    below = (above - 1).clamp_min(0)
    cdf_below, cdf_above = cdf.gather(1, below), cdf.gather(1, above)
    bins = bins.detach()
    bin_below, bin_above = bins.gather(1, below), bins.gather(1, above)
    span = cdf_above - cdf_below
    fraction = (u - cdf_below) / torch.where(span < 1e-5, torch.ones_like(span), span)
    return bin_below + fraction * (bin_above - bin_below)


def marching_samples(
    near: Tensor, far: Tensor, step: float, perturb: bool, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Depths every `step` from near (R,) to far (R,) (instant-NGP's ray marching) -> t (R, S) and
    valid (R, S), S fitting the longest ray. Each sample stands for an interval of length `step`;
    perturb shifts every ray's samples by one uniform draw in [0, step), else they sit at mid-steps."""
    longest = float((far - near).detach().max()) if len(near) else 0.0
    count = max(math.ceil(longest / step), 1)
    if perturb:
        offset = torch.rand((len(near), 1), generator=generator, device=near.device)
    else:
        offset = torch.full((len(near), 1), 0.5, device=near.device)
    t = near[:, None] + (torch.arange(count, device=near.device) + offset) * step
    return t, t < far[:, None]
