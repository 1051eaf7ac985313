"""The CPU rasterizer's kernels compiled ahead, in a child process, while the dataset is built and swapped.

numba compiles the kernels on their first use and caches them on disk (`cache=True`), so a fresh
clone's first training run paid ~45 s of its ~2 min 15 s there (two cores). `start_warm_up()` renders
and back-propagates a few Gaussians in a child process, through the same code path as training (so
the same kernel signatures), which leaves the compiled kernels in numba's cache; the parent `wait()`s
for it just before training and loads them. A thread would not overlap: numba compiles under the GIL.
When the cache already holds every kernel no child starts (it would only compete for the cores). A
failed warm-up costs nothing but its time: training then compiles as before.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from implicit_deepfake.models.gaussians import GaussianCloud
from implicit_deepfake.render.cameras import Cameras


def rasterizer_kernels() -> list:
    """The compiled kernels (numba dispatchers) of the CPU Gaussian rasterizer, each once."""
    # numba loads only here: a run on a GPU, or of a NeRF, never needs it
    from numba.core.registry import CPUDispatcher

    from implicit_deepfake.render import gaussians_numba, gaussians_numba_pairs, gaussians_numba_projection, sh_numba

    modules = (gaussians_numba, gaussians_numba_pairs, gaussians_numba_projection, sh_numba)
    kernels = {value.py_func: value for m in modules for value in vars(m).values() if isinstance(value, CPUDispatcher)}
    return list(kernels.values())


def kernels_cached() -> bool:
    """Whether numba's disk cache holds every kernel for the source as it is now (numba's own index,
    checked against the source file's stamp: private API, so anything unexpected reads as not cached)."""
    try:
        return all(kernel._cache._cache_file._load_index() for kernel in rasterizer_kernels())  # private: see above
    except (AttributeError, OSError):
        return False


def compile_in_child() -> subprocess.Popen:
    """The child process compiling (or, when cached, just loading) the kernels."""
    return subprocess.Popen([sys.executable, "-m", __name__], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_warm_up() -> subprocess.Popen | None:
    """`compile_in_child()`, or None when the kernels are cached already."""
    return None if kernels_cached() else compile_in_child()


@contextmanager
def warming_up(enabled: bool) -> Iterator[subprocess.Popen | None]:
    """`start_warm_up()` (when `enabled`) for the block, which `wait()`s for it before training; the
    child is stopped when the block ends first (a build or swap that failed leaves no compiler behind)."""
    child = start_warm_up() if enabled else None
    try:
        yield child
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


def warm_up() -> None:
    """Render 64 Gaussians from one camera and back-propagate, with and without absolute gradients."""
    generator = torch.Generator().manual_seed(0)
    cloud = GaussianCloud(sh_degree=3)
    n = 64
    cloud.initialize(torch.rand(n, 3, generator=generator) - 0.5, torch.rand(n, 3, generator=generator),
                     torch.full((n,), 0.05))  # fmt: skip
    world_to_camera = torch.eye(4)
    world_to_camera[2, 3] = 2.0
    intrinsics = torch.tensor([[32.0, 0.0, 16.0], [0.0, 32.0, 16.0], [0.0, 0.0, 1.0]])
    cameras = Cameras(world_to_camera[None], intrinsics[None], 32, 32)
    for absgrad in (False, True):
        for sh_degree in (0, 3):
            rgb, alphas, _ = cloud.render(cameras, sh_degree, torch.ones(3), absgrad=absgrad)
            (rgb.sum() + alphas.sum()).backward()


if __name__ == "__main__":
    warm_up()
