"""The dataset-level swap: every frame of every split, resumable, with a manifest.

Output: `<output_dir>/` with the base layout (`<split>/r_<i>.png`, `transforms_<split>.json` with
every field kept), `famous.jpg`, a NeRFace dataset's static background, and `manifest.json`. Each
frame is written atomically, and the manifest every MANIFEST_EVERY frames and when the run stops,
so a stopped run resumes where it stopped (a killed one, where it last wrote the manifest); a
changed swapper, target, identity backend or base frame invalidates exactly what it affects.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from itertools import pairwise
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import (
    atomic_path,
    composite,
    exclusive,
    image_size,
    read_image,
    read_json,
    read_photo,
    sha256_file,
    sha256_json,
    synthetic_metadata,
    write_json,
)
from implicit_deepfake.data.blender import SPLITS, SplitIndex, read_split_index, write_split_index
from implicit_deepfake.data.nerface import find_background
from implicit_deepfake.data.sparse_points import SPARSE_POINTS
from implicit_deepfake.faces.landmarks import Face, FaceLandmarker
from implicit_deepfake.metrics.expression import FramePair, flicker
from implicit_deepfake.metrics.identity import FaceEmbedder
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.swap.base import FaceSwapper
from implicit_deepfake.swap.frames import Frame, Identity, SwapContext, swap_all
from implicit_deepfake.swap.report import multiview_consistency, summary
from implicit_deepfake.swap.target import load_target
from implicit_deepfake.swap.tracking import FaceTrack, track_faces

log = logging.getLogger(__name__)
ON_NO_FACE = ("keep", "drop", "error")
# The manifest is rewritten after this many swapped frames (and at the end), not after each one:
# rewriting it whole per frame is quadratic in a 5,500-frame video.
MANIFEST_EVERY = 25
# Identity and quality figures cost more than the swap itself: a long video measures this many of
# its frames, evenly spread (every frame of a dataset of up to this many).
MEASURED_FRAMES = 300
FLICKER_PAIRS = 60  # consecutive pairs of a video's swapped frames the flicker is measured on
LANDMARKS_CACHE = "landmarks.npz"  # the base frames' detected landmarks, by frame hash


def _frames(indexes: Sequence[SplitIndex]) -> list[Frame]:
    return [
        Frame(idx.split, entry, path, rel)
        for idx in indexes
        for entry, path, rel in zip(idx.frames, idx.image_paths, idx.relpaths)
    ]


def _check_sizes(frames: Sequence[Frame]) -> dict[str, tuple[int, int]]:
    """Every base frame's size from its header, so an unreadable or odd-sized one fails before any write."""
    sizes = {f.relpath: image_size(f.source) for f in frames}
    first = frames[0]
    for frame in frames:
        if sizes[frame.relpath] != sizes[first.relpath]:
            raise DeepfakeError(
                f"{frame.source}: size {sizes[frame.relpath][::-1]} differs from {first.source} "
                f"{sizes[first.relpath][::-1]}; all frames of a dataset must have the same size."
            )
    return sizes


def _is_done(record: dict | None, input_hash: str, out_dir: Path) -> bool:
    if record is None or record["input_sha256"] != input_hash:
        return False
    if record["output"] is None:  # dropped frame
        return True
    out = out_dir / record["output"]
    return out.is_file() and sha256_file(out) == record["output_sha256"]


def _cameras(indexes: Sequence[SplitIndex], size: tuple[int, int]) -> Cameras:
    """Every frame's camera, in the order of `_frames`."""
    height, width = size
    parts = [index.camera.cameras(index.camera_to_world_gl, width, height) for index in indexes]
    return Cameras(
        torch.cat([c.world_to_camera for c in parts]), torch.cat([c.intrinsics for c in parts]), width, height
    )


