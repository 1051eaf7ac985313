"""Every experiment preset, sweep (hparams_search), launcher and trainer=ddp composes into the values
it promises, through Hydra's compose API and through train.py's command line (`--cfg`)."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class, instantiate
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.pipeline import check_ddp_launch
from tests.conftest import REPO

WHITE = [1.0, 1.0, 1.0]
# What each preset sets: dotted config key -> value.
EXPECTED = {
    "tina_gaussians": {
        "data.name": "tina", "model.name": "gaussians", "trainer.accelerator": "gpu", "trainer.max_steps": 30000,
        "data.background": WHITE, "data.downscale": 1, "datamodule.mode": "images",
        "model.module.sh_degree_interval": 1000, "model.module.init_points": 100000,
        "model.module.densify.refine_start_iter": 500, "model.module.densify.refine_stop_iter": 15000,
        "model.module.densify.reset_every": 3000, "trainer.val_check_interval": 7000,
        "callbacks.model_checkpoint.every_n_train_steps": 1000, "evaluate.orbit_frames": 120,
    },
    "tina_nerf": {
        "data.name": "tina", "model.name": "nerf", "trainer.accelerator": "gpu", "data.background": WHITE,
        "data.downscale": 2, "datamodule.mode": "rays", "callbacks.model_checkpoint.every_n_train_steps": 5000,
    },
    "nerface_4d": {
        "data.name": "nerface", "model.name": "nerface_paper", "trainer.accelerator": "gpu", "datamodule.mode": "rays",
    },
    "fast_gaussians": {
        "data.name": "synthetic", "model.name": "gaussians", "trainer.accelerator": "cpu", "data.background": WHITE,
    },
    "fast_nerf": {
        "data.name": "synthetic", "model.name": "nerf_fast", "trainer.accelerator": "cpu", "datamodule.mode": "rays",
    },
    "fast_nerface": {
        "data.name": "synthetic4d", "model.name": "nerface", "trainer.accelerator": "cpu", "datamodule.mode": "rays",
    },
    "fast_gaussian_avatar": {
        "data.name": "synthetic4d", "model.name": "gaussian_avatar", "trainer.accelerator": "cpu",
        "datamodule.mode": "images", "datamodule.batch_size": 1, "model.module.pose_refine": False,
    },
}  # fmt: skip
LAUNCHERS = {
    "parallel": ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {"n_jobs": 2}),
    "joblib": ("hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", {"n_jobs": -1}),
    "slurm": (
        "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher",
        {"timeout_min": 720, "cpus_per_task": 8, "gpus_per_node": 1, "tasks_per_node": 1, "mem_gb": 64},
    ),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher", {"timeout_min": 60}),
}
STAMP = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"


def compose_train(tmp_path: Path, *overrides: str):
    """train.yaml with its hydra node (sweeper, launcher, sweep folder), paths under tmp_path."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.root_dir={tmp_path}", f"run_dir={tmp_path}/run", *overrides],
            return_hydra_config=True,
        )


