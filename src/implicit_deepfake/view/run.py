"""`view.py`: a saved run in the browser (the interactive viewer), or its viewer.html written (`export=true`)."""

from __future__ import annotations

import logging
import time

import torch
from omegaconf import DictConfig

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.reports.runs import load_run
from implicit_deepfake.view.avatar_page import NAMED_EXPRESSION_DATA
from implicit_deepfake.view.camera import front_view
from implicit_deepfake.view.server import ModelViewer
from implicit_deepfake.view.webpage import PAGE_NAME, export_viewer_page, run_title

log = logging.getLogger(__name__)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def view(cfg: DictConfig) -> ModelViewer | None:
    """Serve the run of `cfg.ckpt` until Ctrl+C (returns the viewer instead when `cfg.block` is false),
    or with `cfg.export` write its viewer.html and return None."""
    run = load_run(cfg.ckpt, cfg.paths.log_dir)
    named = run.cfg.data.name in NAMED_EXPRESSION_DATA
    if cfg.export:
        exported = run.module.export(run.run_dir)
        page = export_viewer_page(run.run_dir, exported, run.datamodule, run.cfg.model.name, named)
        if not page:
            raise DeepfakeError(
                f"export=true writes {PAGE_NAME} for Gaussians runs; {run.run_dir} is a {run.cfg.model.name} run "
                "(no splats). Look at it with view.py without export."
            )
        log.info("wrote %s (open it in a browser; no server needed)", page["viewer_html"])
        return None
    module = run.module.to(_device(cfg.device)).eval()
    expressions = getattr(module, "train_expressions", None)
    cameras = run.datamodule.frames("train").cameras
    training_cameras = getattr(module, "training_cameras", None)
    if training_cameras is not None:  # a 4D model's learned pose corrections
        cameras = training_cameras(cameras)
    viewer = ModelViewer(
        module,
        front_view(cameras, run.datamodule.root),
        run_title(run.cfg.model.name, run.run_dir),
        cfg.host,
        cfg.port,
        cfg.resolution,
        expressions=expressions,
        named_expressions=named,
    )
    log.info("viewing %s at http://localhost:%d (Ctrl+C stops)", run.run_dir, viewer.port)
    if not cfg.block:
        return viewer
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        viewer.stop()
    return None
