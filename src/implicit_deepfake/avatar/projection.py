"""Where the photo itself textures the head: the surface its camera sees, and the mirror of it.

A surface point takes the photo's pixel it projects to where the photo's camera sees it (facing it,
not hidden behind the nose or the hair in an orthographic z-buffer) and the pixel shows the person
(not the background its edge pixels mix in, not the photo's own frame edge; on the neck only skin,
not a collar). Where the photo sees a point badly but sees its mirror image across the face's
symmetry plane well (a photo of a turned head), the face and skin take the mirror's pixel. Outside
the face oval only surfaces it sees fairly square on take its pixels (no streaks at grazing angles).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from scipy.spatial import cKDTree

from implicit_deepfake.avatar.frame import HeadFrame, Proportions
from implicit_deepfake.avatar.mesh import smooth, smoothstep, vertex_normals
from implicit_deepfake.avatar.photo import PhotoMaps, sample_map
from implicit_deepfake.render.mesh_raster import interpolate, rasterize


def photo_visibility(frame: HeadFrame, vertices: np.ndarray, faces: np.ndarray, cells: int = 320) -> np.ndarray:
    """(V,) in [0, 1]: how well the photo's camera sees each vertex: facing it, and in front in an
    orthographic z-buffer along its view direction."""
    photo = frame.to_photo(vertices)
    xy = np.stack([photo[:, 0], -photo[:, 2]], 1)
    low, span = xy.min(0), max(float(np.ptp(xy, axis=0).max()), 1e-6)
    pix = torch.as_tensor((xy - low) / span * (cells - 1) + 0.5)
    depth = torch.as_tensor(photo[:, 1] - photo[:, 1].min() + 1.0)
    faces_t = torch.as_tensor(faces)
    face_id, bary = rasterize(pix, depth, faces_t, cells, cells)
    zbuf = interpolate(depth[:, None], faces_t, face_id, bary)[..., 0].numpy()
    zbuf[face_id.numpy() < 0] = np.inf
    ij = np.clip(pix.numpy().astype(int), 0, cells - 1)
    # the nearest surface within a 3x3 neighbourhood: a vertex on a silhouette is not hidden by itself
    nearest = np.min(
        [np.roll(np.roll(zbuf, a, 0), b, 1)[ij[:, 1], ij[:, 0]] for a in (-1, 0, 1) for b in (-1, 0, 1)], 0
    )
    in_front = depth.numpy() <= np.maximum(nearest, zbuf[ij[:, 1], ij[:, 0]]) + 0.015 / frame.scale
    facing = vertex_normals(vertices, faces) @ frame.view_direction
    return smooth(faces, smoothstep(0.15, 0.45, facing) * in_front, 3)


def _square_on(frame: HeadFrame, maps: PhotoMaps, points: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """(V,) in [0, 1]: outside the face oval the photo textures only surfaces it sees fairly square on:
    at a grazing angle its pixels (the cheek's edge, an ear, the hair's rim) would smear into streaks."""
    in_face = sample_map(maps.face, frame.uv(points))
    return in_face + (1 - in_face) * smoothstep(0.4, 0.7, facing)


@dataclass(frozen=True)
class PhotoTexture:
    """Per vertex: uv (V, 2) its photo pixel; mirror_uv (V, 2) its mirror image's; weight (V,) in
    [0, 1] how much the photo colours it; mirror_share (V,) in [0, 1] how much of that is the mirror's."""

    uv: np.ndarray
    mirror_uv: np.ndarray
    weight: np.ndarray
    mirror_share: np.ndarray


def in_photo_frame(frame: HeadFrame, maps: PhotoMaps, points: np.ndarray) -> np.ndarray:
    """(V,) in [0, 1]: how far inside the photo's own frame each point (V, 3) projects. Past the edge a
    lookup repeats the edge, so what lies beyond it is not seen: the photo fades out towards it (a hard
    cut followed the mesh's vertices in steps, a notch where a portrait's frame cuts the head)."""
    uv = frame.uv(points)
    height, width = maps.person.shape
    to_edge = np.minimum(np.minimum(uv[:, 0], width - uv[:, 0]), np.minimum(uv[:, 1], height - uv[:, 1]))
    return smoothstep(0.01 * maps.face_height, 0.06 * maps.face_height, to_edge)


def _usable(frame: HeadFrame, maps: PhotoMaps, head: Proportions, points: np.ndarray, facing: np.ndarray) -> np.ndarray:
    """(V,) in [0, 1]: the photo's pixel at each point shows the person, inside the photo's frame; on
    the neck, skin seen square on."""
    uv = frame.uv(points)
    grow = max(3, int(0.04 * maps.face_height)) | 1
    person = cv2.erode((maps.person > 0.5).astype(np.float32), np.ones((grow, grow), np.float32))
    in_frame = in_photo_frame(frame, maps, points)
    neck = smoothstep(head.chin + 0.02, head.chin - 0.04, points[:, 2])
    skin = smoothstep(0.3, 0.7, sample_map(maps.skin, uv)) * smoothstep(0.45, 0.7, facing)
    return sample_map(person, uv) * in_frame * ((1 - neck) + neck * skin)


def photo_texture(
    frame: HeadFrame, maps: PhotoMaps, head: Proportions, vertices: np.ndarray, faces: np.ndarray
) -> PhotoTexture:
    """The photo's share of each vertex's colour, and the pixels it takes (see the module doc)."""
    seen = photo_visibility(frame, vertices, faces)
    facing = vertex_normals(vertices, faces) @ frame.view_direction
    own = seen * _usable(frame, maps, head, vertices, facing) * _square_on(frame, maps, vertices, facing)
    mirrored = vertices * np.array([-1.0, 1.0, 1.0])
    image = cKDTree(vertices).query(mirrored)[1]  # the vertex nearest each vertex's mirror image
    mirror_uv = frame.uv(mirrored)
    face_or_skin = np.maximum(sample_map(maps.face, mirror_uv), smoothstep(0.3, 0.7, sample_map(maps.skin, mirror_uv)))
    front = smoothstep(head.ear_depth, head.ear_depth - 0.1, vertices[:, 1])
    mirror = (1 - seen) * seen[image] * _usable(frame, maps, head, mirrored, facing[image]) * face_or_skin * front
    weight = np.clip(own + mirror, 0.0, 1.0)
    return PhotoTexture(frame.uv(vertices), mirror_uv, weight, mirror / np.maximum(own + mirror, 1e-6))
