"""`data=video`: a NeRFace-format dataset built from the user's own talking-head clip, offline.

The clip (a video file ffmpeg reads, or a folder of frames) is decoded with imageio-ffmpeg, every
`every`-th frame between `start` and `end` seconds, centre-cropped to a square and resized to
`image_size`. Every frame gets the face mesh (`faces.py`); frames without a face (or with one cut
by the frame edge) are dropped and counted. `face_tracking.py` turns the landmarks into the head
pose, folded into `transform_matrix` as NeRFace does (the camera in head coordinates), the
expression vector and the face bbox; the static background is each pixel's median over the frames
where the head leaves it uncovered. The splits are contiguous in time, the test frames last (as
NeRFace holds out the end of its videos). Built once and cached (`cached.py`: staged, then moved
into place; a killed or failed build leaves no dataset), rebuilt when the clip or the settings change.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, read_image, sha256_file, sha256_json, write_json, write_png
from implicit_deepfake.data.blender import SPLITS, write_split_index
from implicit_deepfake.data.cached import CachedDataset
from implicit_deepfake.data.face_tracking import head_mask, median_background, track_head
from implicit_deepfake.data.nerface import BACKGROUND_FILES, landmark_bbox
from implicit_deepfake.data.source import GivenTargetPhoto
from implicit_deepfake.data.synthetic import TARGET_PHOTO
from implicit_deepfake.faces.landmarks import FaceLandmarker, face_oval_indices
from implicit_deepfake.render.cameras import Cameras

log = logging.getLogger(__name__)
VIDEO_BUILDER_VERSION = 4
DEFAULT_FOV_DEG = 50.0  # a webcam's or phone's horizontal field of view, when the clip's is unknown
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
# A face counts only with this share of its landmarks inside the frame: the mesh of a face cut by
# the frame edge is guessed, and its pose with it.
MIN_INSIDE = 0.9
HEAD_GROW, HEAD_RISE = 1.2, 0.45  # the head mask: the face oval grown (ears, hair), swept up (the skull)
BACKGROUND_FRAMES = 200  # the background's median is taken over at most this many frames


@dataclass(frozen=True)
class DecodedFrame:
    index: int  # in the clip as stored
    time_s: float
    rgb: np.ndarray  # (image_size, image_size, 3) uint8


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The centred square of a frame, resized to size x size."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = np.ascontiguousarray(rgb[top : top + side, left : left + side])
    return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if side > size else cv2.INTER_CUBIC)


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    """The image files of a folder of frames, in natural order (f_2 before f_10)."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES), key=_natural_key)


def clip_sha256(path: Path) -> str:
    """A clip's fingerprint: the video file's hash, or a folder's frames' names and hashes."""
    if path.is_dir():
        return sha256_json([[f.name, sha256_file(f)] for f in frame_files(path)])
    return sha256_file(path)


def _raw_frames(path: Path, fps: float) -> tuple[float, tuple[int, int], Iterator[np.ndarray]]:
    """(fps, (width, height), frames as HxWx3 uint8) of a video file or a folder of frames."""
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise DeepfakeError(f"{path}: no frames ({', '.join(FRAME_SUFFIXES)} files) in this folder.")
        first = read_image(files[0])
        return fps, (first.shape[1], first.shape[0]), (read_image(f)[..., :3] for f in files)
    reader = imageio_ffmpeg.read_frames(str(path))
    try:
        meta = next(reader)
    except (OSError, RuntimeError, StopIteration) as err:
        raise DeepfakeError(
            f"{path}: not a video ffmpeg can read ({str(err).splitlines()[0]}). Give a video file (.mp4, .mov, "
            ".webm, ...) or a folder of frames (PNG/JPG) as data.path."
        ) from err
    width, height = meta["size"]

    def frames() -> Iterator[np.ndarray]:
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)

    return float(meta.get("fps") or fps), (width, height), frames()


def decode_clip(
    path: Path, size: int, every: int, start: float, end: float | None, fps: float
) -> tuple[list[DecodedFrame], float, tuple[int, int]]:
    """Every `every`-th frame of the clip between `start` and `end` seconds, squared to `size`;
    also the clip's frame rate and its (width, height) as stored."""
    rate, frame_size, frames = _raw_frames(path, fps)
    decoded, first = [], None
    try:
        for index, rgb in enumerate(frames):
            time_s = index / rate
            if end is not None and time_s >= end:
                break
            if time_s < start:
                continue
            first = index if first is None else first
            if (index - first) % every == 0:
                decoded.append(DecodedFrame(index, time_s, square(rgb, size)))
    except (OSError, RuntimeError) as err:
        raise DeepfakeError(
            f"{path}: decoding failed after {len(decoded)} frames ({str(err).splitlines()[0]}). "
            "Re-encode the clip (e.g. ffmpeg -i clip -c:v libx264 clip.mp4)."
        ) from err
    return decoded, rate, frame_size


