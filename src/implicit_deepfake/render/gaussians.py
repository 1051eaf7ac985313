"""`rasterize_gaussians`: 3D Gaussian splatting with gsplat's `rasterization()` semantics on any device.

The backend is picked once, by name in `RASTERIZERS` or, without a name, by the device of `means`
(`DEFAULT_RASTERIZERS`): CUDA tensors go to gsplat's fused CUDA kernels ("gsplat"), CPU tensors to
the rasterizer of `gaussians_cpu` with compiled compositing ("numba", the default) or with the
pure-PyTorch reference compositing ("torch"). All return the unpacked layout ((C, N, ...) per
camera and Gaussian), so `meta` feeds gsplat's `DefaultStrategy` (`step_pre_backward` /
`step_post_backward(packed=False)`) the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.render.gaussians_cpu import RENDER_MODES, rasterize_cpu

RASTERIZE_MODES = ("classic", "antialiased")


def _rasterize_gsplat(
    means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
    viewmats: Tensor, Ks: Tensor, width: int, height: int, **options,
) -> tuple[Tensor, Tensor, dict]:  # fmt: skip
    from gsplat import rasterization  # loads the CUDA extension: only when a CUDA tensor asks

    return rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, packed=False, **options)


def _rasterize_numba(*args, **options) -> tuple[Tensor, Tensor, dict]:
    from implicit_deepfake.render.gaussians_numba import rasterize_numba  # numba loads (or compiles) on first use

    return rasterize_numba(*args, **options)


class Rasterizer(NamedTuple):
    device: str  # the device type of the tensors it takes
    rasterize: Callable[..., tuple[Tensor, Tensor, dict]]  # the signature of `rasterize_cpu`


RASTERIZERS: dict[str, Rasterizer] = {
    "numba": Rasterizer("cpu", _rasterize_numba),
    "torch": Rasterizer("cpu", rasterize_cpu),
    "gsplat": Rasterizer("cuda", _rasterize_gsplat),
}
DEFAULT_RASTERIZERS = {"cpu": "numba", "cuda": "gsplat"}  # device type -> name in RASTERIZERS


def rasterize_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    radius_clip: float = 0.0,
    backgrounds: Tensor | None = None,
    tile_size: int = 16,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
    packed: bool = False,
    rasterizer: str | None = None,
) -> tuple[Tensor, Tensor, dict]:
    """Render N Gaussians into C pinhole cameras, front to back, differentiably.

    means (N, 3) world; quats (N, 4) wxyz, need not be normalised; scales (N, 3) (not log);
    opacities (N,) in [0, 1] (post-sigmoid); colors (N, D) or (C, N, D), or SH coefficients
    (N, K, 3) or (C, N, K, 3) when `sh_degree` is set ((sh_degree + 1)^2 <= K; colour = SH + 0.5,
    clamped at 0); viewmats (C, 4, 4) world->camera, OpenCV axes; Ks (C, 3, 3) pixels, pixel (i, j)
    centred at (i + 0.5, j + 0.5); backgrounds (C, D) or None.
    render_mode: "RGB" | "D" | "ED" | "RGB+D" | "RGB+ED" (depth is the last channel; ED = expected
    depth); rasterize_mode: "classic" | "antialiased" (opacity x sqrt(det Sigma / det(Sigma + eps2d))).
    `packed` is accepted for gsplat call compatibility; the output is always unpacked.
    rasterizer: a name in `RASTERIZERS`, or None for the device's default (`DEFAULT_RASTERIZERS`).

    Returns render (C, H, W, D') with D' = D (+1 for depth), alphas (C, H, W, 1), and meta with
    "means2d" (C, N, 2, differentiable: `retain_grad()` for densification; with absgrad=True,
    `.absgrad` after backward), "radii" (C, N, 2) int32 (0 = culled), "depths", "conics",
    "opacities", "width", "height", "n_cameras", "gaussian_ids" None (unpacked).
    """
    del packed  # both backends run unpacked so `meta` has one layout
    if render_mode not in RENDER_MODES:
        raise DeepfakeError(f"render_mode={render_mode!r} is not one of {RENDER_MODES}; fix the renderer config")
    if rasterize_mode not in RASTERIZE_MODES:
        raise DeepfakeError(
            f"rasterize_mode={rasterize_mode!r} is not one of {RASTERIZE_MODES}; fix the renderer config"
        )
    n = means.shape[0]
    n_cameras = viewmats.shape[0]
    expected = {"means": (n, 3), "quats": (n, 4), "scales": (n, 3), "opacities": (n,), "Ks": (n_cameras, 3, 3)}
    actual = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "Ks": Ks}
    for name, shape in expected.items():
        if tuple(actual[name].shape) != shape:
            raise ValueError(f"{name}: expected shape {shape}, got {tuple(actual[name].shape)}")
    device = means.device.type
    if rasterizer is None and device not in DEFAULT_RASTERIZERS:
        raise DeepfakeError(
            f"no Gaussian rasterizer for device {device!r} (have {sorted(DEFAULT_RASTERIZERS)}); "
            "set the trainer accelerator to cpu or gpu"
        )
    name = rasterizer or DEFAULT_RASTERIZERS[device]
    if name not in RASTERIZERS:
        raise DeepfakeError(f"rasterizer={name!r} is not one of {sorted(RASTERIZERS)}; fix model.module.rasterizer")
    if RASTERIZERS[name].device != device:
        raise DeepfakeError(
            f"rasterizer={name!r} renders {RASTERIZERS[name].device} tensors, not {device} ones; "
            "set model.module.rasterizer=null (the device's default) or the matching trainer"
        )
    return RASTERIZERS[name].rasterize(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        sh_degree=sh_degree, near_plane=near_plane, far_plane=far_plane, eps2d=eps2d,
        radius_clip=radius_clip, backgrounds=backgrounds, tile_size=tile_size,
        render_mode=render_mode, rasterize_mode=rasterize_mode, absgrad=absgrad,
    )  # fmt: skip
