"""Forward + backward time of the CPU Gaussian rasterizers: compiled (numba) vs PyTorch vs the dense reference.

    python bench/rasterizer.py                       # 128^2 and 256^2 x 5k, 20k, 50k Gaussians, 1 and 2 threads
    python bench/rasterizer.py --quick               # 128^2 x 20k only
    python bench/rasterizer.py --quick --rounds 5    # ... timed 5 times over, numba and PyTorch back to back
    python bench/rasterizer.py --scene logs/train/runs/<time>   # + a row on a trained run's point_cloud.ply
    python bench/rasterizer.py --compile-time        # the numba kernels' JIT compile: cold and cached

Each (method, case, threads) runs in a fresh subprocess, so its peak RSS (`ru_maxrss`, the whole
process, torch included) is its own. Random scenes: N Gaussians uniform in the unit ball, scales
0.01-0.04, RGB colours, one camera 2.5 away that the ball fills. The trained scene: the run's
Gaussians (SH degree 3) seen from its dataset's first test camera, over a white background, as
training renders them. Both CPU rasterizers run with --threads torch threads (the numba kernels
use as many); timed as the median of 7 runs after one warm-up (a shared machine is noisy), the
dense reference once. This shared virtual machine drifts by 20% and more over minutes; with --rounds,
numba and PyTorch are timed back to back that many times and the round with the median speed-up is
shown, with the range of the speed-ups.

"pairs" are the contributing (pixel, Gaussian) pairs of the render (those composited before each
pixel stops); "ns/pair" is the forward + backward time per pair. Dense cases whose time,
extrapolated from those already run (linear in pixels x Gaussians), would exceed
--max-dense-seconds are skipped and shown as "~estimate". "max |d|" is the largest difference of
the compiled render (RGB and alpha) from the dense one (else from the PyTorch one): float32 alphas
on either side of the 1/255 cut-off or the 1e-4 stop change a pixel by up to ~4e-3.
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

from implicit_deepfake.render.cameras import Cameras

CAMERA_DISTANCE = 2.5
CAMERA_ANGLE_X = 0.8  # radians: the unit ball fills the image
METHODS = ("numba", "torch", "dense")


def random_scene(n: int, size: int, seed: int = 0) -> tuple[list[torch.Tensor], Cameras, dict]:
    """n Gaussians uniform in the unit ball, scales 0.01-0.04, random rotations, opacities, colours; one camera."""
    from implicit_deepfake.render.cameras import look_at

    g = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=1)
    means = direction * torch.rand(n, 1, generator=g) ** (1 / 3)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.01), math.log(0.04), generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g) * 0.9 + 0.1
    colors = torch.rand(n, 3, generator=g)
    eye = torch.tensor([[0.0, -CAMERA_DISTANCE, 0.0]])
    c2w = look_at(eye, torch.zeros(1, 3), torch.tensor([0.0, 0.0, 1.0]))
    cameras = Cameras.from_blender(c2w, CAMERA_ANGLE_X, size, size)
    return [t.requires_grad_() for t in (means, quats, scales, opacities, colors)], cameras, {}


def trained_scene(run_dir: Path, data_dir: Path) -> tuple[list[torch.Tensor], Cameras, dict]:
    """A trained run's Gaussians and its dataset's first test camera, rendered as training does (SH 3, white)."""
    from implicit_deepfake.data.blender import load_blender_split
    from implicit_deepfake.models.gaussians import GaussianCloud

    p = GaussianCloud.load_ply(run_dir / "point_cloud.ply").params
    cameras = load_blender_split(data_dir, "test").cameras[0]
    params = [p["means"], p["quats"], torch.exp(p["scales"]), torch.sigmoid(p["opacities"]),
              torch.cat([p["sh0"], p["shN"]], dim=1)]  # fmt: skip
    params = [t.detach().contiguous().requires_grad_() for t in params]
    return params, cameras, {"sh_degree": 3, "backgrounds": torch.ones(1, 3)}


def forward_backward(method: str, params: list[torch.Tensor], cameras: Cameras, options: dict):
    """One render of all channels and alpha, and the gradients of a random weighting of them -> (image, seconds)."""
    from implicit_deepfake.render.gaussians import rasterize_gaussians
    from implicit_deepfake.render.gaussians_dense import rasterize_dense

    for p in params:
        p.grad = None
    camera = (cameras.world_to_camera, cameras.intrinsics, cameras.width, cameras.height)
    start = time.perf_counter()
    if method == "dense":
        render, alphas = rasterize_dense(*params, *camera, **options)
    else:
        render, alphas, _ = rasterize_gaussians(*params, *camera, rasterizer=method, **options)
    image = torch.cat([render, alphas], -1)
    weights = torch.rand(image.shape, generator=torch.Generator().manual_seed(1))
    (image * weights).sum().backward()
    return image.detach(), time.perf_counter() - start


def count_pairs(params: list[torch.Tensor], cameras: Cameras, options: dict) -> int:
    """Contributing pairs of the render, from the PyTorch path's pair list (which holds exactly those)."""
    from implicit_deepfake.render import gaussians_composite
    from implicit_deepfake.render.gaussians import rasterize_gaussians

    counted, pixel_pairs = [], gaussians_composite.pixel_pairs

    def counting(*args):
        pairs = pixel_pairs(*args)
        counted.append(len(pairs.gaussian))
        return pairs

    gaussians_composite.pixel_pairs = counting
    try:
        with torch.no_grad():
            rasterize_gaussians(*params, cameras.world_to_camera, cameras.intrinsics, cameras.width, cameras.height,
                                rasterizer="torch", **options)  # fmt: skip
    finally:
        gaussians_composite.pixel_pairs = pixel_pairs
    return sum(counted)


