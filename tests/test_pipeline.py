"""The swap stage and evaluate.py end to end on a small built synthetic dataset, with the real
landmark swapper and dlib identity metric."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import image_text
from implicit_deepfake.pipeline import evaluate, swap_stage
from tests.conftest import REPO, compose_evaluate

# The face-bearing front of the head at 128 px (the default goes all around at 256 px; its back views
# are kept unswapped), where every view is swapped: the swap figures below were measured on it.
SMALL = [
    "data.source.n_train=4",
    "data.source.n_val=2",
    "data.source.n_test=4",
    "data.source.image_size=128",
    "data.source.azimuth_deg=70",
    "data.source.elevation_deg=[-15,30]",
]


@pytest.fixture(scope="module")
def swapped_run(tmp_path_factory):
    """One small synthetic dataset, swapped once, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("run")
    cfg = compose_evaluate(root, *SMALL)
    source, swapped = swap_stage(cfg)
    return cfg, source, swapped, root


def test_swap_stage_swaps_the_synthetic_avatar_towards_the_target(swapped_run):
    _cfg, source, swapped, _ = swapped_run
    manifest = json.loads((swapped / "manifest.json").read_text())
    summary = manifest["summary"]
    assert manifest["complete"] and summary["frames"] == 10
    # One face mesh, triangulated from the views where the detector finds the face, drives every view
    # (random up to 70 degrees from frontal): all are swapped, profiles included.
    faces = manifest["faces"]
    assert faces["mode"] == "multiview" and faces["found"] == 10 and faces["mesh"]["views_used"] >= 4
    assert faces["mesh"]["reprojection_error_px_median"] < 2.0
    assert summary["swapped"] == 10 and summary["no_face"] == summary["hidden"] == summary["dropped"] == 0
    # The swap keeps the head's pose and hides its seam. The pose error (PnP against the base's own
    # landmarks) reads the target's proportions and smile as a small turn: the target's own head, a
    # perfect swap, reads 4.6 degrees on the default's views (`bench/swap_identity.py --oracle`). Measured
    # here on 10 views: 3.7 degrees and seam 0.92 (3.1 before the multi-view face took the target's
    # proportions and smile); on the default's 101: 3.2 and 0.88.
    assert summary["pose_error_deg_median"] < 4.2 and summary["seam_score_median"] < 1.15, summary
    colour = summary["multiview_colour_difference"]
    assert colour["swapped"] <= 1.5 * colour["base"], colour
    assert manifest["target"]["faces_found"] == 1 and manifest["target"]["index"] == 0
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
    # Two of the four test views are 65 degrees round (seeded): the head of issue 23 turns its face away
    # there as a real head does, and mediapipe finds it in the other two.
    assert saved["test.images"] == 4 and saved["test.face_detection_rate"] >= 0.5
    assert saved["test.identity_distance_to_target"] < 0.68  # the two photos are 0.68 apart
    buckets = saved["test.identity_by_yaw"]  # yaw of each test camera against the triangulated face
    assert sum(b["views"] for b in buckets.values()) == 4 and set(buckets) <= {"0-30", "30-60", "60-90"}
    # Portrait against portrait too: the base's most frontal training view, and the base frames' own distance to it.
    assert all("identity_distance_to_base_portrait" in b for b in buckets.values())
    assert set(saved["test.identity_by_yaw_of_base_frames"]) == set(buckets)
    assert saved["synthetic"]["AIGenerated"] == "true" and metrics["swap"] == "landmark"


def test_target_photo_without_a_face_is_a_clear_error(swapped_run, tmp_path):
    cfg, source, _, _root = swapped_run
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
        [
            sys.executable,
            "swap.py",
            "data=tina",
            f"paths.data_dir={tmp_path}/nowhere",
            f"paths.log_dir={tmp_path}/logs",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert f"{tmp_path}/nowhere/tina does not exist" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_target_argument_picks_a_face_of_a_group_photo_with_its_own_cache(swapped_run):
    _cfg, _, swapped, root = swapped_run
    from hydra import compose, initialize_config_dir

    from tests.test_target_photo import GROUP

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        other = compose(
            "swap", overrides=[f"paths.root_dir={root}", "progress=false", *SMALL, f"target={GROUP}", "target_face=2"]
        )
    _, other_swapped = swap_stage(other)
    assert other_swapped != swapped and other_swapped.name.endswith("-face2")
    assert (swapped / "manifest.json").is_file()  # the first target's cache is still there
    manifest = json.loads((other_swapped / "manifest.json").read_text())
    assert manifest["target"]["path"] == str(GROUP)
    assert manifest["target"]["faces_found"] == 6 and manifest["target"]["index"] == 2
    assert manifest["summary"]["swapped"] == 10


def test_two_worker_processes_swap_the_same_frames_as_one(swapped_run, tmp_path):
    cfg, source, swapped, _ = swapped_run
    assert cfg.swap.workers is None  # the shared run swapped with one process per core: two here
    from implicit_deepfake.metrics.identity_dlib import DlibEmbedder
    from implicit_deepfake.swap.runner import run_swap

    swapper = instantiate(cfg.swap.swapper)  # the run's own settings (a multi-view head: the target's eyes)
    manifest = run_swap(
        source.root, source.target_photo, tmp_path / "one", swapper, DlibEmbedder(), progress=False, workers=1
    )
    one = json.loads((swapped / "manifest.json").read_text())
    assert [r["output_sha256"] for r in manifest["frames"]] == [r["output_sha256"] for r in one["frames"]]
    assert manifest["summary"] == one["summary"]