def _detect_frames(
    frames: Sequence[Frame], hashes: Sequence[str], background: Sequence[float], landmarker: FaceLandmarker, cache: Path
) -> list[np.ndarray | None]:
    """Each base frame's detected landmarks (P, 3) or None, cached in `cache` (an .npz of plain
    arrays, read without pickle) by the frame's hash, so a resumed swap does not detect again."""
    known: dict[tuple[str, str], np.ndarray] = {}
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as data:
                known = dict(zip(zip(data["sources"].tolist(), data["hashes"].tolist()), data["landmarks"]))
        except (OSError, ValueError, KeyError):
            log.warning("%s is unreadable: detecting the faces again", cache)
    landmarks = []
    for frame, digest in zip(frames, hashes):
        found = known.get((frame.relpath, digest))
        if found is None or len(found) != landmarker.points:  # not detected yet, or by another mesh
            face = landmarker.detect(composite(read_image(frame.source), background))
            found = np.full((landmarker.points, 3), np.nan, np.float32) if face is None else face.landmarks
        landmarks.append(found)
    with atomic_path(cache) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            sources=np.array([frame.relpath for frame in frames]),
            hashes=np.array(list(hashes)),
            landmarks=np.stack(landmarks),
        )
    return [None if np.isnan(lm).any() else lm for lm in landmarks]


def _calibration_samples(
    frames: Sequence[Frame], track: FaceTrack, background: Sequence[float], count: int = 12
) -> list[tuple[np.ndarray, Face]]:
    """(frame, face) of up to `count` frames with a face, the most visible (multiview) or evenly
    spread (a video), for the swapper's one colour transfer."""
    found = [i for i, t in enumerate(track.frames) if t.face is not None]
    if track.mode == "multiview":
        found = sorted(found, key=lambda i: -cast(float, track.frames[i].visible))[:count]  # set in multiview
    else:
        found = (
            [found[i] for i in np.linspace(0, len(found) - 1, min(count, len(found))).round().astype(int)]
            if found
            else []
        )
    return [
        (composite(read_image(frames[i].source), background), face)
        for i in found
        if (face := track.frames[i].face) is not None
    ]


def run_swap(
    source_root: str | Path,
    target_photo: str | Path,
    output_dir: str | Path,
    swapper: FaceSwapper,
    embedder: FaceEmbedder | None = None,
    **options,
) -> dict:
    """Swap every frame of `source_root` (Blender or NeRFace format) into `output_dir`; returns the
    manifest. One job at a time per cache: another job swapping into it waits, then reuses its work.
    embedder: the identity backend of the manifest's distances (None: none); options: see `_run_swap`."""
    with exclusive(output_dir, "the swapped frames"):
        return _run_swap(source_root, target_photo, output_dir, swapper, embedder, **options)


