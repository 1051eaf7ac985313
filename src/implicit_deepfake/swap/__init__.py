"""The 2D face swap of every frame: the FaceSwapper protocol and its backends, the multi-view face
geometry, the dataset-level runner and its manifest."""
