"""dlib identity descriptor on the two offline photos (matplotlib's and scikit-image's)."""

from __future__ import annotations

import os

import cv2
import insightface
import matplotlib
import numpy as np
import pytest
import skimage
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.metrics.identity import identity_distance
from implicit_deepfake.metrics.identity_dlib import DlibEmbedder, dlib_model_path, hog_box


def load_photo(name: str) -> np.ndarray:
    """Real photos shipped in wheels, as HxWx3 uint8 RGB: 'grace_hopper' (600x512), 'astronaut'
    (512x512), 'tom_hanks' (112x112, grey) and 't1' (1280x886, six people around a table)."""
    insightface_images = os.path.join(os.path.dirname(insightface.__file__), "data", "images")
    path = {
        "grace_hopper": os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"),
        "astronaut": os.path.join(os.path.dirname(skimage.__file__), "data", "astronaut.png"),
        "tom_hanks": os.path.join(insightface_images, "Tom_Hanks_54745.png"),
        "t1": os.path.join(insightface_images, "t1.jpg"),
    }[name]
    return np.asarray(Image.open(path).convert("RGB"))


def jpeg(rgb: np.ndarray, quality: int = 75) -> np.ndarray:
    _ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return np.ascontiguousarray(cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="module")
def embedder() -> DlibEmbedder:
    return DlibEmbedder()


@pytest.fixture(scope="module")
def embeddings(embedder: DlibEmbedder) -> dict[str, np.ndarray]:
    return {name: embedder.embed(load_photo(name)) for name in ("grace_hopper", "astronaut")}


def test_descriptor_is_128d_unit_scale(embeddings: dict[str, np.ndarray]) -> None:
    for embedding in embeddings.values():
        assert embedding.shape == (128,) and embedding.dtype == np.float32
        assert 0.5 < np.linalg.norm(embedding) < 1.5  # dlib's descriptors have norm ~1


def test_two_people_are_apart(embedder: DlibEmbedder, embeddings: dict[str, np.ndarray]) -> None:
    distance = embedder.distance(embeddings["grace_hopper"], embeddings["astronaut"])
    assert embedder.same_person_threshold == 0.6
    assert 0.62 < distance < 0.8  # measured 0.693 (mediapipe's box: 0.706)


@pytest.mark.parametrize("name", ["grace_hopper", "astronaut"])
def test_rescaled_jpeg_copy_is_the_same_person(
    embedder: DlibEmbedder, embeddings: dict[str, np.ndarray], name: str
) -> None:
    photo = load_photo(name)
    copy = jpeg(cv2.resize(photo, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA))
    assert identity_distance(embedder, copy, embeddings[name]) < 0.3  # measured 0.08-0.10


def test_small_frame_keeps_identity(embedder: DlibEmbedder, embeddings: dict[str, np.ndarray]) -> None:
    """128 px wide, as the avatar frames: the face is ~45 px across."""
    small = cv2.resize(load_photo("grace_hopper"), (128, 150), interpolation=cv2.INTER_AREA)
    own = identity_distance(embedder, small, embeddings["grace_hopper"])
    other = identity_distance(embedder, small, embeddings["astronaut"])
    assert own < 0.3 < 0.6 < other  # measured 0.16 and 0.69


def test_no_face_gives_none(embedder: DlibEmbedder, embeddings: dict[str, np.ndarray]) -> None:
    ramp = np.linspace(0, 255, 128 * 128 * 3).reshape(128, 128, 3).astype(np.uint8)
    assert embedder.embed(ramp) is None
    assert identity_distance(embedder, ramp, embeddings["astronaut"]) is None


def test_missing_model_file_says_how_to_install() -> None:
    with pytest.raises(DeepfakeError, match="pip install face_recognition_models"):
        dlib_model_path("no_such_model.dat")
    with pytest.raises(DeepfakeError, match="shape_predictor"):
        DlibEmbedder(shape_predictor="81")
    with pytest.raises(DeepfakeError, match="identity.box must be one of"):
        DlibEmbedder(box="haar")


