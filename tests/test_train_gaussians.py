"""train.py's chain with model=gaussians on a tiny built avatar: training improves the renders,
a stopped run resumes, a NaN loss stops cleanly, evaluate.py re-evaluates a saved run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import image_text
from implicit_deepfake.data.datamodule import load_frames
from implicit_deepfake.lit.gaussians import LitGaussians
from implicit_deepfake.models.gaussian_init import hull_points, neighbour_scales
from implicit_deepfake.models.gaussians import GaussianCloud
from implicit_deepfake.pipeline import evaluate, train
from tests.conftest import REPO, compose_evaluate

TINY = [
    "data.source.image_size=48",
    "data.source.n_train=8",
    "data.source.n_val=2",
    "data.source.n_test=2",
    "+data.source.mesh_resolution=64",
    "swap=none",
    "logger=csv",
    "trainer.max_steps=200",
    "trainer.val_check_interval=100",
    "trainer.log_every_n_steps=1",
    "model.module.init_points=2000",
    "model.module.init_opacity=0.1",
    "model.module.sh_degree_interval=10",
    "model.module.densify.refine_start_iter=10",
    "model.module.densify.refine_every=10",
    "model.module.densify.refine_stop_iter=150",
    "evaluate.orbit_frames=4",
]


def tiny_cfg(root: Path, run: str, *overrides: str):
    """TINY with `overrides` on top (an override of a TINY key replaces it)."""
    keys = {o.split("=")[0] for o in overrides}
    tiny = [o for o in TINY if o.split("=")[0] not in keys]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"paths.root_dir={root}",
                "progress=false",
                f"run_dir={root}/logs/train/runs/{run}",
                *tiny,
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("gaussians")
    cfg = tiny_cfg(root, "first")
    return root, cfg, train(cfg)


def logged(run_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of a logged key over every session of the run (one CSV version each)."""
    rows = [row for path in sorted(run_dir.glob("csv/version_*/metrics.csv")) for row in csv.DictReader(path.open())]
    return [(int(r["step"]), float(r[key])) for r in rows if r.get(key)]


def test_training_lowers_the_loss_and_beats_the_initial_cloud(trained):
    _root, cfg, metrics = trained
    run_dir = Path(cfg.run_dir)
    losses = [v for _, v in logged(run_dir, "train/loss")]
    assert len(losses) == 200 and sum(losses[-10:]) < 0.5 * sum(losses[:10])  # measured: 0.18 -> 0.05

    swapped = Path(cfg.swap.output_dir)
    train_frames, test = load_frames(swapped, "train", (1, 1, 1)), load_frames(swapped, "test", (1, 1, 1))
    points, colors = hull_points(train_frames, 2000, seed=0)
    start = GaussianCloud(3)
    start.initialize(points, colors, neighbour_scales(points), cfg.model.module.init_opacity)
    with torch.no_grad():
        rgb = torch.cat([start.render(test.cameras[i], 0, torch.ones(3))[0] for i in range(len(test.cameras))])
    psnr_start = float(-10 * torch.log10(((rgb - test.rgb) ** 2).mean()))
    assert metrics["test.psnr"] > psnr_start + 3.0, (psnr_start, metrics["test.psnr"])  # measured: 13.2 -> 17.9 dB


def test_run_folder_holds_metrics_renders_video_and_ply(trained):
    _, cfg, _metrics = trained
    run_dir = Path(cfg.run_dir)
    saved = json.loads((run_dir / "metrics.json").read_text())
    for key in ("test.psnr", "test.ssim", "test.identity_distance_to_target", "test.identity_distance_to_base",
                "test.face_detection_rate", "train_seconds", "num_gaussians"):  # fmt: skip
        assert key in saved, key
    assert saved["test.lpips"] is None or 0 <= saved["test.lpips"] <= 1
    assert saved["test.lpips"] is not None or "LPIPS" in saved["test.lpips_reason"]
    assert saved["steps"] == 200 and saved["train_seconds"] > 0 and saved["synthetic"]["AIGenerated"] == "true"
    assert saved["num_gaussians"] != 2000  # densification split, cloned or pruned
    cloud = GaussianCloud.load_ply(run_dir / "point_cloud.ply")
    assert len(cloud) == saved["num_gaussians"]
    assert image_text(run_dir / "renders" / "test" / "r_0.png")["AIGenerated"] == "true"
    assert (run_dir / "orbit.mp4").stat().st_size > 1000
    assert [s for s, _ in logged(run_dir, "val/psnr")] == [99, 199]


