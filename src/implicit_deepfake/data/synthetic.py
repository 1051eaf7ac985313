"""`data=synthetic`: the embedded default dataset, built offline and cached.

A textured 3D head (avatar/head.py) made from matplotlib's public-domain grace_hopper.jpg, rendered
from views all around the head (the whole turn, a band of elevations) into the Blender format; the
target photo famous.jpg is scikit-image's astronaut.png. Built and cached by `CachedDataset`
(cached.py): `avatar.json` holds the config and its fingerprint, and a changed config (or builder
version, or source photo) rebuilds.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import skimage
import torch
from PIL import Image
from scipy.stats import qmc
from tqdm import tqdm

from implicit_deepfake.avatar.head import Avatar, build_avatar, render_avatar
from implicit_deepfake.core.io import atomic_path, read_image, sha256_file, write_png
from implicit_deepfake.data.blender import SPLITS, write_split_index
from implicit_deepfake.data.cached import CachedDataset
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.render.cameras import Cameras, look_at

BUILDER_VERSION = 7  # 5: the head made of the photo (issue 23); 6: hair from the scalp; 7: the face upright
BASE_PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
TARGET_PHOTO = Path(skimage.__file__).parent / "data" / "astronaut.png"
LOOK_AT = (0.0, 0.0, -0.08)  # a little below the head's centre, so the frame holds head and neck
# A portrait lens: the 1-unit head seen from 5.7 units (a real head from ~1.3 m) fills ~70% of a 0.229 rad
# (13.1 degree) field of view, with room above at +40 deg. Portraits are taken from about there, and the
# head built from one is seen in its perspective: from 1.9 units (a selfie's distance, 0.69 rad) each
# portrait's own head read up to 0.06 farther from it frontally, 0.07 at 30-60 degrees (docs/benchmarks.md).
DISTANCE = 5.7
CAMERA_ANGLE_X = 0.229


def sample_views(n: int, seed: int, azimuth_deg: float, elevation_deg: tuple[float, float]) -> np.ndarray:
    """(n, 2) distinct (azimuth, elevation) in degrees, evenly spread (scrambled Halton sequence):
    azimuth in [-azimuth_deg, azimuth_deg] (0 = frontal, positive = camera on the head's +x side;
    180: the whole turn)."""
    unit = qmc.Halton(d=2, scramble=True, seed=seed).random(n)
    low, high = elevation_deg
    return np.stack([azimuth_deg * (2 * unit[:, 0] - 1), low + (high - low) * unit[:, 1]], 1)


def view_cameras(views_deg: np.ndarray, image_size: int, camera_angle_x: float, distance: float) -> Cameras:
    """Cameras at (azimuth, elevation) degrees (N, 2), `distance` from LOOK_AT, looking at it (z up)."""
    az, el = torch.as_tensor(np.radians(views_deg), dtype=torch.float32).T
    target = torch.tensor(LOOK_AT)
    direction = torch.stack([torch.cos(el) * torch.sin(az), -torch.cos(el) * torch.cos(az), torch.sin(el)], 1)
    eye = target + distance * direction
    c2w = look_at(eye, target.expand(len(eye), 3), torch.tensor([0.0, 0.0, 1.0]))
    return Cameras.from_blender(c2w, camera_angle_x, image_size, image_size)


def dataset_views(
    counts: tuple[int, ...] = (100, 50, 10),
    seed: int = 0,
    azimuth_deg: float = 180.0,
    elevation_deg: tuple[float, float] = (-15.0, 40.0),
) -> np.ndarray:
    """(N, 2) (azimuth, elevation) degrees of every view of the dataset with these settings (the
    defaults: the default dataset's), its splits one after the other."""
    return sample_views(sum(counts), seed, azimuth_deg, elevation_deg)


def head_yaw_deg(views_deg: np.ndarray) -> np.ndarray:
    """(N,) the head's yaw as seen from views (N, 2) (azimuth, elevation) degrees around the
    synthetic head (its face looks down -y, z up): the azimuth, folded into [-180, 180)."""
    return (np.asarray(views_deg, np.float64)[:, 0] + 180.0) % 360.0 - 180.0


class SyntheticAvatarSource(CachedDataset):
    """The built default dataset under `root`; `prepare()` builds it when missing or stale."""

    name = "synthetic"
    kind = "synthetic avatar"
    stamp = "avatar.json"

    def __init__(
        self,
        root: str,
        image_size: int = 256,
        n_train: int = 100,
        n_val: int = 50,
        n_test: int = 10,
        camera_angle_x: float = CAMERA_ANGLE_X,
        seed: int = 0,
        distance: float = DISTANCE,
        azimuth_deg: float = 180.0,
        elevation_deg: tuple[float, float] = (-15.0, 40.0),
        mesh_resolution: int = 192,
        supersample: int = 2,
    ) -> None:
        self.root = Path(root)
        self.config = {
            "image_size": image_size,
            "counts": {"train": n_train, "val": n_val, "test": n_test},
            "camera_angle_x": camera_angle_x,
            "seed": seed,
            "distance": distance,
            "azimuth_deg": azimuth_deg,
            "elevation_deg": list(elevation_deg),
            "mesh_resolution": mesh_resolution,
            "supersample": supersample,
            "builder_version": BUILDER_VERSION,
            "base_photo_sha256": sha256_file(BASE_PHOTO),
        }

    @property
    def target_photo(self) -> Path:
        return self.root / "famous.jpg"

    def _build(self, out: Path) -> None:
        photo = read_image(BASE_PHOTO)[..., :3]
        face = FaceLandmarker().detect_required(photo, str(BASE_PHOTO))
        avatar = build_avatar(photo, face, self.config["mesh_resolution"])
        self._render(avatar, out)
        with atomic_path(out / "famous.jpg") as tmp:
            Image.fromarray(read_image(TARGET_PHOTO)[..., :3]).save(tmp, format="JPEG", quality=95)
        self.write_stamp(
            out,
            base_photo="matplotlib sample_data/grace_hopper.jpg (public domain)",
            target_photo="scikit-image data/astronaut.png (public domain, NASA)",
        )

    def _render(self, avatar: Avatar, out: Path) -> None:
        """Write the frames and transforms jsons of `avatar` into `out` (subclasses: other datasets)."""
        cfg = self.config
        counts = [cfg["counts"][split] for split in SPLITS]
        views = sample_views(sum(counts), cfg["seed"], cfg["azimuth_deg"], tuple(cfg["elevation_deg"]))
        cameras = view_cameras(views, cfg["image_size"], cfg["camera_angle_x"], cfg["distance"])
        c2w, angle = cameras.to_blender()
        # Consecutive runs of a Halton sequence are evenly spread too: each split spans the whole turn.
        offsets = np.cumsum([0, *counts])
        for split, first, end in zip(SPLITS, offsets[:-1], offsets[1:]):
            frames = []
            for i, k in enumerate(tqdm(range(first, end), desc=f"render {split}", unit="view")):
                rgba, _ = render_avatar(avatar, cameras[int(k)], cfg["supersample"])
                write_png(out / split / f"r_{i}.png", rgba[0], Source="synthetic avatar of grace_hopper.jpg")
                frames.append(
                    {
                        "file_path": f"./{split}/r_{i}",
                        "transform_matrix": c2w[k].tolist(),
                        "azimuth_deg": round(float(views[k, 0]), 3),
                        "elevation_deg": round(float(views[k, 1]), 3),
                    }
                )
            write_split_index(out, split, angle, frames)
