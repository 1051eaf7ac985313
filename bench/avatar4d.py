"""The 4D models side by side: model=gaussian_avatar and model=nerface on the same talking head.

    python bench/avatar4d.py                                       # data=synthetic4d, each model's default
    python bench/avatar4d.py --data video --clip /path/to/clip.mp4 # a tracked real clip (data=video)
    python bench/avatar4d.py --models gaussian_avatar --extra trainer.max_steps=500

The swap is made first (swap.py, cached, not timed). Then for each model, each in fresh processes
under the same config apart from `model=`:

- `train.py`: test PSNR and SSIM (metrics.json), training wall time (its train_seconds: the fit only),
  peak RSS of the whole process (wait4: data, training, evaluation);
- render fps: bench/viewer.py's render function (the interactive viewer's, evaluation's renderer) at
  --size px along the orbit, with --threads threads for torch and numba;
- viewer.html's size (the 4D player for gaussian_avatar; nerface has no page);
- an expression edit, `evaluate.py edit.expressions_from=...`: jaw_open = 1 on the synthetic head, on
  a real clip the training frame whose expression lies farthest from the mean; the mean change
  (0-255) in the mouth region and outside it (edit.json). On the synthetic head, also the right
  answer: its (unswapped) head re-rendered at the test frames with jaw_open = 1, measured the same way.

Prints a markdown table. The CPU may be shared: timings say what this machine did at the time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
from scale import REPO, run  # bench/scale.py: one process of this repo's Python, its time and peak RSS

MODELS = ("gaussian_avatar", "nerface")


def _jaw_file(work: Path) -> str:
    from implicit_deepfake.data.expressions import expression_vector

    path = work / "jaw_open.npy"
    np.save(path, expression_vector(jaw_open=1.0))
    return str(path)


def _true_jaw_edit(work: Path) -> str:
    """The right answer on data=synthetic4d: its head (the base, unswapped) rendered at the test frames
    with their own expressions and with jaw_open = 1, measured as the edit is: "mouth / rest"."""
    from implicit_deepfake.data.blender import SPLITS
    from implicit_deepfake.data.expressions import ExpressionRig, expression_vector
    from implicit_deepfake.data.synthetic4d import (
        SyntheticTalkingHeadSource,
        head_cameras,
        make_background,
        render_frame,
        talking_sequence,
    )
    from implicit_deepfake.data.synthetic_orbit import synthetic_head
    from implicit_deepfake.evaluation.edit import mouth_change, mouth_mask
    from implicit_deepfake.faces.landmarks import FaceLandmarker

    cfg = SyntheticTalkingHeadSource(str(work / "unused")).config  # the default dataset's settings
    counts = [cfg["counts"][split] for split in SPLITS]
    poses, expressions = talking_sequence(sum(counts), cfg["seed"], cfg["yaw_deg"], cfg["pitch_deg"], cfg["roll_deg"])
    cameras = head_cameras(poses, cfg["image_size"], cfg["camera_angle_x"], cfg["distance"])
    background = make_background(cfg["image_size"], cfg["seed"])
    avatar = synthetic_head(cfg["mesh_resolution"])
    rig, landmarker, changes = ExpressionRig.for_avatar(avatar), FaceLandmarker(), []
    jaw_open = rig.apply(avatar, expression_vector(jaw_open=1.0))
    for k in range(sum(counts[:-1]), sum(counts)):
        before = render_frame(rig.apply(avatar, expressions[k]), cameras[k], background, cfg["supersample"])
        after = render_frame(jaw_open, cameras[k], background, cfg["supersample"])
        face = landmarker.detect(before)
        if face is not None:
            changes.append(mouth_change(before, after, mouth_mask(face.landmarks, before.shape[:2])))
    return f"{np.mean([c['mouth'] for c in changes]):.1f} / {np.mean([c['outside'] for c in changes]):.1f}"


def _farthest_frame(run_dir: Path, log_dir: Path) -> str:
    """The training frame whose expression is farthest from the mean (a real clip has no named jaw)."""
    from implicit_deepfake.reports.runs import load_run

    expressions = load_run(str(run_dir / "checkpoints" / "last.ckpt"), log_dir).module.train_expressions
    return str(int((expressions - expressions.mean(0)).norm(dim=1).argmax()))


def bench_model(model: str, common: list[str], args: argparse.Namespace, work: Path) -> dict:
    log_dir = work / model / "logs"
    train_seconds, rss, _ = run(["train.py", *common, f"model={model}", f"paths.log_dir={log_dir}", *args.extra])
    run_dir = max((log_dir / "train" / "runs").glob("*/metrics.json"), key=lambda p: p.stat().st_mtime).parent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    threads = {"OMP_NUM_THREADS": str(args.threads), "NUMBA_NUM_THREADS": str(args.threads)}
    _, _, output = run(
        ["bench/viewer.py", "--log-dir", str(log_dir), "--models", model, "--size", str(args.size)], env=threads
    )
    fps = next(float(part.split("=")[1]) for part in output.split(" | ") if part.startswith("fps="))
    edit_from = _jaw_file(work) if args.data == "synthetic4d" else _farthest_frame(run_dir, log_dir)
    run(["evaluate.py", f"paths.log_dir={log_dir}", f"ckpt={run_dir}/checkpoints/last.ckpt",
         f"edit.expressions_from={edit_from}"])  # fmt: skip
    edit = json.loads(next((run_dir / "edits").glob("*/edit.json")).read_text())
    page = run_dir / "viewer.html"
    return {
        "model": model,
        "test PSNR dB": round(metrics["test.psnr"], 2),
        "test SSIM": round(metrics["test.ssim"], 3),
        "training s": round(metrics["train_seconds"]),
        "train.py wall s": round(train_seconds),
        f"fps {args.size} px, {args.threads} threads": round(fps, 2),
        "train.py peak RSS GB": round(rss, 2),
        "page MB": round(page.stat().st_size / 1e6, 1) if page.is_file() else "-",
        "edit: mouth / rest": f"{edit['mouth_difference']:.1f} / {edit['outside_difference']:.1f}",
        "Gaussians": metrics.get("num_gaussians", "-"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="synthetic4d", choices=["synthetic4d", "video"])
    parser.add_argument("--clip", help="data=video: the clip (never commit someone else's)")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=REPO / "data" / "bench_avatar4d")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for train.py, e.g. swap=none")
    args = parser.parse_args()
    if args.data == "video" and not args.clip:
        parser.error("--data video needs --clip")
    common = [f"data={args.data}", "logger=csv", "progress=false"]
    if args.clip:
        common.append(f"data.path={Path(args.clip).resolve()}")
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%H:%M")
    swap_extra = [o for o in args.extra if o.startswith(("swap", "data", "target"))]
    run(["swap.py", *[c for c in common if not c.startswith("logger")], *swap_extra])
    rows = []
    for model in args.models:
        rows.append(bench_model(model, common, args, args.work))
        print(" | ".join(f"{k}={v}" for k, v in rows[-1].items()), flush=True)
    print(
        f"\n`python bench/avatar4d.py {' '.join(sys.argv[1:])}` ({date.today()}, {started}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; training and fps as measured "
        "on this machine at the time, whatever else it ran)\n"
    )
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for row in rows:
        print("| " + " | ".join(str(v) for v in row.values()) + " |")
    if args.data == "synthetic4d":
        print("\nThe jaw-open edit's right answer (the base head re-rendered): mouth / rest", _true_jaw_edit(args.work))


if __name__ == "__main__":
    main()
