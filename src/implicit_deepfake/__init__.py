"""ImplicitDeepfake: 3D/4D face-swap avatars from one photo (2D swap -> Gaussian Splatting / NeRF)."""

from implicit_deepfake.config import register_resolvers

__version__ = "0.1.0"
register_resolvers()
