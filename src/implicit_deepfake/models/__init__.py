"""nn.Modules that hold parameters: the Gaussian cloud and its densification settings, NeRF and NeRFace
fields."""
