"""Reading a COLMAP scene: its model, its cameras resampled to one pinhole camera, its normalisation.

A COLMAP scene (what `colmap mapper`, nerfstudio's `ns-process-data` or `data=capture` write) is a
folder with the frames in `images/` (or `images_<N>/`, the same frames downscaled N times, as
graphdeco's 3DGS and gsplat read them) and the model in `sparse/0/` (cameras, images, points3D as
`.bin` or `.txt`; with several models under `sparse/`, the one with the most registered images).
The model is read with pycolmap's `Reconstruction`. Every frame is resampled once onto one shared
pinhole camera (square pixels, principal point at the centre): distorted camera models are
undistorted, and frames of different cameras come out with the same intrinsics, which is all the
Blender format (one `camera_angle_x` per split) can hold. The scene is then moved and scaled to the
frame the models and the orbit video expect: centred on the point the cameras look at, z up (the
cameras' mean up), the cameras at the default dataset's distance from that point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import torch

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.render.cameras import Cameras

# The camera models read (the perspective ones COLMAP's mapper and ns-process-data write); fisheyes
# and the rest would need another undistortion than a pinhole's.
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
MODEL_FILES = ("cameras", "images", "points3D")
# A phone's orbit at arm's length from a head: a capture's median camera distance is scaled to it, so the head
# comes out about 1 unit, as the default dataset's.
CAMERA_DISTANCE = 1.9


@dataclass(frozen=True)
class SceneModel:
    """A registered COLMAP model, images sorted by name.

    names: image names (paths under the images folder); world_to_camera: (N, 4, 4) OpenCV axes;
    cameras: each image's pycolmap camera; points: (P, 3) sparse points and colors (P, 3) uint8."""

    path: Path
    names: list[str]
    world_to_camera: np.ndarray
    cameras: list[pycolmap.Camera]
    points: np.ndarray
    colors: np.ndarray


def model_dirs(scene: Path) -> list[Path]:
    """The folders under `scene/sparse` (or `sparse` itself) that hold a COLMAP model."""
    sparse = scene / "sparse"
    if not sparse.is_dir():
        raise DeepfakeError(
            f"data.path={scene}: no sparse/ folder, so no COLMAP model to read. Give the scene folder that "
            "holds images/ and sparse/0/ (what `colmap mapper` or nerfstudio's ns-process-data write), or "
            "reconstruct a video or photos with data=capture data.path=<video | folder of photos>."
        )
    candidates = [sparse, *sorted(p for p in sparse.iterdir() if p.is_dir())]
    found = [
        p
        for p in candidates
        if all((p / f"{name}.bin").is_file() or (p / f"{name}.txt").is_file() for name in MODEL_FILES)
    ]
    if not found:
        raise DeepfakeError(
            f"{sparse}: no COLMAP model in it (cameras, images and points3D as .bin or .txt, in sparse/ or "
            "sparse/<k>/). The reconstruction may have failed: run COLMAP's mapper again, or use data=capture."
        )
    return found


def read_reconstruction(path: Path) -> pycolmap.Reconstruction:
    try:
        return pycolmap.Reconstruction(path)
    except (RuntimeError, ValueError) as err:
        raise DeepfakeError(f"{path}: not a readable COLMAP model ({str(err).splitlines()[0]}).") from err


def largest_model(scene: Path) -> Path:
    """sparse/0, or of several models the one with the most registered images."""
    found = model_dirs(scene)
    if len(found) == 1:
        return found[0]
    return max(found, key=lambda p: read_reconstruction(p).num_reg_images())


def read_model(path: Path) -> SceneModel:
    """The registered images of the COLMAP model at `path`; refuses camera models not in CAMERA_MODELS."""
    reconstruction = read_reconstruction(path)
    images = sorted((reconstruction.image(i) for i in reconstruction.reg_image_ids()), key=lambda im: im.name)
    if not images:
        raise DeepfakeError(f"{path}: the COLMAP model has no registered images.")
    for image in images:
        model = reconstruction.camera(image.camera_id).model.name
        if model not in CAMERA_MODELS:
            raise DeepfakeError(
                f"{path}: image {image.name} has camera model {model}, which this tool does not read (it reads "
                f"{', '.join(CAMERA_MODELS)}). Reconstruct with one of them (colmap feature_extractor "
                "--ImageReader.camera_model OPENCV), or undistort the scene first (colmap image_undistorter)."
            )
    world_to_camera = np.tile(np.eye(4), (len(images), 1, 1))
    for i, image in enumerate(images):
        world_to_camera[i, :3] = image.cam_from_world().matrix()
    points = [reconstruction.point3D(i) for i in sorted(reconstruction.point3D_ids())]
    return SceneModel(
        path,
        [image.name for image in images],
        world_to_camera,
        [reconstruction.camera(image.camera_id) for image in images],
        np.array([p.xyz for p in points], np.float64).reshape(-1, 3),
        np.array([p.color for p in points], np.uint8).reshape(-1, 3),
    )


def images_dir(scene: Path, images: str | None) -> Path:
    """`scene/<images>`, or by default `images/`, else the least downscaled `images_<N>/`."""
    if images is not None:
        folder = scene / images
        if not folder.is_dir():
            raise DeepfakeError(f"data.source.images={images}: no folder {folder}.")
        return folder
    if (scene / "images").is_dir():
        return scene / "images"
    scaled = sorted(
        (p for p in scene.glob("images_*") if p.is_dir() and p.name[7:].isdigit()), key=lambda p: int(p.name[7:])
    )
    if not scaled:
        raise DeepfakeError(f"data.path={scene}: no images/ (or images_<N>/) folder with the scene's frames.")
    return scaled[0]


