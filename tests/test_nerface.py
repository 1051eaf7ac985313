"""The NeRFace format (a hand-written tiny dataset: fields, intrinsics conventions, errors) and the
embedded 4D default `data=synthetic4d` (layout, expressions that move the face, the swap stage)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from implicit_deepfake.avatar.head import build_avatar, render_avatar
from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_image, write_png
from implicit_deepfake.data.blender import SPLITS, write_split_index
from implicit_deepfake.data.expressions import EXPRESSION_DIM, ExpressionRig, expression_vector
from implicit_deepfake.data.nerface import NerfaceSource, load_nerface_split
from implicit_deepfake.data.synthetic import BASE_PHOTO, TARGET_PHOTO
from implicit_deepfake.data.synthetic4d import SyntheticTalkingHeadSource, head_cameras
from implicit_deepfake.faces.landmarks import INNER_LIPS, FaceLandmarker
from implicit_deepfake.swap.landmark import LandmarkSwapper
from implicit_deepfake.swap.none import NoSwap
from implicit_deepfake.swap.runner import run_swap
from tests.conftest import orbit_cameras

SIZE, FOCAL = 16, 20.0
SYNTH = {"image_size": 64, "n_train": 6, "n_val": 2, "n_test": 2, "mesh_resolution": 96}


def write_tiny_nerface(root: Path, intrinsics=(FOCAL, 22.0, 0.5, 0.5), per_split: int = 2) -> Path:
    """Random RGB frames + background.png; intrinsics, 76-d expressions and bboxes in the jsons."""
    rng = np.random.default_rng(0)
    write_png(root / "background.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), synthetic=False)
    c2w, angle = orbit_cameras(per_split, SIZE).to_blender()
    for split in SPLITS:
        frames = []
        for i in range(per_split):
            write_png(
                root / split / f"f_{i:04d}.png", rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), synthetic=False
            )
            frames.append(
                {
                    "file_path": f"./{split}/f_{i:04d}",
                    "transform_matrix": c2w[i].tolist(),
                    "expression": rng.normal(size=EXPRESSION_DIM).round(4).tolist(),
                    "bbox": [0.1, 0.9, 0.2, 0.7 + 0.1 * i],
                }
            )
        write_split_index(root, split, angle, frames, intrinsics=list(intrinsics))
    return root


def edit_json(root: Path, split: str, edit) -> Path:
    path = root / f"transforms_{split}.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return path


def nerface_ray(c2w_gl: np.ndarray, intrinsics: tuple, i: float, j: float) -> tuple[np.ndarray, np.ndarray]:
    """NeRFace's `get_ray_bundle` for pixel (i, j): origin and direction in the world."""
    fx, fy, cx, cy = intrinsics
    direction = np.array([(i - SIZE * cx) / fx, -(j - SIZE * cy) / fy, -1.0])
    return c2w_gl[:3, 3], c2w_gl[:3, :3] @ direction


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return write_tiny_nerface(tmp_path / "nerface")


def test_loads_frames_cameras_expressions_bboxes_and_background(tiny: Path):
    for split in SPLITS:
        data = load_nerface_split(tiny, split)
        meta = json.loads((tiny / f"transforms_{split}.json").read_text())
        assert data.images.shape == (2, SIZE, SIZE, 3) and data.images.dtype == np.uint8
        assert np.array_equal(data.images[1], read_image(tiny / split / "f_0001.png"))
        assert np.array_equal(data.background, read_image(tiny / "background.png"))
        assert data.expressions.shape == (2, 76) and data.expressions.dtype == np.float32
        assert np.allclose(data.expressions, [f["expression"] for f in meta["frames"]])
        assert np.allclose(data.bboxes, [[0.1, 0.9, 0.2, 0.7], [0.1, 0.9, 0.2, 0.8]])
        k = data.cameras.intrinsics[0]
        assert torch.allclose(k, torch.tensor([[FOCAL, 0, 8.0], [0, 22.0, 8.0], [0, 0, 1]]))
        assert torch.allclose(data.cameras.world_to_camera, orbit_cameras(2, SIZE).world_to_camera, atol=1e-5)


