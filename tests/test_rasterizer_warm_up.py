"""The CPU rasterizer's kernels compiled ahead in a child process (models/rasterizer_warm_up.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from numba.core.registry import CPUDispatcher

from implicit_deepfake.models.rasterizer_warm_up import start_warm_up
from implicit_deepfake.render import gaussians_numba, gaussians_numba_pairs, gaussians_numba_projection, sh_numba


def test_the_warm_up_caches_every_kernel_of_the_gaussian_rasterizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert start_warm_up().wait(timeout=300) == 0
    modules = (gaussians_numba, gaussians_numba_pairs, gaussians_numba_projection, sh_numba)
    dispatchers = [value for m in modules for value in vars(m).values() if isinstance(value, CPUDispatcher)]
    kernels = {f"{d.py_func.__module__.rsplit('.', 1)[1]}.{d.py_func.__name__}" for d in dispatchers}
    assert len(kernels) == 27
    cached = {path.name.split("-")[0] for path in tmp_path.rglob("*.nbc")}
    assert kernels <= cached, kernels - cached
