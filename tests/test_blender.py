import json
from pathlib import Path

import numpy as np
import pytest
import torch

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_image, write_png
from implicit_deepfake.data.blender import load_blender_split, read_split_index
from implicit_deepfake.data.source import BlenderSource
from tests.conftest import CAMERA_ANGLE_X, orbit_cameras, write_tiny_dataset


def test_loads_every_split_with_cameras_and_images(tiny_dataset: Path):
    for split in ("train", "val", "test"):
        data = load_blender_split(tiny_dataset, split)
        assert data.images.shape == (2, 16, 16, 4) and data.images.dtype == np.uint8
        assert (data.cameras.width, data.cameras.height) == (16, 16)
        expected = orbit_cameras(2, 16)
        assert torch.allclose(data.cameras.world_to_camera, expected.world_to_camera, atol=1e-5)
        assert data.cameras.intrinsics[0, 0, 0] == pytest.approx(8 / np.tan(CAMERA_ANGLE_X / 2))
        assert np.array_equal(data.images[1], read_image(tiny_dataset / split / "r_1.png"))
        assert data.index.relpaths == [f"{split}/r_0.png", f"{split}/r_1.png"]


def test_downscale_box_filters_images_and_scales_intrinsics(tiny_dataset: Path):
    full = load_blender_split(tiny_dataset, "train")
    half = load_blender_split(tiny_dataset, "train", downscale=2)
    assert half.images.shape == (2, 8, 8, 4)
    expected = full.images[0, 8:10, 8:10, :3].reshape(-1, 3).mean(0)  # an opaque block
    assert np.abs(half.images[0, 4, 4, :3].astype(float) - expected).max() <= 1.0
    assert half.cameras.intrinsics[0, 0, 0] == pytest.approx(full.cameras.intrinsics[0, 0, 0] / 2)


def test_rgb_and_jpg_frames_load(tmp_path: Path):
    root = write_tiny_dataset(tmp_path / "rgb", rgba=False)
    assert load_blender_split(root, "val").images.shape == (2, 16, 16, 3)


def _edit_json(root: Path, split: str, edit) -> Path:
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("camera_angle_x"), "camera_angle_x"),
        (lambda m: m.update(frames=[]), "frames"),
        (lambda m: m["frames"][1].pop("file_path"), r"frames\[1\].*file_path"),
        (lambda m: m["frames"][0].update(transform_matrix=[[1, 0], [0, 1]]), "transform_matrix"),
        (lambda m: m["frames"][0].update(file_path="../../etc/passwd"), "outside the dataset root"),
        (lambda m: m["frames"][0].update(file_path="./train/r_99"), "not found"),
    ],
)
def test_bad_transforms_fields_name_file_and_field(tiny_dataset: Path, edit, message: str):
    path = _edit_json(tiny_dataset, "train", edit)
    with pytest.raises(DeepfakeError, match=message) as err:
        read_split_index(tiny_dataset, "train")
    assert str(path) in str(err.value)


def test_missing_folder_json_and_bad_json(tmp_path: Path, tiny_dataset: Path):
    with pytest.raises(DeepfakeError, match="does not exist"):
        read_split_index(tmp_path / "nowhere", "train")
    (tiny_dataset / "transforms_val.json").unlink()
    with pytest.raises(DeepfakeError, match="transforms_val.json is missing"):
        read_split_index(tiny_dataset, "val")
    (tiny_dataset / "transforms_test.json").write_text("{not json")
    with pytest.raises(DeepfakeError, match="not valid JSON"):
        read_split_index(tiny_dataset, "test")


def test_corrupt_and_odd_sized_images(tiny_dataset: Path):
    (tiny_dataset / "train" / "r_1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DeepfakeError, match=r"r_1.png: cannot read this image"):
        load_blender_split(tiny_dataset, "train")
    write_png(tiny_dataset / "val" / "r_1.png", np.zeros((8, 16, 4), np.uint8))
    with pytest.raises(DeepfakeError, match=r"r_1.png: size.*same size"):
        load_blender_split(tiny_dataset, "val")


def test_tina_source_explains_download_and_layout(tmp_path: Path, tiny_dataset: Path):
    with pytest.raises(DeepfakeError) as err:
        BlenderSource(str(tmp_path / "tina")).prepare()
    message = str(err.value)
    assert "does not exist" in message and "drive.google.com" in message
    assert "transforms_train.json" in message and "famous.jpg" in message
    assert BlenderSource(str(tiny_dataset)).prepare() == tiny_dataset
