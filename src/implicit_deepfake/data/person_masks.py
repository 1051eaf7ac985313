"""The person cut out of every frame of a multi-view capture: per-frame selfie segmentation, made
consistent across the views.

mediapipe's selfie segmentation (its model ships in the wheel) finds a person in one frame; on a
busy background it leaks into it in some frames and misses the neck in others, and a mask that is
wrong in one view carves the head out of the hull the models start from (or leaves floaters). With
the cameras known, the masks vote: a voxel of a grid around the point the cameras look at is the
person's when at least `agree` of the views that see it have it inside their mask. Each view then
keeps its own mask only near the edge of that consensus hull's silhouette: inside it, the person;
outside it, background.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
from scipy.ndimage import binary_fill_holes

from implicit_deepfake.render.cameras import Cameras

GRID = 64  # voxels per side of the voting grid
BOX = 1.5  # its half-size, in units of the ball the narrowest view holds whole (the head and some shoulder)


class PersonSegmenter:
    """The person in a frame as alpha. The mask keeps the largest connected region with its holes
    filled: the model gives faint blobs on busy backgrounds, which would otherwise become floaters."""

    def __init__(self) -> None:
        import mediapipe as mp

        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def __reduce__(self) -> tuple:
        """Pickled as itself without its graph (a swap worker process builds its own)."""
        return type(self), ()

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H, W) uint8 alpha."""
        mask = self._model.process(np.ascontiguousarray(rgb)).segmentation_mask
        if mask is None:
            return np.zeros(rgb.shape[:2], np.uint8)
        solid = (mask > 0.5).astype(np.uint8)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(solid, connectivity=8)
        if count < 2:
            return np.zeros(rgb.shape[:2], np.uint8)
        person = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
        person = binary_fill_holes(person).astype(np.uint8)
        near = cv2.dilate(person, np.ones((5, 5), np.uint8))  # keep the soft edge around it
        return (np.clip(mask, 0, 1) * near * 255 + 0.5).astype(np.uint8) | (person * 255)


def fuse_masks(alphas: np.ndarray, cameras: Cameras, agree: float = 0.7) -> tuple[np.ndarray, float]:
    """Per-view masks (N, H, W) uint8 made consistent across `cameras` (see the module's docstring);
    also the share of pixels changed. Fewer than 8 views are returned as they are (too few to vote)."""
    count, height, width = alphas.shape
    if count < 8:
        return alphas, 0.0
    cameras = Cameras(cameras.world_to_camera.double(), cameras.intrinsics.double(), width, height)
    centre = cameras.look_at_point()
    k = cameras.intrinsics[0]
    half_fov = min(math.atan(0.5 * width / float(k[0, 0])), math.atan(0.5 * height / float(k[1, 1])))
    radius = BOX * float((cameras.centers - centre).norm(dim=1).min()) * math.sin(half_fov)
    axis = torch.linspace(-radius, radius, GRID, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3) + centre
    seen, votes, projected = np.zeros(len(grid)), np.zeros(len(grid)), []
    for i in range(count):
        pixels, depth = cameras[i].project(grid)
        x, y, z = pixels[0, :, 0].numpy(), pixels[0, :, 1].numpy(), depth[0].numpy()
        inside = (z > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        column, row = np.clip(x, 0, width - 1).astype(int), np.clip(y, 0, height - 1).astype(int)
        seen += inside
        votes += inside & (alphas[i, row, column] >= 128)
        projected.append((row, column, inside, z))
    hull = (votes >= agree * np.maximum(seen, 1)) & (seen >= 0.5 * count)
    if not hull.any():
        return alphas, 0.0
    voxel = 2 * radius / (GRID - 1)
    fused = np.empty_like(alphas)
    for i, (row, column, inside, z) in enumerate(projected):
        shown = inside & hull
        dots = np.zeros((height, width), np.uint8)
        dots[row[shown], column[shown]] = 1
        # The voxel centres land this many pixels apart: close the gaps, then keep a band of that width.
        size = max(1, math.ceil(float(k[0, 0]) * voxel / float(np.median(z[shown])))) if shown.any() else 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * size + 1, 2 * size + 1))
        silhouette = cv2.morphologyEx(dots, cv2.MORPH_CLOSE, kernel)
        inner, outer = cv2.erode(silhouette, kernel), cv2.dilate(silhouette, kernel)
        fused[i] = np.where(inner > 0, 255, np.where(outer > 0, alphas[i], 0))
    return fused, float(((fused >= 128) != (alphas >= 128)).mean())
