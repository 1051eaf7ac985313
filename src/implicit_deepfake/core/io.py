"""Atomic file writes, hashing, image reading, and the synthetic-media marking of outputs.

Every file a run writes goes through here: written to a temporary name in the same folder, then
renamed, so a killed run never leaves a half-written image or json behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from implicit_deepfake.core.errors import DeepfakeError

# IPTC digital source type for media made by a trained model (C2PA / IPTC vocabulary).
SYNTHETIC_SOURCE_TYPE = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
SYNTHETIC_NOTICE = (
    "SYNTHETIC IMAGE made by ImplicitDeepfake (AI face swap / neural rendering). "
    "Not a photograph of a real event. Use only with the consent of the people shown."
)


def synthetic_metadata(**extra: str) -> dict[str, str]:
    """Text fields that mark a file as synthetic; stored in PNG text chunks and run manifests."""
    return {
        "Software": f"implicit-deepfake {version('implicit-deepfake')}",
        "Description": SYNTHETIC_NOTICE,
        "DigitalSourceType": SYNTHETIC_SOURCE_TYPE,
        "AIGenerated": "true",
        **extra,
    }


log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it onto `path`, else remove it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextmanager
def exclusive(path: str | Path, what: str) -> Iterator[None]:
    """Hold the file lock `<path>.lock` (beside `path`) while building `what` there: a second job
    (a parallel sweep's) waits, says that it waits, and then finds the result ready."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path.with_name(path.name + ".lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for another job building %s (%s) ...", what, path)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def write_json(path: str | Path, data: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DeepfakeError(f"{path}: file not found.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DeepfakeError(f"{path}: not valid JSON ({err}). Fix or regenerate the file.") from err


def write_png(path: str | Path, image: np.ndarray, synthetic: bool = True, **text: str) -> None:
    """Write an HxWx{3,4} uint8 image as PNG, with text chunks marking it synthetic."""
    info = PngImagePlugin.PngInfo()
    for key, value in (synthetic_metadata(**text) if synthetic else text).items():
        info.add_text(key, value)
    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(image)).save(tmp, format="PNG", pnginfo=info)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 (RGB) or HxWx4 (RGBA) uint8; a clear error if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DeepfakeError(f"{path}: image not found.")
    try:
        with Image.open(path) as im:
            im.load()
            mode = "RGBA" if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info else "RGB"
            return np.asarray(im.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DeepfakeError(f"{path}: cannot read this image ({err}). Replace it with a valid PNG or JPG.") from err


def read_photo(path: str | Path, max_side: int = 4096) -> np.ndarray:
    """Read a user's photo as HxWx3 uint8 RGB, upright and at most `max_side` px on its long side.

    Photos come from phones and scanners, not from our pipeline: EXIF orientation, grey or 16-bit
    scans, palettes, CMYK and transparency are all normalised here; huge photos are decoded reduced.
    """
    path = Path(path)
    if not path.is_file():
        raise DeepfakeError(f"{path}: photo not found. Check the path (a PNG or JPG of the person).")
    try:
        with Image.open(path) as im:
            width, height = im.size
            if max(width, height) > max_side:  # JPEG decodes at 1/2..1/8 scale; other formats ignore this
                scale = max_side / max(width, height)
                im.draft(None, (max(1, int(np.ceil(width * scale))), max(1, int(np.ceil(height * scale)))))
            im.load()
            photo = _to_rgb(ImageOps.exif_transpose(im))
    except Image.DecompressionBombError as err:
        raise DeepfakeError(
            f"{path}: too many pixels to open safely ({err}). Downscale the photo (e.g. to {max_side} px on "
            "its long side) and try again."
        ) from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DeepfakeError(f"{path}: cannot read this photo ({err}). Replace it with a valid PNG or JPG.") from err
    if max(photo.size) > max_side:
        scale = max_side / max(photo.size)
        size = (max(1, round(photo.width * scale)), max(1, round(photo.height * scale)))
        photo = photo.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(photo)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; 16-bit grey keeps its full range, transparency becomes white."""
    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.asarray(im).astype(np.float64)
        if im.mode.startswith("I;16") or grey.max() > 255:  # "I" holds 8- or 16-bit data (e.g. from 16-bit TIFFs)
            grey = grey / 257.0
        return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        return Image.fromarray(composite(np.asarray(im.convert("RGBA"))))
    return im.convert("RGB")


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) of an image from its header alone; a clear error if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DeepfakeError(f"{path}: image not found.")
    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DeepfakeError(f"{path}: cannot read this image ({err}). Replace it with a valid PNG or JPG.") from err


def image_text(path: str | Path) -> dict[str, str]:
    """The PNG text chunks of an image (empty for formats without them)."""
    with Image.open(path) as im:
        return dict(getattr(im, "text", {}) or {})


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    """A stable hash of a JSON-able value (sorted keys): the fingerprint of a config."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def composite(rgba: np.ndarray, background: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """HxWx4 uint8 over a constant background -> HxWx3 uint8 (RGB images pass through)."""
    if rgba.shape[-1] == 3:
        return rgba
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    bg = np.asarray(background, np.float32) * 255.0
    return np.clip(rgba[..., :3] * alpha + bg * (1.0 - alpha) + 0.5, 0, 255).astype(np.uint8)
