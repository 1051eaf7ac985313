"""The swap on real frames: does every swapped frame keep its own expression, gaze and light?

Swaps N frames of a real clip with a target photo through the same code path as
`python swap.py data=video data.path=<clip> target=<photo>` (the clip tracked into a `data=video`
dataset, then swapped), and prints per measure (mediapipe's 478-point mesh with irises, each over the
inter-ocular distance) the median |swapped - base| over the base clip's own spread (a swap that keeps
the expression is well under 1) and the correlation swapped vs base (near 1); then the identity
distance (dlib) of the swapped and of the base frames to the target, the seam and the flicker (1.0:
as steady as the base). Writes a sheet per clip and target, base | swapped with the figures, to look at.
Several clips and targets: every pair is run, and the median over them is printed last.

"floor": the same difference between each base frame and a copy of it moved by half a pixel and saved
as a JPEG: the detector's own noise over the clip's spread. Where the clip hardly does something (eyes
that keep looking ahead: a spread of a third of a pixel) that floor is already near 1, and no swap
can measure better; the median table adds each measure's median over the pairs whose floor is at most
MEASURABLE.

    python bench/real_swap.py --clip talking.mp4 --target photo.jpg [--frames 30] [--every 2]
    python bench/real_swap.py --clip a.mp4 b.mp4 --target p.jpg q.jpg --out logs/bench/real_swap

Use clips and photos of people who agreed, or public material you may use for research; nothing is
written next to them (the swapped frames and sheets go under --out, marked synthetic).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2
import imageio_ffmpeg
import numpy as np
from hydra import compose, initialize_config_dir

from implicit_deepfake.core.config import register_resolvers
from implicit_deepfake.core.io import composite, read_image, read_json, write_png
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.expression import MEASURES, clip_agreement, expression_measures
from implicit_deepfake.pipeline import swap_stage

REPO = Path(__file__).resolve().parents[1]
SHEET_FRAMES = 6
PANEL = 256
MEASURABLE = 0.2  # a pair's measure counts in the "measurable" median when its floor is at most this


def _fps(clip: Path) -> float:
    if clip.is_dir():
        return 25.0
    reader = imageio_ffmpeg.read_frames(str(clip))
    meta = next(reader)
    reader.close()
    return float(meta.get("fps") or 25.0)


def swap_clip(clip: Path, target: Path, frames: int, every: int, size: int, out: Path, extra: list[str]) -> Path:
    """The clip's first `frames` x `every` frames tracked and swapped with `target`; the swapped root."""
    end = (frames * every + 0.5) / _fps(clip)
    overrides = [
        "data=video",
        f"data.path={clip.resolve()}",
        f"data.image_size={size}",
        f"data.every={every}",
        f"data.end={end:.4f}",
        f"data.source.min_frames={min(frames, 10)}",
        f"target={target.resolve()}",
        f"paths.data_dir={out.resolve()}/data",
        "progress=false",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("swap", overrides=overrides)
    return swap_stage(cfg)[1]


def figures(root: Path) -> dict:
    """What the swap's manifest measured: agreement per measure, identity, seam, flicker."""
    manifest = read_json(root / "manifest.json")
    summary = manifest["summary"]
    return {
        "expression": summary["expression"],
        "identity_swapped": summary["mean_identity_distance_after"],
        "identity_base": summary["mean_identity_distance_before"],
        "seam": summary["seam_score_median"],
        "flicker": summary.get("flicker"),
        "swapped": summary["swapped"],
        "frames": summary["frames"],
    }


def _jittered(rgb: np.ndarray) -> np.ndarray:
    """The frame moved by half a pixel each way and saved as a JPEG (quality 92): what a detector should
    read the same."""
    moved = cv2.warpAffine(
        rgb, np.float32([[1, 0, 0.5], [0, 1, 0.5]]), rgb.shape[1::-1], borderMode=cv2.BORDER_REPLICATE
    )
    return cv2.imdecode(cv2.imencode(".jpg", moved, [cv2.IMWRITE_JPEG_QUALITY, 92])[1], cv2.IMREAD_UNCHANGED)


def noise_floor(root: Path, landmarker: FaceLandmarker) -> dict[str, float | None]:
    """Per measure, the median |jittered - base| over the base clip's spread, on the swap's measured frames."""
    manifest = read_json(root / "manifest.json")
    source_root = Path(manifest["source_root"])
    base, jittered = [], []
    for record in (r for r in manifest["frames"] if r.get("expression")):
        face = landmarker.detect(_jittered(composite(read_image(source_root / record["source"]), (1, 1, 1))))
        base.append(record["expression"]["base"])
        jittered.append(None if face is None else expression_measures(face.landmarks))
    agreement = clip_agreement(base, jittered)
    return {key: None if agreement[key] is None else agreement[key]["difference_over_spread"] for key in MEASURES}


def _label(image: np.ndarray, lines: list[str]) -> np.ndarray:
    image = image.copy()
    for k, line in enumerate(lines):
        y = 16 + 16 * k
        cv2.putText(image, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, line, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def sheet_frames(measured: list[dict], count: int) -> list[dict]:
    """The measured frames a sheet shows, in the clip's order: those where the base has the most for the
    swap to keep (its most shut eye, its widest mouth, its gaze farthest aside: a blink or a laugh falls
    between evenly spaced frames), and evenly spaced ones: `count` at most."""
    base = [r["expression"]["base"] for r in measured]
    extremes = {
        int(np.argmin([min(b["eye_opening_left"], b["eye_opening_right"]) for b in base])),
        int(np.argmax([b["mouth_opening"] for b in base])),
        int(np.argmax([abs(b["gaze_x"]) for b in base])),
    }
    spread = np.linspace(0, len(measured) - 1, max(count - len(extremes), 0)).astype(int)
    return [measured[k] for k in sorted(extremes | set(spread.tolist()))[:count]]


def write_sheet(root: Path, target: Path, path: Path) -> None:
    """Base | swapped for SHEET_FRAMES measured frames (`sheet_frames`), each with its measures, and the
    target photo."""
    manifest = read_json(root / "manifest.json")
    source_root = Path(manifest["source_root"])
    measured = [r for r in manifest["frames"] if r.get("expression") and r["output"]]
    chosen = sheet_frames(measured, SHEET_FRAMES) if measured else []
    rows = []
    for record in chosen:
        base = cv2.resize(composite(read_image(source_root / record["source"]), (1, 1, 1)), (PANEL, PANEL))
        swapped = cv2.resize(composite(read_image(root / record["output"]), (1, 1, 1)), (PANEL, PANEL))
        b, s = record["expression"]["base"], record["expression"]["swapped"]
        text = lambda m: [  # noqa: E731
            f"mouth {m['mouth_opening']:.2f} eyes {m['eye_opening_left']:.2f}/{m['eye_opening_right']:.2f}",
            f"brow {m['brow_height']:.2f} gaze {m['gaze_x']:+.2f}",
        ]
        identity = record.get("identity_distance_after")
        rows.append(
            np.hstack(
                [
                    _label(base, [f"base {Path(record['source']).stem}", *text(b)]),
                    _label(swapped, ["swapped" + (f" id {identity:.2f}" if identity else ""), *text(s)]),
                ]
            )
        )
    photo = read_image(target)[..., :3]
    scale = PANEL / max(photo.shape[:2])
    photo = cv2.resize(photo, (round(photo.shape[1] * scale), round(photo.shape[0] * scale)))
    header = np.full((PANEL, 2 * PANEL, 3), 255, np.uint8)
    header[: photo.shape[0], : photo.shape[1]] = photo
    header = _label(header, ["", "", "", "", "", f"target: {target.name}"])
    write_png(path, np.vstack([header, *rows]), source="bench/real_swap.py sheet")


def _row(name: str, values: list[float | None]) -> str:
    cells = ["   -  " if v is None else f"{v:6.2f}" for v in values]
    return f"{name:<22}" + "  ".join(cells)


def print_figures(title: str, result: dict, third: str) -> None:
    """The table of one pair or of the median; `third`: the header of the third column (result["third"])."""
    print(f"\n{title}: {result['swapped']} of {result['frames']} frames swapped")
    print(f"{'measure':<22}{'diff/spread':>6}  {'corr':>6}  {third}")
    for key in MEASURES:
        entry = result["expression"].get(key) or {}
        values = [entry.get("difference_over_spread"), entry.get("correlation"), result["third"].get(key)]
        print(_row(key, values))
    print(_row("identity to target", [result["identity_swapped"], result["identity_base"]]), "  (swapped, base)")
    print(_row("seam / flicker", [result["seam"], result["flicker"]]))


def _median(results: list[dict], pick) -> float | None:
    values = [v for v in (pick(r) for r in results) if v is not None]
    return float(np.median(values)) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, nargs="+", required=True, help="video files or folders of frames")
    parser.add_argument("--target", type=Path, nargs="+", required=True, help="target photos")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--every", type=int, default=2, help="every k-th frame of the clip")
    parser.add_argument("--size", type=int, default=512, help="frame size in pixels (data.image_size)")
    parser.add_argument("--out", type=Path, default=REPO / "logs" / "bench" / "real_swap")
    parser.add_argument("overrides", nargs="*", help="swap.py overrides, e.g. swap.swapper.relight=0")
    args = parser.parse_args()
    register_resolvers()
    landmarker = FaceLandmarker(refine=True)
    results = []
    for clip in args.clip:
        floor: dict[str, float | None] | None = None  # the clip's own: the same base frames for every target
        for target in args.target:
            root = swap_clip(clip, target, args.frames, args.every, args.size, args.out, args.overrides)
            floor = floor or noise_floor(root, landmarker)
            result = {**figures(root), "third": floor}
            sheet = args.out / f"{clip.stem}__{target.stem}.png"
            write_sheet(root, target, sheet)
            print_figures(f"{clip.name} x {target.name} (sheet: {sheet})", result, "floor")
            results.append(result)
    if len(results) > 1:
        median = {
            "expression": {
                key: {
                    stat: _median(results, lambda r, k=key, s=stat: (r["expression"].get(k) or {}).get(s))
                    for stat in ("difference_over_spread", "correlation")
                }
                for key in MEASURES
            },
            **{
                k: _median(results, lambda r, k=k: r[k])
                for k in ("identity_swapped", "identity_base", "seam", "flicker")
            },
            "swapped": sum(r["swapped"] for r in results),
            "frames": sum(r["frames"] for r in results),
            # each measure's median difference over the pairs whose clip measures it above the detector's noise
            "third": {
                key: _median(
                    [r for r in results if r["third"].get(key) is not None and r["third"][key] <= MEASURABLE],
                    lambda r, k=key: (r["expression"].get(k) or {}).get("difference_over_spread"),
                )
                for key in MEASURES
            },
        }
        print_figures(
            f"median over {len(results)} clip x target pairs", median, f"diff/spread where floor <= {MEASURABLE}"
        )


if __name__ == "__main__":
    main()
