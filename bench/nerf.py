"""Rays per second of model=nerf and model=nerf_fast, training and rendering, on this machine.

    python bench/nerf.py                                  # both presets, default data (built if missing)
    python bench/nerf.py --presets nerf_fast --steps 3000 # a whole nerf_fast run: its test PSNR too
    python bench/nerf.py --threads 1                      # on a machine shared with another job

Each preset is trained by Lightning as train.py does (its config, the default dataset's rays, no
logger, validation or checkpoints) for --steps steps (nerf: --nerf-steps); "train rays/s" is the
batch size over the median step time of the second half of the steps (nerf_fast has skipped empty
space by then), "samples/ray" the field evaluations with gradients per ray. Then --views test views
are rendered (nerf's at a quarter of the size: a full 128 px view takes it minutes): "render rays/s"
is their pixels over the seconds render_views took, "PSNR" theirs against the test frames
(meaningful only after a full run's steps).

Measured on the 2-core CPU of the project machine (torch 2.13, 2 threads), 128 px default data:
see docs/benchmarks.md, "NeRF".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(REPO))


class StepTimer(pl.Callback):
    """Wall time of every training step and the samples per ray it logged."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.samples: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.seconds.append(time.perf_counter() - self._start)
        self.samples.append(float(trainer.callback_metrics.get("train/samples_per_ray", float("nan"))))


def bench(preset: str, steps: int, views: int, render_scale: float, root: Path) -> dict:
    from implicit_deepfake.lit.nerf import mse_to_psnr
    from implicit_deepfake.pipeline import swap_stage

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        overrides = [
            f"model={preset}",
            f"trainer.max_steps={steps}",
            "logger=none",
            "progress=false",
            f"run_dir={root}/{preset}",
        ]
        cfg = compose("train", overrides=overrides)
    swap_stage(cfg)
    pl.seed_everything(cfg.seed, verbose=False)
    datamodule, module = instantiate(cfg.datamodule), instantiate(cfg.model.module)
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
        default_root_dir=str(root),
    )
    trainer.fit(module, datamodule=datamodule)
    half = slice(len(timer.seconds) // 2, None)
    step_seconds = statistics.median(timer.seconds[half])

    module.eval()
    test = datamodule.frames("test")
    start = time.perf_counter()
    renders = module.render_views(test.cameras[:views].scaled(render_scale))
    render_seconds = time.perf_counter() - start
    psnr = float(mse_to_psnr(((renders - test.rgb[:views]) ** 2).mean())) if render_scale == 1 else float("nan")
    return {
        "preset": preset,
        "steps": steps,
        "batch_rays": cfg.datamodule.batch_size,
        "step_seconds": round(step_seconds, 4),
        "train_rays_per_s": round(cfg.datamodule.batch_size / step_seconds),
        "samples_per_ray": round(statistics.mean(timer.samples[half]), 1),
        "train_seconds": round(sum(timer.seconds), 1),
        "render_rays_per_s": round(renders.shape[0] * renders.shape[1] * renders.shape[2] / render_seconds),
        "test_psnr": round(psnr, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["nerf_fast", "nerf"])
    parser.add_argument("--steps", type=int, default=400, help="training steps of nerf_fast")
    parser.add_argument("--nerf-steps", type=int, default=10, help="training steps of the paper's nerf")
    parser.add_argument("--views", type=int, default=2, help="test views to render")
    parser.add_argument(
        "--nerf-render-scale", type=float, default=0.25, help="nerf renders the views this much smaller (no PSNR)"
    )
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for preset in args.presets:
            paper = preset == "nerf"
            steps, scale = (args.nerf_steps, args.nerf_render_scale) if paper else (args.steps, 1.0)
            rows.append(bench(preset, steps, args.views, scale, Path(root)))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    header = ("preset", "steps", "batch_rays", "train_rays_per_s", "samples_per_ray", "render_rays_per_s", "test_psnr")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[k]) for k in header))


if __name__ == "__main__":
    main()
