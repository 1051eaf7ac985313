"""Identity of a swapped multi-view dataset's frames per head-yaw bucket, portrait against portrait.

For every frame the swap changed, the dlib distance to the target photo, to the base frame of the same
view and to the base person's portrait (its most frontal view); and the base frames' own distance to
that portrait: what the turn alone costs a face. The same columns as a run's `test.identity_by_yaw`,
over all the dataset's views instead of the test renders.

--oracle (data=synthetic only) measures, instead of the swapped frames, the target's own head: the
synthetic avatar built from the target photo itself (its face texture and its face geometry) and
rendered from the same cameras: a perfect deepfake of the target on this head, the ceiling any
swapper can reach on these measures.

--oracle --photo PATH (repeatable; `wheels`: the three portraits the wheels ship) needs no dataset:
the head built from each photo, rendered from the default dataset's views within 90 degrees of
frontal, against the photo it was built from, per yaw bucket, next to issue 23's targets.

    python bench/swap_identity.py                          # the default run's swap (python train.py)
    python bench/swap_identity.py --oracle                 # the target's own head, same views
    python bench/swap_identity.py --oracle --photo wheels --photo me.jpg   # any photo's own head
    python bench/swap_identity.py --swapped data/swapped/<name> --base data/<dataset>
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import matplotlib
import numpy as np
import skimage
import torch

from implicit_deepfake.avatar.head import build_avatar, render_avatar
from implicit_deepfake.core.io import composite, read_image, read_json
from implicit_deepfake.data.datamodule import load_frames
from implicit_deepfake.data.synthetic import CAMERA_ANGLE_X, DISTANCE, dataset_views, head_yaw_deg, view_cameras
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.face_report import face_metrics
from implicit_deepfake.metrics.identity import FaceEmbedder
from implicit_deepfake.metrics.identity_dlib import FACE_BOXES, DlibEmbedder
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.swap.report import base_portrait, head_yaws
from implicit_deepfake.swap.target import load_target

BACKGROUND = (1.0, 1.0, 1.0)
# Issue 23: the head built from a photo, per yaw bucket, at most this far from that photo (dlib).
TARGETS = {"0-30": 0.45, "30-60": 0.55}


def wheel_portraits() -> list[Path]:
    """The three portraits the installed wheels ship: matplotlib's Grace Hopper (the default base),
    scikit-image's astronaut (the default target) and insightface's Tom Hanks (when installed)."""
    photos = [
        Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
        Path(skimage.__file__).parent / "data" / "astronaut.png",
    ]
    spec = importlib.util.find_spec("insightface")
    if spec and spec.origin:
        photos.append(Path(spec.origin).parent / "data" / "images" / "Tom_Hanks_54745.png")
    return [p for p in photos if p.is_file()]


def photo_oracle(photo: Path, size: int, landmarker: FaceLandmarker, embedder: FaceEmbedder) -> dict:
    """The head built from `photo`, rendered from the default dataset's views within 90 degrees of
    frontal (`size` px), against the photo: face_metrics' report with identity_by_yaw."""
    target = load_target(photo, 0, landmarker)
    views = dataset_views()
    views = views[np.abs(head_yaw_deg(views)) <= 90]
    avatar = build_avatar(target.rgb, target.face)
    renders = render_avatar(avatar, view_cameras(views, size, CAMERA_ANGLE_X, DISTANCE))[0]
    images = [composite(rgba, BACKGROUND) for rgba in renders]
    return face_metrics(images, target.crop()[0], embedder, landmarker, yaws_deg=head_yaw_deg(views).tolist())