def run_case(case: dict) -> None:
    """Child process: time one case, save its image, print a JSON line (seconds, peak MiB, pairs, first call)."""
    import numba

    torch.set_num_threads(case["threads"])
    numba.set_num_threads(case["threads"])
    if case["scene"]:
        params, cameras, options = trained_scene(Path(case["scene"]), Path(case["data"]))
    else:
        params, cameras, options = random_scene(case["n"], case["size"])
    first = None
    if case["method"] != "dense":  # warm-up: first-call allocations, lazy initialisation, loading the kernels
        first = forward_backward(case["method"], params, cameras, options)[1]
    times = []
    for _ in range(case["repeats"]):
        image, seconds = forward_backward(case["method"], params, cameras, options)
        times.append(seconds)
    torch.save(image, case["image"])
    pairs = count_pairs(params, cameras, options) if case["method"] == "torch" else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"seconds": statistics.median(times), "peak_mib": peak, "pairs": pairs, "first": first,
                      "n": len(params[0]), "pixels": cameras.width * cameras.height}))  # fmt: skip


def spawn(case: dict, timeout: float, env: dict | None = None) -> dict | None:
    args = [sys.executable, __file__, "--case", json.dumps(case)]
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=True, env=env)
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as error:
        raise RuntimeError(f"{case} failed:\n{error.stderr}") from error
    return json.loads(done.stdout.strip().splitlines()[-1])


