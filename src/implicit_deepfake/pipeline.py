"""The stages behind the entry points, as testable functions of a composed config."""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from implicit_deepfake.data.blender import load_blender_split
from implicit_deepfake.faces import FaceLandmarker
from implicit_deepfake.io import composite, read_image, synthetic_metadata, write_json
from implicit_deepfake.metrics.face_report import face_metrics
from implicit_deepfake.swap.runner import run_swap

log = logging.getLogger(__name__)


def prepare_source(cfg: DictConfig):
    """The dataset source of `cfg.data`, ready on disk (built if it is generated)."""
    source = instantiate(cfg.data.source)
    source.prepare()
    return source


def swap_stage(cfg: DictConfig) -> tuple[object, Path]:
    """Build/check the base dataset and swap it (skipping frames already done).

    Returns the dataset source and the swapped dataset's root."""
    source = prepare_source(cfg)
    manifest = run_swap(
        source.root,
        source.target_photo,
        cfg.swap.output_dir,
        swapper=instantiate(cfg.swap.swapper),
        embedder=instantiate(cfg.identity),
        on_no_face=cfg.swap.on_no_face,
        background=tuple(cfg.data.background),
        progress=cfg.progress,
    )
    log.info("swapped dataset: %s (%s)", cfg.swap.output_dir, manifest["summary"])
    return source, Path(cfg.swap.output_dir)


def train(cfg: DictConfig) -> dict:
    """The whole chain. Models (Gaussians, NeRF) land with the next issues; today: data + swap."""
    _, swapped = swap_stage(cfg)
    log.warning("Training models is not part of this release yet: stopping after the swap stage (%s).", swapped)
    return {"swapped_dir": str(swapped)}


def evaluate(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Face metrics of the swapped dataset's `cfg.split` frames -> `<run_dir>/metrics.json`."""
    source, swapped = swap_stage(cfg)
    background = tuple(cfg.data.background)
    images = [composite(im, background) for im in load_blender_split(swapped, cfg.split).images]
    base = [composite(im, background) for im in load_blender_split(source.root, cfg.split).images]
    report = face_metrics(
        images,
        composite(read_image(source.target_photo)),
        instantiate(cfg.identity),
        FaceLandmarker(),
        references=base,
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
