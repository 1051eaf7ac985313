"""The README's opening picture: the contact sheet of a train.py run, redrawn with a few test views
and stored as a 256-colour PNG, so it stays small in the repository (< 300 KB).

    .venv/bin/python train.py                       # the default run
    .venv/bin/python docs/make_readme_figure.py     # -> docs/summary.png, from the newest run
    .venv/bin/python docs/make_readme_figure.py logs/train/runs/<time> --views 4

It reads the run folder as evaluation wrote it (metrics.json, config.yaml, renders/) and the base and
swapped test frames from the caches the run's config names.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("PROJECT_ROOT", str(Path(__file__).resolve().parents[1]))

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image, PngImagePlugin

from implicit_deepfake.core.config import register_resolvers
from implicit_deepfake.core.io import atomic_path, read_json, read_photo, synthetic_metadata
from implicit_deepfake.core.quiet import quiet_third_party
from implicit_deepfake.core.trust import check_buildable
from implicit_deepfake.data.datamodule import load_frames
from implicit_deepfake.reports.contact_sheet import SheetView, contact_sheet, headline
from implicit_deepfake.swap.target import target_image

REPO = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 300_000


def newest_run(runs: Path) -> Path:
    done = sorted(runs.glob("*/metrics.json"), key=lambda p: p.stat().st_mtime)
    if not done:
        raise SystemExit(f"no evaluated run under {runs}: run `python train.py` first, or give a run folder.")
    return done[-1].parent


def uint8(images) -> list[np.ndarray]:
    return list((images.clamp(0, 1) * 255).round().byte().numpy())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", type=Path, help="a train.py run folder (default: the newest)")
    parser.add_argument("--views", type=int, default=4, help="test views on the picture")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "summary.png")
    args = parser.parse_args()
    register_resolvers()
    quiet_third_party()
    run_dir = args.run or newest_run(REPO / "logs" / "train" / "runs")
    metrics = read_json(run_dir / "metrics.json")
    cfg = OmegaConf.load(run_dir / "config.yaml")
    check_buildable(cfg, run_dir / "config.yaml", {"data.source": object})  # a run folder is data
    source = instantiate(cfg.data.source)
    background, downscale = tuple(cfg.data.background), cfg.data.downscale
    base = load_frames(source.root, "test", background, downscale, cache=False)
    swapped = load_frames(cfg.swap.output_dir, "test", background, downscale, cache=False)
    views = [
        SheetView(Path(v["view"]).stem, b, s, read_photo(run_dir / "renders" / v["view"]), v["psnr"],
                  v["identity_distance_to_target"])
        for v, b, s in zip(metrics["per_view"], uint8(base.rgb), uint8(swapped.rgb))
    ]  # fmt: skip
    # Views where a face was found first (the swap shows there), in test order.
    shown = sorted(sorted(views, key=lambda v: v.identity_distance is None)[: args.views], key=views.index)
    sheet = contact_sheet(shown, target_image(cfg, source), headline(metrics), max_views=args.views)
    picture = Image.fromarray(sheet.image).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    info = PngImagePlugin.PngInfo()
    for key, value in synthetic_metadata(source=f"contact sheet of {run_dir.name}").items():
        info.add_text(key, value)
    with atomic_path(args.out) as tmp:
        picture.save(tmp, format="PNG", optimize=True, pnginfo=info)
    size = args.out.stat().st_size
    print(f"{args.out}: {picture.width}x{picture.height}, {size / 1000:.0f} KB")
    if size > LIMIT_BYTES:
        raise SystemExit(f"{args.out} is over {LIMIT_BYTES // 1000} KB: give fewer --views.")


if __name__ == "__main__":
    main()
