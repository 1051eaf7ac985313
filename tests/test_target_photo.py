"""The target photo on real photos from wheels: odd files read right, small and several faces found."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import insightface
import matplotlib
import numpy as np
import pytest
import skimage
from PIL import Image, JpegImagePlugin

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import read_photo
from implicit_deepfake.faces.landmarks import DetectedFace, Face, FaceLandmarker
from implicit_deepfake.swap.target import load_target

ASTRONAUT = Path(skimage.__file__).parent / "data" / "astronaut.png"  # 512x512 RGB
GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"  # 512 wide, 600 tall
IMAGES = Path(insightface.__file__).parent / "data" / "images"
TOM_HANKS = IMAGES / "Tom_Hanks_54745.png"  # 112x112, the face fills it
GROUP = IMAGES / "t1.jpg"  # 1280x886, six people around a table
NOSE_TIP, EYES, LIPS = 1, (33, 263), (13, 14)
# Centres of the six detector boxes in t1.jpg, largest box first (measured; boxes are 104-130 px).
GROUP_CENTRES = [(517, 349), (936, 140), (117, 337), (784, 419), (1173, 346), (312, 219)]


def rgb_of(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def assert_upright(face: Face) -> None:
    assert face.landmarks[list(EYES), 1].max() < face.landmarks[list(LIPS), 1].min()


@pytest.fixture(scope="module")
def group(landmarker: FaceLandmarker) -> list[DetectedFace]:
    return landmarker.detect_all(rgb_of(GROUP))


@pytest.fixture(scope="module")
def astronaut_face(landmarker: FaceLandmarker) -> Face:
    return landmarker.detect(rgb_of(ASTRONAUT))


def test_exif_orientation_is_applied(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    """A phone stores pixels sideways and says so in EXIF; a sideways face is not found."""
    photo = Image.open(GRACE_HOPPER)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "sideways.jpg"
    photo.transpose(Image.Transpose.ROTATE_90).save(path, quality=95, exif=exif)
    assert Image.open(path).size == (600, 512)  # stored sideways

    upright = read_photo(path)
    assert upright.shape == (600, 512, 3) and upright.dtype == np.uint8
    assert np.abs(upright.astype(int) - rgb_of(GRACE_HOPPER)).mean() < 2.0  # JPEG re-encoding only
    target = load_target(path, landmarker=landmarker)
    assert target.faces_found == 1
    assert_upright(target.face)


def test_grey_and_16_bit_photos_become_rgb(tmp_path: Path, landmarker: FaceLandmarker) -> None:
    grey = np.asarray(Image.open(ASTRONAUT).convert("L"))
    Image.fromarray(grey).save(tmp_path / "grey.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "grey16.png")
    Image.fromarray((grey.astype(np.uint16) * 257).astype(">u2")).save(tmp_path / "grey16b.tif")
    Image.fromarray(grey.astype(np.int32) * 257).save(tmp_path / "grey32.tif")  # mode I, 16-bit values
    Image.fromarray(grey.astype(np.int32)).save(tmp_path / "grey32_8bit.tif")  # mode I, 8-bit values
    names = ("grey.png", "grey16.png", "grey16b.tif", "grey32.tif", "grey32_8bit.tif")
    assert [Image.open(tmp_path / n).mode for n in names] == ["L", "I;16", "I;16B", "I", "I"]
    for name in names:
        photo = read_photo(tmp_path / name)
        assert photo.shape == (512, 512, 3) and photo.dtype == np.uint8
        np.testing.assert_array_equal(photo, np.repeat(grey[..., None], 3, axis=2), err_msg=name)
    assert load_target(tmp_path / "grey16.png", landmarker=landmarker).faces_found == 1


def test_palette_cmyk_and_transparency(tmp_path: Path) -> None:
    rgb = rgb_of(ASTRONAUT)
    palette = Image.fromarray(rgb).quantize(256)
    palette.save(tmp_path / "palette.png")
    np.testing.assert_array_equal(read_photo(tmp_path / "palette.png"), np.asarray(palette.convert("RGB")))
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    assert np.abs(read_photo(tmp_path / "cmyk.jpg").astype(int) - rgb).mean() < 3.0

    alpha = np.full((512, 512), 255, np.uint8)
    alpha[:, :100] = 0  # transparent background on the left
    alpha[:, 100:200] = 128
    Image.fromarray(np.dstack([rgb, alpha])).save(tmp_path / "rgba.png")
    photo = read_photo(tmp_path / "rgba.png")
    assert (photo[:, :100] == 255).all()
    np.testing.assert_array_equal(photo[:, 200:], rgb[:, 200:])
    half = np.floor(rgb[:, 100:200] * (128 / 255) + 255 * (127 / 255) + 0.5)
    assert np.abs(photo[:, 100:200] - half).max() <= 1
    grey_alpha = Image.fromarray(np.dstack([rgb[..., 0], alpha])).convert("LA")
    grey_alpha.save(tmp_path / "la.png")
    assert (read_photo(tmp_path / "la.png")[:, :100] == 255).all()


def test_huge_jpeg_decodes_reduced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, landmarker: FaceLandmarker) -> None:
    path = tmp_path / "huge.jpg"
    Image.open(ASTRONAUT).resize((9000, 9000), Image.Resampling.BILINEAR).save(path, quality=90)
    drafts = []
    draft = JpegImagePlugin.JpegImageFile.draft
    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", lambda im, *a: drafts.append(draft(im, *a)))

    target = load_target(path, landmarker=landmarker)
    assert drafts == [("RGB", (0, 0, 4500, 4500))]  # decoded at 1/2 scale, then resized
    assert target.rgb.shape == (4096, 4096, 3)
    assert target.faces_found == 1
    centre = (target.face.bbox[:2] + target.face.bbox[2:]) / 2
    np.testing.assert_allclose(centre, [225 * 8, 124 * 8], atol=40)  # astronaut's face centre, x8
    assert read_photo(path, max_side=1000).shape == (1000, 1000, 3)


def test_decompression_bomb_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # the astronaut has 262144 > 2x this
    with pytest.raises(DeepfakeError, match=f"^{re.escape(str(ASTRONAUT))}: too many pixels.*Downscale the photo"):
        read_photo(ASTRONAUT)


def test_missing_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(DeepfakeError, match="no_such.jpg: photo not found"):
        read_photo(tmp_path / "no_such.jpg")
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(DeepfakeError, match="notes.jpg: cannot read this photo.*valid PNG or JPG"):
        read_photo(tmp_path / "notes.jpg")


def test_group_photo_finds_all_six(landmarker: FaceLandmarker, group: list[DetectedFace]) -> None:
    """FaceMesh alone finds none of these ~110 px faces in the 1280 px photo; the tiled detector finds all."""
    assert len(group) == 6
    areas = [float(np.prod(d.box[2:] - d.box[:2])) for d in group]
    assert areas == sorted(areas, reverse=True)
    centres = np.array([(d.box[:2] + d.box[2:]) / 2 for d in group])
    np.testing.assert_allclose(centres, GROUP_CENTRES, atol=8)
    for d in group:
        assert 100 < d.box[2] - d.box[0] < 135 and d.score > 0.8
        assert d.face.landmarks.shape == (468, 3) and d.face.landmarks.dtype == np.float32
        corners = np.minimum(d.box[2:], d.face.bbox[2:]) - np.maximum(d.box[:2], d.face.bbox[:2])
        inter = np.prod(np.clip(corners, 0, None))
        assert inter > 0.6 * np.prod(d.face.bbox[2:] - d.face.bbox[:2])  # the mesh is the box's face
        assert_upright(d.face)


def test_load_target_picks_by_size(
    landmarker: FaceLandmarker, group: list[DetectedFace], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="implicit_deepfake.swap.target"):
        largest = load_target(GROUP, landmarker=landmarker)
    assert "6 faces found; using face 0" in caplog.text
    assert largest.index == 0 and largest.faces_found == 6
    np.testing.assert_allclose(largest.boxes, [d.box for d in group], atol=0.06)
    np.testing.assert_allclose(largest.face.landmarks, group[0].face.landmarks)

    third = load_target(GROUP, face_index=2, landmarker=landmarker)
    np.testing.assert_allclose(third.face.landmarks, group[2].face.landmarks)
    assert np.prod(np.subtract(third.boxes[2][2:], third.boxes[2][:2])) < np.prod(
        np.subtract(third.boxes[0][2:], third.boxes[0][:2])
    )
    for index in (6, -1):
        message = rf"^{re.escape(str(GROUP))}: target_face={index} .* has 6 faces.*target_face=<0\.\.5>"
        with pytest.raises(DeepfakeError, match=message):
            load_target(GROUP, face_index=index, landmarker=landmarker)


def test_small_face_is_found_precisely(tmp_path: Path, landmarker: FaceLandmarker, astronaut_face: Face) -> None:
    """A 40 px face in a 640x480 photo: FaceMesh alone misses it; its landmarks match the big face's, scaled."""
    scale = 40 / float(astronaut_face.bbox[2] - astronaut_face.bbox[0])
    small = Image.open(ASTRONAUT).convert("RGB").resize((round(512 * scale),) * 2, Image.Resampling.LANCZOS)
    canvas = np.full((480, 640, 3), 128, np.uint8)
    canvas[150 : 150 + small.height, 300 : 300 + small.width] = np.asarray(small)
    Image.fromarray(canvas).save(tmp_path / "small.png")
    assert landmarker.detect(canvas) is None

    target = load_target(tmp_path / "small.png", landmarker=landmarker)
    expected = astronaut_face.landmarks * (small.width / 512) + [300, 150, 0]
    error = np.linalg.norm(target.face.landmarks[:, :2] - expected[:, :2], axis=1)
    assert error[NOSE_TIP] < 1.0 and error.mean() < 0.45  # measured 0.32, 0.30 px (0.51, 0.57 not upscaled)
    assert abs(target.face.landmarks[NOSE_TIP, 2] - expected[NOSE_TIP, 2]) < 1.5  # depth scaled too: ~-10 px


