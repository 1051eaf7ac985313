"""NeRF ray models: what turns rays into colours, and the paper's coarse/fine MLP model.

A `RayModel` renders rays given in the scene box's own coordinates (the box is [-1, 1]^3; the
LightningModule maps world rays into it), so models need not know the scene's size. Rays may carry
a conditioning vector (NeRFace: the frame's expression and latent code) that every sample along the
ray sees. `CoarseFineNeRF` is nerf-pytorch's set-up: 64 stratified samples through a coarse MLP,
128 more where its weights are, and all 192 through a fine MLP; both colours are supervised.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from implicit_deepfake.render.rays import sample_pdf, stratified_samples
from implicit_deepfake.render.volume import composite, interval_lengths, render_weights


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """NeRF's encoding (..., D) -> (..., D (1 + 2 n_freqs)): x, then sin(2^k x), cos(2^k x) for k < n_freqs."""
    scaled = x[..., None, :] * (2.0 ** torch.arange(n_freqs, device=x.device, dtype=x.dtype))[:, None]
    return torch.cat([x, torch.stack([scaled.sin(), scaled.cos()], dim=-2).flatten(-3)], dim=-1)


def encoded_size(dims: int, n_freqs: int) -> int:
    return dims * (1 + 2 * n_freqs)


@dataclass
class RayOutputs:
    """rgb (R, 3) over the background, acc (R,) opacity, depth (R,) in box units; extra_rgb: colours
    of earlier passes that are supervised as well (the coarse NeRF); samples: field evaluations."""

    rgb: Tensor
    acc: Tensor
    depth: Tensor
    extra_rgb: list[Tensor] = field(default_factory=list)
    samples: int = 0


class RayModel(nn.Module):
    """Renders rays inside the box [-1, 1]^3."""

    @abstractmethod
    def forward(
        self,
        origins: Tensor,
        directions: Tensor,
        near: Tensor,
        far: Tensor,
        background: Tensor,
        perturb: bool,
        condition: Tensor | None = None,
    ) -> RayOutputs:
        """origins, unit directions (R, 3); near, far (R,) where each ray is inside the box; background
        (3,) or per ray (R, 3); perturb: random sample positions (training) instead of fixed ones
        (rendering); condition: (R, C) per ray, for fields built with condition_dims = C."""

    def before_step(self, step: int, conditions: Tensor | None = None) -> None:
        """Called before every training step (e.g. to refresh an occupancy grid); conditions (K, C):
        the training frames' conditioning vectors, for a conditioned field."""

    def carve(self, inside: Callable[[Tensor], Tensor]) -> None:
        """Told where matter may be before training: inside(points (M, 3) in the box) -> (M,) bool
        (the training masks' visual hull). Models that skip empty space use it; others ignore it."""

    def stats(self) -> dict[str, float]:
        """Figures worth logging and reporting."""
        return {"num_parameters": sum(p.numel() for p in self.parameters())}


class NeRFMLP(nn.Module):
    """nerf-pytorch's network: `depth` ReLU layers of `width` on the encoded position with the input
    concatenated again after the layers in `skips`; density from the trunk; colour from a
    `width // 2` layer on a trunk feature and the encoded view direction. With `condition_dims`, a
    per-sample vector is concatenated to the encoded position (NeRFace's expression + latent code)."""

    def __init__(
        self,
        depth: int = 8,
        width: int = 256,
        skips: tuple[int, ...] = (4,),
        pos_freqs: int = 10,
        dir_freqs: int = 4,
        condition_dims: int = 0,
    ) -> None:
        super().__init__()
        self.pos_freqs, self.dir_freqs, self.skips = pos_freqs, dir_freqs, tuple(skips)
        pos_dims, dir_dims = encoded_size(3, pos_freqs) + condition_dims, encoded_size(3, dir_freqs)
        self.trunk = nn.ModuleList(
            [nn.Linear(pos_dims, width)]
            + [nn.Linear(width + (pos_dims if i in self.skips else 0), width) for i in range(depth - 1)]
        )
        self.density_out = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.view = nn.Linear(width + dir_dims, width // 2)
        self.rgb_out = nn.Linear(width // 2, 3)

    def forward(self, x: Tensor, d: Tensor, condition: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Positions in the box (M, 3), unit view directions (M, 3), condition (M, condition_dims)
        -> density (M,) >= 0, rgb (M, 3) in (0, 1)."""
        encoded = positional_encoding(x, self.pos_freqs)
        if condition is not None:
            encoded = torch.cat([encoded, condition], dim=-1)
        h = encoded
        for i, layer in enumerate(self.trunk):
            h = torch.relu(layer(h))
            if i in self.skips:
                h = torch.cat([encoded, h], dim=-1)
        sigma = torch.relu(self.density_out(h)[..., 0])
        h = torch.relu(self.view(torch.cat([self.feature(h), positional_encoding(d, self.dir_freqs)], dim=-1)))
        return sigma, torch.sigmoid(self.rgb_out(h))


def render_samples(
    network: nn.Module,
    origins: Tensor,
    directions: Tensor,
    t: Tensor,
    far: Tensor,
    background: Tensor,
    condition: Tensor | None = None,
) -> tuple[RayOutputs, Tensor]:
    """Evaluate `network` at sorted depths t (R, S) along the rays and composite -> outputs, weights (R, S)."""
    points = origins[:, None] + t[..., None] * directions[:, None]
    per_sample = () if condition is None else (condition[:, None].expand(*t.shape, -1).reshape(t.numel(), -1),)
    sigma, rgb = network(points.reshape(-1, 3), directions[:, None].expand_as(points).reshape(-1, 3), *per_sample)
    weights, _ = render_weights(sigma.view(t.shape), interval_lengths(t, far))
    color, acc, depth = composite(weights, rgb.view(*t.shape, 3), t, background)
    return RayOutputs(color, acc, depth, samples=t.numel()), weights


class CoarseFineNeRF(RayModel):
    """Hierarchical sampling with two networks (NeRF, Mildenhall et al. 2020; nerf-pytorch defaults)."""

    def __init__(self, coarse: nn.Module, fine: nn.Module, n_coarse: int = 64, n_fine: int = 128) -> None:
        super().__init__()
        self.coarse, self.fine = coarse, fine
        self.n_coarse, self.n_fine = n_coarse, n_fine

    def forward(
        self,
        origins: Tensor,
        directions: Tensor,
        near: Tensor,
        far: Tensor,
        background: Tensor,
        perturb: bool,
        condition: Tensor | None = None,
    ) -> RayOutputs:
        t = stratified_samples(near, far, self.n_coarse, perturb)
        coarse, weights = render_samples(self.coarse, origins, directions, t, far, background, condition)
        # The importance samples come from the weights of the inner intervals between sample midpoints.
        mids = 0.5 * (t[:, 1:] + t[:, :-1])
        extra = sample_pdf(mids, weights[:, 1:-1], self.n_fine, perturb)
        t_all, _ = torch.sort(torch.cat([t, extra], dim=1), dim=1)
        fine, _ = render_samples(self.fine, origins, directions, t_all, far, background, condition)
        fine.extra_rgb, fine.samples = [coarse.rgb], coarse.samples + fine.samples
        return fine
