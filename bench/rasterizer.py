"""Forward + backward time and peak memory of the CPU Gaussian rasterizer vs the dense reference.

    python bench/rasterizer.py                      # 128^2 and 256^2 x 5k, 20k, 50k Gaussians
    python bench/rasterizer.py --quick              # 128^2 x 5k, 20k only
    python bench/rasterizer.py --max-dense-seconds 600 --threads 2

Each (method, resolution, N) case runs in a fresh subprocess, so its peak RSS (`ru_maxrss`) is its
own: "peak" is the whole process (torch included), "+MiB" the rise over the RSS reached before
the first render (imports and scene). "load" is the 1-minute load average when the case starts.
Both methods run with --threads torch threads (default 1): on a shared machine, with another
process busy on one of the cores, torch's 2 threads wait on each other and the CPU rasterizer's
many short ops get ~10x slower and erratic; one thread keeps the figures comparable.

The CPU rasterizer is timed as the median of 3 runs after one warm-up; the dense reference once.
Dense cases whose time, extrapolated from the dense cases already run (time is linear in
pixels x Gaussians), would exceed --max-dense-seconds are skipped and shown as "~estimate".
"max |d|" is the largest difference between the two renders, RGB and alpha (float32: a Gaussian
whose alpha rounds to either side of the 1/255 cut-off, or a pixel whose T rounds to either side
of the 1e-4 stop, changes a pixel by up to ~4e-3).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

CAMERA_DISTANCE = 2.5
CAMERA_ANGLE_X = 0.8  # radians: the unit ball fills the image


def make_scene(n: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """n Gaussians uniform in the unit ball, scales 0.01-0.04, random rotations, opacities, colours; one camera."""
    from implicit_deepfake.data.cameras import Cameras, look_at

    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    means = direction * torch.rand(n, 1, generator=g) ** (1 / 3)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.01), math.log(0.04), generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.1
    colors = torch.rand(n, 3, generator=g)
    eye = torch.tensor([[0.0, -CAMERA_DISTANCE, 0.0]])
    c2w = look_at(eye, torch.zeros(1, 3), torch.tensor([0.0, 0.0, 1.0]))
    cams = Cameras.from_blender(c2w, CAMERA_ANGLE_X, size, size)
    params = [t.requires_grad_() for t in (means, quats, scales, opacities, colors)]
    return params, cams.world_to_camera, cams.intrinsics


def forward_backward(method: str, params: list[torch.Tensor], viewmats: torch.Tensor, Ks: torch.Tensor, size: int):
    """One render of all channels and alpha, and the gradients of a random weighting of them -> (image, seconds)."""
    from implicit_deepfake.render.gaussians import rasterize_gaussians
    from implicit_deepfake.render.gaussians_dense import rasterize_dense

    rasterize = {"cpu": rasterize_gaussians, "dense": rasterize_dense}[method]
    for p in params:
        p.grad = None
    start = time.perf_counter()
    render, alphas = rasterize(*params, viewmats, Ks, size, size)[:2]
    image = torch.cat([render, alphas], -1)
    weights = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))
    (image * weights).sum().backward()
    return image.detach(), time.perf_counter() - start


def run_case(method: str, size: int, n: int, repeats: int, threads: int, image_path: str) -> None:
    """Child process: time one case, save its image, print a JSON line with seconds and RSS in MiB."""
    torch.set_num_threads(threads)
    params, viewmats, Ks = make_scene(n, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if method == "cpu":  # warm-up: first-call allocations and lazy initialisation
        forward_backward(method, params, viewmats, Ks, size)
    times = []
    for _ in range(repeats):
        image, seconds = forward_backward(method, params, viewmats, Ks, size)
        times.append(seconds)
    torch.save(image, image_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": statistics.median(times), "peak_mib": peak, "rise_mib": peak - before}))


def spawn(method: str, size: int, n: int, repeats: int, threads: int, image_path: Path, timeout: float) -> dict | None:
    args = [sys.executable, __file__, "--case", method, str(size), str(n), str(repeats), str(threads), str(image_path)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{method} {size}x{size} N={n} failed:\n{error.stderr}") from error
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128x128 with 5k and 20k Gaussians only")
    parser.add_argument("--max-dense-seconds", type=float, default=300.0, help="skip longer dense cases (estimate)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of both methods")
    parser.add_argument("--case", nargs=6, help=argparse.SUPPRESS)  # METHOD SIZE N REPEATS THREADS IMAGE
    options = parser.parse_args()
    if options.case:
        method, size, n, repeats, threads, image_path = options.case
        run_case(method, int(size), int(n), int(repeats), int(threads), image_path)
        return

    sizes, counts = ([128], [5_000, 20_000]) if options.quick else ([128, 256], [5_000, 20_000, 50_000])
    print(f"torch {torch.__version__}, {options.threads} thread(s) of {os.cpu_count()} cores; "
          "forward + backward, float32, 1 camera")  # fmt: skip
    header = f"{'res':>7} {'N':>6} {'cpu s':>7} {'dense s':>8} {'speed-up':>8} {'cpu peak':>9} {'+MiB':>6} " \
             f"{'dense peak':>10} {'+MiB':>6} {'max |d|':>8} {'load':>5}"  # fmt: skip
    print(header)
    rate = None  # dense seconds per (pixel x Gaussian), from the cases run so far
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            for n in counts:
                cpu_path, dense_path = Path(tmp) / "cpu.pt", Path(tmp) / "dense.pt"
                load = os.getloadavg()[0]
                cpu = spawn("cpu", size, n, 3, options.threads, cpu_path, timeout=600)
                if cpu is None:
                    raise RuntimeError(f"the CPU rasterizer took over 600 s at {size}x{size}, N={n}")
                estimate = None if rate is None else rate * size * size * n
                dense = None
                if estimate is None or estimate <= options.max_dense_seconds:
                    timeout = 3 * options.max_dense_seconds
                    dense = spawn("dense", size, n, 1, options.threads, dense_path, timeout=timeout)
                    estimate = estimate if dense is not None else timeout  # a lower bound when it timed out
                if dense is not None:
                    rate = dense["seconds"] / (size * size * n)
                    diff = float((torch.load(cpu_path) - torch.load(dense_path)).abs().max())
                    dense_s = f"{dense['seconds']:8.2f}"
                    dense_mem = f"{dense['peak_mib']:10.0f} {dense['rise_mib']:6.0f}"
                    speedup, diff_s = f"{dense['seconds'] / cpu['seconds']:.0f}x", f"{diff:8.1e}"
                else:
                    dense_s, dense_mem = f"{'~' + format(estimate, '.0f'):>8}", f"{'-':>10} {'-':>6}"
                    speedup, diff_s = f"~{estimate / cpu['seconds']:.0f}x", f"{'-':>8}"
                print(
                    f"{f'{size}x{size}':>7} {n:>6} {cpu['seconds']:7.3f} {dense_s} {speedup:>8} "
                    f"{cpu['peak_mib']:9.0f} {cpu['rise_mib']:6.0f} {dense_mem} {diff_s} {load:5.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
