"""Every config in conf/ composes and resolves; bad choices fail with Hydra's list of options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import MissingConfigException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from implicit_deepfake.core.config import target_key
from tests.conftest import REPO

GROUPS = {
    group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))
    for group in ("data", "swap", "identity", "trainer", "logger", "model")
}
PATH_DATA = ("video", "colmap", "capture")  # data sources made from the user's `data.path`


@pytest.mark.parametrize("config_name", ["train", "swap", "evaluate"])
@pytest.mark.parametrize("data", GROUPS["data"])
@pytest.mark.parametrize("swap", GROUPS["swap"])
def test_every_config_composes_and_resolves(compose_cfg, tmp_path: Path, config_name: str, data: str, swap: str):
    cfg = compose_cfg(
        config_name,
        [f"data={data}", f"swap={swap}"]
        + (["swap.frames_dir=/frames"] if swap == "external" else [])
        + (["data.path=/clips/talk.mp4"] if data in PATH_DATA else []),
    )
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # data=video's, colmap's and capture's datasets are named after data.path (its name and a hash of it)
    name = f"{data}-{target_key('/clips/talk.mp4')}" if data in PATH_DATA else data
    assert resolved["swap"]["output_dir"] == f"{tmp_path}/data/swapped/{name}__{swap}__famous"
    assert resolved["data"]["source"]["root"] == f"{tmp_path}/data/{data + '/' if data in PATH_DATA else ''}{name}"
    assert resolved["swap"]["swapper"]["_target_"].startswith("implicit_deepfake.swap.")


@pytest.mark.parametrize("identity", GROUPS["identity"])
def test_identity_backends_compose(compose_cfg, identity: str):
    assert compose_cfg("swap", [f"identity={identity}"]).identity._target_.startswith("implicit_deepfake.metrics.")


def test_unknown_group_value_lists_the_options(compose_cfg):
    with pytest.raises(MissingConfigException, match="swap/deepfacelab") as err:
        compose_cfg("swap", ["swap=deepfacelab"])
    assert "landmark" in str(err.value) and "insightface" in str(err.value)


def test_entry_point_reports_unknown_group_value():
    result = subprocess.run(
        [sys.executable, "swap.py", "data=nonexistent"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "Could not find 'data/nonexistent'" in result.stderr and "synthetic" in result.stderr


@pytest.mark.parametrize("trainer", GROUPS["trainer"])
@pytest.mark.parametrize("logger", GROUPS["logger"])
@pytest.mark.parametrize("model", GROUPS["model"])
def test_training_groups_compose_and_instantiate(compose_cfg, tmp_path: Path, trainer: str, logger: str, model: str):
    from hydra.utils import instantiate

    cfg = compose_cfg("train", [f"trainer={trainer}", f"logger={logger}", f"model={model}"])
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["trainer"]["accelerator"] == {"cpu": "cpu", "gpu": "gpu", "ddp": "gpu"}[trainer]
    assert resolved["trainer"]["default_root_dir"] == f"{tmp_path}/run"
    assert set(resolved.get("logger") or {}) == ({logger} if logger != "none" else set())
    assert resolved["datamodule"]["root"] == resolved["swap"]["output_dir"]
    module = instantiate(cfg.model.module)
    assert module.hparams["seed"] == cfg.seed
    for logger_cfg in (cfg.get("logger") or {}).values():
        assert logger_cfg.save_dir == cfg.run_dir


FOUR_D_DATA = ("synthetic4d", "video", "nerface")  # talking-head videos


@pytest.mark.parametrize("data", GROUPS["data"])
def test_each_dataset_picks_its_model_unless_one_is_chosen(compose_cfg, data: str):
    """model=auto/${data}: the real-time 4D head for a video, 3D Gaussians for views around a head;
    a model named on the command line or by a preset wins."""
    path = ["data.path=/clips/talk.mp4"] if data in PATH_DATA else []
    picked = compose_cfg("train", [f"data={data}", *path]).model.name
    assert picked == ("gaussian_avatar" if data in FOUR_D_DATA else "gaussians")
    assert compose_cfg("train", [f"data={data}", "model=nerface", *path]).model.name == "nerface"
    assert compose_cfg("train", [f"data={data}", "experiment=fast_nerface", *path]).model.name == "nerface"


@pytest.mark.parametrize(
    ("data", "moving"), [("synthetic", False), ("tina", False), ("synthetic4d", True), ("nerface", True)]
)
def test_a_video_swap_keeps_each_frames_eyes_mouth_and_light(compose_cfg, data: str, moving: bool):
    """A talking head's frames each have their own gaze, mouth and light, and take the target's face
    proportions, outline and all; a multi-view head never moves: it takes the target's eyes and mouth
    (and its views' light is already one), and its inner features' proportions, keeping its outline."""
    swapper = instantiate(compose_cfg("swap", [f"data={data}"]).swap.swapper)
    assert swapper.keep_eyes is moving and swapper.relight is moving and swapper.keep_mouth is moving
    assert swapper.reshape == 1.0 and swapper.reshape_outline is moving
