"""Look at a trained avatar: `python view.py ckpt=<file.ckpt>|last` serves it in the browser (viser);
`export=true` writes the run's self-contained viewer.html instead (Gaussians runs)."""

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parent))
# Before torch loads: busy-waiting OpenMP threads slow torch ~10x when another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from implicit_deepfake.core.config import register_resolvers

register_resolvers()  # before Hydra resolves the config (also for --cfg job --resolve)


@hydra.main(version_base="1.3", config_path="conf", config_name="view")
def main(cfg: DictConfig) -> None:
    from implicit_deepfake.core.cli import guarded
    from implicit_deepfake.view.run import view

    guarded(view, cfg)


if __name__ == "__main__":
    main()
