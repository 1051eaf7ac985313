"""Swap every frame of the configured dataset with the target photo: `python swap.py swap=landmark`."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
# Before torch loads: busy-waiting OpenMP threads slow torch ~10x when another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from implicit_deepfake.core.config import register_resolvers

register_resolvers()  # before Hydra resolves the config (also for --cfg job --resolve)


@hydra.main(version_base="1.3", config_path="conf", config_name="swap")
def main(cfg: DictConfig) -> None:
    from implicit_deepfake.core.cli import guarded
    from implicit_deepfake.pipeline import swap_stage

    guarded(swap_stage, cfg)


if __name__ == "__main__":
    main()
