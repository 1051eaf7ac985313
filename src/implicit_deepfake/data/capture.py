"""`data=capture`: a phone video or photos around a head -> cameras by SfM -> a multi-view dataset.

`data.path` is a video file (frames sampled evenly: a target count, the sharpest of each window by
the variance of its Laplacian) or a folder of photos (all of them, EXIF-rotated, one size). The
frames, `sfm_size` px on their long side, go to `<root>/colmap/images/`; pycolmap reconstructs them
(`sfm.py`: SIFT, matching, incremental mapping, the largest model kept as `<root>/colmap/sparse/0`),
and the scene is then read as `data=colmap` reads one (`colmap.py`: undistorted, normalised, split,
every 8th frame a test view), with the person cut out by mediapipe's selfie segmentation into the
frames' alpha. Built once and cached (`cached.py`: staged, then moved into place; a failed build
leaves nothing), rebuilt when the clip or a setting changes; `capture.json` says what was sampled,
registered and how long each stage took.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import cv2
import imageio_ffmpeg
import numpy as np
from PIL import Image
from tqdm import tqdm

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, read_photo, write_json
from implicit_deepfake.data.cached import CachedDataset
from implicit_deepfake.data.colmap import build_colmap_dataset, write_target_photo
from implicit_deepfake.data.sfm import SfmOptions, run_sfm
from implicit_deepfake.data.source import GivenTargetPhoto
from implicit_deepfake.data.video import FRAME_SUFFIXES, clip_sha256, frame_files

log = logging.getLogger(__name__)
CAPTURE_BUILDER_VERSION = 1
ADVICE = (
    "Film again: walk slowly all the way round the person (or a mannequin) at two heights, the phone "
    "steady, the zoom fixed, in even light, with the person still and a textured, still background (not a "
    "blank wall); a 20-60 s video or 50-150 photos, each overlapping the last."
)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: low when blurred (motion, focus)."""
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def fit(rgb: np.ndarray, size: int) -> np.ndarray:
    """`rgb` scaled down to `size` px on its long side (never up)."""
    scale = size / max(rgb.shape[:2])
    if scale >= 1:
        return rgb
    width, height = max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale))
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def _video_frames(path: Path) -> tuple[int, Iterator[np.ndarray]]:
    """(estimated frame count, frames as HxWx3 uint8) of a video ffmpeg reads."""
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as err:
        raise DeepfakeError(
            f"{path}: not a video ffmpeg can read ({str(err).splitlines()[0]}). Give a video file (.mp4, .mov, "
            "...) or a folder of photos (PNG/JPG) as data.path."
        ) from err
    width, height = meta["size"]
    count = round(float(meta.get("duration") or 0) * float(meta.get("fps") or 0))
    if count < 1:
        count = imageio_ffmpeg.count_frames_and_secs(str(path))[0]

    def frames() -> Iterator[np.ndarray]:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)

    return count, frames()


