"""The dataset-level swap runner, with a colour-inverting stand-in swapper (real backends have their own tests)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import composite, image_text, read_image, sha256_file, write_png
from implicit_deepfake.metrics.identity import FaceEmbedder
from implicit_deepfake.swap.base import FaceSwapper
from implicit_deepfake.swap.external import ExternalSwapper
from implicit_deepfake.swap.none import NoSwap
from implicit_deepfake.swap.runner import run_swap


class InvertSwapper(FaceSwapper):
    """Inverts colours; "no face" in the frames named in `faceless`; raises after `fail_after` swaps."""

    name = "invert"
    uses_landmarks = False  # a stand-in: it finds its own "faces"

    def __init__(self, faceless: tuple[str, ...] = (), fail_after: int | None = None) -> None:
        self.faceless, self.fail_after, self.calls = faceless, fail_after, 0

    def prepare(self, target, frames, face=None):
        self.sizes = dict(frames)

    def swap(self, frame, relpath, face=None):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls += 1
        return None if relpath in self.faceless else 255 - frame


class MeanColourEmbedder(FaceEmbedder):
    name = "mean-colour"
    same_person_threshold = 0.1

    def embed(self, rgb):
        return rgb.reshape(-1, 3).mean(0) / 255.0

    def distance(self, a, b):
        return float(np.linalg.norm(a - b))


def swap(root: Path, out: Path, swapper: FaceSwapper, **kwargs) -> dict:
    return run_swap(root, root / "famous.jpg", out, swapper, MeanColourEmbedder(), progress=False, **kwargs)


def test_swaps_every_frame_restores_alpha_and_writes_manifest(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    manifest = swap(tiny_dataset, out, InvertSwapper())
    embedder = MeanColourEmbedder()
    target = embedder.embed(composite(read_image(tiny_dataset / "famous.jpg")))
    assert manifest["complete"] and manifest["synthetic"] and manifest["summary"]["swapped"] == 6
    for record in manifest["frames"]:
        base = read_image(tiny_dataset / record["source"])
        result = read_image(out / record["output"])
        assert np.array_equal(result[..., 3], base[..., 3])  # alpha from the base frame
        assert np.array_equal(result[..., :3], 255 - composite(base))
        assert record["status"] == "swapped" and record["backend"] == "invert"
        assert record["input_sha256"] == sha256_file(tiny_dataset / record["source"])
        assert record["output_sha256"] == sha256_file(out / record["output"])
        before = embedder.distance(embedder.embed(composite(base)), target)
        assert record["identity_distance_before"] == pytest.approx(before, abs=1e-4)
        assert image_text(out / record["output"])["AIGenerated"] == "true"
    for split in ("train", "val", "test"):
        old = json.loads((tiny_dataset / f"transforms_{split}.json").read_text())
        new = json.loads((out / f"transforms_{split}.json").read_text())
        assert new["camera_angle_x"] == old["camera_angle_x"]
        assert [f["transform_matrix"] for f in new["frames"]] == [f["transform_matrix"] for f in old["frames"]]
    assert (out / "famous.jpg").read_bytes() == (tiny_dataset / "famous.jpg").read_bytes()
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_killed_run_resumes_and_stale_cache_is_redone(tiny_dataset: Path, tmp_path: Path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        swap(tiny_dataset, out, InvertSwapper(fail_after=4))
    partial = json.loads((out / "manifest.json").read_text())
    assert len(partial["frames"]) == 4 and not partial["complete"]
    assert not list(out.rglob("*.tmp*"))  # nothing half-written

    resumed = InvertSwapper()
    manifest = swap(tiny_dataset, out, resumed)
    assert resumed.calls == 2 and manifest["complete"] and len(manifest["frames"]) == 6

    again = InvertSwapper()
    swap(tiny_dataset, out, again)
    assert again.calls == 0

    # A changed base frame is redone alone; a changed target photo invalidates everything.
    write_png(tiny_dataset / "val" / "r_0.png", np.full((16, 16, 4), 200, np.uint8), synthetic=False)
    changed = InvertSwapper()
    swap(tiny_dataset, out, changed)
    assert changed.calls == 1
    (tiny_dataset / "famous.jpg").write_bytes((tiny_dataset / "train" / "r_0.png").read_bytes())
    stale = InvertSwapper()
    swap(tiny_dataset, out, stale)
    assert stale.calls == 6


def test_no_face_policies(tiny_dataset: Path, tmp_path: Path):
    faceless = ("train/r_1.png",)
    kept = swap(tiny_dataset, tmp_path / "keep", InvertSwapper(faceless), on_no_face="keep")
    record = next(r for r in kept["frames"] if r["source"] == faceless[0])
    assert record["status"] == "no_face" and record["identity_distance_after"] == record["identity_distance_before"]
    base = read_image(tiny_dataset / faceless[0])
    assert np.array_equal(read_image(tmp_path / "keep" / record["output"]), np.dstack([composite(base), base[..., 3]]))

    dropped = swap(tiny_dataset, tmp_path / "drop", InvertSwapper(faceless), on_no_face="drop")
    assert dropped["summary"]["dropped"] == 1 and not (tmp_path / "drop" / "train" / "r_1.png").exists()
    train = json.loads((tmp_path / "drop" / "transforms_train.json").read_text())
    assert [f["file_path"] for f in train["frames"]] == ["./train/r_0"]

    with pytest.raises(DeepfakeError, match=r"train/r_1.png: no face found.*on_no_face"):
        swap(tiny_dataset, tmp_path / "error", InvertSwapper(faceless), on_no_face="error")
    with pytest.raises(DeepfakeError, match="on_no_face"):
        swap(tiny_dataset, tmp_path / "bad", InvertSwapper(), on_no_face="skip")


def test_none_backend_keeps_frames(tiny_dataset: Path, tmp_path: Path):
    manifest = swap(tiny_dataset, tmp_path / "none", NoSwap())
    assert manifest["summary"]["kept"] == 6 and manifest["summary"]["swapped"] == 0
    for record in manifest["frames"]:
        assert record["identity_distance_after"] == record["identity_distance_before"]
        base = read_image(tiny_dataset / record["source"])
        assert np.array_equal(
            read_image(tmp_path / "none" / record["output"]), np.dstack([composite(base), base[..., 3]])
        )


def _external_frames(root: Path, folder: Path, size: int = 16) -> None:
    """What a 2D deepfake tool writes: RGB JPGs named like the base frames, alpha lost."""
    for split in ("train", "val", "test"):
        for i in range(2):
            write_png(folder / split / f"r_{i}.png", np.full((size, size, 3), 40 * i + 10, np.uint8))


def test_external_backend_restores_alpha(tiny_dataset: Path, tmp_path: Path):
    frames = tmp_path / "ghost"
    _external_frames(tiny_dataset, frames)
    manifest = swap(tiny_dataset, tmp_path / "ext", ExternalSwapper(str(frames)))
    assert manifest["summary"]["swapped"] == 6
    result = read_image(tmp_path / "ext" / "test" / "r_1.png")
    assert np.all(result[..., :3] == 50) and np.array_equal(
        result[..., 3], read_image(tiny_dataset / "test/r_1.png")[..., 3]
    )


def test_external_backend_validates_names_and_sizes_before_writing(tiny_dataset: Path, tmp_path: Path):
    frames = tmp_path / "ghost"
    _external_frames(tiny_dataset, frames)
    (frames / "val" / "r_1.png").unlink()
    with pytest.raises(DeepfakeError, match=r"1 of 6 frames.*val/r_1.png"):
        swap(tiny_dataset, tmp_path / "ext", ExternalSwapper(str(frames)))
    write_png(frames / "val" / "r_1.png", np.zeros((12, 16, 3), np.uint8))
    with pytest.raises(DeepfakeError, match=r"val/r_1.png: size 16x12 differs"):
        swap(tiny_dataset, tmp_path / "ext", ExternalSwapper(str(frames)))
    with pytest.raises(DeepfakeError, match="does not exist"):
        swap(tiny_dataset, tmp_path / "ext", ExternalSwapper(str(tmp_path / "missing")))
    assert not (tmp_path / "ext").exists()


def test_corrupt_base_frame_fails_before_any_output(tiny_dataset: Path, tmp_path: Path):
    (tiny_dataset / "test" / "r_0.png").write_bytes(b"not an image")
    with pytest.raises(DeepfakeError, match=r"test/r_0.png: cannot read this image"):
        swap(tiny_dataset, tmp_path / "out", InvertSwapper())
    assert not (tmp_path / "out").exists()
