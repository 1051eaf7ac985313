"""The CPU rasterizer's kernels compiled ahead in a child process (models/rasterizer_warm_up.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from implicit_deepfake.models.rasterizer_warm_up import (
    compile_in_child,
    kernels_cached,
    rasterizer_kernels,
    start_warm_up,
)


def test_the_warm_up_caches_every_kernel_of_the_gaussian_rasterizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    assert compile_in_child().wait(timeout=300) == 0
    kernels = {f"{k.py_func.__module__.rsplit('.', 1)[1]}.{k.py_func.__name__}" for k in rasterizer_kernels()}
    assert len(kernels) == 27
    cached = {path.name.split("-")[0] for path in tmp_path.rglob("*.nbc")}
    assert kernels <= cached, kernels - cached


def test_no_child_starts_when_the_kernels_are_cached():
    assert compile_in_child().wait(timeout=300) == 0  # fills this checkout's cache (or finds it full)
    assert kernels_cached()
    assert start_warm_up() is None
