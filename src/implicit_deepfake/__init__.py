"""ImplicitDeepfake: 3D/4D face-swap avatars from one photo (2D swap -> Gaussian Splatting / NeRF).

The package reads as the pipeline, each room importing only the rooms before it:
core -> render -> faces -> avatar -> data -> metrics -> swap -> models -> lit -> reports -> view ->
evaluation -> pipeline. The public API below is imported on first use (PEP 562), so
`import implicit_deepfake` stays light and the rooms never import the package's top.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING

from implicit_deepfake.core.config import register_resolvers

if TYPE_CHECKING:
    from implicit_deepfake.core.errors import DeepfakeError
    from implicit_deepfake.models.gaussians import GaussianCloud
    from implicit_deepfake.pipeline import evaluate, train
    from implicit_deepfake.render.cameras import Cameras
    from implicit_deepfake.render.gaussians import rasterize_gaussians
    from implicit_deepfake.swap.base import FaceSwapper

__version__ = version("implicit-deepfake")

_EXPORTS = {
    "Cameras": "implicit_deepfake.render.cameras",
    "DeepfakeError": "implicit_deepfake.core.errors",
    "FaceSwapper": "implicit_deepfake.swap.base",
    "GaussianCloud": "implicit_deepfake.models.gaussians",
    "evaluate": "implicit_deepfake.pipeline",
    "rasterize_gaussians": "implicit_deepfake.render.gaussians",
    "train": "implicit_deepfake.pipeline",
}
__all__ = [
    "Cameras",
    "DeepfakeError",
    "FaceSwapper",
    "GaussianCloud",
    "__version__",
    "evaluate",
    "rasterize_gaussians",
    "train",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'implicit_deepfake' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


register_resolvers()
