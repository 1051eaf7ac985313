"""Identity of a swapped multi-view dataset's frames per head-yaw bucket, portrait against portrait.

For every frame the swap changed, the dlib distance to the target photo, to the base frame of the same
view and to the base person's portrait (its most frontal view); and the base frames' own distance to
that portrait: what the turn alone costs a face. The same columns as a run's `test.identity_by_yaw`,
over all the dataset's views instead of the test renders.

--oracle (data=synthetic only) measures, instead of the swapped frames, the target's own head: the
synthetic avatar built from the target photo itself (its face texture and its face geometry) and
rendered from the same cameras: a perfect deepfake of the target on this head, the ceiling any
swapper can reach on these measures.

    python bench/swap_identity.py                          # the default run's swap (python train.py)
    python bench/swap_identity.py --oracle                 # the target's own head, same views
    python bench/swap_identity.py --swapped data/swapped/<name> --base data/<dataset>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from implicit_deepfake.avatar.head import build_avatar, render_avatar
from implicit_deepfake.core.io import composite, read_image, read_json
from implicit_deepfake.data.datamodule import load_frames
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.face_report import face_metrics
from implicit_deepfake.metrics.identity_dlib import DlibEmbedder
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.swap.report import base_portrait, head_yaws
from implicit_deepfake.swap.target import load_target

BACKGROUND = (1.0, 1.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--swapped", type=Path, default=Path("data/swapped/synthetic__landmark__famous"))
    parser.add_argument("--base", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--oracle", action="store_true", help="the target's own avatar instead of the swap")
    args = parser.parse_args()
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
    print(json.dumps({k: report[k] for k in ("identity_by_yaw", "identity_by_yaw_of_base_frames")}))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
