"""Run folders: what a run is (run.json), which run `ckpt_path=last` resumes, and loading a saved run."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, cast

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from implicit_deepfake.core.config import target_key
from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_json, write_json
from implicit_deepfake.core.trust import check_buildable, load_checkpoint
from implicit_deepfake.data.datamodule import FrameDataModule
from implicit_deepfake.lit.base import SceneModule
from implicit_deepfake.metrics.identity import FaceEmbedder

LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"


def run_key(cfg: DictConfig) -> dict[str, str]:
    """What must match for a run to continue another: the data, the swap, the target and the model."""
    target = target_key(cfg.get("target"), cfg.get("target_face", 0))
    return {"data": cfg.data.name, "swap": cfg.swap.name, "target": target, "model": cfg.model.name}


def write_run_info(run_dir: Path, cfg: DictConfig, **extra: object) -> None:
    write_json(run_dir / "run.json", {**run_key(cfg), **extra})


def latest_run(log_dir: Path, key: dict[str, str]) -> Path | None:
    """The run folder under `log_dir` with the newest last.ckpt whose run.json matches `key`."""
    candidates = []
    for ckpt in log_dir.glob(f"**/{LAST_CHECKPOINT.as_posix()}"):
        run_dir = ckpt.parent.parent
        info = run_dir / "run.json"
        if info.is_file() and all(read_json(info).get(k) == v for k, v in key.items()):
            candidates.append((ckpt.stat().st_mtime, run_dir))
    return max(candidates)[1] if candidates else None


def resolve_checkpoint(cfg: DictConfig, run_dir: Path) -> tuple[Path | None, Path]:
    """(checkpoint to resume or None, folder the run writes to) for `cfg.ckpt_path`."""
    if cfg.ckpt_path is None:
        return None, run_dir
    if cfg.ckpt_path == "last":
        log_dir = Path(cfg.paths.log_dir) / cfg.task_name
        previous = latest_run(log_dir, run_key(cfg))
        if previous is None:
            raise DeepfakeError(
                f"ckpt_path=last: no earlier run of {run_key(cfg)} with {LAST_CHECKPOINT} under {log_dir}; "
                "start a new run without ckpt_path, or give ckpt_path=<file.ckpt>."
            )
        return previous / LAST_CHECKPOINT, previous
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise DeepfakeError(f"ckpt_path={ckpt}: no such checkpoint file; give a .ckpt path or ckpt_path=last.")
    return ckpt, ckpt.parent.parent if ckpt.parent.name == "checkpoints" else run_dir


def _run_config(ckpt: Path) -> tuple[DictConfig, Path]:
    run_dir = ckpt.parent.parent
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise DeepfakeError(
            f"{saved} is missing: ckpt= must be <run folder>/checkpoints/<name>.ckpt of a train.py run."
        )
    return cast(DictConfig, OmegaConf.load(saved)), run_dir


class TrainedRun(NamedTuple):
    """A saved run, loaded: its model (weights in place), DataModule, config, folder and step count."""

    module: SceneModule
    datamodule: FrameDataModule
    cfg: DictConfig
    run_dir: Path
    steps: int


def load_run(ckpt: str, log_dir: str | Path) -> TrainedRun:
    """The run of `ckpt` (a train.py checkpoint file, or `last`: the newest run under `log_dir`/train)."""
    if ckpt == "last":
        previous = latest_run(Path(log_dir) / "train", {})
        if previous is None:
            raise DeepfakeError(f"ckpt=last: no train.py run with {LAST_CHECKPOINT} under {log_dir}/train.")
        path = previous / LAST_CHECKPOINT
    else:
        path = Path(ckpt)
        if not path.is_file():
            raise DeepfakeError(f"ckpt={path}: no such checkpoint file.")
    run_cfg, run_dir = _run_config(path)
    # Someone else's run folder: build only this package's classes, read the checkpoint as data.
    check_buildable(
        run_cfg,
        run_dir / "config.yaml",
        {
            "model.module": SceneModule,
            "datamodule": FrameDataModule,
            "data.source": object,
            "identity": FaceEmbedder,
        },
    )
    checkpoint = load_checkpoint(path)
    module = instantiate(run_cfg.model.module)
    module.on_load_checkpoint(checkpoint)
    module.load_state_dict(checkpoint["state_dict"])
    return TrainedRun(module, instantiate(run_cfg.datamodule), run_cfg, run_dir, int(checkpoint.get("global_step", 0)))
