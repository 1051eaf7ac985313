"""`train.py viewer=true`: the model served while it trains (gsplat simple_trainer's pattern).

Each training step holds nerfview's lock, so a render never sees half-updated parameters; between
steps the viewer renders. Training waits while the user moves the camera or has pressed Pause.
"""

from __future__ import annotations

import logging
import time
from typing import cast

import pytorch_lightning as pl
from omegaconf import DictConfig

from implicit_deepfake.lit.base import SceneModule, trainer_datamodule
from implicit_deepfake.view.avatar_page import NAMED_EXPRESSION_DATA
from implicit_deepfake.view.camera import front_view
from implicit_deepfake.view.server import ModelViewer

log = logging.getLogger(__name__)
_PAUSE_POLL_S = 0.05


class ViewerCallback(pl.Callback):
    """Starts a `ModelViewer` in training mode when training starts (after the model is set up)."""

    def __init__(
        self,
        title: str,
        host: str = "0.0.0.0",
        port: int = 8080,
        resolution: int = 256,
        named_expressions: bool = False,
    ) -> None:
        self.title, self.host, self.port, self.resolution = title, host, port, resolution
        self.named_expressions = named_expressions
        self.viewer: ModelViewer | None = None
        self._step_start = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_rank != 0:
            return
        datamodule = trainer_datamodule(trainer)
        self.viewer = ModelViewer(
            cast(SceneModule, pl_module),
            front_view(datamodule.frames("train").cameras, datamodule.root),
            self.title,
            self.host,
            self.port,
            self.resolution,
            expressions=getattr(pl_module, "train_expressions", None),
            named_expressions=self.named_expressions,
            mode="training",
        )
        log.info("viewer at http://localhost:%d (training waits while you move the camera)", self.viewer.port)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        if self.viewer is None:
            return
        while self.viewer.viewer.state == "paused":
            time.sleep(_PAUSE_POLL_S)
        self.viewer.viewer.lock.acquire()
        self._step_start = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx: int
    ) -> None:
        if self.viewer is None:
            return
        self.viewer.viewer.lock.release()
        rays = batch["rgb"].numel() // 3  # pixels of a Gaussians batch, rays of a NeRF batch
        seconds = max(time.perf_counter() - self._step_start, 1e-9)
        self.viewer.viewer.render_tab_state.num_train_rays_per_sec = rays / seconds
        self.viewer.viewer.update(trainer.global_step, rays)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """The end of fit (done, stopped or failed): the viewer goes with it (view.py shows the saved run)."""
        if self.viewer is not None:
            if self.viewer.viewer.lock.locked():  # a step that raised
                self.viewer.viewer.lock.release()
            self.viewer.stop()
            self.viewer = None


def viewer_callback(cfg: DictConfig) -> ViewerCallback:
    """The callback `train.py viewer=true` adds (port: `viewer_port`)."""
    return ViewerCallback(
        title=f"{cfg.model.name} training",
        port=int(cfg.get("viewer_port", 8080)),
        named_expressions=cfg.data.name in NAMED_EXPRESSION_DATA,
    )
