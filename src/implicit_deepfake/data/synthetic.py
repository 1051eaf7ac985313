"""`data=synthetic`: the embedded default dataset, built offline and cached.

A textured 3D head (`avatar.py`) made from matplotlib's public-domain grace_hopper.jpg, rendered
from random views around the front of the head into the Blender format; the target photo
famous.jpg is scikit-image's astronaut.png. The build goes to a temporary sibling folder and is
moved into place whole, so a killed build leaves nothing half-made; `avatar.json` holds the config
fingerprint, and a changed config rebuilds.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import skimage
import torch
from PIL import Image
from tqdm import tqdm

from implicit_deepfake.data.avatar import build_avatar, render_avatar
from implicit_deepfake.data.blender import SPLITS, write_split_index
from implicit_deepfake.data.cameras import Cameras, look_at
from implicit_deepfake.faces import FaceLandmarker
from implicit_deepfake.io import read_image, read_json, sha256_json, write_json, write_png

log = logging.getLogger(__name__)
BUILDER_VERSION = 1
BASE_PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
TARGET_PHOTO = Path(skimage.__file__).parent / "data" / "astronaut.png"
_LOOK_AT = (0.0, 0.0, 0.25)  # the head's centre, world units (face half-width = 1)


def view_cameras(
    n: int, rng: np.random.Generator, image_size: int, camera_angle_x: float, distance: float,
    azimuth_deg: float, elevation_deg: tuple[float, float],
) -> Cameras:
    """n cameras at random azimuth in [-azimuth_deg, azimuth_deg] (0 = frontal) and elevation range."""
    az = torch.as_tensor(np.radians(rng.uniform(-azimuth_deg, azimuth_deg, n)), dtype=torch.float32)
    el = torch.as_tensor(np.radians(rng.uniform(*elevation_deg, n)), dtype=torch.float32)
    target = torch.tensor(_LOOK_AT)
    eye = target + distance * torch.stack([torch.cos(el) * torch.sin(az), -torch.cos(el) * torch.cos(az), torch.sin(el)], 1)
    c2w = look_at(eye, target.expand(n, 3), torch.tensor([0.0, 0.0, 1.0]))
    return Cameras.from_blender(c2w, camera_angle_x, image_size, image_size)


class SyntheticAvatarSource:
    """The built default dataset under `root` (see module docstring)."""

    name = "synthetic"

    def __init__(
        self,
        root: str,
        image_size: int = 128,
        n_train: int = 60,
        n_val: int = 8,
        n_test: int = 10,
        camera_angle_x: float = 0.69,
        distance: float = 4.8,
        azimuth_deg: float = 70.0,
        elevation_deg: tuple[float, float] = (-15.0, 30.0),
        mesh_resolution: int = 192,
        seed: int = 0,
    ) -> None:
        self.root = Path(root)
        self.config = {
            "image_size": image_size, "counts": {"train": n_train, "val": n_val, "test": n_test},
            "camera_angle_x": camera_angle_x, "distance": distance, "azimuth_deg": azimuth_deg,
            "elevation_deg": list(elevation_deg), "mesh_resolution": mesh_resolution, "seed": seed,
            "version": BUILDER_VERSION,
        }

    @property
    def target_photo(self) -> Path:
        return self.root / "famous.jpg"

    @property
    def fingerprint(self) -> str:
        return sha256_json(self.config)

    def is_built(self) -> bool:
        stamp = self.root / "avatar.json"
        return stamp.is_file() and read_json(stamp).get("fingerprint") == self.fingerprint

    def prepare(self) -> Path:
        if self.is_built():
            return self.root
        log.info("building the synthetic avatar dataset in %s", self.root)
        self.root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.", dir=self.root.parent))
        try:
            self._build(staging)
            if self.root.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.old.", dir=self.root.parent))
                os.replace(self.root, old / "dataset")
                shutil.rmtree(old)
            os.replace(staging, self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self.root

    def _build(self, out: Path) -> None:
        cfg = self.config
        photo = read_image(BASE_PHOTO)[..., :3]
        avatar = build_avatar(photo, FaceLandmarker().detect_required(photo, str(BASE_PHOTO)), cfg["mesh_resolution"])
        rng = np.random.default_rng(cfg["seed"])
        for split in SPLITS:
            cameras = view_cameras(
                cfg["counts"][split], rng, cfg["image_size"], cfg["camera_angle_x"], cfg["distance"],
                cfg["azimuth_deg"], tuple(cfg["elevation_deg"]),
            )
            frames = []
            c2w, angle = cameras.to_blender()
            for i in tqdm(range(len(cameras)), desc=f"render {split}", unit="view"):
                rgba, _ = render_avatar(avatar, cameras[i])
                write_png(out / split / f"r_{i}.png", rgba[0], Source="synthetic avatar (grace_hopper.jpg)")
                frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[i].tolist()})
            write_split_index(out, split, angle, frames)
        Image.fromarray(read_image(TARGET_PHOTO)[..., :3]).save(out / "famous.jpg", quality=95)
        write_json(out / "avatar.json", {
            "config": cfg, "fingerprint": self.fingerprint,
            "base_photo": "matplotlib sample_data/grace_hopper.jpg (public domain)",
            "target_photo": "scikit-image data/astronaut.png (public domain, NASA)",
        })
