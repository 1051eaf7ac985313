"""`model=nerf_fast`: a voxel-grid radiance field with a small MLP, marched with empty-space
skipping by an occupancy grid (instant-NGP, Müller et al. 2022; nerfacc's OccGridEstimator).

The field is DVGO's (Sun et al. 2022): density trilinearly interpolated from a dense grid and
activated afterwards (sharp surfaces inside a voxel), colour from an interpolated feature grid and
the view direction through a small MLP. On a CPU a dense grid is the cheapest encoding there is:
8 table rows per sample, where a 16-level hash grid reads 128 and the row reads, not the
arithmetic, are what costs (measured: bench/nerf.py's docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

from implicit_deepfake.models.nerf import RayModel, RayOutputs, encoded_size, positional_encoding
from implicit_deepfake.render.rays import marching_samples
from implicit_deepfake.render.volume import composite, render_weights

_UPDATE_CHUNK = 1 << 16
# The 8 corners of a voxel as (dx, dy, dz) offsets.
_CORNERS = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)])


class _Trilinear(torch.autograd.Function):
    """Weighted sums of 8 rows of a table each: embedding_bag forward; the backward index_adds into
    the table's gradient (embedding_bag's own backward sorts the indices: ~3x slower on the CPU), and
    gives the weights theirs only when asked (the points' positions learn: a 4D model's pose correction)."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor, weight: Tensor) -> Tensor:
        ctx.save_for_backward(table if ctx.needs_input_grad[2] else None, index, weight)
        ctx.rows = table.shape[0]
        return nn.functional.embedding_bag(index, table, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, Tensor | None]:
        table, index, weight = ctx.saved_tensors
        table_grad = grad.new_zeros(ctx.rows, grad.shape[1])
        table_grad.index_add_(0, index.flatten(), (weight[..., None] * grad[:, None]).flatten(0, 1))
        weight_grad = None if table is None else (table[index] * grad[:, None]).sum(2)
        return table_grad, None, weight_grad