def _run_swap(
    source_root: str | Path,
    target_photo: str | Path,
    output_dir: str | Path,
    swapper: FaceSwapper,
    embedder: FaceEmbedder | None = None,
    on_no_face: str = "keep",
    background: Sequence[float] = (1.0, 1.0, 1.0),
    progress: bool = True,
    target_face: int = 0,
    track: Mapping | None = None,
    landmarker: FaceLandmarker | None = None,
    workers: int | None = 1,
) -> dict:
    """target_face: which face of the target photo (0 = largest); track: `track_faces` options
    (mode, min_visible, max_turn, min_cutoff, beta); on_no_face: one of ON_NO_FACE; workers: processes that swap
    frames at once (None: one per core), with the same output as one."""
    if on_no_face not in ON_NO_FACE:
        raise DeepfakeError(f"swap.on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}.")
    source_root, out_dir, target_photo = Path(source_root), Path(output_dir), Path(target_photo)
    track_options = {"mode": "auto", **(track or {})}
    indexes = [read_split_index(source_root, split) for split in SPLITS]
    frames = _frames(indexes)
    sizes = _check_sizes(frames)
    video = any("expression" in f.entry for f in frames)
    # A video's frames (and the target) get the 478-point mesh, whose lids and lips are refined: the
    # swap keeps the frame's eyes and mouth inside them. A multi-view dataset keeps the 468-point one:
    # the refined model also "finds" faces in views turned far away, which spoils the triangulation.
    landmarker = landmarker or FaceLandmarker(refine=video)
    if swapper.uses_landmarks:
        target = load_target(target_photo, target_face, landmarker)
        target_rgb, target_landmarks = target.crop()
        target_record = target.record()
    else:  # frames swapped elsewhere (or not at all): the photo only serves the identity measure
        target_rgb, target_landmarks = read_photo(target_photo), None
        target_record = {"path": str(target_photo), "sha256": sha256_file(target_photo)}
    try:
        swapper.prepare(target_rgb, sizes, target_landmarks)
    except DeepfakeError as err:  # name the photo: backends see only its pixels
        raise DeepfakeError(f"{target_photo}: {err}") from err
    identity = Identity(embedder, target_rgb)

    hashes = [sha256_file(f.source) for f in frames]
    cameras = _cameras(indexes, sizes[frames[0].relpath])
    detections: list[np.ndarray | None] = (
        _detect_frames(frames, hashes, background, landmarker, out_dir / LANDMARKS_CACHE)
        if swapper.changes_frames
        else [None] * len(frames)
    )
    runs = np.split(np.arange(len(frames)), np.cumsum([len(i.frames) for i in indexes])[:-1])
    faces = track_faces(detections, cameras, runs, video=video, **track_options)
    if swapper.uses_landmarks:
        swapper.calibrate(_calibration_samples(frames, faces, background))

    config = {
        "swapper": swapper.config(),
        "target_sha256": target_record["sha256"],
        "target_face": target_face,
        "identity_backend": embedder.name if embedder else None,
        "on_no_face": on_no_face,
        "background": list(background),
        "track": track_options,
        "track_sha256": faces.fingerprint() if swapper.uses_landmarks else None,
        "version": version("implicit-deepfake"),
    }
    manifest_path = out_dir / "manifest.json"
    old = read_json(manifest_path) if manifest_path.is_file() else {}
    fingerprint = sha256_json(config)
    done = {r["source"]: r for r in old.get("frames", [])} if old.get("fingerprint") == fingerprint else {}
    if old and not done:
        log.info("swap cache %s is stale (config changed): swapping again", out_dir)

    manifest: dict[str, Any] = {
        "synthetic": True,
        "metadata": synthetic_metadata(),
        "source_root": str(source_root),
        "target_photo": str(target_photo),
        "target": target_record,
        "faces": faces.record(),
        "config": config,
        "fingerprint": fingerprint,
        "complete": False,
        "frames": [],
    }
    records = manifest["frames"]
    skipped = 0
    stride = -(-len(frames) // MEASURED_FRAMES)  # which frames get identity and quality figures
    todo = [i for i, frame in enumerate(frames) if not _is_done(done.get(frame.relpath), hashes[i], out_dir)]
    measurer = landmarker if landmarker.points == 478 else FaceLandmarker(refine=True)  # irises: gaze
    context = SwapContext(swapper, identity, on_no_face, tuple(background), landmarker, out_dir, measurer)
    swapped = swap_all(
        context, [(frames[i], hashes[i], faces.frames[i], detections[i], i % stride == 0) for i in todo], workers
    )
    pending = set(todo)
    try:
        for i, frame in enumerate(tqdm(frames, desc=f"swap [{swapper.name}]", unit="frame", disable=not progress)):
            if i not in pending:
                records.append(done[frame.relpath])
                skipped += 1
                continue
            records.append(next(swapped))
            if (len(records) - skipped) % MANIFEST_EVERY == 0:  # a killed run redoes at most these frames
                write_json(manifest_path, manifest)
    except BaseException:  # stopped (Ctrl-C, an error): keep what is done for the resume
        write_json(manifest_path, manifest)
        raise

    _write_indexes(indexes, frames, records, out_dir)
    _copy_side_files(source_root, target_photo, out_dir)
    manifest["summary"] = summary(records)
    if faces.mesh is not None and manifest["summary"]["swapped"]:
        manifest["summary"]["multiview_colour_difference"] = _consistency(
            frames, faces, cameras, records, background, out_dir
        )
    if video and manifest["summary"]["swapped"]:
        manifest["summary"]["flicker"] = _flicker(frames, runs, records, detections, background, out_dir)
    manifest["complete"] = True
    write_json(manifest_path, manifest)
    log.info("swap: %d frames (%d already done) -> %s; %s", len(frames), skipped, out_dir, manifest["summary"])
    return manifest


def _write_indexes(
    indexes: Sequence[SplitIndex], frames: Sequence[Frame], records: Sequence[dict], out_dir: Path
) -> None:
    """The swapped dataset's transforms jsons: the base entries of the frames that were written."""
    for index in indexes:
        kept = {r["source"]: r for r in records if r["split"] == index.split and r["output"]}
        entries = [
            {**f.entry, "file_path": "./" + Path(kept[f.relpath]["output"]).with_suffix("").as_posix()}
            for f in frames
            if f.split == index.split and f.relpath in kept
        ]
        if not entries:
            raise DeepfakeError(f"Split '{index.split}': every frame was dropped (no face found). Nothing to train on.")
        write_split_index(out_dir, index.split, index.camera.camera_angle_x, entries, index.camera.intrinsics)


def _copy_side_files(source_root: Path, target_photo: Path, out_dir: Path) -> None:
    """The target photo, a NeRFace dataset's static background (the empty scene, not swapped) and a
    COLMAP scene's sparse points (the Gaussians' first cloud)."""
    copies = [(target_photo, out_dir / f"famous{target_photo.suffix.lower()}")]
    if (source_root / SPARSE_POINTS).is_file():
        copies.append((source_root / SPARSE_POINTS, out_dir / SPARSE_POINTS))
    background = find_background(source_root)
    if background is not None:
        copies.append((background, out_dir / background.relative_to(source_root)))
    for source, destination in copies:
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)


