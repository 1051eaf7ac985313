"""Accuracy of `data=capture` against the synthetic head filmed on an orbit with known cameras.

Renders the embedded head circling once at two heights in a textured room (data/synthetic_orbit.py:
a phone's field of view, 1 radian), writes it as an H.264 mp4, builds `data=capture` on it
(`CaptureSource`: frame sampling, pycolmap SfM, selfie segmentation) and prints: the share of frames
registered; the median and worst rotation error (degrees) and the median camera-centre error
(synthetic head units, and as a share of the camera distance) after one similarity alignment to the
true cameras (metrics/tracking.py); each SfM stage's wall time; and how well the cut-out matches the
head's true coverage (IoU). The CPU is shared with whatever else runs: the load average is printed
with the times.

With --train, also the test PSNR of `train.py swap=none` (Gaussians) on the captured dataset (started
from its sparse points), and on the same frames with the true cameras (the same splits; the frames as
sampled, their intrinsics the true ones; started from the visual hull), with the same budget: what
the recovered cameras cost the model.

    python bench/capture.py [--frames 100] [--size 512] [--work /tmp/capture_bench] [--train --steps 1000]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import numpy as np
import torch
from PIL import Image

from implicit_deepfake.data.blender import SPLITS, read_split_index, write_split_index
from implicit_deepfake.data.capture import CaptureSource
from implicit_deepfake.data.colmap_model import CAMERA_DISTANCE
from implicit_deepfake.data.sparse_points import SPARSE_POINTS
from implicit_deepfake.data.synthetic_orbit import OrbitClip, render_orbit, write_clip
from implicit_deepfake.metrics.tracking import pose_errors
from implicit_deepfake.render.cameras import Cameras

REPO = Path(__file__).resolve().parents[1]


def orbit(work: Path, frames: int, size: int) -> OrbitClip:
    """The rendered orbit, cached in `work` (rendering 100 frames of 512 px takes minutes)."""
    cache = work / f"orbit_{frames}_{size}.npz"
    if cache.is_file():
        data = np.load(cache)
        cameras = Cameras(torch.from_numpy(data["w2c"]), torch.from_numpy(data["k"]), size, size)
        return OrbitClip(data["frames"], data["alpha"], cameras)
    start = time.perf_counter()
    clip = render_orbit(frames, size)
    print(f"rendered {frames} frames of {size} px in {time.perf_counter() - start:.0f} s")
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        cache,
        frames=clip.frames,
        alpha=clip.alpha,
        w2c=clip.cameras.world_to_camera.numpy(),
        k=clip.cameras.intrinsics.numpy(),
    )
    return clip


def dataset_frames(root: Path) -> list[tuple[str, int, dict]]:
    """(split, index in split, frame entry) of every frame of a Blender-format dataset."""
    return [
        (split, i, entry)
        for split in SPLITS
        for i, entry in enumerate(json.loads((root / f"transforms_{split}.json").read_text())["frames"])
    ]


def accuracy(root: Path, clip: OrbitClip) -> dict[str, float]:
    report = json.loads((root / "capture.json").read_text())
    source = {f["name"]: f["source_index"] for f in report["frames"]}
    frames = dataset_frames(root)
    recovered = []
    for split in SPLITS:
        index = read_split_index(root, split)
        recovered.append(index.camera.cameras(index.camera_to_world_gl, 64, 64).world_to_camera.double().numpy())
    truth = clip.cameras.world_to_camera.double().numpy()[[source[e["colmap_name"]] for _, _, e in frames]]
    errors = pose_errors(truth, np.concatenate(recovered))
    ious = []
    for split, i, entry in frames:
        found = np.asarray(Image.open(root / split / f"r_{i}.png"))[..., 3] > 127
        true_alpha = cv2.resize(clip.alpha[source[entry["colmap_name"]]], found.shape[::-1]) > 127
        ious.append((found & true_alpha).sum() / (found | true_alpha).sum())
    return {
        "registered": report["registered"],
        "frames": len(report["frames"]),
        "rot_median_deg": float(np.median(errors.rotation_deg)),
        "rot_max_deg": float(errors.rotation_deg.max()),
        "centre_median": float(np.median(errors.translation)),
        "centre_median_pct": 100 * float(np.median(errors.translation)) / CAMERA_DISTANCE,
        "iou_median": float(np.median(ious)),
        "iou_min": float(np.min(ious)),
        **{f"{k}_s": v for k, v in report["seconds"].items()},
    }


def true_camera_copy(root: Path, clip: OrbitClip, out: Path) -> Path:
    """The captured dataset with the true cameras: same frames and splits; the frames are the sampled
    ones scaled, so their true intrinsics are the clip's field of view. Without the sparse points
    (in the captured cameras' frame): its Gaussians start from the visual hull."""
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(root, out, ignore=shutil.ignore_patterns("colmap", ".frames", "*.json", SPARSE_POINTS))
    source = {f["name"]: f["source_index"] for f in json.loads((root / "capture.json").read_text())["frames"]}
    c2w, angle = clip.cameras.to_blender()
    for split in SPLITS:
        index = read_split_index(root, split)
        entries = [{**entry, "transform_matrix": c2w[source[entry["colmap_name"]]].tolist()} for entry in index.frames]
        write_split_index(out, split, angle, entries)
    return out


def train_psnr(work: Path, name: str, dataset: Path, steps: int) -> tuple[float, float]:
    """(test PSNR, wall seconds) of `train.py swap=none` on the Blender-format `dataset`."""
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable,
        str(REPO / "train.py"),
        "data=tina",
        f"data.name={name}",
        f"data.source.root={dataset}",
        "swap=none",
        "logger=csv",
        f"trainer.max_steps={steps}",
        f"trainer.val_check_interval={steps}",
        f"paths.data_dir={work / 'data'}",
        f"run_dir={run_dir}",
    ]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return float(json.loads((run_dir / "metrics.json").read_text())["test.psnr"]), time.perf_counter() - start


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f} ({os.cpu_count() or 0} cores)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=100, help="frames of the orbit (all are sampled)")
    parser.add_argument("--size", type=int, default=512, help="the frames' size (px), also SfM's")
    parser.add_argument("--image-size", type=int, default=256, help="the dataset's frames (px)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/capture_bench"))
    parser.add_argument("--train", action="store_true", help="also train Gaussians on both (minutes)")
    parser.add_argument("--steps", type=int, default=1000, help="--train: training steps of each run")
    args = parser.parse_args()
    clip = orbit(args.work, args.frames, args.size)
    video = write_clip(clip.frames, args.work / f"orbit_{args.frames}_{args.size}.mp4")
    root = args.work / "capture"
    shutil.rmtree(root, ignore_errors=True)  # time a fresh build
    print(f"before the build: {load()}")
    start = time.perf_counter()
    CaptureSource(str(video), str(root), frames=args.frames, sfm_size=args.size, image_size=args.image_size).prepare()
    build_s = time.perf_counter() - start
    row = accuracy(root, clip)
    sfm_s = row["features_s"] + row["matching_s"] + row["mapping_s"]
    print(f"after the build ({build_s:.0f} s in all): {load()}")
    print(
        f"registered {row['registered']}/{row['frames']} ({100 * row['registered'] / row['frames']:.0f}%) | "
        f"rotation error median {row['rot_median_deg']:.3f} deg, max {row['rot_max_deg']:.3f} | "
        f"camera centre error median {row['centre_median']:.4f} units ({row['centre_median_pct']:.2f}% of the "
        f"{CAMERA_DISTANCE} distance) | SfM {sfm_s:.0f} s (features {row['features_s']:.0f}, matching "
        f"{row['matching_s']:.0f}, mapping {row['mapping_s']:.0f}; sampling {row['sampling_s']:.1f}) | "
        f"cut-out IoU median {row['iou_median']:.3f}, min {row['iou_min']:.3f}"
    )
    if args.train:
        true_root = true_camera_copy(root, clip, args.work / "true_cameras")
        captured, captured_s = train_psnr(args.work, "captured", root, args.steps)
        true, true_s = train_psnr(args.work, "true", true_root, args.steps)
        focal = json.loads((root / "colmap.json").read_text())["camera"]["focal"]
        true_focal = 0.5 * args.image_size / math.tan(0.5 * clip.cameras.to_blender()[1])
        print(
            f"Gaussians, {args.steps} steps, swap=none: test PSNR recovered cameras {captured:.2f} dB "
            f"({captured_s:.0f} s) | true cameras {true:.2f} dB ({true_s:.0f} s) | difference "
            f"{true - captured:.2f} dB | focal recovered {focal:.1f} px, true {true_focal:.1f} px | {load()}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
