"""Dataset sources (synthetic head, synthetic 4D head, Blender/NeRF, NeRFace, a tracked video), the
swapped-frame cache and the one DataModule every model trains on."""
