"""What every scene model's LightningModule shares: rendering views for validation and evaluation,
validation metrics and images, the NaN guard, and the training wall time kept across resumes."""

from __future__ import annotations

import time
from abc import abstractmethod
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.parsing import AttributeDict
from torch import Tensor
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import FrameDataModule, batch_cameras
from implicit_deepfake.lit.logging import log_images
from implicit_deepfake.render.cameras import Cameras

VAL_IMAGES = 4  # validation views shown in the logger, rendered next to their ground truth


def trainer_datamodule(trainer: pl.Trainer) -> FrameDataModule:
    """The datamodule `trainer` runs with (Lightning attaches it at run time; its stubs don't declare it)."""
    return trainer.datamodule  # type: ignore[attr-defined]


class SceneModule(pl.LightningModule):
    """A LightningModule whose model renders RGB images of a scene from `Cameras`."""

    hparams: AttributeDict  # what save_hyperparameters() stores (Lightning types it as any mapping)
    background: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.val_psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.val_ssim = StructuralSimilarityIndexMeasure(data_range=1.0)
        self.register_buffer("background", torch.ones(3))
        self.train_seconds_before = 0.0  # from earlier sessions of a resumed run
        self._session_start: float | None = None
        self._val_pairs: list[Tensor] = []

    @abstractmethod
    def render_views(self, cameras: Cameras, expressions: Tensor | None = None) -> Tensor:
        """RGB (C, H, W, 3) in [0, 1] over the background, without gradients' memory. expressions
        (C, D): each view's facial expression, for models of a talking head (others ignore them)."""

    @abstractmethod
    def model_stats(self) -> dict[str, int | float]:
        """Size figures for metrics.json (e.g. the number of Gaussians)."""

    def export(self, run_dir: Path) -> dict[str, str]:
        """Write the trained model in its field's standard format; returns {what: path}."""
        return {}

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None:
            self.background = torch.tensor(datamodule.background, device=self.background.device)

    @property
    def train_seconds(self) -> float:
        """Wall time of training so far, all sessions of a resumed run together."""
        running = time.monotonic() - self._session_start if self._session_start is not None else 0.0
        return self.train_seconds_before + running

    def on_train_start(self) -> None:
        self._session_start = time.monotonic()

    def on_train_end(self) -> None:
        self.train_seconds_before, self._session_start = self.train_seconds, None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_seconds_before = float(checkpoint.get("train_seconds", 0.0))

    def check_finite(self, loss: Tensor) -> None:
        """Stop the run with a clear message on a NaN/inf loss, before it reaches the parameters."""
        if torch.isfinite(loss):
            return
        callback = self.trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", "") or "none written yet"
        raise DeepfakeError(
            f"training loss is {loss.item()} at step {self.global_step}: run stopped. The last good "
            f"checkpoint is kept ({last}); lower the learning rates (model.lr.*) and resume with ckpt_path=last."
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        height, width = batch["rgb"].shape[1:3]
        pred = self.render_views(batch_cameras(batch, width, height), batch.get("expression"))
        pred_chw, target_chw = pred.permute(0, 3, 1, 2), batch["rgb"].permute(0, 3, 1, 2)
        self.val_psnr(pred_chw, target_chw)
        self.val_ssim(pred_chw, target_chw)
        self.log_dict({"val/psnr": self.val_psnr, "val/ssim": self.val_ssim}, prog_bar=True, batch_size=len(pred))
        if len(self._val_pairs) < VAL_IMAGES:
            self._val_pairs.append(torch.cat([pred[0], batch["rgb"][0]], dim=1).cpu())

    def on_validation_epoch_end(self) -> None:
        if self._val_pairs and not self.trainer.sanity_checking:
            images = [(pair.numpy() * 255).round().astype("uint8") for pair in self._val_pairs]
            log_images(self.trainer.loggers, "val/render_vs_target", images, self.global_step)
        self._val_pairs = []
