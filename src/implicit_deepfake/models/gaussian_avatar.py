"""Expression-driven 3D Gaussians of a talking head, without FLAME: linear blendshapes per Gaussian.

Each Gaussian holds a neutral value (a `GaussianCloud`'s parameters) and K offsets of its position,
colour (SH DC) and logit opacity. A frame's K-dim code, a learned linear map of its expression vector
(`ExpressionCode`, started at the training expressions' whitened principal components), weights the
offsets, as 3D Gaussian Blendshapes (Ma et al., SIGGRAPH 2024) weight theirs with FLAME's codes:

    means(code) = means + sum_k code_k means_offsets[:, k]      (the same for sh0 and opacities)

so a frame is one (N, K) x (K,) product and a render. Code 0 is the training frames' mean
expression, so the neutral cloud is the mean face (its .ply is an ordinary 3DGS file). The offsets
sit in the cloud's `params` beside the neutral values: gsplat's densification ops resize every
tensor of that dict with its optimizer state, so a split or pruned Gaussian keeps its offsets.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from implicit_deepfake.models.gaussians import GaussianCloud

OFFSET_NAMES = ("means_offsets", "sh0_offsets", "opacities_offsets")
_LATENT_INIT = 0.01  # the code map's columns for a per-frame latent start small and random (zero would stall)


class ExpressionCloud(GaussianCloud):
    """A GaussianCloud whose `params` also hold, per Gaussian, K = code_dims offsets: means_offsets
    (N, K, 3) world units, sh0_offsets (N, K, 3) SH DC, opacities_offsets (N, K) logits; zero at the start."""

    def __init__(self, sh_degree: int = 3, code_dims: int = 8, n: int = 0, rasterizer: str | None = None) -> None:
        super().__init__(sh_degree, n, rasterizer)
        self.code_dims = code_dims
        for name, shape in self._offset_shapes(n).items():
            self.params[name] = nn.Parameter(torch.zeros(shape))

    def _offset_shapes(self, n: int) -> dict[str, tuple[int, ...]]:
        k = self.code_dims
        return {"means_offsets": (n, k, 3), "sh0_offsets": (n, k, 3), "opacities_offsets": (n, k)}

    def load_values(self, values: dict[str, Tensor]) -> None:
        """GaussianCloud's, and the offsets (zero where `values` has none)."""
        super().load_values(values)
        device = self.params["means"].device
        for name, shape in self._offset_shapes(len(self)).items():
            value = values.get(name, torch.zeros(shape))
            self.params[name] = nn.Parameter(value.detach().to(device, torch.float32).contiguous())

    def posed(self, code: Tensor) -> dict[str, Tensor]:
        """code (K,) -> the parameters at that code, raw as `params` holds them (differentiable)."""
        p = self.params
        return {
            "means": p["means"] + torch.einsum("nkc,k->nc", p["means_offsets"], code),
            "scales": p["scales"],
            "quats": p["quats"],
            "opacities": p["opacities"] + p["opacities_offsets"] @ code,
            "sh0": p["sh0"] + torch.einsum("nkc,k->nc", p["sh0_offsets"], code)[:, None],
            "shN": p["shN"],
        }

    def neutral(self) -> GaussianCloud:
        """The neutral Gaussians (code 0, the mean expression) as a plain cloud: for .ply and .spz."""
        cloud = GaussianCloud(self.sh_degree, rasterizer=self.rasterizer)
        cloud.load_values(dict(self.params.items()))
        return cloud


class ExpressionCode(nn.Module):
    """code = W [expression; latent] + b, (B, D) and (B, L) -> (B, K): the low-dimensional weights of
    the offsets. `initialize` starts W at the training expressions' principal components divided by
    their spread (unit-variance codes, zero at the mean expression); components the expressions do not
    vary along (a 3-d rig in a 76-d vector) stay zero rows."""

    def __init__(self, expression_dims: int, code_dims: int, latent_dims: int = 0) -> None:
        super().__init__()
        self.expression_dims, self.latent_dims = expression_dims, latent_dims
        self.linear = nn.Linear(expression_dims + latent_dims, code_dims)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    @torch.no_grad()
    def initialize(self, expressions: Tensor, seed: int = 0) -> None:
        """PCA of the training expressions (F, D) into W's expression columns and b."""
        mean = expressions.mean(0)
        _, singular, components = torch.linalg.svd(expressions - mean, full_matrices=False)
        k = min(self.linear.out_features, len(singular))
        spread = singular[:k] / max(len(expressions) - 1, 1) ** 0.5
        varies = spread > 1e-6 * spread.max().clamp_min(1e-12)
        weight = torch.zeros_like(self.linear.weight)
        weight[:k, : self.expression_dims] = torch.where(
            varies[:, None], components[:k] / spread.clamp_min(1e-12)[:, None], 0.0
        )
        generator = torch.Generator().manual_seed(seed)
        weight[:, self.expression_dims :] = _LATENT_INIT * torch.randn(
            weight.shape[0], self.latent_dims, generator=generator
        )
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(-weight[:, : self.expression_dims] @ mean)

    def forward(self, expressions: Tensor, latents: Tensor | None = None) -> Tensor:
        if self.latent_dims:
            assert latents is not None  # a latent-conditioned map needs them (the mean one for unseen frames)
            expressions = torch.cat([expressions, latents.expand(len(expressions), -1)], dim=1)
        return self.linear(expressions)


def axis_angle_quats(w: Tensor) -> Tensor:
    """(B, 3) axis-angle vectors -> (B, 4) unit quaternions wxyz; smooth through 0 (Taylor below 1e-3 rad)."""
    theta2 = (w * w).sum(1, keepdim=True)
    small = theta2 < 1e-6
    theta = torch.where(small, torch.ones_like(theta2), theta2).sqrt()
    half_sinc = torch.where(small, 0.5 - theta2 / 48.0, torch.sin(0.5 * theta) / theta)
    cos = torch.where(small, 1.0 - theta2 / 8.0, torch.cos(0.5 * theta))
    return torch.cat([cos, half_sinc * w], dim=1)


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton products a b of wxyz quaternions (broadcast over the leading dimension)."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        dim=-1,
    )


def moved(values: dict[str, Tensor], axis_angle: Tensor, rotation: Tensor, shift: Tensor) -> dict[str, Tensor]:
    """Gaussians (raw `params` values) moved by x -> R^T (x - shift), R = exp(axis_angle) (3, 3), shift (3,):
    what a camera corrected by the head motion x -> R x + shift (`lit.pose_correction`) sees, applied to
    the Gaussians instead (differentiable in the correction, whatever the rasterizer)."""
    inverse = axis_angle_quats(-axis_angle[None])
    return {
        **values,
        "means": (values["means"] - shift) @ rotation,
        "quats": quat_multiply(inverse, values["quats"]),
    }
