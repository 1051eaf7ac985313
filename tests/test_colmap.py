"""`data=colmap`: a COLMAP scene read back. Ground truth is a text model written by hand for known
cameras around the synthetic head (data/synthetic_orbit.py): the loader must recover those cameras
(up to the similarity it normalises by, which it records), undistort what a distorted camera saw,
and refuse what it cannot read, saying what to do."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.blender import SPLITS, read_split_index
from implicit_deepfake.data.colmap import ColmapSource, build_colmap_dataset, split_views
from implicit_deepfake.data.colmap_model import CAMERA_DISTANCE
from implicit_deepfake.data.sparse_points import read_points_ply
from implicit_deepfake.data.synthetic import LOOK_AT, view_cameras
from implicit_deepfake.data.synthetic_orbit import OrbitClip, orbit_views, render_orbit, room_backdrop, room_texture
from implicit_deepfake.metrics.tracking import pose_errors
from implicit_deepfake.render.cameras import Cameras

SIZE, VIEWS = 96, 16
FILMED_FROM = 2.4  # farther than the distance a scene is scaled to (CAMERA_DISTANCE), so the scaling is seen


@pytest.fixture(scope="module")
def orbit() -> OrbitClip:
    """16 views of the head in the textured room, one turn, at 96 px."""
    return render_orbit(VIEWS, SIZE, distance=FILMED_FROM, mesh_resolution=64)


def true_points(count: int = 200) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(count, 3))
    points = np.asarray(LOOK_AT) + 0.45 * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    return points, rng.integers(0, 256, (count, 3))


def write_text_model(folder: Path, cameras: Cameras, names: list[str], model: str, params: list[float]) -> None:
    """cameras.txt, images.txt, points3D.txt (COLMAP's text format) for `cameras`, one shared camera;
    every point observed in every image (its projection by the pinhole part)."""
    folder.mkdir(parents=True, exist_ok=True)
    points, colors = true_points()
    pixels, _ = cameras.project(torch.as_tensor(points, dtype=torch.float32))
    size = f"{cameras.width} {cameras.height}"
    (folder / "cameras.txt").write_text(f"1 {model} {size} {' '.join(map(str, params))}\n")
    lines = []
    for i, name in enumerate(names):
        w2c = cameras.world_to_camera[i].double().numpy()
        x, y, z, w = Rotation.from_matrix(w2c[:3, :3]).as_quat()
        lines.append(f"{i + 1} {w} {x} {y} {z} {' '.join(map(str, w2c[:3, 3]))} 1 {name}")
        lines.append(" ".join(f"{u} {v} {p + 1}" for p, (u, v) in enumerate(pixels[i].tolist())))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")
    rows = []
    for p, ((x, y, z), (r, g, b)) in enumerate(zip(points, colors)):
        track = " ".join(f"{i + 1} {p}" for i in range(len(names)))  # (image id, index of its 2D point)
        rows.append(f"{p + 1} {x} {y} {z} {r} {g} {b} 0.5 {track}\n")
    (folder / "points3D.txt").write_text("".join(rows))


def write_scene(root: Path, frames: np.ndarray, cameras: Cameras, model: str = "PINHOLE", params=None) -> Path:
    names = [f"view_{i:02d}.png" for i in range(len(frames))]
    for name, frame in zip(names, frames):
        (root / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(root / "images" / name)
    k = cameras.intrinsics[0].tolist()
    write_text_model(root / "sparse" / "0", cameras, names, model, params or [k[0][0], k[1][1], k[0][2], k[1][2]])
    return root


def read_dataset(root: Path, size: int = SIZE) -> tuple[Cameras, list[str], list[str]]:
    """All splits' cameras, their COLMAP names and split names, in split order."""
    parts, names, splits = [], [], []
    for split in SPLITS:
        index = read_split_index(root, split)
        parts.append(index.camera.cameras(index.camera_to_world_gl, size, size))
        names += [f["colmap_name"] for f in index.frames]
        splits += [split] * len(index.frames)
    w2c, k = torch.cat([c.world_to_camera for c in parts]), torch.cat([c.intrinsics for c in parts])
    return Cameras(w2c, k, size, size), names, splits


def test_text_model_is_read_back_with_its_cameras_points_and_splits(orbit, tmp_path):
    scene = write_scene(tmp_path / "scene", orbit.frames, orbit.cameras)
    source = ColmapSource(str(scene), str(tmp_path / "data"), image_size=SIZE, n_val=2)
    root = source.prepare()
    cameras, names, splits = read_dataset(root)
    index = [int(n[5:7]) for n in names]
    # The same cameras, up to the similarity that normalised the scene.
    errors = pose_errors(
        orbit.cameras.world_to_camera.double().numpy()[index], cameras.world_to_camera.double().numpy()
    )
    assert np.median(errors.rotation_deg) < 0.01 and errors.translation.max() < 1e-3, errors
    assert abs(errors.scale - FILMED_FROM / CAMERA_DISTANCE) < 1e-3
    # Normalised: looking at the origin, from a phone's distance, the cameras' up is +z.
    assert torch.linalg.norm(cameras.look_at_point()) < 1e-3
    assert abs(float(cameras.centers.norm(dim=1).median()) - CAMERA_DISTANCE) < 1e-3
    up = -cameras.camera_to_world[:, :3, 1].mean(0)
    assert float(up[2] / up.norm()) > 0.9999
    # Every 8th image by name is a test view, the validation views come from the rest.
    assert sorted(n for n, s in zip(names, splits) if s == "test") == ["view_00.png", "view_08.png"]
    assert sum(s == "val" for s in splits) == 2 and len(set(names)) == VIEWS
    # The sparse points, moved by the recorded transform, with their colours.
    report = json.loads((root / "colmap.json").read_text())
    transform = np.asarray(report["normalising_transform"])
    points, colors = true_points()
    ply_points, ply_colors = read_points_ply(root / "points3D.ply")
    assert np.abs(ply_points - (points @ transform[:3, :3].T + transform[:3, 3])).max() < 1e-4
    assert np.array_equal(ply_colors, colors)
    # A pinhole camera at the frames' own size: the frames come through as they were.
    frame = np.asarray(Image.open(root / "test" / "r_1.png"))
    assert frame.shape == (SIZE, SIZE, 3) and np.abs(frame.astype(int) - orbit.frames[8]).mean() < 0.5
    assert report["registered"] == VIEWS and report["camera_models"] == ["PINHOLE"]
    # Built once: a second source over the same scene and settings finds it built.
    again = ColmapSource(str(scene), str(tmp_path / "data"), image_size=SIZE, n_val=2)
    again._build = None  # type: ignore[method-assign]  # called, it would fail the test
    assert again.prepare() == root


def test_distorted_camera_is_undistorted(tmp_path):
    """Frames of an OPENCV camera (barrel distortion), made from pinhole views of the room: read back,
    they match the pinhole views."""
    texture, size = room_texture(), 128
    cameras = view_cameras(orbit_views(VIEWS), size, 0.69, CAMERA_DISTANCE)
    pinhole = np.stack([room_backdrop(texture, cameras[i]) for i in range(VIEWS)])
    focal = float(cameras.intrinsics[0, 0, 0])
    params = [focal, focal, size / 2, size / 2, -0.25, 0.05, 0.002, -0.001]
    camera = pycolmap.Camera(model="OPENCV", width=size, height=size, params=params)
    u, v = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    rays = camera.cam_from_img(np.stack([u.ravel(), v.ravel()], 1))  # distorted pixel -> undistorted ray
    map_x = (rays[:, 0] * focal + size / 2 - 0.5).reshape(size, size).astype(np.float32)
    map_y = (rays[:, 1] * focal + size / 2 - 0.5).reshape(size, size).astype(np.float32)
    distorted = np.stack([cv2.remap(view, map_x, map_y, cv2.INTER_LINEAR) for view in pinhole])
    scene = write_scene(tmp_path / "scene", distorted, cameras, "OPENCV", params)
    # A scene of the room alone: no face is expected here, only the frames.
    out = tmp_path / "out"
    with pytest.raises(DeepfakeError, match="no face found"):
        build_colmap_dataset(scene, out, image_size=size)
    name = sorted((out / "train").iterdir())[0].name
    frame = np.asarray(Image.open(out / "train" / name)).astype(float)
    original = pinhole[split_views([f"{i}" for i in range(VIEWS)], 8, 4)["train"][0]].astype(float)
    inner = (slice(8, -8), slice(8, -8))  # a barrel lens saw less than the pinhole at the corners
    psnr = 10 * np.log10(255**2 / ((frame[inner] - original[inner]) ** 2).mean())
    kept = 10 * np.log10(255**2 / ((distorted[0][inner].astype(float) - pinhole[0][inner]) ** 2).mean())
    assert psnr > 27 and psnr > kept + 5, (psnr, kept)  # measured: 30.0 dB undistorted, 23.4 as stored


def test_downscaled_images_binary_model_and_the_largest_model(orbit, tmp_path):
    """images_2/ frames with the model of the full-size ones, as .bin, beside a smaller model."""
    full = write_scene(tmp_path / "full", orbit.frames, orbit.cameras)
    scene = tmp_path / "scene"
    (scene / "images_2").mkdir(parents=True)
    for path in (full / "images").iterdir():
        Image.fromarray(
            cv2.resize(np.asarray(Image.open(path)), (SIZE // 2, SIZE // 2), interpolation=cv2.INTER_AREA)
        ).save(scene / "images_2" / path.name)
    small = pycolmap.Reconstruction(full / "sparse" / "0")
    for image_id in list(small.reg_image_ids())[3:]:
        small.deregister_frame(small.image(image_id).frame_id)
    (scene / "sparse" / "0").mkdir(parents=True)
    small.write_binary(scene / "sparse" / "0")
    (scene / "sparse" / "1").mkdir()
    pycolmap.Reconstruction(full / "sparse" / "0").write_binary(scene / "sparse" / "1")
    out = tmp_path / "out"
    report = build_colmap_dataset(scene, out, image_size=SIZE // 2)
    assert report["model"] == "sparse/1" and report["images"] == "images_2" and report["registered"] == VIEWS
    assert report["camera"]["width"] == SIZE // 2
    assert abs(report["camera"]["focal"] - float(orbit.cameras.intrinsics[0, 0, 0]) / 2) < 1e-3
    frame = np.asarray(Image.open(out / "test" / "r_0.png")).astype(int)
    assert np.abs(frame - np.asarray(Image.open(scene / "images_2" / "view_00.png"))).mean() < 0.5


def test_scene_without_sparse_folder_says_what_to_give(tmp_path):
    (tmp_path / "scene" / "images").mkdir(parents=True)
    with pytest.raises(DeepfakeError, match=r"no sparse/ folder.*data=capture"):
        ColmapSource(str(tmp_path / "scene"), str(tmp_path / "data")).prepare()


def test_unread_camera_model_is_named_with_the_fix(orbit, tmp_path):
    cameras = orbit.cameras[list(range(4))]
    focal = float(cameras.intrinsics[0, 0, 0])
    scene = write_scene(
        tmp_path / "scene", orbit.frames[:4], cameras, "OPENCV_FISHEYE", [focal, focal, 48, 48, 0, 0, 0, 0]
    )
    with pytest.raises(DeepfakeError, match=r"camera model OPENCV_FISHEYE.*image_undistorter"):
        build_colmap_dataset(scene, tmp_path / "out")


def test_missing_frames_are_refused_before_anything_is_written(orbit, tmp_path):
    scene = write_scene(tmp_path / "scene", orbit.frames, orbit.cameras)
    (scene / "images" / "view_03.png").unlink()
    with pytest.raises(DeepfakeError, match=r"1 of the model's 16 images are missing \(e.g. view_03.png\)"):
        ColmapSource(str(scene), str(tmp_path / "data")).prepare()
    assert not (tmp_path / "data").exists() and not list(tmp_path.glob(".data.building.*"))


def test_colmap_config_builds_the_source(compose_cfg, tmp_path):
    from hydra.utils import instantiate

    (tmp_path / "scene" / "sparse").mkdir(parents=True)
    cfg = compose_cfg("train", ["data=colmap", f"data.path={tmp_path}/scene"])
    assert cfg.data.source.root.startswith(f"{tmp_path}/data/colmap/colmap-scene-")
    with pytest.raises(DeepfakeError, match="no COLMAP model in it"):
        instantiate(cfg.data.source).prepare()