def sample_video(path: Path, count: int, size: int) -> list[tuple[int, float, np.ndarray]]:
    """(frame index, sharpness, frame at `size` px) of the sharpest frame in each of `count` even
    windows of the video (every frame of a shorter one)."""
    total, frames = _video_frames(path)
    best: dict[int, tuple[int, float, np.ndarray]] = {}
    try:
        for index, rgb in enumerate(tqdm(frames, total=total, desc="sample frames", unit="frame")):
            small = fit(rgb, size)
            # Windows of total / count frames (the count read from the container may be a little off).
            score, slot = sharpness(small), min(index * count // max(total, 1), count - 1)
            if slot not in best or score > best[slot][1]:
                best[slot] = (index, score, small)
    except (OSError, RuntimeError) as err:
        raise DeepfakeError(
            f"{path}: decoding failed ({str(err).splitlines()[0]}). Re-encode the clip "
            "(e.g. ffmpeg -i clip -c:v libx264 clip.mp4)."
        ) from err
    return [best[slot] for slot in sorted(best)]


def read_photos(folder: Path, size: int) -> list[tuple[int, float, np.ndarray]]:
    """(index, sharpness, photo at `size` px) of every photo in `folder`, upright (EXIF), in name order."""
    files = frame_files(folder)
    photos, first = [], None
    for index, path in enumerate(tqdm(files, desc="read photos", unit="photo")):
        rgb = read_photo(path)
        first = first or (path, rgb.shape[:2])
        if rgb.shape[:2] != first[1]:
            raise DeepfakeError(
                f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px, but {first[0].name} is {first[1][1]}x{first[1][0]}: "
                "the photos are of different sizes (another camera, zoom or orientation). Take them all with the "
                "same camera, zoom and orientation, or leave out the odd ones."
            )
        small = fit(rgb, size)
        photos.append((index, sharpness(small), small))
    return photos


class CaptureSource(GivenTargetPhoto, CachedDataset):
    """The multi-view dataset reconstructed from the video or photos at `path`, cached under `root`."""

    name = "capture"
    kind = "captured"
    stamp = "dataset.json"

    def __init__(
        self,
        path: str,
        root: str,
        image_size: int = 256,
        square: bool = True,
        frames: int = 100,
        sfm_size: int = 512,
        camera_model: str = "SIMPLE_PINHOLE",
        max_features: int = 2048,
        exhaustive_max: int = 150,
        video_exhaustive_max: int = 40,
        overlap: int = 10,
        loop_every: int = 5,
        mapper_tries: int = 3,
        min_frames: int = 20,
        min_sharpness: float = 15.0,
        min_registered: float = 0.5,
        segment: bool = True,
        test_every: int = 8,
        n_val: int = 4,
        target_photo: str | None = None,
    ) -> None:
        self.path, self.root = Path(path), Path(root)
        self.given_target_photo = Path(target_photo) if target_photo else None
        self.limits: dict[str, Any] = {
            "frames": frames,
            "sfm_size": sfm_size,
            "min_frames": min_frames,
            "min_sharpness": min_sharpness,
            "min_registered": min_registered,
        }
        self.sfm = SfmOptions(camera_model, max_features, exhaustive_max, overlap, loop_every, tries=mapper_tries)
        self.video_exhaustive_max = video_exhaustive_max
        self.dataset: dict[str, Any] = {
            "image_size": image_size,
            "square": square,
            "segment": segment,
            "test_every": test_every,
            "n_val": n_val,
        }

    def prepare(self) -> Path:
        """Check the clip and settings (errors name the field), then build or reuse the dataset."""
        frames, sfm_size, min_frames, min_registered = (
            self.limits[k] for k in ("frames", "sfm_size", "min_frames", "min_registered")
        )
        if not self.path.exists():
            raise DeepfakeError(f"data.path={self.path}: no such file or folder. Give a video or a folder of photos.")
        if not (frames >= min_frames >= 3 and sfm_size >= 64 and 0 < min_registered <= 1):
            raise DeepfakeError(
                f"data: frames={frames} must be at least min_frames={min_frames} (itself at least 3), "
                f"sfm_size={sfm_size} at least 64, min_registered={min_registered} in (0, 1]."
            )
        self.config = {
            "clip_sha256": clip_sha256(self.path),
            **self.limits,
            "sfm": asdict(self.sfm),
            "video_exhaustive_max": self.video_exhaustive_max,
            **self.dataset,
            "builder_version": CAPTURE_BUILDER_VERSION,
        }
        return super().prepare()

    def _build(self, out: Path) -> None:
        cfg, start = self.config, time.perf_counter()
        if self.path.is_dir():
            if not frame_files(self.path):
                raise DeepfakeError(f"{self.path}: no photos ({', '.join(FRAME_SUFFIXES)} files) in this folder.")
            sampled = read_photos(self.path, cfg["sfm_size"])
        else:
            sampled = sample_video(self.path, cfg["frames"], cfg["sfm_size"])
        self._check_frames(sampled)
        scene = out / "colmap"
        names = [f"frame_{k:04d}.jpg" for k in range(len(sampled))]
        for name, (_, _, rgb) in zip(names, sampled):
            with atomic_path(scene / "images" / name) as tmp:
                Image.fromarray(rgb).save(tmp, format="JPEG", quality=95)
        sampling_s = time.perf_counter() - start
        # A video's frames are in filming order: beyond a few dozen, its neighbours and key frames suffice.
        options = self.sfm if self.path.is_dir() else replace(self.sfm, exhaustive_max=self.video_exhaustive_max)
        sfm = run_sfm(scene, options)
        share = sfm.registered / len(names)
        log.info(
            "SfM registered %d of %d frames (%.0f%%) in %.0f s",
            sfm.registered,
            len(names),
            100 * share,
            sum(sfm.seconds.values()),
        )
        if share < cfg["min_registered"]:
            raise DeepfakeError(
                f"{self.path}: structure from motion placed only {sfm.registered} of {len(names)} frames "
                f"({share:.0%}; at least data.source.min_registered={cfg['min_registered']:.0%} are needed; the "
                f"models found hold {sfm.models or [0]} frames). {ADVICE}"
            )
        report = build_colmap_dataset(
            scene, out, source=f"capture of {self.path.name}", scene_name=str(self.root / "colmap"), **self.dataset
        )
        write_target_photo(out)
        capture = {
            "path": str(self.path),
            "kind": "photos" if self.path.is_dir() else "video",
            "frames": [
                {"name": name, "source_index": index, "sharpness": round(score, 2)}
                for name, (index, score, _) in zip(names, sampled)
            ],
            "registered": sfm.registered,
            "registered_share": round(share, 4),
            "models": sfm.models,
            "seconds": {"sampling": round(sampling_s, 2), **{k: round(v, 2) for k, v in sfm.seconds.items()}},
            "dataset": report,
        }
        write_json(out / "capture.json", capture)
        log.info(
            "captured %s: %d of %d frames registered, splits %s",
            self.path,
            sfm.registered,
            len(names),
            report["splits"],
        )
        self.write_stamp(out, registered=sfm.registered, frames=len(names))

    def _check_frames(self, sampled: list[tuple[int, float, np.ndarray]]) -> None:
        """Refuse too few frames, or frames too blurred to match."""
        cfg = self.config
        if len(sampled) < cfg["min_frames"]:
            what = "photos" if self.path.is_dir() else "frames in the video"
            raise DeepfakeError(
                f"{self.path}: only {len(sampled)} {what}; at least data.source.min_frames={cfg['min_frames']} "
                f"views are needed all round the head. {ADVICE}"
            )
        median = float(np.median([score for _, score, _ in sampled]))
        if median < cfg["min_sharpness"]:
            raise DeepfakeError(
                f"{self.path}: the frames are too blurred (median sharpness {median:.1f}, variance of the "
                f"Laplacian at {cfg['sfm_size']} px; at least data.source.min_sharpness={cfg['min_sharpness']} is "
                "needed). Move the phone more slowly, in more light, focused on the person. " + ADVICE
            )
