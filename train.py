"""Train a 3D/4D deepfake: `python train.py [model=...] [data=synthetic|tina] [swap=...]`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
# Before torch loads: busy-waiting OpenMP threads slow torch ~10x when another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from implicit_deepfake.core.config import register_resolvers

register_resolvers()  # before Hydra resolves the config (also for --cfg job --resolve)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from implicit_deepfake.core.cli import guarded
    from implicit_deepfake.pipeline import train
    from implicit_deepfake.reports.summary import objective

    # The value of cfg.optimized_metric, for a sweeper that optimises it (hparams_search=gaussians_optuna).
    return guarded(lambda c: objective(train(c), c.optimized_metric), cfg)


if __name__ == "__main__":
    main()
