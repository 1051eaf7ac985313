"""train.py's chain with model=nerf_fast and model=nerf on a tiny built avatar: PSNR rises, the run
folder holds evaluate.py's outputs, evaluate.py re-evaluates the saved run, a stopped run resumes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from implicit_deepfake.data.datamodule import load_frames
from implicit_deepfake.lit.nerf import LitNeRF, mse_to_psnr
from implicit_deepfake.pipeline import evaluate, train
from tests.conftest import TINY_AVATAR, compose_evaluate, compose_train

FAST = [
    *TINY_AVATAR,
    "model=nerf_fast",
    "trainer.max_steps=150",
    "trainer.val_check_interval=75",
    "trainer.log_every_n_steps=1",
    "datamodule.batch_size=1024",
]
# model=nerf as configured, shrunk to a few CPU seconds: narrower MLPs, fewer samples and rays.
PAPER = [
    *TINY_AVATAR,
    "model=nerf",
    "trainer.max_steps=60",
    "trainer.val_check_interval=60",
    "trainer.log_every_n_steps=1",
    "datamodule.batch_size=256",
    "model.module.model.coarse.width=64",
    "model.module.model.coarse.depth=4",
    "model.module.model.coarse.skips=[2]",
    "model.module.model.n_coarse=24",
    "model.module.model.n_fine=24",
    "model.module.chunk=2304",
    "model.module.lr.coarse=2e-3",
    "model.module.lr.fine=2e-3",
]


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of a logged key over every session of the run (one CSV version each)."""
    rows = [row for path in sorted(run_dir.glob("csv/version_*/metrics.csv")) for row in csv.DictReader(path.open())]
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nerf")


@pytest.fixture(scope="module")
def fast(root):
    cfg = compose_train(root, "fast", *FAST)
    return cfg, train(cfg)


def test_nerf_fast_training_raises_psnr(fast):
    cfg, metrics = fast
    run_dir = Path(cfg.run_dir)
    psnr = [v for _, v in logged(run_dir, "train/psnr")]
    assert len(psnr) == 150 and mean(psnr[-10:]) > mean(psnr[:10]) + 3.0, (mean(psnr[:10]), mean(psnr[-10:]))
    val = [v for _, v in logged(run_dir, "val/psnr")]
    assert len(val) == 2 and val[1] > val[0]
    # Better than rendering nothing (the white background) on the unseen test views.
    test = load_frames(cfg.datamodule.root, "test", (1.0, 1.0, 1.0))
    blank = float(mse_to_psnr(((test.rgb - 1.0) ** 2).mean()))
    assert metrics["test.psnr"] > blank + 2.0, (metrics["test.psnr"], blank)
    # Empty-space skipping: the occupancy grid has carved most of the box away.
    assert metrics["occupied_fraction"] < 0.5


def test_nerf_fast_run_folder_holds_evaluate_outputs(fast):
    cfg, _metrics = fast
    run_dir = Path(cfg.run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test.psnr", "test.ssim", "test.face_detection_rate", "train_seconds", "steps", "num_parameters"):
        assert key in saved, key
    assert saved["steps"] == 150 and saved["model"] == "nerf_fast" and saved["train_seconds"] > 0
    assert (run_dir / "renders" / "test" / "r_0.png").is_file() and (run_dir / "orbit.mp4").stat().st_size > 1000


def test_evaluate_py_reproduces_the_saved_run(fast, root, tmp_path):
    cfg, metrics = fast
    again = evaluate(compose_evaluate(root, f"ckpt={cfg.run_dir}/checkpoints/last.ckpt"), tmp_path)
    assert again["steps"] == 150 and again["test.psnr"] == pytest.approx(metrics["test.psnr"], abs=1e-3)


def test_stopped_run_resumes_from_its_checkpoint(fast, root):
    short = compose_train(root, "stopped", *FAST, "trainer.max_steps=20", "model.name=nerf_fast_resume")
    first = train(short)
    module = LitNeRF.load_from_checkpoint(
        Path(short.run_dir) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False
    )
    resumed = train(
        compose_train(root, "new", *FAST, "ckpt_path=last", "trainer.max_steps=40", "model.name=nerf_fast_resume")
    )
    assert resumed["steps"] == 40 and Path(resumed["config"]["run_dir"]) == Path(short.run_dir)
    assert resumed["train_seconds"] > first["train_seconds"]
    assert sorted(s for s, _ in logged(Path(short.run_dir), "train/loss")) == list(range(40))
    # The checkpoint held the scene box and the occupancy grid, not just the field.
    assert float(module.box_radius) != 1.0 and not bool(module.model.occupancy.occupied.all())


def test_paper_nerf_training_raises_psnr(root):
    cfg = compose_train(root, "paper", *PAPER)
    metrics = train(cfg)
    psnr = [v for _, v in logged(Path(cfg.run_dir), "train/psnr")]
    assert len(psnr) == 60 and mean(psnr[-10:]) > mean(psnr[:10]) + 3.0, (mean(psnr[:10]), mean(psnr[-10:]))
    assert metrics["test.psnr"] > 12.0 and metrics["num_parameters"] > 0
    assert torch.isfinite(torch.tensor(metrics["test.psnr"]))
