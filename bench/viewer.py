"""Frames per second of the interactive viewer (view.py) for trained runs, on this machine.

    python bench/viewer.py                               # the newest run of each model under logs/train
    python bench/viewer.py --log-dir /elsewhere/logs --size 256 --frames 20

Each run is loaded as view.py loads it (its checkpoint through the safe path), and the viewer's own
render function (nerfview's render_fn: the model's render_views, as evaluation renders) draws
--frames views of --size x --size pixels along the run's orbit (the views the training cameras
cover), after two warm-up frames. "fps" is one over the median frame time; the viewer sends smaller
images while the camera moves (nerfview sizes them from this speed) and --size ones when it rests.

Measured on the 2-core CPU of the project machine: see docs/benchmarks.md, "Viewer frames per second".
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROJECT_ROOT", str(REPO))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from nerfview import CameraState, RenderTabState  # noqa: E402

from implicit_deepfake.render.video import orbit_cameras  # noqa: E402
from implicit_deepfake.reports.runs import (  # noqa: E402
    LAST_CHECKPOINT,
    latest_run,
    load_run,
)
from implicit_deepfake.view.camera import front_view  # noqa: E402
from implicit_deepfake.view.server import ModelViewer  # noqa: E402

MODELS = ("gaussians", "nerf_fast", "nerface")


def bench(ckpt: Path, log_dir: Path, size: int, frames: int) -> dict:
    run = load_run(str(ckpt), log_dir)
    module = run.module.eval()
    cameras = run.datamodule.frames("train").cameras
    expressions = getattr(module, "train_expressions", None)
    view = front_view(cameras, run.datamodule.root)
    viewer = ModelViewer(module, view, "bench", host="127.0.0.1", port=0, resolution=size, expressions=expressions)
    try:
        orbit = orbit_cameras(cameras, frames + 2)
        fov = 2 * math.atan(0.5 * cameras.height / float(cameras.intrinsics[0, 1, 1]))
        tab = RenderTabState(viewer_width=size, viewer_height=size)
        seconds = []
        for i in range(len(orbit)):
            state = CameraState(fov=fov, aspect=1.0, c2w=orbit.camera_to_world[i].numpy())
            start = time.perf_counter()
            viewer.render(state, tab)
            seconds.append(time.perf_counter() - start)
    finally:
        viewer.stop()
    median = statistics.median(seconds[2:])
    return {"model": run.cfg.model.name, "size": f"{size}x{size}", "ms_per_frame": round(1000 * median, 1),
            "fps": round(1 / median, 2), **module.model_stats(), "run": run.run_dir.name}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-dir", type=Path, default=REPO / "logs")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=20)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for model in args.models:
        run_dir = latest_run(args.log_dir / "train", {"model": model})
        if run_dir is None:
            print(f"{model}: no run under {args.log_dir / 'train'} (python train.py model={model} ...)")
            continue
        row = bench(run_dir / LAST_CHECKPOINT, args.log_dir, args.size, args.frames)
        print(" | ".join(f"{key}={value}" for key, value in row.items()), flush=True)


if __name__ == "__main__":
    main()
