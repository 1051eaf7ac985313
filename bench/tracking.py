"""Tracking accuracy of `data=video` against the synthetic talking head's known poses and expressions.

Builds `data=synthetic4d` (its 80 frames in time order: train, val, test), writes them as an mp4
(imageio-ffmpeg, x264) and as a folder of PNGs, tracks both back with `VideoSource` (the true
field of view given as data.fov) and prints, per input: frames tracked, the rotation error in
degrees and the translation error (synthetic head units, the head is 1 unit tall; also as a share
of the camera distance) after one similarity alignment (metrics/tracking.py), and the R^2 on
held-out frames (every 4th) of a linear map from the tracked expression coefficients to the true
jaw_open, smile and brow_raise weights, and the share of the first 12 expression coefficients' variance that
a linear map from the true head rotation predicts (pose_share: the codes following the pose).

With --train, also the 4D comparison: `train.py model=nerface swap=none` on data=synthetic4d (true
poses and expressions) and on data=video over the same frames (the folder of PNGs), with the same
budget (--steps of --rays rays), and the test PSNR of both (the video run learns its training frames'
pose corrections and fits its test frames' before the metrics, as data=video does); and the rotation
error of the training frames' poses as tracked and as the 4D model corrected them.

    python bench/tracking.py [--size 128] [--work /tmp/tracking_bench] [--train --steps 400 --rays 2048]
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

import numpy as np

from implicit_deepfake.core.io import read_image, write_png
from implicit_deepfake.data.blender import SPLITS, read_split_index
from implicit_deepfake.data.face_tracking import head_rotations
from implicit_deepfake.data.synthetic import LOOK_AT
from implicit_deepfake.data.synthetic4d import SyntheticTalkingHeadSource
from implicit_deepfake.data.video import VideoSource
from implicit_deepfake.metrics.tracking import expression_r2, pose_errors, read_track
from implicit_deepfake.render.video import write_video

EXPRESSION_NAMES = ("jaw_open", "smile", "brow_raise")


def synthetic_clip(root: Path) -> tuple[list[np.ndarray], float]:
    """The synthetic talking head's frames in time order and its horizontal field of view (degrees)."""
    frames = []
    for split in SPLITS:
        index = read_split_index(root, split)
        frames += [read_image(p)[..., :3] for p in index.image_paths]
    return frames, math.degrees(index.camera.camera_angle_x)


def compare(true_root: Path, tracked_root: Path) -> dict[str, float]:
    true, tracked = read_track(true_root), read_track(tracked_root)
    rows = np.searchsorted(true.frame_index, tracked.frame_index)
    errors = pose_errors(true.world_to_camera[rows], tracked.world_to_camera)
    distance = float(np.linalg.norm(np.linalg.inv(true.world_to_camera[0])[:3, 3] - LOOK_AT))
    held_out = np.arange(len(rows)) % 4 == 0
    r2 = expression_r2(tracked.expressions, true.expressions[rows, :3], held_out)
    design = np.c_[head_rotations(true.world_to_camera[rows]), np.ones(len(rows))]
    codes = tracked.expressions[:, :12]
    residual = codes - design @ np.linalg.lstsq(design, codes, rcond=None)[0]
    return {
        "frames": len(rows),
        "rot_median_deg": float(np.median(errors.rotation_deg)),
        "rot_p90_deg": float(np.percentile(errors.rotation_deg, 90)),
        "rot_max_deg": float(errors.rotation_deg.max()),
        "trans_median": float(np.median(errors.translation)),
        "trans_median_pct": 100 * float(np.median(errors.translation)) / distance,
        **{f"r2_{name}": float(v) for name, v in zip(EXPRESSION_NAMES, r2)},
        "pose_share": float(1 - (residual**2).sum() / ((codes - codes.mean(0)) ** 2).sum()),
    }


