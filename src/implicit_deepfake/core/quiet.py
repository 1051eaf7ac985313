"""Keep the terminal to what a user of this tool needs: drop third-party lines that say nothing
about the run (Lightning's litlogger advert, a deprecation inside Lightning, mediapipe's and TF
Lite's native info/warning lines), and nothing else: our own warnings and errors still show."""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading
import warnings

# absl/glog info and warning lines ("W0000 00:00:1796173151.385784   13246 file.cc:114] ..."), and
# TF Lite's and absl's start-up lines, written by mediapipe's C++ straight to file descriptor 2: at a
# line's start, or right after a progress bar that has no newline of its own.
NATIVE_NOISE = re.compile(
    rb"[IW]\d{4} [\d:.]+ +\d+ \S+:\d+\] "
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
)
# Where such a line may begin in a chunk that ends before its newline: from there on it waits for the rest.
NOISE_START = re.compile(rb"[IW]\d|INFO: |WARNING: All")
_NOISE_PREFIXES = (b"INFO: ", b"WARNING: All")  # cut after its first letters (a digit after I/W: NOISE_START)
LITLOGGER_TIP = "litlogger"
_native_filter: threading.Thread | None = None


class _DropLitloggerTip(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return LITLOGGER_TIP not in record.getMessage()


def quiet_python_noise() -> None:
    """Lightning's litlogger tip and its `LeafSpec` deprecation warning (from torch, about Lightning's code)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(_DropLitloggerTip())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


def _held_from(unfinished: bytes) -> int:
    """Where a native noise line may begin in a chunk's unfinished last line (its end if nowhere)."""
    match = NOISE_START.search(unfinished)
    if match:
        return match.start()
    for start in range(max(0, len(unfinished) - 12), len(unfinished)):  # a start cut short by the chunk
        if any(prefix.startswith(unfinished[start:]) for prefix in _NOISE_PREFIXES):
            return start
    return len(unfinished)


def _forward(read_fd: int, write_fd: int) -> None:
    """Copy the pipe to the real stderr, without the native noise lines."""
    pending = b""
    while chunk := os.read(read_fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = []
        for line in lines:
            noise = NATIVE_NOISE.search(line)
            if noise is None:
                kept.append(line + b"\n")
            elif line[: noise.start()].strip(b"\r"):  # a bar the native line was written after: the bar stays
                kept.append(line[: noise.start()])
        held = _held_from(pending)  # a prompt or a bar without its newline yet goes now, a native line waits
        kept.append(pending[:held])
        pending = pending[held:]
        os.write(write_fd, b"".join(kept))
    if pending:
        os.write(write_fd, pending)
    os.close(read_fd)


def filter_native_stderr() -> None:
    """Route file descriptor 2 (and so child processes' stderr) through a filter of NATIVE_NOISE lines.

    Native libraries write there directly and their log levels cannot be set from Python. At exit
    the real stderr comes back and the filter drains, so a traceback printed last still shows."""
    global _native_filter
    if _native_filter is not None:
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    _native_filter = threading.Thread(target=_forward, args=(read_fd, real), daemon=True, name="stderr-filter")
    _native_filter.start()

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(real, 2)  # the pipe's last write end closes: the filter reads to the end and stops
        _native_filter.join(timeout=5)

    atexit.register(restore)


def quiet_third_party() -> None:
    # W&B's closing history/summary repeats train.py's own table; its warnings and `wandb sync` hint stay.
    os.environ.setdefault("WANDB_QUIET", "true")
    quiet_python_noise()
    filter_native_stderr()