def test_every_experiment_is_listed_here():
    assert sorted(p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("experiment", sorted(EXPECTED))
def test_experiment_composes_into_its_preset(tmp_path: Path, experiment: str):
    cfg = compose_train(tmp_path, f"experiment={experiment}")
    for key, value in EXPECTED[experiment].items():
        assert OmegaConf.select(cfg, key) == value, key
    assert cfg.swap.name == "landmark" and cfg.hydra.mode is None  # one run, not a sweep
    assert cfg.group == experiment and cfg.logger.wandb.group == experiment
    assert list(cfg.logger.wandb.tags) == [cfg.model.name, cfg.data.name, "landmark"]
    assert cfg.swap.output_dir == f"{tmp_path}/data/swapped/{cfg.data.name}__landmark__famous"
    module = instantiate(cfg.model.module)
    assert type(module).__module__.startswith("implicit_deepfake.lit.") and module.hparams["seed"] == 0


def test_command_line_overrides_win_over_an_experiment(tmp_path: Path):
    cfg = compose_train(tmp_path, "experiment=tina_gaussians", "swap=none", "trainer.max_steps=10")
    assert (cfg.swap.name, cfg.trainer.max_steps, cfg.data.name) == ("none", 10, "tina")


def test_ablation_sweeps_model_swap_and_resolution(tmp_path: Path):
    cfg = compose_train(tmp_path, "hparams_search=ablation")
    params = dict(cfg.hydra.sweeper.params)
    assert params == {
        "experiment": "fast_gaussians,fast_nerf,fast_nerface",
        "swap": "landmark,none",
        "data.downscale": "1,2",
    }
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert cfg.hydra.sweeper._target_ == "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
    assert re.fullmatch(f"ablation_{STAMP}", cfg.group) and cfg.logger.wandb.group == cfg.group
    assert cfg.hydra.sweep.dir == f"{tmp_path}/logs/train/multiruns/{cfg.group}"


@pytest.mark.parametrize(
    "experiment,swap,downscale",
    list(itertools.product(["fast_gaussians", "fast_nerf", "fast_nerface"], ["landmark", "none"], [1, 2])),
)
def test_each_ablation_job_composes(tmp_path: Path, experiment: str, swap: str, downscale: int):
    """The overrides the sweeper gives each of the 12 jobs."""
    cfg = compose_train(
        tmp_path, "hparams_search=ablation", f"experiment={experiment}", f"swap={swap}", f"data.downscale={downscale}"
    )
    assert cfg.model.name == EXPECTED[experiment]["model.name"] and cfg.data.name == EXPECTED[experiment]["data.name"]
    assert (cfg.swap.name, cfg.data.downscale, cfg.datamodule.downscale) == (swap, downscale, downscale)
    assert cfg.trainer.accelerator == "cpu" and cfg.group.startswith("ablation_")


@pytest.mark.parametrize("swap", ["landmark", "none", "external"])
def test_ablation_takes_externally_swapped_frames(tmp_path: Path, swap: str):
    """The README's command: experiment=fast_gaussians,fast_nerf swap=landmark,none,external ++swap.frames_dir=..."""
    cfg = compose_train(
        tmp_path, "hparams_search=ablation", "experiment=fast_nerf", f"swap={swap}", "++swap.frames_dir=/ghost"
    )
    assert cfg.swap.name == swap and cfg.swap.output_dir == f"{tmp_path}/data/swapped/synthetic__{swap}__famous"
    assert cfg.swap.swapper.get("frames_dir") == ("/ghost" if swap == "external" else None)


def test_optuna_search_tunes_the_gaussians_for_test_psnr(tmp_path: Path):
    cfg = compose_train(tmp_path, "hparams_search=gaussians_optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert (sweeper.direction, sweeper.n_trials, sweeper.n_jobs, sweeper.storage) == ("maximize", 20, 1, None)
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed == 0
    assert sweeper.sampler.n_startup_trials == 8
    assert cfg.optimized_metric == "test.psnr" and re.fullmatch(f"gaussians_optuna_{STAMP}", cfg.group)
    assert (cfg.model.name, cfg.data.name, cfg.trainer.accelerator) == (
        "gaussians",
        "synthetic",
        "cpu",
    )  # fast_gaussians
    assert cfg.hydra.sweep.dir == f"{tmp_path}/logs/train/multiruns/{cfg.group}"
    assert len(sweeper.params) == 6
    for key, value in sweeper.params.items():
        # The plugin's own parser: a log-uniform range around the preset's value of a real key.
        override = OverridesParser.create().parse_overrides([f"{key}={value}"])[0]
        distribution = create_optuna_distribution_from_override(override)
        default = OmegaConf.select(cfg, key)
        assert type(distribution).__name__ == "LogUniformDistribution", key
        assert distribution.low < default < distribution.high, (key, default)


def test_optuna_search_runs_on_another_experiment(tmp_path: Path):
    cfg = compose_train(tmp_path, "hparams_search=gaussians_optuna", "experiment=tina_gaussians")
    assert (cfg.data.name, cfg.trainer.max_steps) == ("tina", 30000)
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.group.startswith("gaussians_optuna_")


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_launchers_compose_on_the_ablation(tmp_path: Path, launcher: str):
    target, values = LAUNCHERS[launcher]
    cfg = compose_train(tmp_path, "hparams_search=ablation", f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_ == target
    assert get_class(target).__name__ in ("JoblibLauncher", "SlurmLauncher")  # the plugin is installed
    for key, value in values.items():
        assert cfg.hydra.launcher[key] == value, key
    if "slurm" in launcher:
        assert cfg.hydra.launcher.submitit_folder == f"{tmp_path}/logs/train/multiruns/{cfg.group}/.submitit/%j"


def test_trainer_ddp_is_lightning_ddp_on_every_gpu(tmp_path: Path):
    cfg = compose_train(tmp_path, "trainer=ddp", "model=nerf_fast")
    assert (cfg.trainer.strategy, cfg.trainer.accelerator, cfg.trainer.devices) == ("ddp", "gpu", "auto")
    gpu = compose_train(tmp_path, "trainer=gpu", "model=nerf_fast").trainer
    ignore = ("strategy", "devices")
    assert {k: v for k, v in cfg.trainer.items() if k not in ignore} == {
        k: v for k, v in gpu.items() if k not in ignore
    }
    assert cfg.trainer.max_steps == gpu.max_steps > 0  # the model's, as with trainer=gpu


def test_ddp_in_a_local_multirun_is_refused():
    """Lightning would start each extra DDP process by re-running the whole sweep's command line."""
    ddp = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, logger=False, enable_progress_bar=False)
    with pytest.raises(DeepfakeError, match="hydra/launcher=slurm"):
        check_ddp_launch(ddp, multirun=True)
    check_ddp_launch(ddp, multirun=False)
    check_ddp_launch(pl.Trainer(accelerator="cpu", devices=1, logger=False), multirun=True)


def _cli_config(*args: str) -> dict:
    result = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return OmegaConf.to_container(OmegaConf.create(result.stdout))


def test_train_py_prints_an_experiments_job_config(tmp_path: Path):
    job = _cli_config("experiment=tina_gaussians", f"paths.root_dir={tmp_path}", "--cfg", "job", "--resolve")
    assert (job["trainer"]["max_steps"], job["data"]["name"], job["model"]["name"]) == (30000, "tina", "gaussians")
    assert job["logger"]["wandb"]["group"] == "tina_gaussians" and job["trainer"]["accelerator"] == "gpu"


def test_train_py_prints_a_sweeps_slurm_config(tmp_path: Path):
    everything = _cli_config(
        "hparams_search=ablation", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
        f"paths.root_dir={tmp_path}", "--cfg", "all", "--resolve",
    )  # fmt: skip
    hydra = everything["hydra"]
    assert hydra["launcher"]["_target_"] == LAUNCHERS["slurm"][0] and hydra["launcher"]["partition"] == "gpu"
    assert hydra["sweeper"]["params"]["experiment"] == "fast_gaussians,fast_nerf,fast_nerface"
    assert hydra["sweep"]["dir"] == f"{tmp_path}/logs/train/multiruns/{everything['group']}"
    assert everything["logger"]["wandb"]["group"] == everything["group"]
