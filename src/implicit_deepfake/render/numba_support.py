"""Glue between torch tensors and the compiled (numba) rasterizer kernels: threads, array conversions and
scratch arrays kept for reuse.

Conversions go through numpy, not torch ops: on two threads each torch op over more than ~32k
elements wakes torch's OpenMP pool, which costs more than the copy itself.
"""

from __future__ import annotations

import functools
import threading
import weakref

import numba
import numpy as np
import torch
from torch import Tensor


def kernel_threads() -> int:
    """As many threads as torch may use, within numba's pool; sets numba's count and returns it."""
    # ignore: numba.config sets its NUMBA_* attributes from the environment at import, undeclared
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    numba.set_num_threads(threads)
    return threads


@functools.cache
def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy dtype of a torch dtype."""
    return torch.empty(0, dtype=dtype).numpy().dtype


def as_array(tensor: Tensor, dtype: type | np.dtype = np.float64) -> np.ndarray:
    """A C-contiguous numpy array of the tensor's values (no copy when it already is one)."""
    return np.ascontiguousarray(tensor.detach().numpy(), dtype=dtype)


def as_tensor(array: np.ndarray, like: torch.dtype) -> Tensor:
    """The array as a tensor of dtype `like` (no copy when the dtypes agree)."""
    return torch.from_numpy(array.astype(numpy_dtype(like), copy=False))


class ScratchPool:
    """Large scratch arrays kept for reuse. A fresh array of ~100 MB per render costs the page faults of every page
    the kernel writes, each training step; one kept from an earlier step costs none. `take` hands out 1-D arrays of
    at least `n` items; they come back when `owner` (an autograd node) is freed with its graph, so an array is never
    handed out twice while a backward may still read it. The last `keep` returned are kept."""

    def __init__(self, dtypes: tuple[type, ...], keep: int = 2) -> None:
        self._dtypes = dtypes
        self._keep = keep
        self._free: list[tuple[np.ndarray, ...]] = []
        self._lock = threading.Lock()

    def take(self, owner: object, n: int) -> tuple[np.ndarray, ...]:
        with self._lock:
            fits = [k for k, arrays in enumerate(self._free) if len(arrays[0]) >= n]
            arrays = self._free.pop(fits[0]) if fits else tuple(np.empty(n, dtype) for dtype in self._dtypes)
        weakref.finalize(owner, self._give, arrays)
        return arrays

    def _give(self, arrays: tuple[np.ndarray, ...]) -> None:
        with self._lock:
            self._free = [*self._free, arrays][-self._keep :]
