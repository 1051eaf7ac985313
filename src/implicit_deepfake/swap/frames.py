"""Swapping one frame of a dataset: the swap itself, its figures, the written PNG, its manifest
record; and a pool of worker processes that swaps many frames at once (`swap.workers`), with the
same output as one process. The dataset-level runner (`runner.py`) decides which frames to swap."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import current_process, get_context
from pathlib import Path
from typing import Any

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import composite, read_image, sha256_file, write_png
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.expression import expression_measures
from implicit_deepfake.metrics.identity import FaceEmbedder, identity_distance
from implicit_deepfake.swap.base import FaceSwapper
from implicit_deepfake.swap.report import frame_quality
from implicit_deepfake.swap.tracking import TrackedFrame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Frame:
    split: str
    entry: dict  # the frame's transforms json entry
    source: Path
    relpath: str  # of the source, relative to the dataset root

    @property
    def output_relpath(self) -> str:
        return Path(self.relpath).with_suffix(".png").as_posix()


class Identity:
    """Identity distance of frames to the target photo (None without an embedder or a face)."""

    def __init__(self, embedder: FaceEmbedder | None, target: np.ndarray) -> None:
        self.embedder = embedder
        self.target = embedder.embed(target) if embedder else None
        if embedder and self.target is None:
            log.warning("identity backend %s found no face in the target photo: distances are null", embedder.name)

    def distance(self, rgb: np.ndarray | None) -> float | None:
        if self.target is None or self.embedder is None or rgb is None:
            return None
        distance = identity_distance(self.embedder, rgb, self.target)
        return None if distance is None else round(float(distance), 4)


@dataclass(frozen=True)
class SwapContext:
    """What swapping one frame needs besides the frame: sent once to each worker process.
    measurer: the 478-point landmarker (irises) of the expression and gaze measures."""

    swapper: FaceSwapper
    identity: Identity
    on_no_face: str
    background: tuple[float, ...]
    landmarker: FaceLandmarker
    out_dir: Path
    measurer: FaceLandmarker


# `_swap_frame`'s arguments but the context: frame, its hash, its tracked face, its detected landmarks, measure.
SwapTask = tuple[Frame, str, TrackedFrame, np.ndarray | None, bool]

_WORKER: SwapContext | None = None  # a worker process's context (set by _start_worker)


def _start_worker(context: SwapContext) -> None:
    global _WORKER
    _WORKER = context


def _swap_in_worker(task: SwapTask) -> dict:
    assert _WORKER is not None  # set by _start_worker
    return _swap_frame(*task, _WORKER)


def swap_all(context: SwapContext, tasks: list[SwapTask], workers: int | None) -> Iterator[dict]:
    """The records of `tasks` (`_swap_frame`'s arguments), in order, from `workers` processes (None:
    one per core); in this process when one is asked for, in a sweep's job process, or when the
    backend cannot be sent to another process (e.g. onnxruntime sessions)."""
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers > 1 and current_process().name != "MainProcess":
        workers = 1  # a job of a parallel sweep: the sweep's processes already share the cores
    if workers > 1:
        try:
            pickle.dumps(context)
        except (TypeError, AttributeError, pickle.PicklingError) as err:
            log.info(
                "swap.workers: the %s backend cannot run in worker processes (%s): one process swaps",
                context.swapper.name,
                err,
            )
            workers = 1
    if workers <= 1:
        yield from (_swap_frame(*task, context) for task in tasks)
        return
    with ProcessPoolExecutor(
        workers, mp_context=get_context("spawn"), initializer=_start_worker, initargs=(context,)
    ) as pool:
        yield from pool.map(_swap_in_worker, tasks, chunksize=4)


def _swap_frame(
    frame: Frame,
    input_hash: str,
    tracked: TrackedFrame,
    detected: np.ndarray | None,
    measure: bool,
    context: SwapContext,
) -> dict:
    """Swap one frame, write it (alpha from the base frame) and return its manifest record, with its
    identity and quality figures when `measure`."""
    swapper, identity, on_no_face = context.swapper, context.identity, context.on_no_face
    background, landmarker, out_dir = context.background, context.landmarker, context.out_dir
    base = read_image(frame.source)
    rgb = composite(base, background)
    status = "swapped" if swapper.changes_frames else "kept"
    if swapper.uses_landmarks and tracked.status == "hidden":
        swapped, status = rgb, "hidden"  # the back of the head: nothing of the face to swap
    elif swapper.uses_landmarks and tracked.face is None:
        swapped = None
    else:
        swapped = swapper.swap(rgb, frame.relpath, tracked.face if swapper.uses_landmarks else None)
    if swapped is None:
        status = "no_face"
        if on_no_face == "error":
            raise DeepfakeError(
                f"{frame.source}: no face found by the '{swapper.name}' swapper. "
                "Set swap.on_no_face=keep (use the base frame) or drop (leave it out)."
            )
        swapped = rgb if on_no_face == "keep" else None
    record: dict[str, Any] = {
        "split": frame.split,
        "source": frame.relpath,
        "output": None,
        "status": status,
        "backend": swapper.name,
        "input_sha256": input_hash,
        "output_sha256": None,
        "visible": tracked.visible,
        "identity_distance_before": identity.distance(rgb) if measure else None,
    }
    # A frame left as it was is as far from the target after as before.
    record["identity_distance_after"] = (
        record["identity_distance_before"] if swapped is rgb or not measure else identity.distance(swapped)
    )
    if status == "swapped" and measure:
        assert swapped is not None  # status "swapped": the swapper returned a frame
        after = landmarker.detect(swapped)
        record.update(frame_quality(rgb, swapped, detected, None if after is None else after.landmarks))
        record["expression"] = _expressions(context.measurer, rgb, swapped)
    if swapped is not None:
        out = out_dir / frame.output_relpath
        alpha = [base[..., 3:]] if base.shape[-1] == 4 else []
        write_png(out, np.concatenate([swapped, *alpha], axis=-1), SwapBackend=swapper.name, Source=frame.relpath)
        record.update(output=frame.output_relpath, output_sha256=sha256_file(out))
    return record


def _expressions(measurer: FaceLandmarker, base: np.ndarray, swapped: np.ndarray) -> dict | None:
    """The expression and gaze measures of a frame and of its swap (None where either has no face)."""
    before, after = measurer.detect(base), measurer.detect(swapped)
    if before is None or after is None:
        return None
    return {
        name: {k: round(v, 4) for k, v in expression_measures(face.landmarks).items()}
        for name, face in (("base", before), ("swapped", after))
    }
