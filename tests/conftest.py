"""Shared fixtures: a tiny Blender-format dataset written by hand, the real conf/ composed, the face
models, and each CPU Gaussian rasterizer."""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

# Before torch loads: busy-waiting OpenMP threads slow torch ~10x when another process holds a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image

from implicit_deepfake.core.io import write_png
from implicit_deepfake.data.blender import write_split_index
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.identity_dlib import DlibEmbedder
from implicit_deepfake.render.cameras import Cameras, look_at
from implicit_deepfake.render.gaussians import rasterize_gaussians

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(REPO))
CAMERA_ANGLE_X = 0.8
# The tiny end-to-end runs' data: a 48-px avatar, 8 training views, not swapped; CSV logs, short orbit.
TINY_AVATAR = [
    "data.source.image_size=48",
    "data.source.n_train=8",
    "data.source.n_val=2",
    "data.source.n_test=2",
    "+data.source.mesh_resolution=64",
    "swap=none",
    "logger=csv",
    "evaluate.orbit_frames=4",
]


def compose_train(root: Path, run: str, *overrides: str):
    """train.yaml with every path under `root`, the run folder root/logs/train/runs/<run>."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[f"paths.root_dir={root}", "progress=false", f"run_dir={root}/logs/train/runs/{run}", *overrides],
        )


def compose_evaluate(root: Path, *overrides: str):
    """evaluate.yaml with every path under `root`."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("evaluate", overrides=[f"paths.root_dir={root}", "progress=false", *overrides])


def orbit_cameras(n: int, size: int, distance: float = 4.0) -> Cameras:
    """n cameras on a ring around the origin (world z up), looking at it."""
    angles = torch.linspace(-0.6, 0.6, n)
    eye = torch.stack([distance * torch.sin(angles), -distance * torch.cos(angles), 0.5 * torch.ones(n)], 1)
    c2w = look_at(eye, torch.zeros(n, 3), torch.tensor([0.0, 0.0, 1.0]))
    return Cameras.from_blender(c2w, CAMERA_ANGLE_X, size, size)


def write_tiny_dataset(root: Path, size: int = 16, per_split: int = 2, rgba: bool = True) -> Path:
    """Random-coloured frames (RGBA with a transparent border) in the Blender layout + famous.jpg."""
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        c2w, angle = orbit_cameras(per_split, size).to_blender()
        frames = []
        for i in range(per_split):
            image = rng.integers(0, 256, (size, size, 4 if rgba else 3), dtype=np.uint8)
            if rgba:
                image[..., 3] = 255
                image[:2, :, 3] = 0
            write_png(root / split / f"r_{i}.png", image, synthetic=False)
            frames.append({"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[i].tolist()})
        write_split_index(root, split, angle, frames)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "famous.jpg", quality=95)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")


@pytest.fixture
def compose_cfg(tmp_path: Path):
    """compose_cfg("train", ["swap=none"]) -> the real conf/ with paths under tmp_path."""

    def _compose(config_name: str, overrides: list[str] = ()):
        run_dir = [f"run_dir={tmp_path}/run"] if config_name == "train" else []  # Hydra's folder, outside hydra.main
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            return compose(
                config_name,
                overrides=[f"paths.root_dir={tmp_path}", "progress=false", *run_dir, *overrides],
                return_hydra_config=False,
            )

    return _compose


# One face landmarker and dlib embedder for every test that looks at faces (mediapipe's and dlib's
# models load once per session).
@pytest.fixture(scope="session")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker()


@pytest.fixture(scope="session")
def refined() -> FaceLandmarker:
    """The 478-point landmarker, with irises."""
    return FaceLandmarker(refine=True)


@pytest.fixture(scope="session")
def refined_hopper(refined: FaceLandmarker) -> tuple[np.ndarray, np.ndarray]:
    """Grace Hopper's photo and its 478-point mesh."""
    from tests.test_identity import load_photo

    photo = load_photo("grace_hopper")
    return photo, refined.detect(photo).landmarks


@pytest.fixture(scope="session")
def embedder(landmarker: FaceLandmarker) -> DlibEmbedder:
    return DlibEmbedder(landmarker=landmarker)


@pytest.fixture(params=["numba", "torch"])
def rasterize(request):
    """`rasterize_gaussians` with one of the CPU rasterizers: a test that renders runs once with each."""
    return partial(rasterize_gaussians, rasterizer=request.param)
