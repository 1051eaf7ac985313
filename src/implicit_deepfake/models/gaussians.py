"""`GaussianCloud`: the parameters of a 3D Gaussian splatting scene, its render and its `.ply` export.

Parameters are stored as 3DGS/gsplat keep them (log scales, logit opacities, SH DC + rest), in an
`nn.ParameterDict` so gsplat's densification strategies can swap them in place.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, synthetic_metadata
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.gaussians import rasterize_gaussians
from implicit_deepfake.render.sh import num_sh_bases, rgb_to_sh

PARAM_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")


class GaussianCloud(nn.Module):
    """N Gaussians: means (N, 3), scales (N, 3) log, quats (N, 4) wxyz, opacities (N,) logit,
    sh0 (N, 1, 3) and shN (N, K - 1, 3) spherical-harmonics coefficients, K = (sh_degree + 1)^2.
    `rasterizer`: a name in `render.gaussians.RASTERIZERS`, None for the device's default."""

    def __init__(self, sh_degree: int = 3, n: int = 0, rasterizer: str | None = None) -> None:
        super().__init__()
        self.sh_degree = sh_degree
        self.rasterizer = rasterizer
        k = num_sh_bases(sh_degree)
        shapes = {
            "means": (n, 3),
            "scales": (n, 3),
            "quats": (n, 4),
            "opacities": (n,),
            "sh0": (n, 1, 3),
            "shN": (n, k - 1, 3),
        }
        self.params = nn.ParameterDict({name: nn.Parameter(torch.zeros(shape)) for name, shape in shapes.items()})

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    def initialize(self, points: Tensor, colors: Tensor, scales: Tensor, opacity: float = 0.1) -> None:
        """Isotropic Gaussians at points (N, 3) with RGB colors (N, 3) in [0, 1] and radii scales (N,)."""
        n = len(points)
        values = {
            "means": points,
            "scales": scales.log()[:, None].expand(n, 3),
            "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, 4),
            "opacities": torch.logit(torch.full((n,), opacity)),
            "sh0": rgb_to_sh(colors)[:, None, :],
            "shN": torch.zeros(n, num_sh_bases(self.sh_degree) - 1, 3),
        }
        self.load_values(values)

    def load_values(self, values: dict[str, Tensor]) -> None:
        """Replace every parameter (any N) by the given tensors, keeping device and dtype."""
        device = self.params["means"].device
        for name in PARAM_NAMES:
            self.params[name] = nn.Parameter(values[name].detach().to(device, torch.float32).contiguous())

    def resize(self, n: int) -> None:
        """Zero parameters for n Gaussians: the shapes a checkpoint's state dict needs before loading."""
        self.load_values({name: p.new_zeros((n, *p.shape[1:])) for name, p in self.params.items()})

    def render(
        self, cameras: Cameras, sh_degree: int, background: Tensor, absgrad: bool = False
    ) -> tuple[Tensor, Tensor, dict]:
        """rgb (C, H, W, 3) over `background` (3,), alphas (C, H, W, 1) and gsplat's meta."""
        return self.render_values(self.params, cameras, sh_degree, background, absgrad)

    def render_values(
        self,
        p: Mapping[str, Tensor] | nn.ParameterDict,
        cameras: Cameras,
        sh_degree: int,
        background: Tensor,
        absgrad: bool = False,
    ) -> tuple[Tensor, Tensor, dict]:
        """`render` of other values of the cloud's parameters (named and stored as `params`), e.g. posed ones."""
        render, alphas, meta = rasterize_gaussians(
            p["means"],
            p["quats"],
            torch.exp(p["scales"]),
            torch.sigmoid(p["opacities"]),
            torch.cat([p["sh0"], p["shN"]], dim=1),
            cameras.world_to_camera,
            cameras.intrinsics,
            cameras.width,
            cameras.height,
            sh_degree=min(sh_degree, self.sh_degree),
            backgrounds=background.expand(len(cameras), 3),
            absgrad=absgrad,
            rasterizer=self.rasterizer,
        )
        return render.clamp(0.0, 1.0), alphas, meta

    def save_ply(self, path: str | Path) -> None:
        """The standard 3DGS .ply (x y z nx ny nz f_dc_* f_rest_* opacity scale_* rot_*), read by the usual viewers."""
        p = {name: t.detach().cpu().float() for name, t in self.params.items()}
        n = len(self)
        # 3DGS stores the SH rest channel-major: f_rest_{c * (K - 1) + k}.
        rest = p["shN"].transpose(1, 2).reshape(n, -1)
        columns = [
            p["means"],
            torch.zeros(n, 3),
            p["sh0"].reshape(n, 3),
            rest,
            p["opacities"][:, None],
            p["scales"],
            p["quats"],
        ]
        names = (
            ["x", "y", "z", "nx", "ny", "nz"]
            + [f"f_dc_{i}" for i in range(3)]
            + [f"f_rest_{i}" for i in range(rest.shape[1])]
            + ["opacity"]
            + [f"scale_{i}" for i in range(3)]
            + [f"rot_{i}" for i in range(4)]
        )
        data = torch.cat(columns, dim=1).numpy().astype("<f4")
        comments = [f"comment {key}: {value}" for key, value in synthetic_metadata().items()]
        header = "\n".join(
            ["ply", "format binary_little_endian 1.0", *comments, f"element vertex {n}"]
            + [f"property float {name}" for name in names]
            + ["end_header"]
        )
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write((header + "\n").encode("ascii"))
            f.write(data.tobytes())

    @classmethod
    def load_ply(cls, path: str | Path) -> GaussianCloud:
        """Read a 3DGS .ply written by `save_ply` or by the 3DGS / gsplat trainers (float32 vertex properties)."""
        path = Path(path)
        with open(path, "rb") as f:
            raw = f.read()
        end = raw.find(b"end_header\n")
        if not raw.startswith(b"ply") or end < 0:
            raise DeepfakeError(f"{path}: not a .ply file (no 'ply' magic / 'end_header').")
        header = raw[:end].decode("ascii").splitlines()
        if "format binary_little_endian 1.0" not in header:
            raise DeepfakeError(f"{path}: only binary little-endian 3DGS .ply files are supported.")
        names = [line.split()[-1] for line in header if line.startswith("property float")]
        n = int(next(line.split()[-1] for line in header if line.startswith("element vertex")))
        table = np.frombuffer(raw[end + len(b"end_header\n") :], dtype="<f4", count=n * len(names)).reshape(n, -1)
        column = {name: torch.from_numpy(table[:, i].copy()) for i, name in enumerate(names)}

        def require(name: str) -> Tensor:
            if name not in column:
                raise DeepfakeError(f"{path}: vertex property {name} is missing; not a 3DGS .ply.")
            return column[name]

        def stack(prefix: str, count: int) -> Tensor:
            return torch.stack([require(f"{prefix}{i}") for i in range(count)], dim=1)

        n_rest = sum(name.startswith("f_rest_") for name in names) // 3
        sh_degree = round((n_rest + 1) ** 0.5) - 1
        if num_sh_bases(sh_degree) != n_rest + 1:
            raise DeepfakeError(f"{path}: {3 * n_rest} f_rest_* properties is not 3 * ((degree + 1)^2 - 1).")
        cloud = cls(sh_degree)
        cloud.load_values(
            {
                "means": torch.stack([require("x"), require("y"), require("z")], dim=1),
                "sh0": stack("f_dc_", 3)[:, None, :],
                "shN": stack("f_rest_", 3 * n_rest).reshape(n, 3, n_rest).transpose(1, 2),
                "opacities": require("opacity"),
                "scales": stack("scale_", 3),
                "quats": stack("rot_", 4),
            }
        )
        return cloud