def compile_times() -> None:
    """First forward + backward in a fresh process with an empty numba cache, then with that cache filled."""
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NUMBA_CACHE_DIR": tmp}
        case = {"method": "numba", "size": 128, "n": 20_000, "threads": 2, "repeats": 3, "scene": None,
                "image": str(Path(tmp) / "image.pt")}  # fmt: skip
        print("numba kernels, float32, 128x128, 20k Gaussians, 2 threads: first forward + backward in a fresh process")
        for label in ("cold (empty cache: compiles)", "cached (loads the compiled kernels)"):
            result = spawn(case, timeout=600, env=env)
            print(f"  {label:36} {result['first']:6.2f} s  (a warm call: {result['seconds']:.3f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="128x128 with 20k Gaussians only")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch (and numba) thread counts")
    parser.add_argument("--max-dense-seconds", type=float, default=60.0, help="skip longer dense cases (estimate)")
    parser.add_argument("--scene", type=Path, help="a trained run folder (its point_cloud.ply): one more row")
    parser.add_argument("--scene-data", type=Path, default=Path("data/synthetic"), help="its dataset (test cameras)")
    parser.add_argument("--compile-time", action="store_true", help="only the numba kernels' JIT compile time")
    parser.add_argument("--rounds", type=int, default=1,
                        help="time numba and PyTorch this many times, back to back; show the median round")  # fmt: skip
    parser.add_argument("--case", help=argparse.SUPPRESS)  # JSON: one case, in a child process
    options = parser.parse_args()
    if options.case:
        run_case(json.loads(options.case))
        return
    if options.compile_time:
        compile_times()
        return

    cases = [(size, n) for size in ([128] if options.quick else [128, 256])
             for n in ([20_000] if options.quick else [5_000, 20_000, 50_000])]  # fmt: skip
    if options.scene:
        cases.append(("scene", None))
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; forward + backward, float32, 1 camera")
    print(f"{'scene':>14} {'thr':>3} {'numba s':>8} {'torch s':>8} {'dense s':>8} {'vs torch':>8} {'vs dense':>8} "
          f"{'pairs':>7} {'ns/pair numba':>13} {'torch':>6} {'peak MiB numba':>14} {'torch':>6} "
          f"{'max |d|':>8}")  # fmt: skip
    rate = {}  # dense seconds per (pixel x Gaussian) per thread count, from the cases run so far
    with tempfile.TemporaryDirectory() as tmp:
        for size, n in cases:
            for threads in options.threads:
                base = {"size": size, "n": n, "threads": threads, "scene": None, "data": str(options.scene_data)}
                if size == "scene":
                    base["scene"] = str(options.scene)
                rounds = []  # numba then torch, back to back: each ratio is of the same few seconds of the machine
                for _ in range(options.rounds):
                    rounds.append({method: spawn({**base, "method": method, "repeats": 7,
                                                  "image": str(Path(tmp) / f"{method}.pt")}, timeout=600)
                                   for method in ("numba", "torch")})  # fmt: skip
                rounds.sort(key=lambda r: r["torch"]["seconds"] / r["numba"]["seconds"])
                numba, torch_path = rounds[(len(rounds) - 1) // 2].values()  # the round with the median speed-up
                spread = (f"  ({rounds[0]['torch']['seconds'] / rounds[0]['numba']['seconds']:.1f}-"
                          f"{rounds[-1]['torch']['seconds'] / rounds[-1]['numba']['seconds']:.1f}x over "
                          f"{len(rounds)} rounds)") if len(rounds) > 1 else ""  # fmt: skip
                pixels_x_n = numba["pixels"] * numba["n"]
                estimate = rate[threads] * pixels_x_n if threads in rate else None
                dense = None
                if estimate is None or estimate <= options.max_dense_seconds:
                    case = {**base, "method": "dense", "repeats": 1, "image": str(Path(tmp) / "dense.pt")}
                    dense = spawn(case, timeout=3 * options.max_dense_seconds)
                image = torch.load(Path(tmp) / "numba.pt")
                if dense is not None:
                    rate[threads] = dense["seconds"] / pixels_x_n
                    dense_s, vs_dense = f"{dense['seconds']:8.2f}", f"{dense['seconds'] / numba['seconds']:.0f}x"
                    diff = float((image - torch.load(Path(tmp) / "dense.pt")).abs().max())
                else:
                    estimate = estimate or 3 * options.max_dense_seconds  # a lower bound when it timed out
                    dense_s, vs_dense = f"~{estimate:.0f}", f"~{estimate / numba['seconds']:.0f}x"
                    diff = float((image - torch.load(Path(tmp) / "torch.pt")).abs().max())
                pairs = torch_path["pairs"]
                side = round(math.sqrt(numba["pixels"]))
                label = f"trained {side}px {numba['n'] // 1000}k" if size == "scene" else f"{size}px {n // 1000}k"
                print(
                    f"{label:>14} {threads:>3} {numba['seconds']:8.3f} {torch_path['seconds']:8.3f} {dense_s:>8} "
                    f"{torch_path['seconds'] / numba['seconds']:7.1f}x {vs_dense:>8} {pairs / 1e6:6.2f}M "
                    f"{1e9 * numba['seconds'] / pairs:13.0f} {1e9 * torch_path['seconds'] / pairs:6.0f} "
                    f"{numba['peak_mib']:14.0f} {torch_path['peak_mib']:6.0f} {diff:8.1e}{spread}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
