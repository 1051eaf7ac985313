"""Evaluate a trained scene model, whatever it is: test-view renders and their image and face
metrics, an orbit video, the contact sheet `summary.png`, `metrics.json`, and the same figures to
the run's loggers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger

from implicit_deepfake.core.io import synthetic_metadata, write_json, write_png
from implicit_deepfake.data.datamodule import FrameDataModule, Frames, load_frames
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.lit.base import SceneModule
from implicit_deepfake.lit.logging import log_images, log_scalars, log_video
from implicit_deepfake.metrics.face_report import face_metrics
from implicit_deepfake.metrics.image import image_metrics
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.video import orbit_cameras, uint8_images, write_video
from implicit_deepfake.reports.contact_sheet import SheetView, headline, write_contact_sheet
from implicit_deepfake.swap.report import base_portrait, head_yaws
from implicit_deepfake.swap.target import target_image
from implicit_deepfake.view.avatar_page import NAMED_EXPRESSION_DATA
from implicit_deepfake.view.webpage import export_viewer_page

log = logging.getLogger(__name__)
ORBIT_FPS = 24
SEQUENCE_FPS = 12  # a test sequence of a talking head: slow enough to follow the mouth


def view_cameras(module: SceneModule, frames: Frames, pose_steps: int, bbox_weight: float) -> tuple[Cameras, dict]:
    """The cameras to render `frames` from: with `pose_steps` and a model that can fit them (a 4D
    model, for tracked poses), their poses fitted photometrically first (and what the fit did, for
    metrics.json); else their own."""
    fit_view_poses = getattr(module, "fit_view_poses", None)
    if not pose_steps or fit_view_poses is None:
        return frames.cameras.to(module.device), {"steps": 0}
    cameras, degrees = fit_view_poses(frames, pose_steps, bbox_weight=bbox_weight)
    fit = {"steps": pose_steps, "rotation_deg_median": round(float(degrees.median()), 3)}
    fit["rotation_deg_max"] = round(float(degrees.max()), 3)
    log.info("test frames' poses fitted with the model frozen: %s", fit)
    return cameras, fit


def evaluate_module(
    module: SceneModule,
    datamodule: FrameDataModule,
    cfg: DictConfig,
    run_dir: Path,
    steps: int,
    loggers: Sequence[Logger] = (),
) -> dict:
    """Render the test split and an orbit; write renders, orbit.mp4 and metrics.json into `run_dir`
    (and for a talking-head video, test.mp4: the test frames in sequence with their expressions)."""
    module.eval()
    test = datamodule.frames("test")
    expressions = None if test.expressions is None else test.expressions.to(module.device)
    cameras, pose_fit = view_cameras(module, test, cfg.evaluate.get("test_pose_steps", 0), datamodule.bbox_weight)
    renders = uint8_images(module.render_views(cameras, expressions))
    for relpath, image in zip(test.relpaths, renders):
        write_png(run_dir / "renders" / relpath, image, source=f"{cfg.model.name} render of {relpath}")
    if expressions is not None:
        write_video(run_dir / "test.mp4", renders, fps=SEQUENCE_FPS)
    images = image_metrics(torch.from_numpy(np.stack(renders)).float() / 255.0, test.rgb)

    source = instantiate(cfg.data.source)
    base = load_frames(source.root, "test", datamodule.background, datamodule.downscale, cache=False)
    target = target_image(cfg, source)
    faces = face_metrics(
        renders,
        target,
        instantiate(cfg.identity),
        FaceLandmarker(),
        references=uint8_images(base.rgb),
        yaws_deg=head_yaws(Path(datamodule.root), test.cameras),
        portrait=base_portrait(Path(source.root), Path(datamodule.root), datamodule.background),
    )
    train_cameras = datamodule.frames("train").cameras
    turn = cfg.evaluate.get("orbit", "auto")  # configs of older runs have no evaluate.orbit
    orbit = orbit_cameras(train_cameras, cfg.evaluate.orbit_frames, turn=turn).to(module.device)
    video = run_dir / "orbit.mp4"
    write_video(video, (uint8_images(module.render_views(orbit[i]))[0] for i in range(len(orbit))), fps=ORBIT_FPS)

    to_target = faces.pop("identity_distance_to_target_per_image")
    sheet = run_dir / "summary.png"
    views = [
        SheetView(Path(relpath).stem, b, s, r, per_image["psnr"], d)
        for relpath, b, s, r, per_image, d in zip(
            test.relpaths, uint8_images(base.rgb), uint8_images(test.rgb), renders, images["per_image"], to_target
        )
    ]
    scores = {
        "test.psnr": images["psnr"],
        "test.ssim": images["ssim"],
        "test.lpips": images["lpips"],
        "test.lpips_reason": images["lpips_reason"],
        **{f"test.{k}": v for k, v in faces.items()},
        "train_seconds": round(module.train_seconds, 1),
        "steps": steps,
        **module.model_stats(),
    }
    metrics = {
        **scores,
        "data": cfg.data.name,
        "swap": cfg.swap.name,
        "model": cfg.model.name,
        "test_pose_fit": pose_fit,
        "orbit_video": str(video),
        "contact_sheet": str(sheet),
        "per_view": [
            {"view": relpath, "psnr": round(v.psnr, 4), "identity_distance_to_target": v.identity_distance}
            for relpath, v in zip(test.relpaths, views)
        ],
        **(exported := module.export(run_dir)),
        **export_viewer_page(run_dir, exported, datamodule, cfg.model.name, cfg.data.name in NAMED_EXPRESSION_DATA),
        "synthetic": synthetic_metadata(),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    contact = write_contact_sheet(sheet, views, target, headline(metrics))
    write_json(run_dir / "metrics.json", metrics)
    numeric = {k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    log_scalars(loggers, numeric, steps)
    log_images(loggers, "test/renders", renders, steps)
    log_video(loggers, "test/orbit", video, steps)
    log_images(loggers, "test/contact_sheet", [contact.image], steps)
    # The LPIPS reason is a paragraph of instructions: metrics.json holds it, the log line does not.
    shown = {k: v for k, v in scores.items() if v is not None and k != "test.lpips_reason"}
    log.info("metrics (%s): %s", run_dir / "metrics.json", shown)
    return metrics
