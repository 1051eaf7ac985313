"""ImplicitDeepfake: 3D/4D face-swap avatars from one photo (2D swap -> Gaussian Splatting / NeRF)."""

__version__ = "0.1.0"
