"""The embedded synthetic head: a textured 3D head built offline from one portrait, and its renderer;
it only makes datasets. head.py builds and renders it from frame.py (the head's frame and proportions),
shape.py and mesh.py (skull, face, jaw, neck, ears), photo.py and hair.py (segmentation, the hair's
volume), projection.py and texture.py (the photo's pixels, the photo's own hair and skin elsewhere)."""