def train_psnr(work: Path, name: str, overrides: list[str], steps: int, rays: int) -> float:
    """Test PSNR of `train.py model=nerface swap=none` with `overrides`, in run folder work/runs/<name>."""
    run_dir = work / "runs" / name
    shutil.rmtree(run_dir, ignore_errors=True)
    command = [
        sys.executable,
        str(Path(__file__).resolve().parents[1] / "train.py"),
        "model=nerface",
        "swap=none",
        "logger=csv",
        f"trainer.max_steps={steps}",
        f"datamodule.batch_size={rays}",
        f"paths.data_dir={work / 'data'}",
        f"run_dir={run_dir}",
        *overrides,
    ]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return float(json.loads((run_dir / "metrics.json").read_text())["test.psnr"])


def refined_pose_errors(true_root: Path, run_dir: Path) -> dict[str, float]:
    """Median rotation error (degrees) of a data=video run's training frames: as tracked, and with the
    pose corrections its model learned (its last checkpoint)."""
    from implicit_deepfake.reports.runs import load_run

    run = load_run(str(run_dir / "checkpoints" / "last.ckpt"), run_dir)
    true, track = read_track(true_root), read_track(run.cfg.datamodule.root)
    rows = np.searchsorted(true.frame_index, track.frame_index[track.split == "train"])
    cameras = run.datamodule.frames("train").cameras
    refined = run.module.training_cameras(cameras).world_to_camera.double().numpy()
    return {
        name: float(np.median(pose_errors(true.world_to_camera[rows], w2c).rotation_deg))
        for name, w2c in (("tracked", cameras.world_to_camera.double().numpy()), ("refined", refined))
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="the synthetic frames' size (px)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tracking_bench"))
    parser.add_argument("--train", action="store_true", help="also train model=nerface on both (minutes)")
    parser.add_argument("--steps", type=int, default=400, help="--train: training steps of each run")
    parser.add_argument("--rays", type=int, default=2048, help="--train: rays per step")
    args = parser.parse_args()
    true_root = SyntheticTalkingHeadSource(str(args.work / f"synthetic4d_{args.size}"), image_size=args.size).prepare()
    frames, fov = synthetic_clip(true_root)
    clip = args.work / f"talking_{args.size}.mp4"
    write_video(clip, frames, fps=25, quality=9)
    folder = args.work / f"talking_{args.size}_frames"
    for i, frame in enumerate(frames):
        write_png(folder / f"{i:04d}.png", frame)
    header = [
        "input",
        "frames",
        "build_s",
        "rot_median_deg",
        "rot_p90_deg",
        "rot_max_deg",
        "trans_median",
        "trans_median_pct",
        *(f"r2_{n}" for n in EXPRESSION_NAMES),
        "pose_share",
    ]
    print(" | ".join(header))
    for name, path in (("mp4", clip), ("frames", folder)):
        tracked_root = args.work / f"tracked_{name}_{args.size}"
        shutil.rmtree(tracked_root, ignore_errors=True)  # time a fresh build
        start = time.perf_counter()
        source = VideoSource(str(path), str(tracked_root), image_size=args.size, fov=fov)
        tracked_root = source.prepare()
        seconds = time.perf_counter() - start
        row = compare(true_root, tracked_root)
        print(" | ".join([name, str(row.pop("frames")), f"{seconds:.1f}", *(f"{v:.3f}" for v in row.values())]))
    if args.train:
        size = f"data.source.image_size={args.size}"
        true_psnr = train_psnr(args.work, "true", ["data=synthetic4d", size], args.steps, args.rays)
        video = ["data=video", f"data.path={folder}", f"data.image_size={args.size}", f"data.fov={fov}"]
        tracked_psnr = train_psnr(args.work, "tracked", video, args.steps, args.rays)
        print(
            f"\nmodel=nerface, {args.steps} steps of {args.rays} rays: test PSNR true poses {true_psnr:.2f} dB | "
            f"tracked {tracked_psnr:.2f} dB | difference {true_psnr - tracked_psnr:.2f} dB"
        )
        errors = refined_pose_errors(true_root, args.work / "runs" / "tracked")
        print(
            f"training frames' median rotation error: tracked {errors['tracked']:.2f} deg | "
            f"corrected by the 4D model {errors['refined']:.2f} deg"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