def longest_run(missing: np.ndarray) -> tuple[int, int]:
    """(first, length) of the longest run of True in a bool array; (0, 0) when there is none."""
    best, run_start = (0, 0), None
    for i, value in enumerate([*missing.tolist(), False]):
        if value and run_start is None:
            run_start = i
        elif not value and run_start is not None:
            best = max(best, (run_start, i - run_start), key=lambda r: r[1])
            run_start = None
    return best


def split_counts(n: int, val_fraction: float, test_fraction: float) -> dict[str, int]:
    """Contiguous split sizes: the last frames for test, those before them for val, at least one each."""
    n_test, n_val = max(1, round(test_fraction * n)), max(1, round(val_fraction * n))
    return {"train": n - n_val - n_test, "val": n_val, "test": n_test}


class VideoSource(GivenTargetPhoto, CachedDataset):
    """A NeRFace-format dataset tracked from the clip at `path`, cached under `root`."""

    name = "video"
    kind = "tracked video"
    stamp = "video.json"

    def __init__(
        self,
        path: str,
        root: str,
        image_size: int = 256,
        fov: float | None = None,
        every: int = 1,
        start: float = 0.0,
        end: float | None = None,
        fps: float = 25.0,
        expression_dim: int = 76,
        smooth: float = 1.0,
        decorrelate_pose: bool = False,
        texture_points: bool = True,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        min_frames: int = 30,
        max_gap_s: float = 1.0,
        max_dropped: float = 0.25,
        target_photo: str | None = None,
    ) -> None:
        self.path, self.root = Path(path), Path(root)
        self.given_target_photo = Path(target_photo) if target_photo else None
        if not self.path.exists():
            raise DeepfakeError(
                f"data.path={self.path}: no such file or folder. Give a video file or a folder of frames."
            )
        if not (isinstance(every, int) and every >= 1 and image_size >= 16 and expression_dim >= 1):
            raise DeepfakeError(
                f"data: every={every} must be an integer >= 1, image_size={image_size} at least 16, "
                f"expression_dim={expression_dim} at least 1."
            )
        if not (val_fraction > 0 and test_fraction > 0 and val_fraction + test_fraction < 1):
            raise DeepfakeError(
                f"data: val_fraction={val_fraction} and test_fraction={test_fraction} must be positive "
                "and leave frames for training."
            )
        self.config = {
            "clip_sha256": clip_sha256(self.path),
            "image_size": image_size,
            "fov": fov,
            "every": every,
            "start": start,
            "end": end,
            "fps": fps,
            "expression_dim": expression_dim,
            "smooth": smooth,
            "decorrelate_pose": decorrelate_pose,
            "texture_points": texture_points,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "min_frames": min_frames,
            "max_gap_s": max_gap_s,
            "max_dropped": max_dropped,
            "builder_version": VIDEO_BUILDER_VERSION,
        }

    def _build(self, out: Path) -> None:
        cfg = self.config
        frames, rate, (width, height) = decode_clip(
            self.path, cfg["image_size"], cfg["every"], cfg["start"], cfg["end"], cfg["fps"]
        )
        if not frames:
            raise DeepfakeError(
                f"{self.path}: no frames between data.start={cfg['start']} s and data.end={cfg['end']} s "
                "(or an empty clip)."
            )
        faces = self._detect(frames)
        kept = [i for i, face in enumerate(faces) if face is not None]
        self._check_coverage(frames, faces, rate / cfg["every"])
        fov = math.radians(cfg["fov"] or DEFAULT_FOV_DEG)
        focal = 0.5 * width / math.tan(0.5 * fov) * cfg["image_size"] / min(width, height)
        size = cfg["image_size"]
        intrinsics = np.array([[focal, 0.0, size / 2], [0.0, focal, size / 2], [0.0, 0.0, 1.0]])
        landmarks = np.stack([face for face in faces if face is not None])  # those of the kept frames
        images = np.stack([frames[i].rgb for i in kept])
        track = track_head(
            landmarks,
            intrinsics,
            cfg["expression_dim"],
            cfg["smooth"],
            cfg["decorrelate_pose"],
            images if cfg["texture_points"] else None,
        )
        cameras = Cameras(
            torch.as_tensor(track.world_to_camera, dtype=torch.float32),
            torch.as_tensor(intrinsics, dtype=torch.float32).expand(len(kept), 3, 3),
            size,
            size,
        )
        c2w, angle = cameras.to_blender()
        background, inpainted = self._background(images, landmarks)
        write_png(
            out / BACKGROUND_FILES[0], background, synthetic=False, Source=f"median background of {self.path.name}"
        )
        counts = split_counts(len(kept), cfg["val_fraction"], cfg["test_fraction"])
        if counts["train"] < 1:
            raise DeepfakeError(f"{self.path}: too few frames with a face ({len(kept)}) to split into train/val/test.")
        offsets = np.cumsum([0, *counts.values()])
        for split, first, end in zip(SPLITS, offsets[:-1], offsets[1:]):
            entries = []
            for i, k in enumerate(range(first, end)):
                frame = frames[kept[k]]
                write_png(
                    out / split / f"f_{i:04d}.png",
                    frame.rgb,
                    synthetic=False,
                    Source=f"frame {frame.index} of {self.path.name}",
                )
                entries.append(
                    {
                        "file_path": f"./{split}/f_{i:04d}",
                        "transform_matrix": c2w[k].tolist(),
                        "expression": [round(float(v), 5) for v in track.expressions[k]],
                        "bbox": landmark_bbox(landmarks[k, :, :2], size, size),
                        "frame_index": frame.index,
                        "time_s": round(frame.time_s, 4),
                    }
                )
            write_split_index(out, split, angle, entries, intrinsics=[focal, focal, 0.5, 0.5])
        self._write_target(out)
        report = {
            "clip": str(self.path),
            "fps": rate,
            "size_as_stored": [width, height],
            "frames_decoded": len(frames),
            "frames_tracked": len(kept),
            "frames_dropped": len(frames) - len(kept),
            "dropped_frame_indices": [f.index for f, face in zip(frames, faces) if face is None],
            "splits": counts,
            "rigid_landmarks": len(track.rigid),
            "expression_variance_explained": [round(float(v), 5) for v in track.explained[:10]],
            "background_inpainted_share": round(inpainted, 4),
        }
        write_json(out / "tracking.json", report)
        log.info("tracked %s: %s", self.path, report)
        self.write_stamp(out, **{k: report[k] for k in ("frames_tracked", "frames_dropped")})

    def _detect(self, frames: list[DecodedFrame]) -> list[np.ndarray | None]:
        """Each frame's (468, 3) landmarks, or None where no face lies (mostly) inside the frame."""
        landmarker, size = FaceLandmarker(), frames[0].rgb.shape[0]
        found: list[np.ndarray | None] = []
        for frame in tqdm(frames, desc="track", unit="frame"):
            face = landmarker.detect(frame.rgb)
            if face is None:
                found.append(None)
                continue
            inside = ((face.landmarks[:, :2] >= 0) & (face.landmarks[:, :2] < size)).all(1).mean()
            found.append(face.landmarks if inside >= MIN_INSIDE else None)
        return found

    def _check_coverage(self, frames: list[DecodedFrame], faces: list, rate: float) -> None:
        """Refuse clips where the face is missing too often, too long, or in every frame."""
        cfg, missing = self.config, np.array([face is None for face in faces])
        kept = int((~missing).sum())
        if kept == 0:
            raise DeepfakeError(
                f"{self.path}: no face found in any of its {len(frames)} frames. Film the person's face "
                "from the front, well lit, filling a good part of the frame."
            )
        first, length = longest_run(missing)
        if length / rate > cfg["max_gap_s"]:
            start, stop = frames[first].time_s, frames[first + length - 1].time_s
            raise DeepfakeError(
                f"{self.path}: the face is out of the frame (or not found) from {start:.2f} s to {stop:.2f} s "
                f"({length} frames in a row, more than data.max_gap_s={cfg['max_gap_s']} s). Trim the clip with "
                "data.start/data.end to a part where the face stays in view, or film again."
            )
        if missing.mean() > cfg["max_dropped"]:
            raise DeepfakeError(
                f"{self.path}: no face in {int(missing.sum())} of {len(frames)} frames (more than data.max_dropped="
                f"{cfg['max_dropped']}). Keep the whole face in the frame and well lit."
            )
        if kept < cfg["min_frames"]:
            raise DeepfakeError(
                f"{self.path}: only {kept} frames with a face; at least data.min_frames={cfg['min_frames']} are needed "
                "(a 20-60 s clip is best). Use a longer clip or a smaller data.every."
            )

    def _background(self, images: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, float]:
        picks = np.unique(np.linspace(0, len(images) - 1, min(len(images), BACKGROUND_FRAMES)).round().astype(int))
        oval = face_oval_indices()
        masks = np.stack([head_mask(landmarks[i, :, :2], oval, images.shape[1:3], HEAD_GROW, HEAD_RISE) for i in picks])
        return median_background(images[picks], masks, min_samples=1)

    def _write_target(self, out: Path) -> None:
        """famous.jpg, the default target photo (`target=` picks another): scikit-image's astronaut."""
        with atomic_path(out / "famous.jpg") as tmp:
            Image.fromarray(read_image(TARGET_PHOTO)[..., :3]).save(tmp, format="JPEG", quality=95)