def test_intrinsics_variants_camera_angle_x_and_pixel_principal_point(tmp_path: Path):
    angle_only = write_tiny_nerface(tmp_path / "angle")
    for split in SPLITS:
        edit_json(angle_only, split, lambda m: m.pop("intrinsics"))
    k = load_nerface_split(angle_only, "train").cameras.intrinsics[0]
    assert k[0, 0] == pytest.approx(8 / math.tan(0.4), rel=1e-5) and k[1, 1] == k[0, 0] and k[0, 2] == k[1, 2] == 8.0
    pixels = write_tiny_nerface(tmp_path / "pixels", intrinsics=(FOCAL, FOCAL, 7.0, 9.5))
    k = load_nerface_split(pixels, "val").cameras.intrinsics[0]
    assert (k[0, 2], k[1, 2]) == (7.0, 9.5)
    half = load_nerface_split(pixels, "val", downscale=2)
    assert half.images.shape == (2, 8, 8, 3) and half.background.shape == (8, 8, 3)
    assert torch.allclose(
        half.cameras.intrinsics[0], torch.tensor([[FOCAL / 2, 0, 3.5], [0, FOCAL / 2, 4.75], [0, 0, 1]])
    )


@pytest.mark.parametrize("flip_columns", [(0,), (0, 2)], ids=["same-rays", "mirrored"])
def test_negative_fx_keeps_nerfaces_rays_with_proper_cameras(tmp_path: Path, flip_columns: tuple[int, ...]):
    """Face2Face's fx < 0 (NeRFace's real data): with column 0 of the pose negated too it is the
    same camera; with columns 0 and 2 negated (their 'fix' of the tracker's poses) it is a mirrored
    camera, and the loader mirrors the world's x instead. Either way NeRFace's ray through a pixel
    projects back onto that pixel (its integer pixel index = our pixel corner), and every camera
    stays a rotation."""
    intrinsics = (-FOCAL, FOCAL, 0.45, 0.55)
    root = write_tiny_nerface(tmp_path / "mirror", intrinsics=intrinsics)
    signs = np.ones(4)
    signs[list(flip_columns)] = -1
    for split in SPLITS:
        edit_json(
            root,
            split,
            lambda m: [
                f.update(transform_matrix=(np.array(f["transform_matrix"]) * signs).tolist()) for f in m["frames"]
            ],
        )
    data = load_nerface_split(root, "train")
    mirror = np.diag([-1.0, 1.0, 1.0]) if len(flip_columns) == 2 else np.eye(3)
    assert (torch.linalg.det(data.cameras.world_to_camera[:, :3, :3]) > 0).all()
    pixels = np.array([[2.0, 3.0], [12.0, 5.0], [7.0, 14.0]])
    for view, frame in enumerate(data.index.frames):
        for i, j in pixels:
            origin, direction = nerface_ray(np.array(frame["transform_matrix"]), intrinsics, i, j)
            points = torch.tensor((origin + np.outer([1.0, 3.0], direction)) @ mirror.T, dtype=torch.float32)
            pix, depth = data.cameras[view].project(points)
            assert torch.allclose(pix[0], torch.tensor([[i, j], [i, j]], dtype=torch.float32), atol=1e-3)
            assert (depth > 0).all()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m["frames"][1].pop("expression"), r"frames\[1\].*`expression`"),
        (lambda m: m["frames"][0].update(expression=[0.1, "x"]), r"frames\[0\].*`expression`"),
        (lambda m: m["frames"][1].update(expression=[0.0] * 5), r"frames\[1\].*`expression` has 5 values.*same length"),
        (lambda m: m["frames"][1].update(bbox=[0.1, 0.9, 0.5]), r"frames\[1\].*`bbox`.*top, bottom, left, right"),
        (lambda m: m["frames"][0].update(bbox=[0.9, 0.1, 0.0, 1.0]), r"frames\[0\].*`bbox`"),
        (lambda m: m["frames"][0].update(bbox=[0.0, 1.0, 0.0, 1.5]), r"frames\[0\].*`bbox`"),
        (lambda m: m.update(intrinsics=[20.0, 20.0, 0.5]), r"`intrinsics` must be 4 finite numbers"),
        (lambda m: m.update(intrinsics=[0.0, 20.0, 0.5, 0.5]), r"`intrinsics` has a zero focal length"),
        (lambda m: m.update(intrinsics=[20.0, 20.0, 40.0, 8.0]), r"`intrinsics` puts the principal point at \(40, 8\)"),
        (lambda m: [m.pop("intrinsics"), m.pop("camera_angle_x")], r"`camera_angle_x`.*or give NeRFace's `intrinsics`"),
        (
            lambda m: m["frames"][1].update(
                transform_matrix=(np.array(m["frames"][1]["transform_matrix"]) * [-1, 1, 1, 1]).tolist()
            ),
            r"frames \[1\] have a mirrored `transform_matrix`",
        ),
        (lambda m: m["frames"][0].pop("transform_matrix"), r"frames\[0\].*`transform_matrix`"),
    ],
)
def test_bad_fields_name_the_file_and_the_field(tiny: Path, edit, message: str):
    path = edit_json(tiny, "train", edit)
    with pytest.raises(DeepfakeError, match=message) as err:
        load_nerface_split(tiny, "train")
    assert str(path) in str(err.value)