def test_tiny_photo_filled_by_the_face(landmarker: FaceLandmarker) -> None:
    target = load_target(TOM_HANKS, landmarker=landmarker)
    assert target.faces_found == 1 and target.rgb.shape == (112, 112, 3)
    assert 70 < target.face.bbox[2] - target.face.bbox[0] < 100
    assert_upright(target.face)


@pytest.mark.parametrize("kind", ["noise", "flat"])
def test_no_face_names_the_photo(tmp_path: Path, landmarker: FaceLandmarker, kind: str) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (480, 640, 3), np.uint8) if kind == "noise" else np.full((480, 640, 3), 90, np.uint8)
    path = tmp_path / f"{kind}.png"
    Image.fromarray(pixels).save(path)
    message = rf"^{re.escape(str(path))}: no face found in the target photo\. Use a photo with one clearly visible"
    with pytest.raises(DeepfakeError, match=message):
        load_target(path, landmarker=landmarker)


def test_record_and_crop(landmarker: FaceLandmarker) -> None:
    target = load_target(GROUP, face_index=2, landmarker=landmarker)
    record = target.record()
    assert record == {
        "path": str(GROUP),
        "sha256": hashlib.sha256(GROUP.read_bytes()).hexdigest(),
        "size": [1280, 886],
        "faces_found": 6,
        "index": 2,
        "box": target.boxes[2],
        "boxes": target.boxes,
    }
    assert json.loads(json.dumps(record)) == record
    assert all(v == round(v, 1) for box in record["boxes"] for v in box)

    crop, face = target.crop(margin=0.5)
    offset = target.face.landmarks[0, :2] - face.landmarks[0, :2]
    x0, y0 = offset.round().astype(int)
    np.testing.assert_array_equal(crop, target.rgb[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]])
    extent = target.face.bbox[2:] - target.face.bbox[:2]
    np.testing.assert_allclose(crop.shape[1::-1], 2 * extent, atol=3)  # 0.5 each side doubles it (not clipped)
    np.testing.assert_allclose(face.bbox[:2], 0.5 * extent, atol=1.5)
    edge, edge_face = target.crop(margin=5.0)  # clipped to the photo
    assert (edge_face.bbox[:2] == target.face.bbox[:2]).all()  # the crop starts at the photo's corner
    np.testing.assert_array_equal(edge, target.rgb[: edge.shape[0], : edge.shape[1]])
