"""A capture whose cameras are known: the synthetic head filmed on an orbit inside a textured room.

`data=capture` recovers cameras by structure from motion; to measure how well, it needs a clip of
a head whose true cameras are known. This renders the embedded avatar (`avatar/head.py`, the
default dataset's head) from cameras circling it once, at two heights (the filming advice of
docs/your_data.md), in front of a static room: a cylinder (radius `ROOM_RADIUS`, z up) papered with
the public-domain sample pictures scikit-image ships, so the background moves with the camera as a
real room does (a picture pasted behind every frame would move with the camera and mislead SfM).
Written as an mp4 or a folder of PNGs; the true cameras come back with the frames. Used by
tests/test_capture.py and bench/capture.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage

from implicit_deepfake.avatar.head import Avatar, build_avatar, render_avatar
from implicit_deepfake.core.io import read_image, write_png
from implicit_deepfake.data.colmap_model import CAMERA_DISTANCE
from implicit_deepfake.data.synthetic import BASE_PHOTO, view_cameras
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.video import write_video

ROOM_RADIUS, ROOM_HEIGHT = 4.0, 12.0  # the cylinder's radius and the height its texture spans (head: 1 unit)
TILE, TILES = 512, (4, 8)  # the wall texture: rows x columns of TILE px pictures
# scikit-image's sample pictures without a face in them (each also mirrored: no picture twice).
WALL_PICTURES = (
    "coffee.png",
    "rocket.jpg",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "ihc.png",
    "gravel.png",
    "brick.png",
    "grass.png",
    "coins.png",
    "page.png",
    "text.png",
    "moon.png",
    "retina.jpg",
    "cell.png",
)


@dataclass(frozen=True)
class OrbitClip:
    """frames: (N, H, W, 3) uint8 in filming order; alpha: (N, H, W) uint8, the head's true coverage;
    cameras: their true cameras (OpenCV axes)."""

    frames: np.ndarray
    alpha: np.ndarray
    cameras: Cameras


def orbit_views(n: int, elevation_deg: tuple[float, float] = (0.0, 25.0), turns: float = 1.0) -> np.ndarray:
    """(n, 2) (azimuth, elevation) degrees of a camera circling the head `turns` times, starting behind
    it (azimuth -180), its height swinging twice per turn between the two elevations."""
    t = np.arange(n) / n * turns
    low, high = elevation_deg
    elevation = low + (high - low) * 0.5 * (1.0 - np.cos(2.0 * np.pi * 2.0 * t))
    return np.stack([(-180.0 + 360.0 * t + 180.0) % 360.0 - 180.0, elevation], 1)


def _picture(name: str) -> np.ndarray:
    image = read_image(Path(skimage.__file__).parent / "data" / name)
    return np.repeat(image[..., :1], 3, -1) if image.ndim == 2 else image[..., :3]


def room_texture(seed: int = 0) -> np.ndarray:
    """(TILES[0] * TILE, TILES[1] * TILE, 3) uint8: the sample pictures and their mirror images,
    tinted, in a shuffled grid; tiles left over get coloured blocks."""
    rng = np.random.default_rng(seed)
    tiles = []
    for name in WALL_PICTURES:
        image = _picture(name)
        side = min(image.shape[:2])
        top, left = (image.shape[0] - side) // 2, (image.shape[1] - side) // 2
        square = cv2.resize(image[top : top + side, left : left + side], (TILE, TILE), interpolation=cv2.INTER_AREA)
        tiles += [square, square[:, ::-1]]
    while len(tiles) < TILES[0] * TILES[1]:
        blocks = rng.integers(0, 256, (TILE // 16, TILE // 16, 3), dtype=np.uint8)
        tiles.append(cv2.resize(blocks, (TILE, TILE), interpolation=cv2.INTER_NEAREST))
    order = rng.permutation(len(tiles))[: TILES[0] * TILES[1]]
    tints = rng.uniform(0.6, 1.0, (len(order), 1, 1, 3))
    grid = (np.stack([tiles[i] for i in order]) * tints).astype(np.uint8)
    return grid.reshape(TILES[0], TILES[1], TILE, TILE, 3).transpose(0, 2, 1, 3, 4).reshape(TILES[0] * TILE, -1, 3)


def room_backdrop(texture: np.ndarray, camera: Cameras, supersample: int = 2) -> np.ndarray:
    """(H, W, 3) uint8: what one camera (inside the room) sees of the textured cylinder wall."""
    c2w, k = camera.camera_to_world[0].double().numpy(), camera.intrinsics[0].double().numpy()
    u, v = np.meshgrid(
        (np.arange(camera.width * supersample) + 0.5) / supersample,
        (np.arange(camera.height * supersample) + 0.5) / supersample,
    )
    rays = np.stack([(u - k[0, 2]) / k[0, 0], (v - k[1, 2]) / k[1, 1], np.ones_like(u)], -1) @ c2w[:3, :3].T
    origin = c2w[:3, 3]
    # The far root of |origin + t ray|_xy = ROOM_RADIUS (the camera is inside the cylinder).
    a = rays[..., 0] ** 2 + rays[..., 1] ** 2
    b = 2.0 * (origin[0] * rays[..., 0] + origin[1] * rays[..., 1])
    c = origin[0] ** 2 + origin[1] ** 2 - ROOM_RADIUS**2
    t = (-b + np.sqrt(b * b - 4.0 * a * c)) / (2.0 * a).clip(1e-12)
    hit = origin + t[..., None] * rays
    height, width = texture.shape[:2]
    map_x = (np.arctan2(hit[..., 1], hit[..., 0]) / (2.0 * np.pi) + 0.5) * width
    map_y = (0.5 - hit[..., 2] / ROOM_HEIGHT) * height
    image = cv2.remap(
        texture, map_x.astype(np.float32), map_y.astype(np.float32), cv2.INTER_LINEAR, None, cv2.BORDER_WRAP
    )
    return cv2.resize(image, (camera.width, camera.height), interpolation=cv2.INTER_AREA)


def synthetic_head(mesh_resolution: int = 96) -> Avatar:
    """The default dataset's head (grace_hopper.jpg on the avatar mesh)."""
    photo = read_image(BASE_PHOTO)[..., :3]
    return build_avatar(photo, FaceLandmarker().detect_required(photo, str(BASE_PHOTO)), mesh_resolution)