def test_frames_without_bbox_get_the_whole_frame_and_none_without_any(tiny: Path):
    edit_json(tiny, "val", lambda m: m["frames"][0].pop("bbox"))
    assert np.allclose(load_nerface_split(tiny, "val").bboxes, [[0, 1, 0, 1], [0.1, 0.9, 0.2, 0.8]])
    edit_json(tiny, "test", lambda m: [f.pop("bbox") for f in m["frames"]])
    assert load_nerface_split(tiny, "test").bboxes is None


def test_background_found_checked_and_composited_under_transparent_frames(tiny: Path):
    (tiny / "bg").mkdir()
    (tiny / "background.png").rename(tiny / "bg" / "00050.png")  # NeRFace's own releases
    background = read_image(tiny / "bg" / "00050.png")
    for i in range(2):  # RGBA frames: the top half opaque in the first, all of the second
        rgba = np.concatenate(
            [read_image(tiny / "train" / f"f_{i:04d}.png"), np.full((SIZE, SIZE, 1), 255, np.uint8)], -1
        )
        rgba[SIZE // 2 * (1 - i) :, :, 3] = 255 * i
        write_png(tiny / "train" / f"f_{i:04d}.png", rgba, synthetic=False)
    data = load_nerface_split(tiny, "train")
    assert np.array_equal(data.images[1], rgba[..., :3])
    assert np.array_equal(data.images[0, 8:], background[8:]) and not np.array_equal(data.images[0, :8], background[:8])
    write_png(tiny / "bg" / "00050.png", np.zeros((8, 8, 3), np.uint8), synthetic=False)
    with pytest.raises(DeepfakeError, match=r"00050.png: size 8x8 differs from the frames' 16x16"):
        load_nerface_split(tiny, "train")
    (tiny / "bg" / "00050.png").unlink()
    with pytest.raises(DeepfakeError, match=r"no static background image.*background.png, bg/00050.png"):
        load_nerface_split(tiny, "train")


def test_nerface_source_says_where_to_get_the_dataset(tmp_path: Path, tiny: Path):
    with pytest.raises(DeepfakeError) as err:
        NerfaceSource(str(tmp_path / "absent")).prepare()
    message = str(err.value)
    assert "does not exist" in message and "gafniguy.github.io/4D-Facial-Avatars" in message
    assert "transforms_train.json" in message and "bg/00050.png" in message and "famous.jpg" in message
    (tiny / "background.png").unlink()
    with pytest.raises(DeepfakeError, match=r"incomplete \(missing background.png or bg/00050.png\)"):
        NerfaceSource(str(tiny)).prepare()
    write_png(tiny / "background.png", np.zeros((SIZE, SIZE, 3), np.uint8), synthetic=False)
    with pytest.raises(DeepfakeError, match=r"famous.jpg not found.*data.source.target_photo"):
        NerfaceSource(str(tiny)).prepare()
    photo = tmp_path / "me.png"
    write_png(photo, np.zeros((4, 4, 3), np.uint8), synthetic=False)
    source = NerfaceSource(str(tiny), target_photo=str(photo))
    assert source.prepare() == tiny and source.target_photo == photo


def test_configs_build_the_sources(compose_cfg):
    source = instantiate(compose_cfg("swap", ["data=synthetic4d"]).data.source)
    assert isinstance(source, SyntheticTalkingHeadSource) and source.root.name == "synthetic4d"
    assert source.config["counts"] == {"train": 64, "val": 8, "test": 8} and source.config["yaw_deg"] == 25.0
    with pytest.raises(DeepfakeError, match=r"data/nerface does not exist"):
        instantiate(compose_cfg("swap", ["data=nerface"]).data.source).prepare()


# --- data=synthetic4d ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built4d(tmp_path_factory) -> Path:
    return SyntheticTalkingHeadSource(str(tmp_path_factory.mktemp("s4d") / "synthetic4d"), **SYNTH).prepare()


def test_synthetic4d_is_a_nerface_video_in_contiguous_chunks(built4d: Path):
    background = read_image(built4d / "background.png")
    assert background.shape == (64, 64, 3) and background.mean() < 200 and background.std() > 10  # not white, textured
    indices, first = [], None
    for split in SPLITS:
        data = load_nerface_split(built4d, split)
        meta = json.loads((built4d / f"transforms_{split}.json").read_text())
        assert meta["intrinsics"][2:] == [0.5, 0.5] and meta["intrinsics"][0] == pytest.approx(
            32 / math.tan(0.3), rel=1e-5
        )
        assert data.images.shape == (SYNTH[f"n_{split}"], 64, 64, 3) and np.array_equal(data.background, background)
        assert data.expressions.shape[1] == 76 and not data.expressions[:, 3:].any()
        assert (data.expressions[:, 0] >= 0).all() and (np.abs(data.expressions[:, 1:3]) <= 1).all()
        assert ((data.bboxes >= 0) & (data.bboxes <= 1)).all() and (data.bboxes[:, 1] - data.bboxes[:, 0] > 0.4).all()
        poses = np.array([f["head_pose_deg"] for f in meta["frames"]])
        assert (np.abs(poses) <= [25, 15, 5]).all()
        assert np.array_equal(
            data.images[:, 0, 0], np.broadcast_to(background[0, 0], (len(data.images), 3))
        )  # a corner
        indices += [f["frame_index"] for f in meta["frames"]]
        first = data if first is None else first
    assert indices == list(range(10))  # train, then val, then test: the end of the video is held out
    assert np.ptp(first.expressions[:, 0]) > 0.3  # the mouth moves within the training chunk
    assert len({round(float(v), 2) for v in torch.det(first.cameras.world_to_camera[:, :3, :3])}) == 1  # rotations


@pytest.fixture(scope="module")
def rigged():
    photo = read_image(BASE_PHOTO)[..., :3]
    avatar = build_avatar(photo, FaceLandmarker().detect(photo), resolution=128)
    return avatar, ExpressionRig.for_avatar(avatar)


def _region_change(rigged, expression: np.ndarray, landmarks: dict[str, list[int]]) -> dict[str, float]:
    """Mean absolute RGB change (0..255) from the neutral face in boxes around landmark groups, and
    over the rest of the head."""
    avatar, rig = rigged
    camera = head_cameras(np.zeros((1, 3)), 128, 0.6, 1.9)
    neutral, _ = render_avatar(avatar, camera)
    posed, _ = render_avatar(rig.apply(avatar, expression), camera)
    diff = np.abs(neutral[0, ..., :3].astype(float) - posed[0, ..., :3].astype(float)).mean(-1)
    pix = camera.project(avatar.vertices[avatar.landmark_vertex_ids])[0][0].numpy()
    head = (neutral[0, ..., 3] > 0) | (posed[0, ..., 3] > 0)
    rest, out = head.copy(), {}
    for name, ids in landmarks.items():
        (x0, y0), (x1, y1) = pix[ids].min(0) - 4, pix[ids].max(0) + 4
        box = np.zeros_like(head)
        box[int(y0) : int(y1) + 1, int(x0) : int(x1) + 1] = True
        out[name], rest = float(diff[box].mean()), rest & ~box
    return {**out, "rest": float(diff[rest].mean())}


MOUTH = [61, 291, 0, 17, 13, 14]
BROWS = [70, 63, 105, 66, 107, 336, 296, 334, 293, 300]


def test_expressions_move_their_own_region_of_the_face(rigged):
    jaw = _region_change(rigged, expression_vector(jaw_open=1.0), {"mouth": MOUTH + [152], "brows": BROWS})
    smile = _region_change(rigged, expression_vector(smile=1.0), {"mouth": MOUTH, "brows": BROWS})
    brow = _region_change(rigged, expression_vector(brow_raise=1.0), {"brows": BROWS, "mouth": MOUTH})
    assert jaw["mouth"] > 15 and jaw["mouth"] > 10 * max(jaw["brows"], jaw["rest"]), jaw
    assert smile["mouth"] > 4 and smile["mouth"] > 5 * max(smile["brows"], smile["rest"]), smile
    assert brow["brows"] > 4 and brow["brows"] > 5 * max(brow["mouth"], brow["rest"]), brow
    # Entries past the avatar's three are NeRFace's other blendshapes: they do nothing here.
    avatar, rig = rigged
    assert torch.equal(rig.apply(avatar, np.r_[np.zeros(3), np.ones(73)]).vertices, avatar.vertices)


def test_swap_keeps_nerface_fields_and_background(built4d: Path, tmp_path: Path):
    for swapper in (NoSwap(), LandmarkSwapper()):
        out = tmp_path / swapper.name
        manifest = run_swap(built4d, built4d / "famous.jpg", out, swapper, progress=False)
        assert manifest["summary"]["frames"] == 10 and manifest["summary"]["no_face"] == 0
        assert (out / "background.png").read_bytes() == (built4d / "background.png").read_bytes()
        for split in SPLITS:
            old = json.loads((built4d / f"transforms_{split}.json").read_text())
            new = json.loads((out / f"transforms_{split}.json").read_text())
            assert new == old  # intrinsics, camera_angle_x and every frame field, file paths included
            swapped, base = load_nerface_split(out, split), load_nerface_split(built4d, split)
            assert np.array_equal(swapped.expressions, base.expressions) and np.array_equal(swapped.bboxes, base.bboxes)
            changed = np.abs(swapped.images.astype(int) - base.images.astype(int)).mean()
            assert (changed == 0) if swapper.name == "none" else (changed > 1.0), (swapper.name, split, changed)
    # A video's landmarks are smoothed over time and one colour transfer serves every frame: the swapped
    # video changes from frame to frame about as much as the base video does (no flicker).
    assert manifest["faces"]["mode"] == "temporal" and manifest["faces"]["found"] == 10
    swapped, base = (load_nerface_split(root, "train").images.astype(float) for root in (out, built4d))
    ratio = np.abs(np.diff(swapped, axis=0)).mean() / np.abs(np.diff(base, axis=0)).mean()
    assert ratio < 1.3, ratio
    summary = manifest["summary"]
    assert summary["flicker"] is not None and summary["flicker"] < 1.3, summary["flicker"]  # aligned, face only
    # The jaw opens and closes through the clip: the swapped frames' mouths follow the base frames'.
    assert summary["expression"]["mouth_opening"]["correlation"] > 0.8, summary["expression"]
    record = next(r for r in manifest["frames"] if r.get("expression"))
    assert set(record["expression"]) == {"base", "swapped"} and "gaze_x" in record["expression"]["base"]


def test_landmark_swap_keeps_the_frames_open_mouth(rigged):
    """A talking head's open mouth survives the swap (the target photo has none); keep_mouth=False
    stretches the target's lips over it instead."""
    avatar, rig = rigged
    camera = head_cameras(np.zeros((1, 3)), 256, 0.6, 1.9)
    rgba, _ = render_avatar(rig.apply(avatar, expression_vector(jaw_open=1.0)), camera)
    frame = np.where(rgba[0, ..., 3:] > 0, rgba[0, ..., :3], 255).astype(np.uint8)
    landmarker = FaceLandmarker()
    lips = landmarker.detect(frame).landmarks[list(INNER_LIPS), :2]
    mouth = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mouth, [np.round(lips - 0.5).astype(np.int32)], 1)
    mouth = cv2.erode(mouth, np.ones((5, 5), np.uint8)).astype(bool)  # clear of the blend's feathered edge
    assert mouth.sum() > 100
    changes = {}
    for keep in (True, False):
        swapper = LandmarkSwapper(keep_mouth=keep, landmarker=landmarker)
        swapper.prepare(read_image(TARGET_PHOTO)[..., :3], {"f.png": frame.shape[:2]})
        out = swapper.swap(frame, "f.png").astype(float)
        changes[keep] = (np.abs(out - frame).mean(-1)[mouth].mean(), np.abs(out - frame).mean(-1)[~mouth].mean())
    assert changes[True][0] < 5.0 and changes[False][0] > 4 * changes[True][0], changes
    assert changes[True][1] == pytest.approx(changes[False][1], rel=0.1)  # the rest of the face is swapped alike
