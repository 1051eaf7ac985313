"""The table train.py ends with: the headline metrics of the run and the paths of what it made."""

from __future__ import annotations

import os
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text


def short_lpips_reason(reason: str | None) -> str:
    """'LPIPS (alex) unavailable offline: torchvision is not installed (pip install ...); ...' ->
    'torchvision is not installed': the first cause, without its instructions (metrics.json has them)."""
    if not reason:
        return "not computed"
    first = reason.split(": ", 1)[-1].split(";")[0]
    return first.split(" (")[0].strip()


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def _path(path: str | Path) -> str:
    """Relative to the working directory when under it: shorter to read and to copy."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return os.fspath(path)


def run_table(metrics: dict) -> Table:
    """The headline metrics, one row each."""
    table = Table(title=f"{metrics['model']} on {metrics['data']}, swap={metrics['swap']}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    lpips = metrics.get("test.lpips")
    lpips_text = f"{lpips:.3f}" if lpips is not None else f"n/a: {short_lpips_reason(metrics.get('test.lpips_reason'))}"
    rows = [
        ("test PSNR", f"{metrics['test.psnr']:.2f} dB"),
        ("test SSIM", f"{metrics['test.ssim']:.3f}"),
        ("test LPIPS", lpips_text),
    ]
    to_target, to_base = metrics.get("test.identity_distance_to_target"), metrics.get("test.identity_distance_to_base")
    if to_target is not None:
        base = f" (to the base frames {to_base:.3f})" if to_base is not None else ""
        rows.append(("identity distance", f"{to_target:.3f} to the target photo{base}"))
    rows.append(("faces found", f"{metrics['test.face_detection_rate']:.0%} of the test renders"))
    if "num_gaussians" in metrics:
        rows.append(("Gaussians", str(metrics["num_gaussians"])))
    rows.append(("training", f"{metrics['steps']} steps in {_duration(metrics['train_seconds'])}"))
    for name, value in rows:
        table.add_row(name, value)
    return table


def run_files(metrics: dict, run_dir: Path) -> list[tuple[str, str]]:
    """(what, path) of the run's outputs a person opens; viewer.html where the model has one."""
    files = [
        ("orbit video", metrics.get("orbit_video")),
        ("point cloud", metrics.get("ply")),
        ("web viewer", metrics.get("viewer_html")),
        ("contact sheet", metrics.get("contact_sheet")),
        ("metrics", run_dir / "metrics.json"),
    ]
    return [(name, _path(path)) for name, path in files if path is not None]


def print_run_summary(metrics: dict, run_dir: Path, console: Console | None = None) -> None:
    """The table, then the files one per line, whole (never cut to the terminal's width: they get copied)."""
    console = console or Console()
    console.print(run_table(metrics))
    for name, path in run_files(metrics, run_dir):
        console.print(Text.assemble((f"{name:<14}", "bold"), path), soft_wrap=True)