def render_orbit(
    n: int,
    image_size: int,
    room: bool = True,
    camera_angle_x: float = 1.0,
    distance: float = CAMERA_DISTANCE,
    elevation_deg: tuple[float, float] = (0.0, 25.0),
    mesh_resolution: int = 96,
    supersample: int = 1,
    seed: int = 0,
) -> OrbitClip:
    """n square frames of the head on one orbit, `distance` from it with a phone's field of view
    (`camera_angle_x` 1 radian, 57 degrees: the room fills half the frame, as a phone's orbit of a
    head shows it; at 0.69 the head fills the frame, and its tiled hair texture
    folded one mapper run in four on 32 frames of 192 px); `room`: the textured room behind it
    (False: white, the head alone)."""
    cameras = view_cameras(orbit_views(n, elevation_deg), image_size, camera_angle_x, distance)
    avatar, texture = synthetic_head(mesh_resolution), room_texture(seed)
    frames, coverage = [], []
    for i in range(n):
        rgba, _ = render_avatar(avatar, cameras[i], supersample)
        alpha = rgba[0, ..., 3:].astype(np.float32) / 255.0
        backdrop = room_backdrop(texture, cameras[i]) if room else np.full((image_size, image_size, 3), 255)
        frames.append((rgba[0, ..., :3] * alpha + backdrop * (1.0 - alpha) + 0.5).astype(np.uint8))
        coverage.append(rgba[0, ..., 3])
    return OrbitClip(np.stack(frames), np.stack(coverage), cameras)


def write_clip(frames: np.ndarray, path: str | Path, fps: float = 24.0) -> Path:
    """The frames as an H.264 mp4 (a path ending in .mp4) or a folder of PNGs (any other path)."""
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        write_video(path, list(frames), fps=fps, quality=8)
    else:
        for i, frame in enumerate(frames):
            write_png(path / f"frame_{i:04d}.png", frame, Source="synthetic head orbit")
    return path
