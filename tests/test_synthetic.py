"""The embedded default dataset: a rendered textured head, multi-view consistent, with findable faces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from implicit_deepfake.data.avatar import build_avatar, render_avatar
from implicit_deepfake.data.blender import load_blender_split
from implicit_deepfake.data.synthetic import BASE_PHOTO, SyntheticAvatarSource, view_cameras
from implicit_deepfake.faces import FaceLandmarker
from implicit_deepfake.io import composite, image_text, read_image


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    source = SyntheticAvatarSource(str(tmp_path_factory.mktemp("synth") / "synthetic"), n_train=3, n_val=2, n_test=2)
    return source, source.prepare()


@pytest.fixture(scope="module")
def avatar():
    photo = read_image(BASE_PHOTO)
    return build_avatar(photo, FaceLandmarker().detect(photo), resolution=128)


def test_dataset_layout_and_alpha(built):
    source, root = built
    for split, count in (("train", 3), ("val", 2), ("test", 2)):
        data = load_blender_split(root, split)
        assert data.images.shape == (count, 128, 128, 4)
        assert np.all(data.images[:, :3, :3, 3] == 0)  # background corners are transparent
        assert np.all(data.images[:, 60:68, 60:68, 3] == 255)  # the head fills the centre
    assert read_image(source.target_photo).shape == (512, 512, 3)
    assert image_text(root / "train" / "r_0.png")["AIGenerated"] == "true"


def test_cache_is_reused_and_rebuilt_when_the_config_changes(built):
    source, root = built
    stamp = (root / "avatar.json").stat().st_mtime_ns
    assert SyntheticAvatarSource(str(root), n_train=3, n_val=2, n_test=2).prepare() == root
    assert (root / "avatar.json").stat().st_mtime_ns == stamp
    changed = SyntheticAvatarSource(str(root), n_train=1, n_val=1, n_test=1, image_size=64)
    assert not changed.is_built()
    changed.prepare()
    assert load_blender_split(root, "train").images.shape == (1, 64, 64, 4)
    assert not [p for p in root.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_multi_view_consistency(built, avatar):
    """A surface point seen by two cameras (from the dataset's own json) has the same colour in both."""
    cameras = view_cameras(2, np.random.default_rng(3), 128, 0.69, 4.8, 40.0, (-10.0, 20.0))
    rgba, depth = render_avatar(avatar, cameras, supersample=1)
    points = avatar.vertices[avatar.texture_weight > 0.5]
    pix, z = cameras.project(points)
    colours, visible = [], torch.ones(len(points), dtype=torch.bool)
    for view in range(2):
        ij = pix[view].floor().long()
        inside = (ij >= 0).all(1) & (ij < 128).all(1)
        ij = ij.clamp(0, 127)
        surface = torch.as_tensor(depth[view])[ij[:, 1], ij[:, 0]]
        visible &= inside & ((surface - z[view]).abs() < 0.03)
        colours.append(torch.as_tensor(rgba[view])[ij[:, 1], ij[:, 0], :3].float())
    assert visible.sum() > 300
    diff = (colours[0] - colours[1])[visible].abs().mean(1)
    assert diff.median() < 8.0, diff.median()
    # ...whereas unrelated pixels differ a lot (the test can fail).
    assert (colours[0][visible] - colours[0][visible].roll(37, 0)).abs().mean() > 15.0


def test_face_found_in_nine_of_ten_views_within_45_degrees(avatar):
    cameras = view_cameras(24, np.random.default_rng(7), 128, 0.69, 4.8, 45.0, (-15.0, 30.0))
    direction = torch.nn.functional.normalize(cameras.centers - torch.tensor([0.0, 0.0, 0.25]), dim=1)
    frontal = torch.rad2deg(torch.arccos(-direction[:, 1])) <= 45.0
    rgba, _ = render_avatar(avatar, cameras[torch.nonzero(frontal).squeeze(1)])
    landmarker = FaceLandmarker()
    found = [landmarker.detect(composite(image)) is not None for image in rgba]
    assert len(found) >= 15 and np.mean(found) >= 0.9, found
