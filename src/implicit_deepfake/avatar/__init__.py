"""The embedded synthetic head: a textured 3D head built offline from one photo, and its renderer; it
only makes datasets."""
