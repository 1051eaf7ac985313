"""The stages behind the entry points, as testable functions of a composed config."""

from __future__ import annotations

import logging
import subprocess
import warnings
from pathlib import Path
from typing import cast

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, composite, synthetic_metadata, write_json
from implicit_deepfake.data.blender import load_blender_split
from implicit_deepfake.data.source import DatasetSource
from implicit_deepfake.evaluation.edit import edit_expressions
from implicit_deepfake.evaluation.evaluate import evaluate_module
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.face_report import face_metrics
from implicit_deepfake.models.rasterizer_warm_up import warming_up
from implicit_deepfake.reports.run_table import print_run_summary
from implicit_deepfake.reports.runs import load_run, resolve_checkpoint, write_run_info
from implicit_deepfake.reports.summary import summarize
from implicit_deepfake.swap.report import base_portrait, head_yaws
from implicit_deepfake.swap.runner import run_swap
from implicit_deepfake.swap.target import target_image, target_photo

log = logging.getLogger(__name__)


def prepare_source(cfg: DictConfig) -> DatasetSource:
    """The dataset source of `cfg.data`, ready on disk (built if it is generated)."""
    source: DatasetSource = instantiate(cfg.data.source)
    source.prepare()
    return source


def swap_stage(cfg: DictConfig) -> tuple[DatasetSource, Path]:
    """Build/check the base dataset and swap it (skipping frames already done).

    Returns the dataset source and the swapped dataset's root."""
    source = prepare_source(cfg)
    manifest = run_swap(
        source.root,
        target_photo(cfg, source),
        cfg.swap.output_dir,
        swapper=instantiate(cfg.swap.swapper),
        embedder=instantiate(cfg.identity),
        on_no_face=cfg.swap.on_no_face,
        background=tuple(cfg.data.background),
        progress=cfg.progress,
        target_face=cfg.get("target_face", 0),
        track=OmegaConf.to_container(cfg.swap.track) if cfg.swap.get("track") else None,
        workers=cfg.swap.get("workers"),
    )
    log.info("swapped dataset: %s (%s)", cfg.swap.output_dir, manifest["summary"])
    return source, Path(cfg.swap.output_dir)


def _save_config(cfg: DictConfig, run_dir: Path) -> None:
    """The run's config (run_dir filled in), which `evaluate.py ckpt=...` rebuilds the run from."""
    with atomic_path(run_dir / "config.yaml") as tmp:
        OmegaConf.save(cfg, tmp)


def _loggers(cfg: DictConfig) -> list[Logger]:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    return loggers


def check_ddp_launch(trainer: pl.Trainer, multirun: bool) -> None:
    """Lightning starts DDP's extra processes by re-running the command line: in a multirun each
    of them would start the whole sweep again."""
    if multirun and isinstance(trainer.strategy.launcher, _SubprocessScriptLauncher):
        raise DeepfakeError(
            "trainer=ddp in a local multirun (-m or hparams_search=...): Lightning would re-run the whole sweep "
            "in each extra process. Sweep on Slurm (hydra/launcher=slurm hydra.launcher.tasks_per_node=<GPUs "
            "per job>), where Slurm starts the processes, or run trainer=ddp one run at a time."
        )


def _renders_with_cpu_kernels(cfg: DictConfig) -> bool:
    """Whether training renders Gaussians with the compiled CPU rasterizer (numba, the CPU's default)."""
    gaussians = cfg.model.name.startswith("gaussian") and cfg.model.module.get("rasterizer") in (None, "numba")
    return gaussians and cfg.trainer.get("accelerator") == "cpu"


def train(cfg: DictConfig) -> dict:
    """The whole chain: data, swap (both cached), training (resumable), evaluation -> metrics dict."""
    with warming_up(_renders_with_cpu_kernels(cfg)) as warm_up:  # the kernels compile while the data is made
        return _train(cfg, warm_up)


