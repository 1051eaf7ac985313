"""Glue between torch tensors and the compiled (numba) rasterizer kernels: threads and array conversions.

Conversions go through numpy, not torch ops: on two threads each torch op over more than ~32k
elements wakes torch's OpenMP pool, which costs more than the copy itself.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch
from torch import Tensor


def kernel_threads() -> int:
    """As many threads as torch may use, within numba's pool; sets numba's count and returns it."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
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
