"""A run folder from someone else: a checkpoint or a config.yaml that would run code is refused,
naming the file, and nothing runs."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.trust import check_buildable, load_checkpoint
from implicit_deepfake.pipeline import evaluate_checkpoint
from tests.conftest import REPO, compose_evaluate, compose_train


class Payload:
    """Unpickling this creates `marker`: the stand-in for an attacker's command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def run_folder(root: Path, **config_changes: object) -> Path:
    """A train.py run folder (config.yaml + checkpoints/last.ckpt) as someone might share it."""
    run = root / "shared_run"
    cfg = compose_train(root, "shared_run")
    for key, value in config_changes.items():
        OmegaConf.update(cfg, key, value, force_add=True)
    (run / "checkpoints").mkdir(parents=True)
    OmegaConf.save(cfg, run / "config.yaml")
    return run


def test_a_checkpoint_whose_unpickling_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run = run_folder(tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 1, "extra": Payload(marker)}, ckpt)
    with pytest.raises(DeepfakeError, match=rf"{ckpt}: refused: .*could run its author's code"):
        evaluate_checkpoint(compose_evaluate(tmp_path, f"ckpt={ckpt}"))
    assert not marker.exists()
    # The same through the command line a user types: exit 1 with the message, nothing run.
    result = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), f"ckpt={ckpt}", f"paths.root_dir={tmp_path}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 1 and "refused" in result.stderr + result.stdout and not marker.exists()


def test_a_config_that_would_build_torch_load_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "payload.pkl"
    payload.write_bytes(pickle.dumps(Payload(marker)))
    run = run_folder(tmp_path, datamodule={"_target_": "torch.load", "f": str(payload), "weights_only": False})
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {}, "global_step": 1}, ckpt)
    with pytest.raises(DeepfakeError, match=rf"{run / 'config.yaml'}: `datamodule._target_: torch.load` is refused"):
        evaluate_checkpoint(compose_evaluate(tmp_path, f"ckpt={ckpt}"))
    assert not marker.exists()


@pytest.mark.parametrize(
    ("node", "target", "message"),
    [
        ("model.module.optimizer", "os.system", "model.module.optimizer._target_: os.system` is refused"),
        ("model.module", "implicit_deepfake.core.io.write_json", "refused"),  # a function of ours, not a class
        ("model.module", "implicit_deepfake.data.datamodule.FrameDataModule", "is not a SceneModule"),
        ("identity", "${oc.env:HOME}", "refused"),
    ],
)
def test_only_this_packages_classes_of_the_right_kind_are_built(
    tmp_path: Path, node: str, target: str, message: str
) -> None:
    from implicit_deepfake.data.datamodule import FrameDataModule
    from implicit_deepfake.lit.base import SceneModule
    from implicit_deepfake.metrics.identity import FaceEmbedder

    cfg = compose_train(tmp_path, "x", "model=nerf_fast")
    OmegaConf.update(cfg, f"{node}._target_", target, force_add=True)
    kinds = {"model.module": SceneModule, "datamodule": FrameDataModule, "identity": FaceEmbedder}
    with pytest.raises(DeepfakeError, match=message):
        check_buildable(cfg, "config.yaml", kinds)
    check_buildable(compose_train(tmp_path, "y", "model=nerf_fast"), "config.yaml", kinds)  # the real one passes


def test_a_train_checkpoint_loads_as_data(tmp_path: Path) -> None:
    ckpt = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": {"w": torch.ones(3)}, "global_step": 7, "strategy_state": {"count": torch.zeros(2)}}, ckpt
    )
    loaded = load_checkpoint(ckpt)
    assert loaded["global_step"] == 7 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(DeepfakeError, match="junk.ckpt: not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.ckpt")
