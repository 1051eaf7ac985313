"""Thread count of the compiled (numba) rasterizer kernels: one knob, torch's, for both libraries."""

from __future__ import annotations

import numba
import torch


def kernel_threads() -> int:
    """As many threads as torch may use, within numba's pool; sets numba's count and returns it."""
    threads = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(threads)
    return threads
