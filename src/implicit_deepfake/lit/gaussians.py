"""`model=gaussians`: 3D Gaussian splatting trained as in 3DGS / gsplat's simple_trainer.

Per-parameter Adam (one optimizer per tensor, as gsplat's strategies expect), the exponential
position learning-rate decay to 1% over the run, L1 + D-SSIM loss, one more SH band every
`sh_degree_interval` steps, and gsplat's `DefaultStrategy` for clone/split/prune/opacity reset (pure PyTorch, it runs on
the CPU given our rasterizer's `meta`; `models/densify.py` mends its opacity reset).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import Frames, batch_cameras
from implicit_deepfake.data.sparse_points import sparse_points
from implicit_deepfake.lit.base import SceneModule, trainer_datamodule
from implicit_deepfake.models.densify import DefaultStrategy
from implicit_deepfake.models.gaussian_init import initial_points, neighbour_scales, scene_scale
from implicit_deepfake.models.gaussians import PARAM_NAMES, GaussianCloud
from implicit_deepfake.render.cameras import Cameras

POSITION_LR_FINAL = 0.01  # the position learning rate decays to this fraction of its start


@dataclass(frozen=True)
class LearningRates:
    """Adam's learning rate per parameter tensor (3DGS's values in the yaml); `means` is scaled by the
    scene's size and decays to POSITION_LR_FINAL of itself over the run."""

    means: float
    scales: float
    quats: float
    opacities: float
    sh0: float
    shN: float


