"""The swap stage and evaluate.py end to end on a small built synthetic dataset, with the real
landmark swapper and dlib identity metric."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from implicit_deepfake.errors import DeepfakeError
from implicit_deepfake.io import image_text
from implicit_deepfake.pipeline import evaluate, swap_stage
from tests.conftest import REPO

SMALL = ["data.source.n_train=4", "data.source.n_val=2", "data.source.n_test=4"]


@pytest.fixture(scope="module")
def swapped_run(tmp_path_factory):
    """One small synthetic dataset, swapped once, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("run")
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=[f"paths.root_dir={root}", "progress=false", *SMALL])
    source, swapped = swap_stage(cfg)
    return cfg, source, swapped, root


def test_swap_stage_swaps_the_synthetic_avatar_towards_the_target(swapped_run):
    cfg, source, swapped, _ = swapped_run
    manifest = json.loads((swapped / "manifest.json").read_text())
    summary = manifest["summary"]
    assert manifest["complete"] and summary["frames"] == 10
    assert summary["swapped"] >= 5, summary  # views are random up to 70 degrees from frontal
    assert summary["swapped"] + summary["no_face"] == 10 and summary["dropped"] == 0
    # The swap moves the frames' identity towards the target photo.
    assert summary["mean_identity_distance_after"] < summary["mean_identity_distance_before"] - 0.05, summary
    record = next(r for r in manifest["frames"] if r["status"] == "swapped")
    assert image_text(swapped / record["output"])["AIGenerated"] == "true"
    base = np.asarray(Image.open(source.root / record["source"]))
    out = np.asarray(Image.open(swapped / record["output"]))
    assert np.array_equal(base[..., 3], out[..., 3])
    assert np.abs(base[..., :3].astype(int) - out[..., :3]).mean() > 1.0


def test_rerun_skips_done_frames(swapped_run, monkeypatch):
    cfg, _, swapped, _ = swapped_run
    from implicit_deepfake.swap import landmark

    def fail(*args, **kwargs):
        raise AssertionError("a done frame was swapped again")

    monkeypatch.setattr(landmark.LandmarkSwapper, "swap", fail)
    before = (swapped / "manifest.json").read_text()
    swap_stage(cfg)
    assert json.loads((swapped / "manifest.json").read_text())["frames"] == json.loads(before)["frames"]


def test_evaluate_writes_face_metrics(swapped_run, tmp_path):
    cfg, _, _, _ = swapped_run
    metrics = evaluate(cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test.images"] == 4 and saved["test.face_detection_rate"] >= 0.75
    assert saved["test.identity_distance_to_target"] < 0.68  # the two photos are 0.68 apart
    assert saved["synthetic"]["AIGenerated"] == "true" and metrics["swap"] == "landmark"


def test_target_photo_without_a_face_is_a_clear_error(swapped_run, tmp_path):
    cfg, source, _, root = swapped_run
    cfg = cfg.copy()
    faceless = tmp_path / "famous.jpg"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(faceless)
    from implicit_deepfake.swap.landmark import LandmarkSwapper
    from implicit_deepfake.swap.runner import run_swap

    out = tmp_path / "out"
    with pytest.raises(DeepfakeError, match=rf"{faceless}: no face found in the target photo"):
        run_swap(source.root, faceless, out, LandmarkSwapper(), progress=False)
    assert not out.exists()


def test_swap_py_reports_a_missing_dataset_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "swap.py", "data=tina", f"paths.data_dir={tmp_path}/nowhere", f"paths.log_dir={tmp_path}/logs"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert f"{tmp_path}/nowhere/tina does not exist" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
