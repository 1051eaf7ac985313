"""The CPU rasterizer's kernels compiled ahead in a child process (models/rasterizer_warm_up.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf

from implicit_deepfake import pipeline
from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.models import rasterizer_warm_up
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


def test_a_failed_build_or_swap_stops_the_warm_up(monkeypatch: pytest.MonkeyPatch):
    """train() started the compiling child, then the swap failed: the child does not outlive the run."""
    children: list[subprocess.Popen] = []

    def child() -> subprocess.Popen:
        children.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        return children[-1]

    def failing_swap(cfg: DictConfig) -> None:
        raise DeepfakeError("target photo: no face found")

    monkeypatch.setattr(rasterizer_warm_up, "start_warm_up", child)
    monkeypatch.setattr(pipeline, "swap_stage", failing_swap)
    cfg = OmegaConf.create({"model": {"name": "gaussian", "module": {}}, "trainer": {"accelerator": "cpu"}})
    with pytest.raises(DeepfakeError, match="no face"):
        pipeline.train(cfg)
    assert len(children) == 1 and children[0].poll() is not None  # stopped, not left compiling
