"""Scalars, images and videos to whichever loggers a run has (W&B, TensorBoard; CSV takes scalars only).

Lightning's loggers share `log_metrics` but not media, so media go through this one registry.
Logged keys are grouped the W&B / TensorBoard way, `test/psnr`; metrics.json keeps `test.psnr`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger


def _wandb_images(logger: WandbLogger, key: str, images: Sequence[np.ndarray], step: int) -> None:
    logger.log_image(key, images=list(images), step=step)


def _tensorboard_images(logger: TensorBoardLogger, key: str, images: Sequence[np.ndarray], step: int) -> None:
    for i, image in enumerate(images):
        logger.experiment.add_image(f"{key}/{i}", image, step, dataformats="HWC")


def _wandb_video(logger: WandbLogger, key: str, path: Path, step: int) -> None:
    import wandb

    logger.experiment.log({key: wandb.Video(str(path), format="mp4"), "trainer/global_step": step})


IMAGE_LOGGERS = {WandbLogger: _wandb_images, TensorBoardLogger: _tensorboard_images}
VIDEO_LOGGERS = {WandbLogger: _wandb_video}


def logger_key(key: str) -> str:
    """metrics.json's `test.psnr` -> `test/psnr`: the section before the first dot becomes the panel group."""
    return key.replace(".", "/", 1)


def log_scalars(loggers: Sequence[Logger], scalars: dict[str, float], step: int) -> None:
    """Numbers keyed as in metrics.json, to every logger under their grouped keys."""
    grouped = {logger_key(k): v for k, v in scalars.items()}
    for logger in loggers:
        logger.log_metrics(grouped, step=step)


def log_images(loggers: Sequence[Logger], key: str, images: Sequence[np.ndarray], step: int) -> None:
    """images: HxWx3 uint8 each."""
    for logger in loggers:
        for kind, log in IMAGE_LOGGERS.items():
            if isinstance(logger, kind):
                log(logger, key, images, step)


def log_video(loggers: Sequence[Logger], key: str, path: Path, step: int) -> None:
    """An mp4 on disk, to the loggers that take video."""
    for logger in loggers:
        for kind, log in VIDEO_LOGGERS.items():
            if isinstance(logger, kind):
                log(logger, key, path, step)