def _consistency(
    frames: Sequence[Frame],
    faces: FaceTrack,
    cameras: Cameras,
    records: Sequence[dict],
    background: Sequence[float],
    out_dir: Path,
) -> dict:
    views = [i for i, r in enumerate(records) if r["status"] == "swapped"]
    assert faces.mesh is not None  # run_swap measures multiview consistency only with a mesh

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            composite(read_image(frames[i].source), background),
            composite(read_image(out_dir / records[i]["output"]), background),
        )

    return multiview_consistency(faces.mesh, faces.triangles, cameras, views, load)


def _flicker(
    frames: Sequence[Frame],
    runs: Sequence[np.ndarray],
    records: Sequence[dict],
    detections: Sequence[np.ndarray | None],
    background: Sequence[float],
    out_dir: Path,
    max_pairs: int = FLICKER_PAIRS,
) -> float | None:
    """`metrics.expression.flicker` over up to `max_pairs` consecutive pairs of swapped frames with a
    face, evenly spread over the clip's runs."""
    pairs = [
        (i, j)
        for run in runs
        for i, j in pairwise(run)
        if records[i]["status"] == records[j]["status"] == "swapped"
        and detections[i] is not None
        and detections[j] is not None
    ]
    pairs = [
        pairs[k] for k in np.unique(np.linspace(0, len(pairs) - 1, min(max_pairs, len(pairs))).round().astype(int))
    ]

    def images(i: int) -> tuple[np.ndarray, np.ndarray]:
        return (
            composite(read_image(frames[i].source), background),
            composite(read_image(out_dir / records[i]["output"]), background),
        )

    def pair(i: int, j: int) -> FramePair:
        (base_i, swapped_i), (base_j, swapped_j) = images(i), images(j)
        landmarks = (np.asarray(detections[i]), np.asarray(detections[j]))
        return FramePair((base_i, base_j), (swapped_i, swapped_j), landmarks)

    return flicker(pair(i, j) for i, j in pairs)
