"""The embedded default dataset: the head built from its photo (tests/test_avatar.py), rendered
multi-view consistently into the Blender format, cached by config, with faces that a detector finds."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from implicit_deepfake.avatar.head import build_avatar, render_avatar
from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import composite, image_text, read_image
from implicit_deepfake.data import synthetic
from implicit_deepfake.data.blender import SPLITS, load_blender_split
from implicit_deepfake.data.synthetic import BASE_PHOTO, CAMERA_ANGLE_X, DISTANCE, SyntheticAvatarSource, view_cameras
from implicit_deepfake.faces.landmarks import FaceLandmarker

SIZE, COUNTS, RESOLUTION = 96, {"train": 4, "val": 2, "test": 2}, 128


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "synthetic"
    source = SyntheticAvatarSource(
        str(root),
        image_size=SIZE,
        n_train=COUNTS["train"],
        n_val=COUNTS["val"],
        n_test=COUNTS["test"],
        mesh_resolution=RESOLUTION,
    )
    return source.prepare()


@pytest.fixture(scope="module")
def avatar():
    photo = read_image(BASE_PHOTO)
    return build_avatar(photo, FaceLandmarker().detect(photo), resolution=RESOLUTION)


def test_dataset_layout_alpha_and_disjoint_views(built: Path):
    matrices = []
    for split in SPLITS:
        data = load_blender_split(built, split)
        assert data.images.shape == (COUNTS[split], SIZE, SIZE, 4)
        corners = data.images[:, [0, 0, -1, -1], [0, -1, 0, -1], 3]
        assert (corners == 0).all()  # white, transparent background
        assert (data.images[:, SIZE // 2 - 4 : SIZE // 2 + 4, SIZE // 2 - 4 : SIZE // 2 + 4, 3] == 255).all()
        assert (data.images[..., :3][data.images[..., 3] == 0] == 255).all()
        azimuths = [frame["azimuth_deg"] for frame in data.index.frames]
        assert all(-15 <= frame["elevation_deg"] <= 40 for frame in data.index.frames)
        if split == "train":  # the whole turn: a view in each quarter, the back of the head included
            assert np.histogram(azimuths, bins=4, range=(-180, 180))[0].min() >= 1
        matrices.append(data.index.camera_to_world_gl)
    centres = torch.cat(matrices)[:, :3, 3]
    assert torch.cdist(centres, centres).add(torch.eye(len(centres))).min() > 0.05  # no view repeats
    assert read_image(built / "famous.jpg").shape == (512, 512, 3)
    assert image_text(built / "train" / "r_0.png")["AIGenerated"] == "true"


def test_stored_frames_are_renders_of_the_cameras_in_the_json(built: Path, avatar):
    data = load_blender_split(built, "test")
    rgba, _ = render_avatar(avatar, data.cameras)
    diff = np.abs(rgba.astype(int) - data.images.astype(int))
    assert diff.mean() < 0.05 and (diff <= 2).mean() > 0.999


def _sample(image: np.ndarray, pix: torch.Tensor) -> torch.Tensor:
    """Bilinear colours (P, 3) of an HxWx4 uint8 image at pixel coordinates (P, 2)."""
    height, width = image.shape[:2]
    grid = (pix / torch.tensor([width, height]) * 2 - 1).view(1, 1, -1, 2)
    rgb = torch.from_numpy(image[..., :3]).permute(2, 0, 1)[None].float()
    return F.grid_sample(rgb, grid, align_corners=False)[0, :, 0].T


def test_surface_points_have_the_same_colour_in_two_views(built: Path, avatar):
    """Points of the mesh visible in two dataset views, projected with the cameras loaded from the
    json, land on pixels of the same colour (shading and texture do not depend on the view)."""
    data = load_blender_split(built, "train")
    views = np.array([f["azimuth_deg"] for f in data.index.frames])
    apart = np.abs((views[:, None] - views[None] + 180) % 360 - 180)  # azimuth difference around the turn
    a, b = np.unravel_index(np.argmin(np.abs(apart - 60)), apart.shape)
    assert 30 < apart[a, b] < 120  # really different views that share part of the head
    cameras = data.cameras[[int(a), int(b)]]
    rng = torch.Generator().manual_seed(0)
    faces = avatar.faces[torch.randint(len(avatar.faces), (60000,), generator=rng)]
    weights = -torch.log(torch.rand(len(faces), 3, generator=rng))  # uniform on each triangle
    points = ((weights / weights.sum(1, keepdim=True))[..., None] * avatar.vertices[faces]).sum(1)
    _, depth_maps = render_avatar(avatar, cameras, supersample=1)
    pix, depth = cameras.project(points)
    visible = torch.ones(len(points), dtype=torch.bool)
    for view in range(2):
        ij = pix[view].floor().long()
        on_image = ((ij >= 1) & (ij < SIZE - 1)).all(1)
        ij = ij.clamp(0, SIZE - 1)
        surface = torch.from_numpy(depth_maps[view])[ij[:, 1], ij[:, 0]]
        visible &= on_image & ((surface - depth[view]).abs() < 0.01)
    assert visible.sum() > 1000
    first, second = (_sample(data.images[int(v)], pix[i][visible]) for i, v in enumerate((a, b)))
    diff = (first - second).abs().mean(1)
    assert diff.median() < 8.0, diff.median()
    shuffled = (first - second.roll(97, 0)).abs().mean(1)
    assert shuffled.median() > 3 * diff.median() and shuffled.median() > 10.0  # the check has teeth


def test_second_prepare_reuses_the_cache_and_a_new_config_rebuilds(tmp_path: Path):
    small = {"image_size": 32, "n_train": 1, "n_val": 1, "n_test": 1, "mesh_resolution": 48}
    root = SyntheticAvatarSource(str(tmp_path / "data"), **small).prepare()
    stamp = root / "avatar.json"
    before = stamp.stat().st_mtime_ns
    start = time.perf_counter()
    assert SyntheticAvatarSource(str(root), **small).prepare() == root
    assert time.perf_counter() - start < 1.0 and stamp.stat().st_mtime_ns == before

    changed = SyntheticAvatarSource(str(root), **{**small, "n_test": 2, "seed": 1})
    assert not changed.is_built()
    changed.prepare()
    assert json.loads(stamp.read_text())["config"]["seed"] == 1
    assert load_blender_split(root, "test").images.shape == (2, 32, 32, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data",
        "data.lock",
    ]  # no staging folder left (the lock stays)


def test_a_failed_build_leaves_the_previous_dataset_in_place(tmp_path: Path, monkeypatch):
    small = {"image_size": 32, "n_train": 1, "n_val": 1, "n_test": 1, "mesh_resolution": 48}
    root = SyntheticAvatarSource(str(tmp_path / "data"), **small).prepare()
    stamp = (root / "avatar.json").read_text()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "render_avatar", killed)
    with pytest.raises(KeyboardInterrupt):
        SyntheticAvatarSource(str(root), **{**small, "seed": 5}).prepare()
    assert (root / "avatar.json").read_text() == stamp
    assert load_blender_split(root, "train").images.shape == (1, 32, 32, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "data.lock"]


def test_builds_at_512_px(tmp_path: Path):
    """data.image_size=512 (issue 23): frames of that size whose head fills them as at 256 px."""
    root = SyntheticAvatarSource(
        str(tmp_path / "big"), image_size=512, n_train=1, n_val=1, n_test=1, mesh_resolution=96
    )
    data = load_blender_split(root.prepare(), "train")
    assert data.images.shape == (1, 512, 512, 4)
    assert 0.1 < (data.images[..., 3] > 0).mean() < 0.6


def test_refuses_to_replace_a_folder_it_did_not_build(tmp_path: Path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(DeepfakeError, match="not a synthetic avatar dataset"):
        SyntheticAvatarSource(str(tmp_path / "mine")).prepare()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def cone_views(n: int, low_deg: float, high_deg: float) -> np.ndarray:
    """(n, 2) azimuth/elevation degrees evenly spread (Fibonacci) over viewing directions between
    low_deg and high_deg from frontal."""
    k = np.arange(n) + 0.5
    cos_low, cos_high = np.cos(np.radians([low_deg, high_deg]))
    c = cos_low - (cos_low - cos_high) * k / n
    turn = np.pi * (3 - np.sqrt(5)) * k
    s = np.sqrt(1 - c**2)
    return np.degrees(np.stack([np.arctan2(s * np.cos(turn), c), np.arcsin(s * np.sin(turn))], 1))


def test_a_face_is_found_in_nine_of_ten_views_within_45_degrees_of_frontal(avatar):
    views = cone_views(20, 0.0, 45.0)
    rgba, _ = render_avatar(avatar, view_cameras(views, 128, CAMERA_ANGLE_X, DISTANCE))
    landmarker = FaceLandmarker()
    found = [landmarker.detect(composite(image)) is not None for image in rgba]
    assert np.mean(found) >= 0.9, views[~np.array(found)]


def test_the_config_uses_the_lens_the_benches_and_tests_measure(compose_cfg):
    """conf/data/synthetic.yaml spells out the default lens; bench/swap_identity.py and these tests render
    the default dataset's views with data/synthetic.py's constants: the two must not drift apart."""
    source = compose_cfg("train").data.source
    assert (source.camera_angle_x, source.distance) == (CAMERA_ANGLE_X, DISTANCE)
