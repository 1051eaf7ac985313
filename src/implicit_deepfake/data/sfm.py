"""Structure from motion on the CPU with pycolmap: a folder of frames -> a COLMAP scene.

SIFT features (pycolmap's own, no model to download), matched between pairs of frames: every pair
up to `exhaustive_max` frames; beyond, each frame with its `overlap` successors (a video's
neighbours) plus every pair of key frames (every `loop_every`-th), which closes the loop of an
orbit. COLMAP's own loop detection needs a vocabulary tree that it downloads, so it is not used.
Then COLMAP's incremental mapper, a few runs with different seeds; of the models they make, the one
with the most registered frames (then the smallest reprojection error) is kept as `sparse/0` (the
layout `data=colmap` reads) and the others are dropped.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import pycolmap
from tqdm import tqdm

from implicit_deepfake.core.errors import DeepfakeError

log = logging.getLogger(__name__)
DATABASE = "database.db"
PAIR_CHUNK = 500  # pairs matched per call: the progress bar's step
# A mapper run's result: frames registered, mean reprojection error (px), the model, its run's model sizes.
MapperRun = tuple[int, float, pycolmap.Reconstruction, list[int]]


@dataclass(frozen=True)
class SfmOptions:
    """camera_model: COLMAP's, one camera shared by every frame, its parameters estimated
    (SIMPLE_PINHOLE: the focal length alone; SIMPLE_RADIAL or OPENCV add distortion terms);
    max_features: SIFT features per frame; exhaustive_max, overlap, loop_every: the pairs matched
    (see the module's docstring); seed, tries: the mapper's first random seed and how many runs it
    gets (the best model of them is kept, see `_map`)."""

    camera_model: str = "SIMPLE_PINHOLE"
    max_features: int = 2048
    exhaustive_max: int = 150
    overlap: int = 10
    loop_every: int = 5
    seed: int = 0
    tries: int = 3


@dataclass
class SfmResult:
    """The kept model's folder, frames registered in it out of `images`, each stage's wall time (s),
    and the sizes of every model the mapper made."""

    model: Path
    registered: int
    images: int
    seconds: dict[str, float] = field(default_factory=dict)
    models: list[int] = field(default_factory=list)


def image_pairs(names: list[str], exhaustive_max: int, overlap: int, loop_every: int) -> list[tuple[str, str]]:
    """The pairs of frames (in filming order) to match."""
    if len(names) <= exhaustive_max:
        return list(combinations(names, 2))
    pairs = {(i, j) for i in range(len(names)) for j in range(i + 1, min(len(names), i + 1 + overlap))}
    keys = range(0, len(names), loop_every)
    pairs |= set(combinations(keys, 2))
    return [(names[i], names[j]) for i, j in sorted(pairs)]


def run_sfm(scene: Path, options: SfmOptions, progress: bool = True) -> SfmResult:
    """Reconstruct the frames in `scene/images` (names in filming order) into `scene/sparse/0`.
    The feature database is deleted at the end (it is only needed to extend the model)."""
    images = scene / "images"
    names = sorted(p.name for p in images.iterdir() if p.is_file())
    database, sparse = scene / DATABASE, scene / "sparse"
    database.unlink(missing_ok=True)
    shutil.rmtree(sparse, ignore_errors=True)
    result = SfmResult(sparse / "0", 0, len(names))
    pycolmap.logging.minloglevel = 2  # COLMAP logs every step at INFO; our bars show the progress
    start = time.perf_counter()
    reader = pycolmap.ImageReaderOptions()
    reader.camera_model = options.camera_model
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.sift.max_num_features = options.max_features
    for chunk in tqdm(
        [names[i : i + 10] for i in range(0, len(names), 10)],
        desc="SfM features",
        unit="10 frames",
        disable=not progress,
    ):
        pycolmap.extract_features(
            database,
            images,
            image_names=chunk,
            camera_mode=pycolmap.CameraMode.SINGLE,
            reader_options=reader,
            extraction_options=extraction,
            device=pycolmap.Device.cpu,
        )
        reader.existing_camera_id = 1  # the camera the first chunk made: one camera for every frame
    result.seconds["features"] = time.perf_counter() - start
    _match(scene, image_pairs(names, options.exhaustive_max, options.overlap, options.loop_every), progress)
    result.seconds["matching"] = time.perf_counter() - start - result.seconds["features"]
    best = _map(scene, len(names), options, progress)
    result.seconds["mapping"] = time.perf_counter() - start - sum(result.seconds.values())
    database.unlink(missing_ok=True)
    if best is None:
        return result
    result.models, result.registered = best[1], best[0].num_reg_images()
    (sparse / "0").mkdir(parents=True)
    best[0].write(sparse / "0")
    log.info(
        "SfM: %d of %d frames registered (models: %s), %s", result.registered, len(names), result.models, result.seconds
    )
    return result


def _map(
    scene: Path, count: int, options: SfmOptions, progress: bool
) -> tuple[pycolmap.Reconstruction, list[int]] | None:
    """The best model of up to `options.tries` runs of the incremental mapper (seeds seed, seed + 1,
    ...): the most frames registered, then the smallest mean reprojection error; with the sizes of
    the models of its run. On a small orbit (32 frames of 192 px) about one run in four converged to
    a folded model (every frame placed, the cameras tens of degrees off) with 1.5-2x the reprojection
    error of a right one; the runs stop once two agree (the same frames placed, errors within 10%)."""
    found: list[MapperRun] = []
    bar = tqdm(total=count * options.tries, desc="SfM mapping", unit="frame", disable=not progress)
    try:
        for run in range(options.tries):
            mapping = pycolmap.IncrementalPipelineOptions()
            mapping.random_seed = options.seed + run
            output = scene / f"mapping.{run}"
            output.mkdir()
            models = pycolmap.incremental_mapping(
                scene / DATABASE, scene / "images", output, options=mapping, next_image_callback=lambda: bar.update()
            )
            shutil.rmtree(output)
            if models:
                sizes = sorted((m.num_reg_images() for m in models.values()), reverse=True)
                model = max(models.values(), key=lambda m: m.num_reg_images())
                found.append((model.num_reg_images(), model.compute_mean_reprojection_error(), model, sizes))
            bar.update(count * (run + 1) - bar.n)
            if any(_agree(a, b) for i, a in enumerate(found) for b in found[:i]):
                break
    finally:
        bar.close()
    if not found:
        return None
    _, error, model, sizes = min(found, key=lambda f: (-f[0], f[1]))
    log.info("SfM mapping: %d runs, kept one with %d frames, %.3f px mean reprojection error", run + 1, sizes[0], error)
    return model, sizes


def _agree(a: MapperRun, b: MapperRun) -> bool:
    return a[0] == b[0] and abs(a[1] - b[1]) <= 0.1 * min(a[1], b[1])


def _match(scene: Path, pairs: list[tuple[str, str]], progress: bool) -> None:
    """Match and geometrically verify `pairs`, PAIR_CHUNK at a time (one progress step each)."""
    if not pairs:
        raise DeepfakeError(f"{scene / 'images'}: fewer than two frames, nothing to match.")
    listing, pairing = scene / "pairs.txt", pycolmap.ImportedPairingOptions()
    pairing.match_list_path = str(listing)
    for start in tqdm(
        range(0, len(pairs), PAIR_CHUNK), desc="SfM matching", unit=f"{PAIR_CHUNK} pairs", disable=not progress
    ):
        # The scene is a staging folder of the dataset build: a plain write is enough here.
        listing.write_text("".join(f"{a} {b}\n" for a, b in pairs[start : start + PAIR_CHUNK]))
        pycolmap.match_image_pairs(scene / DATABASE, pairing_options=pairing, device=pycolmap.Device.cpu)
    listing.unlink()
