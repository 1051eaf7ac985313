"""`data=colmap`: a COLMAP scene as the base head, in the Blender format the rest of the chain reads.

`data=colmap data.path=<scene>` reads the scene's model (`colmap_model.py`), resamples every
registered frame once onto one pinhole camera (undistorted), normalises the scene (centred on the
point the cameras look at, z up, the cameras at the default dataset's distance; the transform is
recorded in `colmap.json`) and splits it as graphdeco's 3DGS and gsplat do: every 8th image by
name is a test view, `n_val` views spread over the rest are validation views. The sparse points
(with their colours, in the normalised frame) go to `points3D.ply`. Optionally (`segment`, on for
`data=capture`) the person is cut out into the frames' alpha (`person_masks.py`: mediapipe's selfie
segmentation, made consistent across the views), so the background is neither modelled nor swapped.
Built once and cached (`cached.py`: staged, then moved into place), rebuilt when the model, the
frames or a setting change.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, read_image, sha256_file, sha256_json, write_json, write_png
from implicit_deepfake.data.blender import SPLITS, write_split_index
from implicit_deepfake.data.cached import CachedDataset
from implicit_deepfake.data.colmap_model import (
    MODEL_FILES,
    Resampler,
    SceneModel,
    images_dir,
    largest_model,
    normalising_transform,
    pinhole_target,
    read_model,
    transform_cameras,
    transform_points,
)
from implicit_deepfake.data.person_masks import PersonSegmenter, fuse_masks
from implicit_deepfake.data.source import GivenTargetPhoto
from implicit_deepfake.data.sparse_points import SPARSE_POINTS, write_points_ply
from implicit_deepfake.data.synthetic import TARGET_PHOTO
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.render.cameras import Cameras

log = logging.getLogger(__name__)
COLMAP_BUILDER_VERSION = 1
FACE_CHECK_FRAMES = 24  # frames searched for a face, spread over the scene


def split_views(names: list[str], test_every: int, n_val: int) -> dict[str, list[int]]:
    """Indices into `names` (sorted) per split: test every `test_every`-th (the 3DGS/gsplat
    convention, from the first), val `n_val` spread over the rest, train the others."""
    test = list(range(0, len(names), test_every))
    rest = [i for i in range(len(names)) if i % test_every]
    picks: np.ndarray | list[int] = np.linspace(0, len(rest) - 1, n_val + 2)[1:-1].round().astype(int) if n_val else []
    val = sorted({rest[int(k)] for k in picks})
    train = [i for i in rest if i not in val]
    if not train or not val or not test:
        raise DeepfakeError(
            f"{len(names)} registered images are too few to split into train, val and test "
            f"(test every {test_every}th, {n_val} val): film more views (at least 20)."
        )
    return {"train": train, "val": val, "test": test}


def count_faces(frames: list[np.ndarray]) -> int:
    """How many of up to FACE_CHECK_FRAMES frames, spread over `frames`, show a face."""
    picks = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), FACE_CHECK_FRAMES)).round().astype(int))
    landmarker = FaceLandmarker()
    return sum(landmarker.detect(frames[i]) is not None for i in picks)


def build_colmap_dataset(
    scene: Path,
    out: Path,
    images: str | None = None,
    image_size: int = 256,
    square: bool = False,
    segment: bool = False,
    test_every: int = 8,
    n_val: int = 4,
    source: str = "COLMAP scene",
    scene_name: str | None = None,
) -> dict[str, Any]:
    """Write the Blender-format dataset of the COLMAP scene at `scene` into `out`; returns its report
    (also written as `out/colmap.json`; `scene_name`: the scene's path to record there, if not `scene`).
    Refuses a scene where no frame shows a face."""
    model_path = largest_model(scene)
    model, folder = read_model(model_path), images_dir(scene, images)
    missing = [name for name in model.names if not (folder / name).is_file()]
    if missing:
        raise DeepfakeError(
            f"{folder}: {len(missing)} of the model's {len(model.names)} images are missing (e.g. {missing[0]}). "
            "Give the images folder the model was made from (data.source.images=images_<N> for a downscaled one)."
        )
    keys = [(c.model.name, tuple(c.params), c.width, c.height) for c in model.cameras]
    reference = model.cameras[keys.index(Counter(keys).most_common(1)[0][0])]
    target = pinhole_target(reference, image_size, square)
    transform = normalising_transform(model.world_to_camera)
    world_to_camera = transform_cameras(model.world_to_camera, transform)
    cameras = Cameras(
        torch.as_tensor(world_to_camera, dtype=torch.float32),
        torch.as_tensor(target.matrix, dtype=torch.float32).expand(len(world_to_camera), 3, 3),
        target.width,
        target.height,
    )
    c2w, angle = cameras.to_blender()
    splits = split_views(model.names, test_every, n_val)
    frames = _resample_frames(model, folder, Resampler(target), segment)
    fused = 0.0
    if segment:
        alphas, fused = fuse_masks(np.stack([f[..., 3] for f in frames]), cameras)
        frames = [np.concatenate([f[..., :3], a[..., None]], -1) for f, a in zip(frames, alphas)]
    for split in SPLITS:
        entries = []
        for i, k in enumerate(splits[split]):
            write_png(out / split / f"r_{i}.png", frames[k], synthetic=False, Source=f"{source}: {model.names[k]}")
            entries.append(
                {"file_path": f"./{split}/r_{i}", "transform_matrix": c2w[k].tolist(), "colmap_name": model.names[k]}
            )
        write_split_index(out, split, angle, entries)
    if len(model.points):
        write_points_ply(out / SPARSE_POINTS, transform_points(model.points, transform), model.colors)
    faces = count_faces([f[..., :3] for f in frames])
    if faces == 0:
        raise DeepfakeError(
            f"{scene}: no face found in any of the {min(len(frames), FACE_CHECK_FRAMES)} frames searched. The base "
            "head must show its face in some views: film the person's face from the front and the sides, well lit."
        )
    report = {
        "scene": scene_name or str(scene),
        "model": model_path.relative_to(scene).as_posix(),
        "images": folder.relative_to(scene).as_posix(),
        "registered": len(model.names),
        "camera_models": sorted({k[0] for k in keys}),
        "camera": {"width": target.width, "height": target.height, "focal": round(target.focal, 4)},
        "splits": {split: len(splits[split]) for split in SPLITS},
        "points": len(model.points),
        "normalising_transform": np.round(transform, 8).tolist(),
        "segmented": segment,
        "mask_pixels_changed_by_fusion": round(fused, 4),
        "face_frames": f"{faces} of {min(len(frames), FACE_CHECK_FRAMES)} searched",
    }
    write_json(out / "colmap.json", report)
    return report


def _resample_frames(model: SceneModel, folder: Path, resampler: Resampler, segment: bool) -> list[np.ndarray]:
    """Every registered frame on the shared camera: RGB, or RGBA (its own alpha, or the person's)."""
    segmenter = PersonSegmenter() if segment else None
    frames = []
    for name, camera in zip(tqdm(model.names, desc="undistort", unit="frame"), model.cameras):
        image, inside = resampler(read_image(folder / name), camera)
        if segmenter is not None:
            alpha = segmenter(image[..., :3]) * inside
            image = np.concatenate([image[..., :3], alpha[..., None].astype(np.uint8)], -1)
        elif image.shape[-1] == 4:
            image[..., 3] *= inside
        frames.append(image)
    return frames


def write_target_photo(out: Path) -> None:
    """famous.jpg, the default target photo (`target=` picks another): scikit-image's astronaut."""
    with atomic_path(out / "famous.jpg") as tmp:
        Image.fromarray(read_image(TARGET_PHOTO)[..., :3]).save(tmp, format="JPEG", quality=95)


def scene_fingerprint(scene: Path, images: str | None) -> dict[str, Any]:
    """What a rebuild depends on: the model files' hashes and the frames' names, sizes and times."""
    model_path = largest_model(scene)
    files = sorted(p for p in model_path.iterdir() if p.stem in MODEL_FILES)
    folder = images_dir(scene, images)
    frames = sorted(
        (str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*") if p.is_file()
    )
    return {"model": {p.name: sha256_file(p) for p in files}, "frames_sha256": sha256_json(frames)}


class ColmapSource(GivenTargetPhoto, CachedDataset):
    """The dataset made from the COLMAP scene at `path`, cached under `root`."""

    name = "colmap"
    kind = "COLMAP"
    stamp = "dataset.json"

    def __init__(
        self,
        path: str,
        root: str,
        images: str | None = None,
        image_size: int = 256,
        square: bool = False,
        segment: bool = False,
        test_every: int = 8,
        n_val: int = 4,
        target_photo: str | None = None,
    ) -> None:
        self.path, self.root = Path(path), Path(root)
        self.given_target_photo = Path(target_photo) if target_photo else None
        self.options: dict[str, Any] = {
            "images": images,
            "image_size": image_size,
            "square": square,
            "segment": segment,
            "test_every": test_every,
            "n_val": n_val,
        }

    def prepare(self) -> Path:
        """Check the scene and settings (errors name the field), then build or reuse the dataset."""
        if not self.path.is_dir():
            raise DeepfakeError(
                f"data.path={self.path}: no such folder. Give a COLMAP scene folder (images/, sparse/0/)."
            )
        test_every, n_val, image_size = (self.options[k] for k in ("test_every", "n_val", "image_size"))
        if not (isinstance(test_every, int) and test_every >= 2 and n_val >= 1 and image_size >= 16):
            raise DeepfakeError(
                f"data: test_every={test_every} must be an integer >= 2, n_val={n_val} at least 1, "
                f"image_size={image_size} at least 16."
            )
        self.config = {
            **self.options,
            "scene": scene_fingerprint(self.path, self.options["images"]),
            "builder_version": COLMAP_BUILDER_VERSION,
        }
        return super().prepare()

    def _build(self, out: Path) -> None:
        report = build_colmap_dataset(self.path, out, **self.options)
        write_target_photo(out)
        log.info("COLMAP scene %s: %s", self.path, report)
        self.write_stamp(out, registered=report["registered"])