class VoxelGrid(nn.Module):
    """`channels` values on the resolution^3 vertices of a grid spanning [-1, 1]^3, trilinearly interpolated."""

    strides: Tensor
    corners: Tensor

    def __init__(self, resolution: int, channels: int, init_std: float = 0.0) -> None:
        super().__init__()
        self.resolution = resolution
        self.table = nn.Parameter(torch.randn(resolution**3, channels) * init_std)
        self.register_buffer("strides", torch.tensor([resolution * resolution, resolution, 1]), persistent=False)
        self.register_buffer("corners", _CORNERS, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Points (M, 3) in the box -> (M, channels); points outside take the nearest face's values."""
        position = ((x + 1.0) * (0.5 * (self.resolution - 1))).clamp(0.0, self.resolution - 1.001)
        base = position.floor()
        fraction = (position - base)[:, None]  # (M, 1, 3)
        index = (base.long() * self.strides).sum(1, keepdim=True) + (self.corners * self.strides).sum(1)  # (M, 8)
        weight = torch.where(self.corners.bool(), fraction, 1.0 - fraction).prod(2)
        return _Trilinear.apply(self.table, index, weight)


class GridField(nn.Module):
    """Density: softplus of the interpolated density grid (plus a shift that makes every point start
    at `initial_density`, in inverse box units); colour: an MLP with `layers` hidden ReLU layers of
    `hidden` on the interpolated features and the encoded view direction (`dir_freqs` frequencies)."""

    def __init__(
        self,
        density_resolution: int = 128,
        feature_resolution: int = 96,
        features: int = 12,
        hidden: int = 64,
        layers: int = 1,
        dir_freqs: int = 2,
        initial_density: float = 0.1,
    ) -> None:
        super().__init__()
        self.density_grid = VoxelGrid(density_resolution, 1)
        self.feature_grid = VoxelGrid(feature_resolution, features, init_std=0.1)
        self.dir_freqs = dir_freqs
        widths = [features + encoded_size(3, dir_freqs)] + [hidden] * layers
        blocks = [m for i, o in pairwise(widths) for m in (nn.Linear(i, o), nn.ReLU())]
        self.color = nn.Sequential(*blocks, nn.Linear(widths[-1], 3))
        self.shift = math.log(math.expm1(initial_density))  # softplus(shift) = initial_density

    def density(self, x: Tensor) -> Tensor:
        """Points (M, 3) in the box -> density (M,) >= 0."""
        return nn.functional.softplus(self.density_grid(x)[:, 0] + self.shift)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """Points (M, 3), unit view directions (M, 3) -> density (M,), rgb (M, 3) in (0, 1)."""
        inputs = torch.cat([self.feature_grid(x), positional_encoding(d, self.dir_freqs)], dim=1)
        return self.density(x), torch.sigmoid(self.color(inputs))


class ConditionedGridField(nn.Module):
    """NeRFace's conditioning on a grid field, with the head's features in head coordinates. The
    condition (expression and latent code) acts twice: as blend weights of `blendshapes` grids of
    `blendshape_features` channels (at a coarser `blendshape_resolution`), whose blend joins the
    head's features, so an expression changes the features where it moves the face (a mouth
    opens), like a linear blendshape rig; and as a term of the first layer of the small MLP that
    reads the features. Both come from one linear
    `embed` of the condition, computed once per ray instead of per sample.
    Density: softplus of the MLP's first output (shifted to start at `initial_density`); colour: a
    `hidden // 2` layer on the trunk and the encoded view direction."""

    def __init__(
        self,
        condition_dims: int,
        resolution: int = 96,
        features: int = 16,
        blendshapes: int = 4,
        blendshape_features: int = 4,
        blendshape_resolution: int = 32,
        hidden: int = 32,
        layers: int = 2,
        dir_freqs: int = 2,
        initial_density: float = 0.1,
    ) -> None:
        super().__init__()
        self.hidden, self.blendshapes, self.blendshape_features = hidden, blendshapes, blendshape_features
        self.feature_grid = VoxelGrid(resolution, features, init_std=0.1)
        self.blendshape_grid = VoxelGrid(blendshape_resolution, blendshapes * blendshape_features)  # zero at first
        self.embed = nn.Linear(condition_dims, hidden + blendshapes)  # condition (R, C) -> (R, hidden + blendshapes)
        self.feature_in = nn.Linear(features + blendshape_features, hidden, bias=False)
        self.trunk = nn.Sequential(*[m for _ in range(layers - 1) for m in (nn.Linear(hidden, hidden), nn.ReLU())])
        self.density_out = nn.Linear(hidden, 1)
        self.dir_freqs = dir_freqs
        self.color = nn.Sequential(
            nn.Linear(hidden + encoded_size(3, dir_freqs), hidden // 2), nn.ReLU(), nn.Linear(hidden // 2, 3)
        )
        self.shift = math.log(math.expm1(initial_density))

    def _trunk(self, x: Tensor, code: Tensor) -> tuple[Tensor, Tensor]:
        first_layer, weights = code[:, : self.hidden], code[:, self.hidden :]
        shapes = self.blendshape_grid(x).view(-1, self.blendshapes, self.blendshape_features)
        features = torch.cat([self.feature_grid(x), torch.bmm(weights[:, None], shapes)[:, 0]], dim=1)
        h = self.trunk(torch.relu(self.feature_in(features) + first_layer))
        return nn.functional.softplus(self.density_out(h)[:, 0] + self.shift), h

    def density(self, x: Tensor, code: Tensor) -> Tensor:
        """Points (M, 3) in the box, their rays' `embed`ded conditions (M, hidden + blendshapes)
        -> density (M,) >= 0."""
        return self._trunk(x, code)[0]

    def forward(self, x: Tensor, d: Tensor, code: Tensor) -> tuple[Tensor, Tensor]:
        """Points (M, 3), unit view directions (M, 3), embedded conditions (M, hidden + blendshapes)
        -> density (M,), rgb (M, 3)."""
        sigma, h = self._trunk(x, code)
        return sigma, torch.sigmoid(self.color(torch.cat([h, positional_encoding(d, self.dir_freqs)], dim=1)))


class OccupancyGrid(nn.Module):
    """Which cells of the box [-1, 1]^3 (resolution^3 of them) may hold matter.

    Cells outside the visual hull of the training masks (`carve`, dilated by a cell) never do.
    Every update takes one random point per cell and keeps per cell the maximum of its density
    and the old value times `decay`; with `learned`, cells are occupied only where that density
    over one marching step, sigma * step, is above min(threshold, its mean) (nerfacc's rule).
    """

    density: Tensor
    hull: Tensor
    occupied: Tensor

    def __init__(self, resolution: int = 64, threshold: float = 0.01, decay: float = 0.95) -> None:
        super().__init__()
        self.resolution, self.threshold, self.decay = resolution, threshold, decay
        self.register_buffer("density", torch.zeros(resolution**3))
        self.register_buffer("hull", torch.ones(resolution**3, dtype=torch.bool))
        self.register_buffer("occupied", torch.ones(resolution**3, dtype=torch.bool))

    def cells(self, points: Tensor) -> Tensor:
        """Flat cell index (M,) of points (M, 3) in the box."""
        ijk = ((points + 1.0) * (0.5 * self.resolution)).long().clamp(0, self.resolution - 1)
        return (ijk[:, 0] * self.resolution + ijk[:, 1]) * self.resolution + ijk[:, 2]

    def __call__(self, points: Tensor) -> Tensor:
        """(M,) True where points (M, 3) lie in occupied cells."""
        return self.occupied[self.cells(points)]

    def _points(self, jitter: bool) -> Tensor:
        """One point per cell (resolution^3, 3), in cells() order: the centre, or uniform in the cell."""
        r = self.resolution
        index = torch.arange(r**3, device=self.density.device)
        ijk = torch.stack([index // (r * r), (index // r) % r, index % r], dim=1).float()
        offset = torch.rand(ijk.shape, device=ijk.device) if jitter else torch.full_like(ijk, 0.5)
        return (ijk + offset) * (2.0 / r) - 1.0

    @torch.no_grad()
    def carve(self, inside: Callable[[Tensor], Tensor]) -> None:
        """Restrict to cells whose centre or a neighbour's is inside: (M, 3) -> (M,) bool."""
        r = self.resolution
        hull = torch.cat([inside(chunk) for chunk in self._points(jitter=False).split(_UPDATE_CHUNK)])
        grown = nn.functional.max_pool3d(hull.float().view(1, 1, r, r, r), 3, stride=1, padding=1)
        self.hull.copy_(grown.flatten() > 0)
        self.occupied &= self.hull

    @torch.no_grad()
    def update(self, density: Callable[[Tensor], Tensor], step: float, learned: bool) -> None:
        """Refresh from `density` (positions (M, 3) -> (M,)); `step`: the marching step length."""
        fresh = torch.cat([density(chunk) for chunk in self._points(jitter=True).split(_UPDATE_CHUNK)])
        self.density.copy_(torch.maximum(self.density * self.decay, fresh))
        occupied = self.hull.clone()
        if learned:
            opacity = self.density * step
            occupied &= opacity > opacity.mean().clamp(max=self.threshold)
        self.occupied.copy_(occupied)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, threshold={self.threshold}, decay={self.decay}"


class MarchedField(RayModel):
    """A field with `density(x)` and `forward(x, d) -> (density, rgb)` (a conditioned one: `embed(condition)`
    and both taking the embedded condition as a last argument), rendered by marching
    `march_steps` even steps along the box's diagonal, skipping unoccupied cells and, as nerfacc,
    every sample behind which the transmittance has dropped under `early_stop` (found by a pass of
    `density` without gradients, so the pass with gradients sees only the samples that count).
    The occupancy grid is refreshed every `update_every` training steps; for the first
    `warmup_steps` it skips only what lies outside the visual hull, the field's density still
    taking shape."""

    # GridField or ConditionedGridField: their density() and forward() take different arguments.
    field: Any

    def __init__(
        self,
        field: nn.Module,
        occupancy: OccupancyGrid,
        march_steps: int = 512,
        update_every: int = 16,
        warmup_steps: int = 256,
        early_stop: float = 1e-4,
    ) -> None:
        super().__init__()
        self.field, self.occupancy = field, occupancy
        self.step = 2.0 * math.sqrt(3.0) / march_steps
        self.update_every, self.warmup_steps, self.early_stop = update_every, warmup_steps, early_stop

    def before_step(self, step: int, conditions: Tensor | None = None) -> None:
        if step % self.update_every:
            return
        density: Callable[[Tensor], Tensor] = self.field.density
        if conditions is not None:  # each cell sees the field under a random training frame's condition

            def density(x: Tensor) -> Tensor:
                picked = conditions[torch.randint(len(conditions), (len(x),), device=x.device)]
                return self.field.density(x, self.field.embed(picked))

        self.occupancy.update(density, self.step, learned=step >= self.warmup_steps)

    def carve(self, inside: Callable[[Tensor], Tensor]) -> None:
        self.occupancy.carve(inside)

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
        code = None if condition is None else self.field.embed(condition)  # (R, ...) once per ray

        def per_sample(valid: Tensor) -> tuple[Tensor, ...]:
            return () if code is None else (code[valid.nonzero()[:, 0]],)

        t, valid = marching_samples(near, far, self.step, perturb)
        points = origins[:, None] + t[..., None] * directions[:, None]  # (R, S, 3)
        valid[valid.clone()] = self.occupancy(points[valid])
        with torch.no_grad():  # which samples the rays still see
            sigma = torch.zeros_like(t)
            sigma[valid] = self.field.density(points[valid], *per_sample(valid))
            _, transmittance = render_weights(sigma, valid * self.step)
            valid &= transmittance > self.early_stop
        ray = valid.nonzero()[:, 0]
        density, rgb = self.field(points[valid], directions[ray], *per_sample(valid))
        sigma = torch.zeros_like(t).masked_scatter(valid, density)
        colors = torch.zeros_like(points).masked_scatter(valid[..., None].expand_as(points), rgb)
        weights, _ = render_weights(sigma, valid * self.step)
        color, acc, depth = composite(weights, colors, t, background)
        return RayOutputs(color, acc, depth, samples=len(ray))

    def stats(self) -> dict[str, float]:
        return {**super().stats(), "occupied_fraction": float(self.occupancy.occupied.float().mean())}