def test_contact_sheet_shows_the_test_renders_and_their_metrics(trained):
    _, cfg, metrics = trained
    run_dir = Path(cfg.run_dir)
    assert metrics["contact_sheet"] == str(run_dir / "summary.png")
    sheet = np.asarray(Image.open(run_dir / "summary.png").convert("RGB"))
    render = np.asarray(Image.open(run_dir / "renders" / "test" / "r_0.png").convert("RGB"))
    # The first view's render panel (48 px x 4), right of its base and swapped panels, below the header.
    found = [
        (y, x)
        for y in range(sheet.shape[0] - 192)
        for x in range(2 * 192, sheet.shape[1] - 192, 4)
        if (sheet[y, x : x + 192 : 4] == render[0]).all() and (sheet[y + 191, x : x + 192 : 4] == render[47]).all()
    ]
    assert found, "the render of r_0 is not on the sheet"
    views = metrics["per_view"]
    assert [v["view"] for v in views] == ["test/r_0.png", "test/r_1.png"]
    assert np.mean([v["psnr"] for v in views]) == pytest.approx(metrics["test.psnr"], abs=1e-3)
    distances = [v["identity_distance_to_target"] for v in views if v["identity_distance_to_target"] is not None]
    mean_distance = metrics["test.identity_distance_to_target"]
    assert mean_distance == (pytest.approx(np.mean(distances), abs=1e-3) if distances else None)


def test_evaluate_py_reproduces_a_saved_runs_metrics(trained, tmp_path):
    root, cfg, metrics = trained
    again = evaluate(compose_evaluate(root, f"ckpt={cfg.run_dir}/checkpoints/last.ckpt"), tmp_path)
    assert again["steps"] == 200 and again["num_gaussians"] == metrics["num_gaussians"]
    assert again["test.psnr"] == pytest.approx(metrics["test.psnr"], abs=1e-3)


def test_ckpt_path_last_resumes_the_stopped_run(trained):
    root, _, _ = trained
    short = tiny_cfg(root, "stopped", "trainer.max_steps=20", "model.name=gaussians_resume")
    first = train(short)
    assert first["steps"] == 20
    resumed = train(
        tiny_cfg(
            root,
            "new",
            "ckpt_path=last",
            "trainer.max_steps=40",
            "model.name=gaussians_resume",
            "logger=[csv,tensorboard]",
        )
    )
    stopped = Path(short.run_dir)
    assert resumed["steps"] == 40 and Path(resumed["config"]["run_dir"]) == stopped
    assert not (root / "logs/train/runs/new/checkpoints").exists()  # the resumed run writes where it began
    assert resumed["train_seconds"] > first["train_seconds"]
    steps = [s for s, _ in logged(stopped, "train/loss")]
    assert sorted(steps) == list(range(40))  # the second session logged steps 20..39, none twice
    assert list(stopped.glob("tensorboard/version_0/events.out.tfevents.*"))


def test_ckpt_path_last_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(DeepfakeError, match="no earlier run"):
        train(tiny_cfg(tmp_path, "x", "ckpt_path=last"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(trained, monkeypatch):
    root, _, _ = trained
    import implicit_deepfake.lit.gaussians as lit

    calls = {"n": 0}
    real_ssim = lit.structural_similarity_index_measure

    def ssim_turning_nan(*args, **kwargs):
        calls["n"] += 1
        value = real_ssim(*args, **kwargs)
        return value * math.nan if calls["n"] > 15 else value

    monkeypatch.setattr(lit, "structural_similarity_index_measure", ssim_turning_nan)
    cfg = tiny_cfg(root, "nan", "model.name=gaussians_nan", "callbacks.model_checkpoint.every_n_train_steps=10")
    with pytest.raises(DeepfakeError, match=r"loss is nan at step 15.*last.ckpt"):
        train(cfg)
    ckpt = Path(cfg.run_dir) / "checkpoints" / "last.ckpt"
    module = LitGaussians.load_from_checkpoint(ckpt, map_location="cpu", weights_only=False)
    assert torch.load(ckpt, weights_only=False)["global_step"] == 10
    assert all(torch.isfinite(p).all() for p in module.cloud.params.values())
