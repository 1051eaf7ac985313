"""The 4D page's picture (docs/viewer_4d.png): a gaussian_avatar run's viewer.html in Chromium at two
frames of its training video, side by side, as a 256-colour PNG.

    .venv/bin/python train.py model=gaussian_avatar data=synthetic4d
    .venv/bin/python docs/make_viewer_4d_figure.py                      # the newest gaussian_avatar run
    .venv/bin/python docs/make_viewer_4d_figure.py logs/train/runs/<time> --frames 31 36

Needs Debian's chromium (as the page's tests do); the page is opened from disk, offline.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]


def newest_avatar_run(log_dir: Path) -> Path:
    pages = [p for p in (log_dir / "train" / "runs").glob("*/viewer.html") if (p.parent / "avatar4d.npz").is_file()]
    if not pages:
        raise SystemExit(f"no gaussian_avatar run with a viewer.html under {log_dir}/train/runs: train one first")
    return max(pages, key=lambda p: p.stat().st_mtime).parent


def screenshots(page_file: Path, frames: list[int], width: int, height: int, zoom_out: int) -> list[Image.Image]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(page_file.as_uri())
        page.wait_for_function("document.body.dataset.state !== 'loading'", timeout=90_000)
        page.mouse.move(width / 2, height / 2)
        page.mouse.wheel(0, zoom_out)  # the page opens on the training camera, the head filling it
        shots = []
        for frame in frames:
            page.evaluate(f"window.avatarPlayer.showFrame({frame})")
            page.wait_for_function(f"document.body.dataset.frame === '{frame}'", timeout=30_000)
            shots.append(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
        browser.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, nargs="?", help="a gaussian_avatar run folder (default: the newest)")
    parser.add_argument("--frames", type=int, nargs=2, default=[31, 36], help="two training frames (0-based)")
    parser.add_argument("--zoom-out", type=int, default=400, help="mouse-wheel pixels scrolled back first")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "viewer_4d.png")
    args = parser.parse_args()
    run = args.run or newest_avatar_run(REPO / "logs")
    shots = screenshots(run / "viewer.html", args.frames, 576, 448, args.zoom_out)
    sheet = Image.new("RGB", (sum(s.width for s in shots), shots[0].height), "white")
    for i, shot in enumerate(shots):
        sheet.paste(shot, (i * shots[0].width, 0))
    sheet.quantize(256).save(args.out, optimize=True)
    print(f"{args.out} ({args.out.stat().st_size // 1024} KB) from {run}")


if __name__ == "__main__":
    main()
