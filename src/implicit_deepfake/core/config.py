"""OmegaConf resolvers the configs use, registered when the package is imported."""

from __future__ import annotations

import hashlib
from pathlib import Path

from omegaconf import OmegaConf


def target_key(target: str | None, face: int = 0) -> str:
    """A folder-name key for the target photo (`target=`) and face (`target_face=`), so caches of two
    targets sit side by side: "famous" for the dataset's own famous.jpg, else the photo's name and a
    hash of its absolute path; "-face<k>" when another than the largest face is used."""
    key = (
        "famous"
        if target is None
        else f"{Path(target).stem}-{hashlib.sha1(str(Path(target).resolve()).encode()).hexdigest()[:8]}"
    )
    return key if int(face) == 0 else f"{key}-face{int(face)}"


def register_resolvers() -> None:
    OmegaConf.register_new_resolver("target_key", target_key, replace=True)
