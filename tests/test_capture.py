"""`data=capture`: a video or photos around a head -> cameras by SfM -> a multi-view dataset.

Ground truth is the synthetic head filmed on an orbit in a textured room (data/synthetic_orbit.py),
whose cameras are known: SfM must place the frames and recover those cameras (up to a similarity),
the selfie segmentation must cut out the head, and the swap's multi-view face geometry must work on
the recovered cameras. Bad captures are refused with what to film differently, leaving nothing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.capture import CaptureSource, read_photos, sample_video
from implicit_deepfake.data.colmap_model import CAMERA_DISTANCE
from implicit_deepfake.data.synthetic import view_cameras
from implicit_deepfake.data.synthetic_orbit import (
    OrbitClip,
    orbit_views,
    render_orbit,
    room_backdrop,
    room_texture,
    write_clip,
)
from implicit_deepfake.metrics.tracking import pose_errors
from implicit_deepfake.pipeline import train
from tests.conftest import REPO
from tests.test_colmap import read_dataset

FRAMES, SIZE = 32, 192  # a small orbit that SfM places whole (measured: 0.1 degrees median error)
SMALL = {"frames": FRAMES, "sfm_size": SIZE, "image_size": 96}


def room_views(n: int, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8: one orbit of the textured room, no one in it."""
    texture = room_texture()
    cameras = view_cameras(orbit_views(n), size, 0.69, CAMERA_DISTANCE)
    return np.stack([room_backdrop(texture, cameras[i]) for i in range(n)])


def nothing_left(root: Path) -> bool:
    """No dataset and no staging folder of one (a failed build leaves nothing)."""
    return not root.exists() and not list(root.parent.glob(f".{root.name}.building.*"))


def test_video_sampling_keeps_the_sharpest_frame_of_each_window(tmp_path):
    frames = room_views(40, 96)
    frames[1::2] = [cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames[1::2]]  # every other frame shaken
    video = write_clip(frames, tmp_path / "clip.mp4")
    sampled = sample_video(video, 20, 64)
    assert [index for index, _, _ in sampled] == list(range(0, 40, 2))
    assert all(rgb.shape == (64, 64, 3) for _, _, rgb in sampled)