def print_photo_oracles(photos: list[Path], size: int, box: str) -> None:
    landmarker = FaceLandmarker()
    embedder = DlibEmbedder(landmarker=landmarker, box=box)
    targets = ", ".join(f"{bucket}: <= {limit}" for bucket, limit in TARGETS.items())
    print(
        f"each photo's own head, {size} px, default dataset views within 90 deg; dlib distance to the photo ({box} box)"
    )
    print(f"targets (issue 23) {targets}; same person below 0.6")
    print(f"{'photo':<28} {'yaw':>6} {'views':>5} {'faces':>5} {'to photo':>9} {'target':>7}")
    summary = {}
    for photo in photos:
        report = photo_oracle(photo, size, landmarker, embedder)
        summary[photo.name] = {}
        for bucket, row in report["identity_by_yaw"].items():
            distance = row["identity_distance_to_target"]
            summary[photo.name][bucket] = distance
            limit = TARGETS.get(bucket)
            verdict = "" if limit is None or distance is None else ("met" if distance <= limit else "missed")
            text = "-" if distance is None else f"{distance:.3f}"
            print(f"{photo.name[:28]:<28} {bucket:>6} {row['views']:>5} {row['faces']:>5} {text:>9} {verdict:>7}")
    print(json.dumps(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swapped", type=Path, default=Path("data/swapped/synthetic__landmark__famous"))
    parser.add_argument("--base", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--oracle", action="store_true", help="the target's own avatar instead of the swap")
    parser.add_argument(
        "--photo",
        action="append",
        help="with --oracle: the head built from this photo (repeatable; 'wheels': the wheels' three portraits)",
    )
    parser.add_argument("--size", type=int, default=256, help="--photo's render size (the default dataset's)")
    parser.add_argument(
        "--box",
        choices=FACE_BOXES,
        default="hog",
        help="--photo's face box for dlib: dlib's own detector's (hog, the project's metric) or mediapipe's",
    )
    args = parser.parse_args()
    if args.photo:
        if not args.oracle:
            parser.error("--photo measures a photo's own head: add --oracle")
        photos = [p for name in args.photo for p in (wheel_portraits() if name == "wheels" else [Path(name)])]
        missing = [str(p) for p in photos if not p.is_file()]
        if missing:
            parser.error(f"--photo: no such file: {', '.join(missing)}")
        print_photo_oracles(photos, args.size, args.box)
        return
    if args.oracle and not (args.base / "avatar.json").is_file():
        parser.error(f"--oracle renders the synthetic avatar's cameras: {args.base} is not a data=synthetic dataset")
    manifest = read_json(args.swapped / "manifest.json")
    changed = {f["output"] for f in manifest["frames"] if f["status"] == "swapped"}
    swapped, base, world_to_camera, intrinsics = [], [], [], []
    for split in ("train", "val", "test"):
        frames = load_frames(args.swapped, split, BACKGROUND, cache=False)
        keep = [i for i, relpath in enumerate(frames.relpaths) if relpath in changed]
        world_to_camera.append(frames.cameras.world_to_camera[keep])
        intrinsics.append(frames.cameras.intrinsics[keep])
        swapped += [frames.rgb8[i].numpy() for i in keep]
        base += [composite(read_image(args.base / frames.relpaths[i]), BACKGROUND) for i in keep]
    size = (frames.cameras.width, frames.cameras.height)
    cameras = Cameras(torch.cat(world_to_camera), torch.cat(intrinsics), *size)
    target_photo = load_target(manifest["target_photo"], manifest["config"].get("target_face", 0))
    target = target_photo.crop()[0]
    if args.oracle:
        avatar = build_avatar(target_photo.rgb, target_photo.face)
        swapped = [composite(rgba, BACKGROUND) for rgba in render_avatar(avatar, cameras)[0]]
    landmarker = FaceLandmarker()
    report = face_metrics(
        swapped,
        target,
        DlibEmbedder(landmarker=landmarker),
        landmarker,
        references=base,
        yaws_deg=head_yaws(args.swapped, cameras),
        portrait=base_portrait(args.base, args.swapped, BACKGROUND),
    )
    what = "the target's own avatar at the swapped views" if args.oracle else "swapped views"
    print(f"{args.swapped}: {len(swapped)} {what}; dlib distance (same person below 0.6)")
    print(f"{'yaw':>6} {'views':>5} {'faces':>5} {'to target':>9} {'to base view':>12} {'to base portrait':>16}"
          f" {'base views to portrait':>22}")  # fmt: skip
    own = report["identity_by_yaw_of_base_frames"]
    for bucket, row in report["identity_by_yaw"].items():
        cells = [row[f"identity_distance_to_{k}"] for k in ("target", "base", "base_portrait")]
        cells.append(own[bucket]["identity_distance_to_base_portrait"])
        text = ["-" if c is None else f"{c:.3f}" for c in cells]
        print(f"{bucket:>6} {row['views']:>5} {row['faces']:>5} {text[0]:>9} {text[1]:>12} {text[2]:>16} {text[3]:>22}")
    # The swap's pose error (manifest.json's) reads a face of other proportions as turned a little: with
    # --oracle, what a perfect swap of this target scores.
    print(f"pose error against the base views: {report['pose_error_deg_median']} deg median")
    print(json.dumps({k: report[k] for k in ("identity_by_yaw", "identity_by_yaw_of_base_frames")}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
