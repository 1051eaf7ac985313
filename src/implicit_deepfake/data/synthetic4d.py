"""`data=synthetic4d`: the embedded 4D default, a short monocular "video" of the avatar talking.

The textured head of `data=synthetic` (avatar.py) turns (yaw, pitch, roll about the top of the
neck) and changes expression (expressions.py: jaw, smile and brows, driven by the first entries
of a 76-d expression vector) along smooth curves, in front of a fixed camera and a static,
textured background. The frames are written in the NeRFace format (nerface.py): RGB frames
composited onto `background.png`; per frame the `expression`, the face `bbox` and the head pose
folded into the camera (`transform_matrix` is the camera in head coordinates, as NeRFace's
tracker gives it). The light turns with the head, so a surface point's colour depends on the
expression only: the static radiance field in head coordinates that NeRFace's model assumes.
The splits are contiguous chunks of the video, the test chunk last, as NeRFace holds out the end
of its videos. Built, cached and replaced atomically by SyntheticAvatarSource's machinery; the
target photo famous.jpg is the same astronaut.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation
from tqdm import tqdm

from implicit_deepfake.avatar.head import Avatar, render_avatar
from implicit_deepfake.core.io import write_png
from implicit_deepfake.data.blender import SPLITS, write_split_index
from implicit_deepfake.data.expressions import ExpressionRig, expression_vector
from implicit_deepfake.data.nerface import BACKGROUND_FILES, landmark_bbox
from implicit_deepfake.data.synthetic import LOOK_AT, SyntheticAvatarSource
from implicit_deepfake.render.cameras import Cameras, look_at

TALKING_HEAD_VERSION = 3  # 3: the head made of the photo (issue 23)
PIVOT = (0.0, 0.05, -0.35)  # the head turns about the top of the neck
SYLLABLE_FRAMES = 10  # one mouth opening every this many frames


def talking_sequence(
    n: int, seed: int, yaw_deg: float, pitch_deg: float, roll_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth head poses (n, 3) degrees [yaw, pitch, roll] within the given amplitudes and
    expressions (n, 76): slow turns and nods, a mouth opening every SYLLABLE_FRAMES frames under a
    slower loudness envelope, slow smiles and brow raises. Incommensurate periods make every
    chunk of the video (each split) see many pose/expression combinations."""
    t = np.arange(n) / n
    phase = np.random.default_rng(seed).uniform(0, 2 * math.pi, 7)
    poses = np.stack(
        [
            yaw_deg * np.sin(2 * math.pi * 1.5 * t + phase[0]),
            pitch_deg * np.sin(2 * math.pi * 2.5 * t + phase[1]),
            roll_deg * np.sin(2 * math.pi * 2.0 * t + phase[2]),
        ],
        1,
    )
    syllables = 0.5 * (1 - np.cos(2 * math.pi * np.arange(n) / SYLLABLE_FRAMES + phase[3]))
    jaw = syllables * (0.6 + 0.4 * np.sin(2 * math.pi * 3.0 * t + phase[4]))
    smile = 0.2 + 0.6 * np.sin(2 * math.pi * 2.0 * t + phase[5])
    brow = 0.7 * np.sin(2 * math.pi * 3.5 * t + phase[6])
    return poses, np.stack([expression_vector(*e) for e in zip(jaw, smile, brow)])


def head_cameras(poses_deg: np.ndarray, image_size: int, camera_angle_x: float, distance: float) -> Cameras:
    """A fixed camera `distance` in front of the face, as seen from the head in each pose (N, 3):
    camera-to-world = H^-1 C, with H the head's rotation about PIVOT (yaw about the vertical,
    positive turning the face to image right; pitch about the ear-to-ear axis, positive chin up;
    roll about the viewing axis) and C the camera facing the head at rest."""
    target = torch.tensor(LOOK_AT)
    front = look_at((target + torch.tensor([0.0, -distance, 0.0]))[None], target[None], torch.tensor([0.0, 0.0, 1.0]))
    yaw, pitch, roll = np.radians(poses_deg).T
    rotation = Rotation.from_euler("zxy", np.stack([yaw, -pitch, roll], 1)).as_matrix()  # (N, 3, 3)
    pivot = np.asarray(PIVOT)
    inverse = np.tile(np.eye(4), (len(poses_deg), 1, 1))
    inverse[:, :3, :3] = rotation.transpose(0, 2, 1)
    inverse[:, :3, 3] = pivot - np.einsum("nij,j->ni", inverse[:, :3, :3], pivot)
    c2w = torch.as_tensor(inverse, dtype=torch.float32) @ front
    return Cameras.from_blender(c2w, camera_angle_x, image_size, image_size)