def _train(cfg: DictConfig, warm_up: subprocess.Popen | None) -> dict:
    swap_stage(cfg)
    ckpt, run_dir = resolve_checkpoint(cfg, Path(cfg.run_dir))
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.run_dir = str(run_dir)
    if ckpt is not None:
        log.info("resuming %s from %s", run_dir, ckpt)
    run_dir.mkdir(parents=True, exist_ok=True)
    _save_config(cfg, run_dir)
    write_run_info(run_dir, cfg, status="training")
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    # Our checkpoints are meant to hold the state after the step's update (manual optimisation).
    warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")

    datamodule = instantiate(cfg.datamodule)
    module = instantiate(cfg.model.module)
    loggers = _loggers(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses a bar callback with bars off
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.get("viewer"):
        from implicit_deepfake.view.training import viewer_callback  # viser loads only when asked for

        callbacks.append(viewer_callback(cfg))
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks)
    check_ddp_launch(trainer, HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN)
    if warm_up is not None:
        warm_up.wait()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    write_run_info(run_dir, cfg, status="trained", steps=trainer.global_step)
    metrics = evaluate_module(module, datamodule, cfg, run_dir, trainer.global_step, loggers)
    for logger in loggers:
        logger.finalize("success")
        if isinstance(logger, WandbLogger):
            logger.experiment.finish()  # else the next job of a multirun would log into this W&B run
    if trainer.is_global_zero:
        print_run_summary(metrics, run_dir)
    return metrics


def evaluate_checkpoint(cfg: DictConfig) -> dict:
    """Re-evaluate a saved run (`ckpt=<file>` or `ckpt=last`) into its own run folder; with
    `edit.expressions_from`, re-render its test frames with other expressions instead (edits/<name>/)."""
    run = load_run(cfg.ckpt, cfg.paths.log_dir)
    source = cfg.get("edit", {}).get("expressions_from")
    if source is not None:
        pose_steps = run.cfg.get("evaluate", {}).get("test_pose_steps", 0)
        return edit_expressions(run.module, run.datamodule, source, run.run_dir, pose_steps)
    run_cfg = run.cfg
    if cfg.get("evaluate", {}).get("orbit"):  # evaluate.py ckpt=... evaluate.orbit=full
        run_cfg = cast(DictConfig, OmegaConf.merge(run_cfg, {"evaluate": {"orbit": cfg.evaluate.orbit}}))
    return evaluate_module(run.module, run.datamodule, run_cfg, run.run_dir, run.steps)


def evaluate(cfg: DictConfig, run_dir: str | Path) -> dict:
    """A trained run (`cfg.ckpt`), or without one the swapped dataset's `cfg.split` frames
    (their face metrics) -> metrics.json; or a sweep's summary (`cfg.summary`: its folder)."""
    if cfg.get("summary"):
        return summarize(cfg.summary)
    if cfg.get("ckpt"):
        return evaluate_checkpoint(cfg)
    source, swapped = swap_stage(cfg)
    background = tuple(cfg.data.background)
    split = load_blender_split(swapped, cfg.split)
    images = [composite(im, background) for im in split.images]
    base = [composite(im, background) for im in load_blender_split(source.root, cfg.split).images]
    report = face_metrics(
        images,
        target_image(cfg, source),
        instantiate(cfg.identity),
        FaceLandmarker(),
        references=base,
        yaws_deg=head_yaws(swapped, split.cameras),
        portrait=base_portrait(Path(source.root), swapped, background),
    )
    metrics = {
        **{f"{cfg.split}.{k}": v for k, v in report.items()},
        "data": cfg.data.name,
        "swap": cfg.swap.name,
        "swapped_dir": str(swapped),
        "synthetic": synthetic_metadata(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(Path(run_dir) / "metrics.json", metrics)
    log.info("metrics: %s", {k: v for k, v in metrics.items() if k.startswith(cfg.split)})
    return metrics