class LitGaussians(SceneModule):
    """Gaussians initialised on the training masks' visual hull inside the cameras' view."""

    scene_scale: Tensor

    def __init__(
        self,
        sh_degree: int,
        sh_degree_interval: int,
        init_points: int,
        init_opacity: float,
        lr: dict[str, float],
        ssim_lambda: float,
        densify: dict,
        seed: int,
        rasterizer: str | None,
    ) -> None:
        """Every default lives in conf/model/gaussians.yaml. `lr` and `densify` arrive as plain config
        (so checkpoints keep plain hyperparameters) and are built here into their typed classes
        (`LearningRates`, `_target_` DefaultStrategy): a misspelt key fails at once."""
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # densification resizes parameters and optimizer state
        self.cloud = GaussianCloud(sh_degree, rasterizer=rasterizer)
        self.lr = asdict(instantiate(lr))
        self.strategy: DefaultStrategy = instantiate(densify)
        self.register_buffer("scene_scale", torch.tensor(1.0))
        self.strategy_state: dict = {}

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if self.trainer.world_size > 1:
            raise DeepfakeError(
                "model=gaussians and model=gaussian_avatar cannot train with trainer=ddp: densification reshapes "
                "the parameters every few steps, which DDP cannot follow. Use trainer=gpu (one GPU per run)."
            )
        if stage == "fit" and self.trainer.ckpt_path is None and len(self.cloud) == 0:
            datamodule = trainer_datamodule(self.trainer)
            self.initialize_cloud(datamodule.frames("train"), sparse_points(datamodule.root))
        if not self.strategy_state:
            self.strategy_state = self.strategy.initialize_state(scene_scale=float(self.scene_scale))

    def initialize_cloud(self, frames: Frames, sparse: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """A new run's Gaussians and scene scale, from its training frames and the dataset's sparse
        structure-from-motion points and colours where it has them."""
        points, colors = initial_points(frames, self.hparams.init_points, self.hparams.seed, sparse)
        self.cloud.initialize(points, colors, neighbour_scales(points), self.hparams.init_opacity)
        self.scene_scale.fill_(scene_scale(frames.cameras))

    def optimized(self) -> dict[str, tuple[list[Tensor], float]]:
        """name -> (parameters, learning rate) of each Adam, one per cloud tensor (`means` first: Lightning
        steps it), as gsplat's strategies expect."""
        scale = {"means": float(self.scene_scale)}
        return {name: ([self.cloud.params[name]], self.lr[name] * scale.get(name, 1.0)) for name in PARAM_NAMES}

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [torch.optim.Adam(params, lr=lr, eps=1e-15) for params, lr in self.optimized().values()]

    def _position_lr(self, step: int) -> float:
        progress = min(step / max(self.trainer.max_steps, 1), 1.0)
        return self.lr["means"] * float(self.scene_scale) * POSITION_LR_FINAL**progress

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        step = self.global_step
        wrapped = self.optimizers()
        assert isinstance(wrapped, list)  # one optimizer per parameter tensor
        optimizers = dict(zip(self.optimized(), (o.optimizer for o in wrapped)))
        optimizers["means"].param_groups[0]["lr"] = self._position_lr(step)
        cloud_optimizers = {name: optimizers[name] for name in self.cloud.params}  # what densification resizes
        sh_degree = min(step // self.hparams.sh_degree_interval, self.cloud.sh_degree)
        rgb, target, meta = self.training_render(batch, sh_degree)
        self.strategy.step_pre_backward(self.cloud.params, cloud_optimizers, self.strategy_state, step, meta)
        loss, logged = self.training_loss(batch, rgb, target)
        self.check_finite(loss)
        self.manual_backward(loss)
        # Lightning counts every optimizer step towards global_step: step one through Lightning
        # (one training step = one global step) and the others directly.
        wrapped[0].step()
        for optimizer in list(optimizers.values())[1:]:
            optimizer.step()
        for optimizer in optimizers.values():
            optimizer.zero_grad(set_to_none=True)
        self.strategy.step_post_backward(self.cloud.params, cloud_optimizers, self.strategy_state, step, meta)
        self.log_dict(logged, prog_bar=True, batch_size=len(target))
        self.log_dict(
            {
                "train/num_gaussians": float(len(self.cloud)),
                "train/sh_degree": float(sh_degree),
                "lr/means": self._position_lr(step),
            },
            batch_size=len(target),
        )
        self.log("gaussians", float(len(self.cloud)), prog_bar=True, logger=False, batch_size=len(target))
        return loss

    def training_render(self, batch: dict[str, Tensor], sh_degree: int) -> tuple[Tensor, Tensor, dict]:
        """An image batch -> rendered rgb (B, H, W, 3), its target and the rasterizer's meta."""
        target = batch["rgb"]
        cameras = batch_cameras(batch, target.shape[2], target.shape[1])
        rgb, _, meta = self.cloud.render(cameras, sh_degree, self.background, absgrad=self.strategy.absgrad)
        return rgb, target, meta

    def training_loss(self, batch: dict[str, Tensor], rgb: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss, (1 - l) L1 + l (1 - SSIM), and what to log of it."""
        l1 = (rgb - target).abs().mean()
        ssim = structural_similarity_index_measure(rgb.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2), data_range=1.0)
        assert isinstance(ssim, Tensor)  # a tuple only with return_full_image
        loss = (1 - self.hparams.ssim_lambda) * l1 + self.hparams.ssim_lambda * (1 - ssim)
        return loss, {"train/loss": loss, "train/l1": l1, "train/ssim": ssim}

    @torch.no_grad()
    def render_views(self, cameras: Cameras, expressions: Tensor | None = None) -> Tensor:
        return torch.cat(
            [self.cloud.render(cameras[i], self.cloud.sh_degree, self.background)[0] for i in range(len(cameras))]
        )

    def export(self, run_dir: Path) -> dict[str, str]:
        path = run_dir / "point_cloud.ply"
        self.cloud.save_ply(path)
        return {"ply": str(path)}

    def model_stats(self) -> dict[str, int | float]:
        return {"num_gaussians": len(self.cloud)}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["strategy_state"] = self.strategy_state

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.cloud.resize(checkpoint["state_dict"]["cloud.params.means"].shape[0])
        self.strategy_state = checkpoint.get("strategy_state", {})