@dataclass(frozen=True)
class PinholeTarget:
    """The one camera every frame is resampled onto: width x height px, focal `focal` px, centred."""

    width: int
    height: int
    focal: float

    @property
    def matrix(self) -> np.ndarray:
        return np.array([[self.focal, 0, self.width / 2], [0, self.focal, self.height / 2], [0, 0, 1]])

    @property
    def camera_angle_x(self) -> float:
        return 2.0 * math.atan(0.5 * self.width / self.focal)


def pinhole_target(camera: pycolmap.Camera, image_size: int, square: bool) -> PinholeTarget:
    """The shared camera for frames like `camera`'s: its mean focal length and field of view, scaled to
    `image_size` px on the long side, or (`square`) its centred square scaled to `image_size`."""
    width, height, focal = camera.width, camera.height, camera.mean_focal_length()
    if square:
        return PinholeTarget(image_size, image_size, focal * image_size / min(width, height))
    scale = image_size / max(width, height)
    return PinholeTarget(max(1, round(width * scale)), max(1, round(height * scale)), focal * scale)


class Resampler:
    """Frames of any CAMERA_MODELS camera -> frames of one PinholeTarget (undistorted), one remap per camera."""

    def __init__(self, target: PinholeTarget) -> None:
        self.target = target
        self._maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def maps(self, camera: pycolmap.Camera, size: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """cv2.remap maps from the target's pixels to those of a frame of `camera` stored at
        `size` (height, width): images_<N>/ frames are the camera's, scaled."""
        key = (camera.model.name, tuple(camera.params), camera.width, camera.height, size)
        if key not in self._maps:
            t = self.target
            u, v = np.meshgrid(np.arange(t.width) + 0.5, np.arange(t.height) + 0.5)
            rays = np.stack([(u - t.width / 2) / t.focal, (v - t.height / 2) / t.focal, np.ones_like(u)], -1)
            pixels = camera.img_from_cam(rays.reshape(-1, 3), check_cheirality=False).reshape(t.height, t.width, 2)
            scale = np.array([size[1] / camera.width, size[0] / camera.height])
            source = pixels * scale - 0.5  # COLMAP's pixel centres are at +0.5, cv2.remap's at 0
            self._maps[key] = (source[..., 0].astype(np.float32), source[..., 1].astype(np.float32))
        return self._maps[key]

    def __call__(self, image: np.ndarray, camera: pycolmap.Camera) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, C) uint8 of `camera` -> the target's (h, w, C) uint8 and (h, w) bool: pixels that
        came from inside the frame."""
        map_x, map_y = self.maps(camera, image.shape[:2])
        # Source pixels per target pixel: downscaling by 2x or more, average first, or the remap aliases.
        step = float(np.ptp(map_x)) / max(1, map_x.shape[1] - 1)
        if step >= 2:
            height, width = image.shape[:2]
            size = (max(1, round(width / int(step))), max(1, round(height / int(step))))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            map_x = (map_x + 0.5) * (size[0] / width) - 0.5
            map_y = (map_y + 0.5) * (size[1] / height) - 0.5
        out = cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        height, width = image.shape[:2]
        inside = (map_x > -0.5) & (map_x < width - 0.5) & (map_y > -0.5) & (map_y < height - 0.5)
        return out.reshape(*map_x.shape, -1) if out.ndim == 2 else out, inside


def normalising_transform(world_to_camera: np.ndarray, distance: float = CAMERA_DISTANCE) -> np.ndarray:
    """(4, 4) similarity taking the model's world to the normalised one: the point the cameras look at
    to the origin, their mean up to +z, the first camera's right (made level) to +x, and the median
    camera distance from that point to `distance`."""
    cameras = Cameras(
        torch.as_tensor(world_to_camera, dtype=torch.float64),
        torch.eye(3, dtype=torch.float64).expand(len(world_to_camera), 3, 3),
        1,
        1,
    )
    centre = cameras.look_at_point().numpy()
    c2w = np.linalg.inv(world_to_camera)
    up = -c2w[:, :3, 1].mean(0)
    if np.linalg.norm(up) < 1e-6:
        raise DeepfakeError("the cameras' up directions cancel out (half of them upside down): no up for the scene.")
    up /= np.linalg.norm(up)
    right = next(r for r in (c2w[0, :3, 0], c2w[0, :3, 2], np.eye(3)[0]) if np.linalg.norm(np.cross(r, up)) > 1e-3)
    right = right - (right @ up) * up
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(up, right), up])
    scale = distance / float(np.median(np.linalg.norm(c2w[:, :3, 3] - centre, axis=1)))
    transform = np.eye(4)
    transform[:3, :3] = scale * rotation
    transform[:3, 3] = -scale * rotation @ centre
    return transform


def transform_cameras(world_to_camera: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """(N, 4, 4) world-to-camera poses in the world `transform` (a similarity) maps to: same images."""
    scale = np.cbrt(np.linalg.det(transform[:3, :3]))
    moved = world_to_camera @ np.linalg.inv(transform)  # x_cam = W T^-1 x_new, in the old units:
    moved[:, :3, :] *= scale  # the same camera in the new units (a projection ignores the scale)
    return moved


def transform_points(points: np.ndarray, transform: np.ndarray) -> np.ndarray:
    return points @ transform[:3, :3].T + transform[:3, 3]
