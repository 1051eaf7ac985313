"""The insightface swap backend and the ArcFace identity backend, run through insightface's real
loading and swapping code on tiny ONNX stand-ins (tests/onnx_fakes.py) and real face photos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import skimage
from insightface.model_zoo import ArcFaceONNX, get_model
from insightface.model_zoo.inswapper import INSwapper
from insightface.utils.face_align import norm_crop

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_image, sha256_file
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.identity_arcface import ArcFaceEmbedder
from implicit_deepfake.swap.insightface_swapper import InsightFaceSwapper
from tests.onnx_fakes import FakeArcFace, FakeSwapper, write_fake_arcface, write_fake_inswapper

SWAPPER, ARCFACE = "inswapper_128.onnx", "w600k_r50.onnx"
GREY = np.full((256, 256, 3), 128, np.uint8)


def _write_models(folder, seed: int = 0) -> tuple[FakeSwapper, FakeArcFace]:
    folder.mkdir(parents=True, exist_ok=True)
    return write_fake_inswapper(folder / SWAPPER, seed=seed), write_fake_arcface(folder / ARCFACE, seed=seed + 1)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, FakeSwapper, FakeArcFace]:
    folder = tmp_path_factory.mktemp("insightface")
    return (folder, *_write_models(folder))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return read_image(os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"))


@pytest.fixture(scope="module")
def grace() -> np.ndarray:
    return read_image(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))


@pytest.fixture(scope="module")
def embedder(models) -> ArcFaceEmbedder:
    return ArcFaceEmbedder(str(models[0]))


@pytest.fixture(scope="module")
def swapper(models, astronaut) -> InsightFaceSwapper:
    swapper = InsightFaceSwapper(str(models[0]), providers=["CPUExecutionProvider"])
    swapper.prepare(astronaut, {"train/r_0.png": (600, 512)})
    return swapper


def test_fakes_are_routed_by_insightface_like_the_real_models(models):
    folder, fake, _ = models
    swapper = get_model(str(folder / SWAPPER), providers=["CPUExecutionProvider"])
    arcface = get_model(str(folder / ARCFACE), providers=["CPUExecutionProvider"])
    assert isinstance(swapper, INSwapper) and isinstance(arcface, ArcFaceONNX)
    np.testing.assert_array_equal(swapper.emap, fake.emap)  # read from the last initializer
    assert swapper.input_size == (128, 128) and arcface.input_size == (112, 112)
    assert (arcface.input_mean, arcface.input_std) == (127.5, 127.5)


def test_embedding_is_deterministic_unit_and_tells_people_apart(embedder, astronaut, grace):
    first, again, other = embedder.embed(astronaut), embedder.embed(astronaut), embedder.embed(grace)
    assert first.shape == (512,) and first.dtype == np.float32
    np.testing.assert_array_equal(first, again)
    assert np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert embedder.distance(first, again) == pytest.approx(0.0, abs=1e-6)
    # The fake "recogniser" is a random projection, yet two different faces still land far apart.
    assert embedder.distance(first, other) > 0.2
    assert embedder.distance(first, -first) == pytest.approx(2.0, abs=1e-6)
    assert embedder.embed(GREY) is None


def test_embedding_is_the_fake_models_formula_on_the_rgb_aligned_crop(embedder, models, astronaut):
    crop = norm_crop(astronaut, FaceLandmarker().detect(astronaut).kps5)  # (112, 112, 3) RGB
    np.testing.assert_allclose(embedder.embed(astronaut), models[2].normed_embedding(crop), atol=1e-5)


def test_swap_paints_the_fake_models_colour_inside_the_face_only(swapper, embedder, models, astronaut, grace):
    fake = models[1]
    out = swapper.swap(grace, "train/r_0.png")
    assert out.shape == grace.shape and out.dtype == np.uint8
    kps = FaceLandmarker().detect(grace).kps5
    # Between the eyes and the mouth corners the paste-back mask is 1, so the frame there is the
    # model output: mix * frame + (1 - mix) * colour(target identity), in RGB.
    x0, x1 = int(kps[0, 0]), int(kps[1, 0])
    y0, y1 = int(kps[:2, 1].mean()), int(kps[3:, 1].mean())
    inner, before = out[y0:y1, x0:x1].astype(np.float64), grace[y0:y1, x0:x1].astype(np.float64)
    painted = np.median(((inner - fake.mix * before) / (1 - fake.mix)).reshape(-1, 3), axis=0)
    expected = 255 * fake.colour(embedder.embed(astronaut))
    assert abs(expected[0] - expected[2]) > 50  # so swapped RGB/BGR channels would show
    np.testing.assert_allclose(painted, expected, atol=4)
    assert np.abs(inner - before).mean() > 20
    # Far from the face (beyond one face size around the keypoints) nothing changes at all.
    size = int(np.ptp(kps, axis=0).max())
    far = np.ones(grace.shape[:2], bool)
    (kx0, ky0), (kx1, ky1) = kps.min(0).astype(int), kps.max(0).astype(int)
    far[max(ky0 - 2 * size, 0) : ky1 + 2 * size, max(kx0 - 2 * size, 0) : kx1 + 2 * size] = False
    assert far.mean() > 0.3
    np.testing.assert_array_equal(out[far], grace[far])


def test_frame_without_face_is_not_swapped(swapper):
    assert swapper.swap(GREY, "train/r_1.png") is None


def test_target_without_face_is_a_user_error(models):
    swapper = InsightFaceSwapper(str(models[0]))
    with pytest.raises(DeepfakeError, match="target photo: no face found"):
        swapper.prepare(GREY, {})


def test_config_names_and_hashes_the_model_files(swapper, models, tmp_path):
    folder = models[0]
    assert swapper.config() == {
        "name": "insightface",
        "swapper_file": SWAPPER,
        "swapper_sha256": sha256_file(folder / SWAPPER),
        "arcface_file": ARCFACE,
        "arcface_sha256": sha256_file(folder / ARCFACE),
    }
    _write_models(tmp_path, seed=5)
    other = InsightFaceSwapper(str(tmp_path)).config()
    assert other["swapper_sha256"] != swapper.config()["swapper_sha256"]


def test_missing_folder_names_every_file_and_the_fix(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DeepfakeError) as err:
        InsightFaceSwapper(str(missing))
    message = str(err.value)
    assert f"swap.model_dir={missing}: folder does not exist" in message
    assert SWAPPER in message and ARCFACE in message and "not redistributable" in message


@pytest.mark.parametrize("absent", [SWAPPER, ARCFACE])
def test_missing_file_is_named(models, tmp_path, absent):
    for name in {SWAPPER, ARCFACE} - {absent}:
        shutil.copy(models[0] / name, tmp_path / name)
    with pytest.raises(DeepfakeError, match=f"swap.model_dir={tmp_path}: missing {absent}\\. Download"):
        InsightFaceSwapper(str(tmp_path))


@pytest.mark.parametrize("content", [b"", b"<html>404 Not Found</html>"])
def test_corrupt_file_is_named(models, tmp_path, content):
    shutil.copy(models[0] / ARCFACE, tmp_path / ARCFACE)
    (tmp_path / SWAPPER).write_bytes(content)
    with pytest.raises(DeepfakeError, match=f"{tmp_path / SWAPPER}: not a valid ONNX model"):
        InsightFaceSwapper(str(tmp_path))


def test_wrong_model_under_a_name_is_named(models, tmp_path):
    shutil.copy(models[0] / ARCFACE, tmp_path / ARCFACE)
    shutil.copy(models[0] / ARCFACE, tmp_path / SWAPPER)
    with pytest.raises(DeepfakeError, match=f"{tmp_path / SWAPPER}: insightface reads this file as ArcFaceONNX"):
        InsightFaceSwapper(str(tmp_path))


def test_embedder_missing_model_names_its_file(tmp_path):
    with pytest.raises(DeepfakeError, match=f"identity.model_dir={tmp_path}: missing {ARCFACE}") as err:
        ArcFaceEmbedder(str(tmp_path))
    assert SWAPPER not in str(err.value)
