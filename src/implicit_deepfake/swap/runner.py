"""The dataset-level swap: every frame of every split, resumable, with a manifest.

Output: `<output_dir>/` with the base layout (`<split>/r_<i>.png`, `transforms_<split>.json` with
every field kept), `famous.jpg`, a NeRFace dataset's static background, and `manifest.json`. Each
frame is written atomically and recorded in the manifest right after, so a killed run resumes
where it stopped; a changed swapper, target, identity backend or base frame invalidates exactly
what it affects.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from implicit_deepfake import __version__
from implicit_deepfake.data.blender import SPLITS, SplitIndex, read_split_index, write_split_index
from implicit_deepfake.data.nerface import find_background
from implicit_deepfake.errors import DeepfakeError
from implicit_deepfake.io import (
    atomic_path,
    composite,
    read_image,
    read_json,
    sha256_file,
    sha256_json,
    synthetic_metadata,
    write_json,
    write_png,
)
from implicit_deepfake.metrics.identity import FaceEmbedder, identity_distance
from implicit_deepfake.swap.base import FaceSwapper

log = logging.getLogger(__name__)
ON_NO_FACE = ("keep", "drop", "error")


@dataclass(frozen=True)
class _Frame:
    split: str
    entry: dict  # the frame's transforms json entry
    source: Path
    relpath: str  # of the source, relative to the dataset root

    @property
    def output_relpath(self) -> str:
        return Path(self.relpath).with_suffix(".png").as_posix()


def _frames(indexes: Sequence[SplitIndex]) -> list[_Frame]:
    return [
        _Frame(idx.split, entry, path, rel)
        for idx in indexes
        for entry, path, rel in zip(idx.frames, idx.image_paths, idx.relpaths)
    ]


def _check_sizes(frames: Sequence[_Frame]) -> dict[str, tuple[int, int]]:
    """Read every base frame once up front, so a corrupt or odd-sized one fails before any write."""
    sizes = {f.relpath: read_image(f.source).shape[:2] for f in frames}
    first = frames[0]
    for frame in frames:
        if sizes[frame.relpath] != sizes[first.relpath]:
            raise DeepfakeError(
                f"{frame.source}: size {sizes[frame.relpath][::-1]} differs from {first.source} "
                f"{sizes[first.relpath][::-1]}; all frames of a dataset must have the same size."
            )
    return sizes


class _Identity:
    """Identity distance of frames to the target photo (None without an embedder or a face)."""

    def __init__(self, embedder: FaceEmbedder | None, target: np.ndarray) -> None:
        self.embedder = embedder
        self.target = embedder.embed(target) if embedder else None
        if embedder and self.target is None:
            log.warning("identity backend %s found no face in the target photo: distances are null", embedder.name)

    def distance(self, rgb: np.ndarray | None) -> float | None:
        if self.target is None or rgb is None:
            return None
        distance = identity_distance(self.embedder, rgb, self.target)
        return None if distance is None else round(float(distance), 4)


def _is_done(record: dict | None, input_hash: str, out_dir: Path) -> bool:
    if record is None or record["input_sha256"] != input_hash:
        return False
    if record["output"] is None:  # dropped frame
        return True
    out = out_dir / record["output"]
    return out.is_file() and sha256_file(out) == record["output_sha256"]


def _summary(records: list[dict]) -> dict:
    def mean(key: str, status: str) -> float | None:
        values = [r[key] for r in records if r["status"] == status and r[key] is not None]
        return round(float(np.mean(values)), 4) if values else None

    counts = {s: sum(r["status"] == s for r in records) for s in ("swapped", "no_face", "kept")}
    changed = "swapped" if counts["swapped"] else "kept"
    return {
        "frames": len(records),
        **counts,
        "dropped": sum(r["output"] is None for r in records),
        "mean_identity_distance_before": mean("identity_distance_before", changed),
        "mean_identity_distance_after": mean("identity_distance_after", changed),
    }


def run_swap(
    source_root: str | Path,
    target_photo: str | Path,
    output_dir: str | Path,
    swapper: FaceSwapper,
    embedder: FaceEmbedder | None = None,
    on_no_face: str = "keep",
    background: Sequence[float] = (1.0, 1.0, 1.0),
    progress: bool = True,
) -> dict:
    """Swap every frame of `source_root` (Blender format) into `output_dir`; returns the manifest."""
    if on_no_face not in ON_NO_FACE:
        raise DeepfakeError(f"swap.on_no_face must be one of {ON_NO_FACE}, got {on_no_face!r}.")
    source_root, out_dir, target_photo = Path(source_root), Path(output_dir), Path(target_photo)
    indexes = [read_split_index(source_root, split) for split in SPLITS]
    frames = _frames(indexes)
    sizes = _check_sizes(frames)
    target = composite(read_image(target_photo))
    try:
        swapper.prepare(target, sizes)
    except DeepfakeError as err:  # name the photo: backends see only its pixels
        raise DeepfakeError(f"{target_photo}: {err}") from err
    identity = _Identity(embedder, target)

    config = {
        "swapper": swapper.config(),
        "target_sha256": sha256_file(target_photo),
        "identity_backend": embedder.name if embedder else None,
        "on_no_face": on_no_face,
        "background": list(background),
        "version": __version__,
    }
    manifest_path = out_dir / "manifest.json"
    old = read_json(manifest_path) if manifest_path.is_file() else {}
    fingerprint = sha256_json(config)
    done = {r["source"]: r for r in old.get("frames", [])} if old.get("fingerprint") == fingerprint else {}
    if old and not done:
        log.info("swap cache %s is stale (config changed): swapping again", out_dir)

    manifest = {
        "synthetic": True,
        "metadata": synthetic_metadata(),
        "source_root": str(source_root),
        "target_photo": str(target_photo),
        "config": config,
        "fingerprint": fingerprint,
        "complete": False,
        "frames": [],
    }
    records = manifest["frames"]
    skipped = 0
    for frame in tqdm(frames, desc=f"swap [{swapper.name}]", unit="frame", disable=not progress):
        input_hash = sha256_file(frame.source)
        if _is_done(done.get(frame.relpath), input_hash, out_dir):
            records.append(done[frame.relpath])
            skipped += 1
            continue
        base = read_image(frame.source)
        rgb = composite(base, background)
        swapped = swapper.swap(rgb, frame.relpath)
        status = "swapped" if swapper.changes_frames else "kept"
        if swapped is None:
            status = "no_face"
            if on_no_face == "error":
                raise DeepfakeError(
                    f"{frame.source}: no face found by the '{swapper.name}' swapper. "
                    "Set swap.on_no_face=keep (use the base frame) or drop (leave it out)."
                )
            swapped = rgb if on_no_face == "keep" else None
        record = {
            "split": frame.split,
            "source": frame.relpath,
            "output": None,
            "status": status,
            "backend": swapper.name,
            "input_sha256": input_hash,
            "output_sha256": None,
            "identity_distance_before": identity.distance(rgb),
            "identity_distance_after": identity.distance(swapped),
        }
        if swapped is not None:
            out = out_dir / frame.output_relpath
            alpha = [base[..., 3:]] if base.shape[-1] == 4 else []
            write_png(out, np.concatenate([swapped, *alpha], axis=-1), SwapBackend=swapper.name, Source=frame.relpath)
            record.update(output=frame.output_relpath, output_sha256=sha256_file(out))
        records.append(record)
        write_json(manifest_path, manifest)

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
    background = find_background(source_root)
    copies = [(target_photo, out_dir / f"famous{target_photo.suffix.lower()}")]
    if background is not None:  # NeRFace format: the empty scene behind the head, not swapped
        copies.append((background, out_dir / background.relative_to(source_root)))
    for source, destination in copies:
        with atomic_path(destination) as tmp:
            shutil.copyfile(source, tmp)
    manifest.update(complete=True, summary=_summary(records))
    write_json(manifest_path, manifest)
    log.info("swap: %d frames (%d already done) -> %s; %s", len(frames), skipped, out_dir, manifest["summary"])
    return manifest