def test_hog_box_is_dlib_s_own_detection_of_that_face() -> None:
    """The box searched around mediapipe's face is the one dlib's detector finds in the whole image."""
    import dlib

    photo = load_photo("grace_hopper")
    near = FaceLandmarker().detect(photo).bbox
    (whole,) = dlib.get_frontal_face_detector()(photo, 1)
    box = hog_box(photo, near)
    assert box is not None
    np.testing.assert_allclose(box, [whole.left(), whole.top(), whole.right(), whole.bottom()], atol=3)
    ramp = np.linspace(0, 255, 128 * 128 * 3).reshape(128, 128, 3).astype(np.uint8)
    assert hog_box(ramp, np.array([30.0, 30.0, 90.0, 90.0])) is None


def test_a_face_hog_misses_takes_mediapipe_s_box(embedder: DlibEmbedder, embeddings: dict[str, np.ndarray]) -> None:
    """Tilted 45 degrees, HOG (upright faces) finds no face: the descriptor is box="mediapipe"'s."""
    photo = load_photo("grace_hopper")
    tilt = cv2.getRotationMatrix2D((256.0, 300.0), 45.0, 1.0)
    tilted = cv2.warpAffine(photo, tilt, (512, 600), borderValue=(255, 255, 255))
    face = FaceLandmarker().detect(tilted)
    assert face is not None and hog_box(tilted, face.bbox) is None
    mediapipe = DlibEmbedder(box="mediapipe")
    np.testing.assert_allclose(embedder.embed(tilted), mediapipe.embed(tilted), atol=1e-6)
    assert mediapipe.name != embedder.name  # the box is part of the measure (a swap cache's key)
    # upright, the two boxes differ and agree on the person
    assert 0.03 < mediapipe.distance(mediapipe.embed(photo), embeddings["grace_hopper"]) < 0.2  # measured 0.06


def test_face_metrics_portrait_columns(embedder: DlibEmbedder, embeddings: dict[str, np.ndarray]) -> None:
    """With a portrait of the base person, each image's distance to it is reported beside the distance
    to the base frame of the same view, per yaw bucket, and so is the base frames' own distance to it."""
    from implicit_deepfake.faces.landmarks import FaceLandmarker
    from implicit_deepfake.metrics.face_report import face_metrics

    astronaut, grace = load_photo("astronaut"), load_photo("grace_hopper")
    grace_small = cv2.resize(grace, (256, 300), interpolation=cv2.INTER_AREA)  # the base person, another copy
    report = face_metrics(
        [astronaut, grace_small],  # a swapped view (the target's face), an unswapped one
        jpeg(astronaut),  # the target photo
        embedder,
        FaceLandmarker(),
        references=[grace, grace],  # the base frames of the two views
        yaws_deg=[10.0, 45.0],
        portrait=grace_small,
    )
    apart = embedder.distance(embeddings["astronaut"], embeddings["grace_hopper"])
    by_yaw, base_frames = report["identity_by_yaw"], report["identity_by_yaw_of_base_frames"]
    assert by_yaw["0-30"]["identity_distance_to_target"] < 0.3
    assert by_yaw["0-30"]["identity_distance_to_base_portrait"] == pytest.approx(apart, abs=0.05)
    assert by_yaw["30-60"]["identity_distance_to_base_portrait"] < 1e-6  # the portrait itself
    assert by_yaw["30-60"]["identity_distance_to_target"] == pytest.approx(apart, abs=0.05)
    assert base_frames["0-30"]["identity_distance_to_base_portrait"] < 0.3  # the same person, resized
    assert report["identity_distance_to_base_portrait"] == pytest.approx(by_yaw["0-30"][
        "identity_distance_to_base_portrait"] / 2, abs=1e-3)  # fmt: skip
    # Without a portrait: no such columns.
    plain = face_metrics([astronaut], astronaut, embedder, FaceLandmarker(), [grace], yaws_deg=[0.0])
    assert "identity_by_yaw_of_base_frames" not in plain and "identity_distance_to_base_portrait" not in plain
    assert set(plain["identity_by_yaw"]["0-30"]) == {"views", "faces", "identity_distance_to_target",
                                                    "identity_distance_to_base"}  # fmt: skip
