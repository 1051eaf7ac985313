"""Image quality of rendered test views against ground truth: PSNR, SSIM and (offline only) LPIPS.

LPIPS needs an ImageNet backbone that torchvision downloads on first use. This machine may have
no internet, so LPIPS is computed only when `lpips_status` finds everything already on disk;
otherwise the metric is None and the reason says which file is missing and how to get it.
torchmetrics ships the LPIPS linear-layer weights itself (`lpips_models/<net>.pth`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

LpipsNet = Literal["alex", "vgg", "squeeze"]

# torchvision's default ImageNet weights per LPIPS backbone (torchvision.models.<X>_Weights.DEFAULT);
# load_state_dict_from_url caches each under <torch hub dir>/checkpoints/<basename of the url>.
BACKBONE_URLS: dict[str, str] = {
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}
_TORCHVISION_NAMES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
# Images per forward pass: bounds memory for full-resolution test views (LPIPS' backbone on CPU).
_CHUNK = 8


@contextmanager
def torch_home(path: str | Path | None) -> Iterator[None]:
    """Point torch's cache (TORCH_HOME, hence `torch.hub.get_dir()`) at `path` for the block; None: unchanged."""
    if path is None:
        yield
        return
    previous = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TORCH_HOME", None)
        else:
            os.environ["TORCH_HOME"] = previous


def backbone_checkpoint(net: LpipsNet = "alex", home: str | Path | None = None) -> Path:
    """Where torchvision looks for (and would download) the backbone weights of `net`."""
    with torch_home(home):
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(BACKBONE_URLS[net]).name


def _linear_weights(net: LpipsNet) -> Path:
    """The LPIPS linear-layer weights bundled in the torchmetrics package."""
    spec = importlib.util.find_spec("torchmetrics.functional.image.lpips")
    assert spec is not None and spec.origin is not None  # a module of torchmetrics, a dependency
    return Path(spec.origin).parent / "lpips_models" / f"{net}.pth"


def _torchvision_installed() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def lpips_status(net: LpipsNet = "alex", home: str | Path | None = None) -> tuple[bool, str]:
    """(available, reason): whether LPIPS can run with files already on disk; never downloads.

    `home` overrides TORCH_HOME (default: the environment's, else ~/.cache/torch).
    """
    if net not in BACKBONE_URLS:
        raise ValueError(f"LPIPS net must be one of {sorted(BACKBONE_URLS)}, got {net!r}")
    missing = []
    if not _torchvision_installed():
        missing.append("torchvision is not installed (pip install torchvision, the build matching torch)")
    linear = _linear_weights(net)
    if not linear.is_file():
        missing.append(f"{linear} is missing (reinstall torchmetrics, which bundles it)")
    checkpoint = backbone_checkpoint(net, home)
    if not checkpoint.is_file():
        missing.append(
            f"backbone weights {checkpoint} are missing: run once with internet "
            f"`python -c \"import torchvision; torchvision.models.{_TORCHVISION_NAMES[net]}(weights='DEFAULT')\"`, "
            f"or download {BACKBONE_URLS[net]} and copy it to {checkpoint} "
            f"(set TORCH_HOME to use another cache folder)"
        )
    if missing:
        return False, f"LPIPS ({net}) unavailable offline: " + "; ".join(missing)
    return True, f"LPIPS ({net}) weights found at {checkpoint}"


def _as_nchw(images: Tensor | np.ndarray) -> Tensor:
    """(N, H, W, 3) float in [0, 1] -> (N, 3, H, W) float32."""
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected images (N, H, W, 3), got {tuple(images.shape)}")
    return images.permute(0, 3, 1, 2)


class ImageMetrics:
    """PSNR / SSIM / LPIPS of predictions against targets; the LPIPS network is built once, if available."""

    def __init__(self, lpips_net: LpipsNet = "alex", home: str | Path | None = None, device: str = "cpu") -> None:
        self.device = torch.device(device)
        self.lpips_available, self.lpips_reason = lpips_status(lpips_net, home)
        self._lpips = None
        if self.lpips_available:
            # Imported only now: torchvision is optional and the module is heavy.
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            with torch_home(home):
                self._lpips = LearnedPerceptualImagePatchSimilarity(
                    net_type=lpips_net, reduction="none", normalize=True
                ).to(self.device)

    @torch.no_grad()
    def per_image(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> dict[str, Tensor | None]:
        """pred, target: (N, H, W, 3) in [0, 1] -> {"psnr", "ssim", "lpips"}: (N,) tensors (lpips may be None)."""
        pred, target = _as_nchw(pred), _as_nchw(target)
        if pred.shape != target.shape:
            raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        scores: dict[str, list[Tensor]] = {"psnr": [], "ssim": [], "lpips": []}
        for start in range(0, len(pred), _CHUNK):
            p = pred[start : start + _CHUNK].to(self.device).clamp(0.0, 1.0)
            t = target[start : start + _CHUNK].to(self.device).clamp(0.0, 1.0)
            scores["psnr"].append(peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3)))
            ssim = structural_similarity_index_measure(p, t, data_range=1.0, reduction="none")
            assert isinstance(ssim, Tensor)  # a tuple only with return_full_image
            scores["ssim"].append(ssim)
            if self._lpips is not None:
                scores["lpips"].append(self._lpips(p, t).reshape(-1))
                self._lpips.reset()
        return {name: torch.cat(values).cpu() if values else None for name, values in scores.items()}

    def __call__(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> dict[str, Any]:
        """Means over the images plus a per-image list; PSNR is the mean of per-image PSNRs (NeRF papers' habit)."""
        scores = self.per_image(pred, target)
        psnr, ssim, lpips = scores["psnr"], scores["ssim"], scores["lpips"]
        assert psnr is not None and ssim is not None  # None only for no images
        return {
            "psnr": float(psnr.mean()),
            "ssim": float(ssim.mean()),
            "lpips": None if lpips is None else float(lpips.mean()),
            "lpips_reason": None if lpips is not None else self.lpips_reason,
            "per_image": [
                {name: None if values is None else float(values[i]) for name, values in scores.items()}
                for i in range(len(psnr))
            ],
        }


def image_metrics(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    lpips_net: LpipsNet = "alex",
    home: str | Path | None = None,
) -> dict[str, Any]:
    """One-shot `ImageMetrics(lpips_net, home)(pred, target)`; build `ImageMetrics` once to reuse LPIPS."""
    return ImageMetrics(lpips_net, home)(pred, target)
