"""A NeRFace video at real size: swap, DataModule and training memory for N frames of 512x512.

    python bench/scale.py                         # N = 100, 1000, 5500 (about 25 min on 2 cores)
    python bench/scale.py --frames 100 1000       # fewer sizes
    python bench/scale.py --size 256 --steps 20   # a quicker look
    python bench/scale.py --models nerface gaussian_avatar --first-run   # both 4D models, each decoding its cache

A NeRFace-format dataset of N training frames is fabricated from a few frames of the synthetic talking
head rendered at --size (hard-linked N times; each json entry keeps its frame's own pose and
expression, so poses and expressions vary). For each N, in fresh processes:

- swap s/frame: `swap.py swap=none` over the whole dataset (hash, copy, manifest), per frame; and
  `swap=landmark` on a --landmark-frames subset;
- DataModule setup s: the training split loaded by `FrameDataModule.frames("train")`, the first time
  (frames decoded into the uint8 cache) and again (memory-mapped);
- peak RSS (the training process's, `wait4`) and steps/s of `train.py model=<each of --models>` for
  --steps steps; with --first-run the frames' cache is removed before each, so the run decodes it
  itself, as a new user's first run does.

The table prints at the end. Target: peak RSS at most 4 GB at 5,500 frames of 512x512.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in GB, output) of one process of this repo's Python."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE", **(env or {})},
    )
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        sys.exit(f"{' '.join(args)} failed:\n{output[-3000:]}")
    return time.perf_counter() - start, usage.ru_maxrss / 1024**2, output


def rendered_frames(work: Path, size: int) -> Path:
    """A few frames of the synthetic talking head at `size` px (rendered once)."""
    root = work / "rendered"
    if not (root / "avatar.json").is_file():
        run(
            [
                "-c",
                "from implicit_deepfake.data.synthetic4d import SyntheticTalkingHeadSource as S; "
                f"S({str(root)!r}, image_size={size}, n_train=8, n_val=2, n_test=2, mesh_resolution=128).prepare()",
            ]
        )
    return root


def fabricate(rendered: Path, out: Path, count: int) -> None:
    """A NeRFace dataset of `count` training frames, hard links of the rendered ones."""
    if (out / "transforms_train.json").is_file():
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for name in ("background.png", "famous.jpg", "transforms_val.json", "transforms_test.json"):
        shutil.copy(rendered / name, out / name)
    for split in ("val", "test"):
        shutil.copytree(rendered / split, out / split)
    source = json.loads((rendered / "transforms_train.json").read_text())
    (out / "train").mkdir()
    frames = []
    for i in range(count):
        entry = dict(source["frames"][i % len(source["frames"])])
        os.link(rendered / (entry["file_path"] + ".png"), out / "train" / f"f_{i:05d}.png")
        frames.append({**entry, "file_path": f"./train/f_{i:05d}"})
    (out / "transforms_train.json").write_text(json.dumps({**source, "frames": frames}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[100, 1000, 5500])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--landmark-frames", type=int, default=20)
    parser.add_argument("--work", type=Path, default=REPO / "data" / "bench_scale")
    parser.add_argument("--models", nargs="+", default=["nerface"], help="4D models to train")
    parser.add_argument("--first-run", action="store_true", help="each train.py decodes the frames' cache")
    args = parser.parse_args()
    rendered = rendered_frames(args.work, args.size)
    rows = []
    for count in [args.landmark_frames, *args.frames]:
        root = args.work / f"n{count}"
        fabricate(rendered, root / "data" / "nerface", count)
        common = [f"paths.root_dir={root}", "data=nerface", "progress=false"]
        frames_total = count + 4
        swap_none, _, _ = run(["swap.py", *common, "swap=none"])
        if count == args.landmark_frames:  # the landmark swap on a small video only
            swap_landmark, _, _ = run(["swap.py", *common, "swap=landmark"])
            landmark_per_frame = swap_landmark / frames_total
            continue
        setup = (
            "from implicit_deepfake.data.datamodule import FrameDataModule as D; import time\n"
            f"for _ in range(2):\n t = time.perf_counter(); D({str(root)!r} + '/data/swapped/nerface__none__famous')"
            ".frames('train'); print('setup', time.perf_counter() - t)"
        )
        _, _, output = run(["-c", setup])
        first, again = (float(line.split()[1]) for line in output.splitlines() if line.startswith("setup "))
        for model in args.models:
            swapped = root / "data" / "swapped" / "nerface__none__famous"
            if args.first_run:
                shutil.rmtree(swapped / ".frames", ignore_errors=True)
            seconds, rss, _ = run(
                [
                    "train.py",
                    *common,
                    "swap=none",
                    f"model={model}",
                    f"paths.log_dir={root / 'logs' / model}",
                    f"trainer.max_steps={args.steps}",
                    "logger=none",
                    "evaluate.orbit_frames=2",
                    "trainer.val_check_interval=100000",
                ]
            )
            metrics = sorted((root / "logs" / model / "train" / "runs").glob("*/metrics.json"))[-1]
            trained = json.loads(metrics.read_text())
            speed = trained["steps"] / trained["train_seconds"]
            rows.append((count, model, swap_none / frames_total, landmark_per_frame, first, again, rss, speed, seconds))
        print(f"N={count}: done in {seconds:.0f} s", flush=True)
    print(
        f"\nNeRFace-format video, {args.size}x{args.size} frames, {args.steps} training steps "
        f"(landmark swap timed on {args.landmark_frames} frames)"
    )
    cache = "decoded by the run itself" if args.first_run else "already decoded"
    print(
        "| frames | model | swap=none s/frame | swap=landmark s/frame | DataModule setup s (first / cached) "
        f"| train.py peak RSS GB (cache {cache}) | steps/s | train.py wall s |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for count, model, none, landmark, first, again, rss, speed, wall in rows:
        setup = f"{first:.1f} / {again:.2f}"
        print(f"| {count} | {model} | {none:.3f} | {landmark:.3f} | {setup} | {rss:.2f} | {speed:.2f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