def test_photos_are_upright_and_must_share_one_size(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = np.zeros((60, 80, 3), np.uint8)
    image[:, :40] = 255  # left half white: after a quarter turn clockwise, the top half
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: display rotated 90 degrees clockwise
    Image.fromarray(image).save(folder / "a.jpg", exif=exif, quality=95)
    Image.fromarray(image.transpose(1, 0, 2)[::-1].copy()).save(folder / "b.jpg", quality=95)
    photos = read_photos(folder, 512)
    assert [rgb.shape for _, _, rgb in photos] == [(80, 60, 3), (80, 60, 3)]
    assert photos[0][2][:40].mean() > 200 and photos[0][2][40:].mean() < 50
    Image.fromarray(image).save(folder / "c.jpg", quality=95)  # no EXIF turn: landscape
    with pytest.raises(DeepfakeError, match=r"c.jpg: 80x60 px, but a.jpg is 60x80.*same camera, zoom and orientation"):
        read_photos(folder, 512)


def test_too_short_a_clip_is_refused(tmp_path):
    video = write_clip(room_views(8, 96), tmp_path / "short.mp4")
    root = tmp_path / "data" / "short"
    with pytest.raises(DeepfakeError, match=r"only 8 frames in the video; at least data.source.min_frames=20.*slowly"):
        CaptureSource(str(video), str(root)).prepare()
    assert nothing_left(root)


def test_too_blurry_a_clip_is_refused(tmp_path):
    frames = np.stack([cv2.GaussianBlur(f, (0, 0), 4.0) for f in room_views(24, 128)])
    video = write_clip(frames, tmp_path / "blurred.mp4")
    root = tmp_path / "data" / "blurred"
    with pytest.raises(DeepfakeError, match=r"too blurred \(median sharpness .*Move the phone more slowly"):
        CaptureSource(str(video), str(root), frames=24).prepare()
    assert nothing_left(root)


def test_sfm_placing_under_half_the_frames_is_refused_with_the_fraction(tmp_path):
    """Frames that share nothing (each its own random blocks): SfM cannot chain them."""
    rng = np.random.default_rng(0)
    blocks = rng.integers(0, 256, (24, 16, 16, 3), dtype=np.uint8)
    folder = tmp_path / "photos"
    for i, block in enumerate(blocks):
        folder.mkdir(exist_ok=True)
        Image.fromarray(cv2.resize(block, (128, 128), interpolation=cv2.INTER_NEAREST)).save(folder / f"p{i}.png")
    root = tmp_path / "data" / "noise"
    with pytest.raises(DeepfakeError, match=r"placed only \d+ of 24 frames \(\d+%; at least .*=50%.*textured, still"):
        CaptureSource(str(folder), str(root), frames=24, sfm_size=128).prepare()
    assert nothing_left(root)


def test_a_capture_without_a_face_is_refused_after_sfm(tmp_path):
    """The room alone reconstructs, but there is no head in it to swap."""
    video = write_clip(room_views(FRAMES, SIZE), tmp_path / "room.mp4")
    root = tmp_path / "data" / "room"
    with pytest.raises(DeepfakeError, match=r"no face found in any of the 24 frames searched.*from the front"):
        CaptureSource(str(video), str(root), **SMALL, segment=False, mapper_tries=1).prepare()
    assert nothing_left(root)


@pytest.fixture(scope="module")
def orbit(tmp_path_factory) -> tuple[OrbitClip, Path]:
    """The head on one orbit in the room, 32 frames at 192 px, as an mp4."""
    clip = render_orbit(FRAMES, SIZE, mesh_resolution=64)
    return clip, write_clip(clip.frames, tmp_path_factory.mktemp("orbit") / "orbit.mp4")


@pytest.mark.slow
def test_capture_recovers_the_orbit_and_cuts_out_the_head(orbit, tmp_path):
    clip, video = orbit
    root = CaptureSource(str(video), str(tmp_path / "capture"), **SMALL).prepare()
    report = json.loads((root / "capture.json").read_text())
    assert report["registered_share"] >= 0.9 and report["models"][0] == report["registered"]
    source_index = {f["name"]: f["source_index"] for f in report["frames"]}
    cameras, names, splits = read_dataset(root, SMALL["image_size"])
    truth = clip.cameras.world_to_camera.double().numpy()[[source_index[n] for n in names]]
    errors = pose_errors(truth, cameras.world_to_camera.double().numpy())
    # Measured: median 0.1 degrees, camera centres 0.01 units off (of 1.9 from the head).
    assert np.median(errors.rotation_deg) < 1.5 and np.median(errors.translation) < 0.03 * CAMERA_DISTANCE, errors
    assert sorted(n for n, s in zip(names, splits) if s == "test") == names_every(8, names)
    # The person, cut out: every frame's alpha against the head's true coverage (measured on this small
    # orbit of issue 23's head, whose hair is a volume the segmentation trims: IoU 0.73 at worst, 0.83
    # median; bench/capture.py's 100 frames of 512 px: 0.71 and 0.93).
    ious = []
    for split in ("train", "val", "test"):
        for i, entry in enumerate(json.loads((root / f"transforms_{split}.json").read_text())["frames"]):
            found = np.asarray(Image.open(root / split / f"r_{i}.png"))[..., 3] > 127
            truth_alpha = cv2.resize(clip.alpha[source_index[entry["colmap_name"]]], found.shape[::-1]) > 127
            ious.append((found & truth_alpha).sum() / (found | truth_alpha).sum())
    assert min(ious) > 0.65 and np.median(ious) > 0.78, ious
    assert set(report["seconds"]) == {"sampling", "features", "matching", "mapping"}
    assert (root / "colmap" / "sparse" / "0").is_dir() and not (root / "colmap" / "database.db").exists()


def names_every(step: int, names: list[str]) -> list[str]:
    ordered = sorted(names)
    return [ordered[i] for i in range(0, len(ordered), step)]


@pytest.mark.slow
def test_train_py_runs_the_whole_chain_on_a_capture(orbit, tmp_path):
    """`train.py data=capture data.path=orbit.mp4`: the swap's face mesh is triangulated across the
    recovered cameras, and the run ends with its summary, web page and metrics."""
    _clip, video = orbit
    overrides = [
        f"paths.root_dir={tmp_path}",
        "progress=false",
        f"run_dir={tmp_path}/run",
        "data=capture",
        f"data.path={video}",
        "data.image_size=96",
        f"data.source.frames={FRAMES}",
        f"data.source.sfm_size={SIZE}",
        "logger=csv",
        "trainer.max_steps=60",
        "trainer.val_check_interval=60",
        "model.module.init_points=2000",
        "model.module.densify.refine_start_iter=20",
        "model.module.densify.refine_every=20",
        "model.module.densify.refine_stop_iter=50",
        "evaluate.orbit_frames=4",
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    metrics = train(cfg)
    manifest = json.loads((Path(cfg.swap.output_dir) / "manifest.json").read_text())
    faces = manifest["faces"]
    assert faces["mode"] == "multiview" and faces["mesh"]["views_used"] >= 4, faces
    assert faces["mesh"]["reprojection_error_px_median"] < 2.0 and faces["found"] >= 8, faces
    assert manifest["summary"]["swapped"] >= 8
    assert (Path(cfg.swap.output_dir) / "points3D.ply").is_file()  # the sparse points start the Gaussians
    run = Path(cfg.run_dir)
    for name in ("summary.png", "viewer.html", "metrics.json", "point_cloud.ply", "orbit.mp4"):
        assert (run / name).is_file(), name
    assert metrics["test.psnr"] > 15, metrics["test.psnr"]
    assert torch.isfinite(torch.tensor(metrics["test.psnr"]))
