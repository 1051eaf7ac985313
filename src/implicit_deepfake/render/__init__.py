"""Pure rendering functions of (parameters, camera): the one Cameras type, Gaussian rasterizer backends
(gsplat CUDA, compiled CPU, PyTorch reference), mesh rasterizer, rays and volume rendering,
spherical harmonics, video writing."""