def make_background(size: int, seed: int) -> np.ndarray:
    """(size, size, 3) uint8: a muted wall, smooth blotches at two scales over faint wallpaper
    stripes and a darker band below — textured, static, not white, and nothing face-like."""
    rng = np.random.default_rng(seed + 1)

    def smooth(cells: int, channels: int) -> np.ndarray:
        noise = rng.random((cells, cells, channels)).astype(np.float32)
        return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)

    u = (np.arange(size) + 0.5) / size  # pixel centres, 0..1 across (columns) or down (rows)
    stripes = 0.06 * np.sin(2 * math.pi * 9 * u)[None, :, None]
    skirting = 0.25 * (1 - np.clip((0.82 - u) * 40, 0, 1))[:, None, None]  # a darker band at the bottom
    wall = np.array([0.42, 0.52, 0.58]) * (0.75 + 0.4 * smooth(4, 3)) * (0.9 + 0.2 * smooth(16, 1))
    return (np.clip((wall + stripes) * (1 - skirting), 0, 1) * 255 + 0.5).astype(np.uint8)


def face_bbox(avatar: Avatar, camera: Cameras) -> list[float]:
    """NeRFace's face box [top, bottom, left, right] (fractions of the frame) around the projected face landmarks."""
    pix, _ = camera.project(avatar.vertices[avatar.landmark_vertex_ids])
    return landmark_bbox(pix[0].numpy(), camera.width, camera.height)


def render_frame(posed: Avatar, camera: Cameras, background: np.ndarray, supersample: int) -> np.ndarray:
    """One frame of the talking head: the posed avatar over the background, HxWx3 uint8."""
    rgba, _ = render_avatar(posed, camera, supersample)
    alpha = rgba[0, ..., 3:].astype(np.float32) / 255.0
    return (rgba[0, ..., :3] * alpha + background * (1 - alpha) + 0.5).astype(np.uint8)


class SyntheticTalkingHeadSource(SyntheticAvatarSource):
    """The built 4D default dataset under `root`; `prepare()` builds it when missing or stale."""

    name = "synthetic4d"

    def __init__(
        self,
        root: str,
        image_size: int = 128,
        n_train: int = 64,
        n_val: int = 8,
        n_test: int = 8,
        camera_angle_x: float = 0.6,
        seed: int = 0,
        distance: float = 1.9,
        yaw_deg: float = 25.0,
        pitch_deg: float = 15.0,
        roll_deg: float = 5.0,
        mesh_resolution: int = 192,
        supersample: int = 2,
    ) -> None:
        super().__init__(
            root,
            image_size=image_size,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            camera_angle_x=camera_angle_x,
            seed=seed,
            distance=distance,
            mesh_resolution=mesh_resolution,
            supersample=supersample,
        )
        for unused in ("azimuth_deg", "elevation_deg"):  # the multi-view dataset's view sampling
            del self.config[unused]
        self.config.update(
            talking_head_version=TALKING_HEAD_VERSION, yaw_deg=yaw_deg, pitch_deg=pitch_deg, roll_deg=roll_deg
        )

    def _render(self, avatar: Avatar, out: Path) -> None:
        cfg = self.config
        counts = [cfg["counts"][split] for split in SPLITS]
        poses, expressions = talking_sequence(
            sum(counts), cfg["seed"], cfg["yaw_deg"], cfg["pitch_deg"], cfg["roll_deg"]
        )
        cameras = head_cameras(poses, cfg["image_size"], cfg["camera_angle_x"], cfg["distance"])
        c2w, angle = cameras.to_blender()
        focal = float(cameras.intrinsics[0, 0, 0])
        background = make_background(cfg["image_size"], cfg["seed"])
        write_png(out / BACKGROUND_FILES[0], background, synthetic=False, Source="procedural background")
        rig = ExpressionRig.for_avatar(avatar)
        offsets = np.cumsum([0, *counts])
        for split, first, end in zip(SPLITS, offsets[:-1], offsets[1:]):
            frames = []
            for i, k in enumerate(tqdm(range(first, end), desc=f"render {split}", unit="frame")):
                posed = rig.apply(avatar, expressions[k])
                rgb = render_frame(posed, cameras[int(k)], background, cfg["supersample"])
                write_png(out / split / f"f_{i:04d}.png", rgb, Source="synthetic talking avatar of grace_hopper.jpg")
                frames.append(
                    {
                        "file_path": f"./{split}/f_{i:04d}",
                        "transform_matrix": c2w[k].tolist(),
                        "expression": [round(float(v), 5) for v in expressions[k]],
                        "bbox": face_bbox(posed, cameras[int(k)]),
                        "frame_index": int(k),
                        "head_pose_deg": [round(float(v), 3) for v in poses[k]],
                    }
                )
            # NeRFace's fields: intrinsics [fx, fy, cx, cy] (cx, cy as fractions), camera_angle_x from fx.
            write_split_index(out, split, angle, frames, intrinsics=[focal, focal, 0.5, 0.5])
