"""Evaluate: face metrics of the swapped test views -> metrics.json in the run folder."""

import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
# Before torch loads: busy-waiting OpenMP threads slow torch ~10x when another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from implicit_deepfake.core.config import register_resolvers

register_resolvers()  # before Hydra resolves the config (also for --cfg job --resolve)


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from implicit_deepfake.core.cli import guarded
    from implicit_deepfake.pipeline import evaluate

    guarded(evaluate, cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
