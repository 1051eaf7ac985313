"""Finding faces: mediapipe detection and face mesh (with iris) on any image, and loading user-supplied
insightface models."""
