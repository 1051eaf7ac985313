"""Volume rendering (NeRF's quadrature): densities along rays -> compositing weights -> colour over
the background, accumulated opacity and depth.

Sample i of a ray stands for the interval of length delta_i that begins at its depth t_i:
alpha_i = 1 - exp(-sigma_i delta_i), transmittance T_i = exp(-sum_{j<i} sigma_j delta_j),
weight w_i = T_i alpha_i. Samples to leave out (outside the scene, in empty space, padding) get
delta 0 and so weight 0.
"""

from __future__ import annotations

import torch
from torch import Tensor


def interval_lengths(t: Tensor, far: Tensor) -> Tensor:
    """Sorted depths t (R, S) -> each sample's interval up to the next one, the last up to far (R,)."""
    return torch.cat([t[:, 1:] - t[:, :-1], (far[:, None] - t[:, -1:]).clamp_min(0.0)], dim=1)


def render_weights(sigma: Tensor, deltas: Tensor) -> tuple[Tensor, Tensor]:
    """Densities and interval lengths (R, S) -> compositing weights (R, S) and the transmittance
    before each sample (R, S)."""
    optical = sigma * deltas
    before = torch.cumsum(optical, dim=1)
    transmittance = torch.exp(-torch.cat([torch.zeros_like(before[:, :1]), before[:, :-1]], dim=1))
    return transmittance * (1.0 - torch.exp(-optical)), transmittance


def composite(weights: Tensor, rgb: Tensor, t: Tensor, background: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """weights (R, S), sample colours (R, S, 3), depths t (R, S), background (3,) or per ray (R, 3) ->
    colour (R, 3) over the background, accumulated opacity (R,), expected depth sum_i w_i t_i (R,)
    (nerf-pytorch's depth map: it shrinks toward 0 where the ray is partly transparent)."""
    acc = weights.sum(dim=1)
    color = (weights[..., None] * rgb).sum(dim=1) + (1.0 - acc[:, None]) * background
    return color, acc, (weights * t).sum(dim=1)
