"""A textured, closed 3D head built from one portrait, and its view-independent renderer.

The head is made of the photo alone, offline: its skull, jaw and neck proportioned from the face
mesh with the face's own relief (shape.py), the photo's hair as a volume over the skull
(photo.py: segmentation; hair.py: the volume), ears, and colours: the photo itself wherever its
camera sees the surface (the face, the hair and skin around it, the front of the neck), elsewhere
the photo's own hair and skin colours with their own fine texture (texture.py), the photo's colours
carried smoothly across the seam between the two. Shading is soft Lambert with a light fixed in the
world and a little occlusion in creases, milder on the photo (which has its own light), so a
surface point has the same colour in every view. World axes and units: frame.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from implicit_deepfake.avatar.frame import head_frame
from implicit_deepfake.avatar.hair import hair_coverage, hair_profile
from implicit_deepfake.avatar.mesh import Harmonic, polar_grid_faces, smooth, smoothstep, vertex_normals
from implicit_deepfake.avatar.photo import photo_maps, sample_map
from implicit_deepfake.avatar.projection import in_photo_frame, photo_texture, photo_visibility
from implicit_deepfake.avatar.shape import build_shape
from implicit_deepfake.avatar.texture import TILE, row_colours, spot_noise, wrapped_detail
from implicit_deepfake.faces.landmarks import Face
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.mesh_raster import interpolate, rasterize

__all__ = ["Avatar", "build_avatar", "polar_grid_faces", "render_avatar"]

_LIGHT = F.normalize(torch.tensor([-0.35, -1.0, 0.6]), dim=0)  # toward the light, world axes
_AMBIENT = 0.6
_PHOTO_SHADING = 0.35  # the photo has its own light: it takes this power of the shading
_WORKING_FACE_PX = 360  # photos with larger faces are scaled down to this face height first
_MIN_TEXEL, _MAX_DETAIL = 0.015, 0.02  # the synthesized detail's finest texel (world units) and spread
_PHOTO_BLUR = 0.6  # px of the working photo


@dataclass(frozen=True)
class Avatar:
    """A textured head mesh; float32 tensors unless noted, V vertices, F triangles.

    vertices (V, 3) world; faces (F, 3) long; uv (V, 2) pixel coordinates in `photo`;
    texture_weight (V,) in [0, 1] (1 = photo colour, 0 = the synthesized colour: `base_color` (V, 3)
    in [0, 1] plus the detail tiles `detail_textures` (2, T, T, 3) (hair, skin) weighted per vertex
    by `detail_weight` (V, 2), wrapped around the head at the `rest` positions (V, 3) by
    `detail_frame` (3,), blended into a plane over the crown by `crown` (V,));
    photo (H, W, 3) in [0, 1]; face_weight (V,) in [0, 1]: how far a vertex follows the face
    surface (1 inside the face, 0 on skull and neck) — where an expression deformation applies;
    landmark_vertex_ids (468,) long: the vertex nearest each mediapipe landmark; occlusion (V,) in
    (0, 1]: light reaching each vertex (creases darker); mirror_uv (V, 2) the photo pixel of each
    vertex's mirror image across the face, mirror_share (V,) in [0, 1] how much of the photo colour
    comes from there (where a photo of a turned head sees the mirror side better).
    """

    vertices: Tensor
    faces: Tensor
    uv: Tensor
    texture_weight: Tensor
    base_color: Tensor
    photo: Tensor
    face_weight: Tensor
    landmark_vertex_ids: Tensor
    rest: Tensor
    detail_weight: Tensor
    crown: Tensor
    occlusion: Tensor
    detail_textures: Tensor
    detail_frame: Tensor
    mirror_uv: Tensor
    mirror_share: Tensor

    @property
    def normals(self) -> Tensor:
        """(V, 3) outward unit vertex normals (area-weighted)."""
        tri = self.vertices[self.faces]
        face_normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        corners = face_normals.repeat_interleave(3, 0)
        normals = torch.zeros_like(self.vertices).index_add_(0, self.faces.reshape(-1), corners)
        return F.normalize(normals, dim=1)


def _working_copy(photo: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
    """The photo (RGB uint8) and face scaled down so the face is at most _WORKING_FACE_PX tall."""
    photo = np.ascontiguousarray(photo[..., :3])
    factor = _WORKING_FACE_PX / max(float(np.ptp(face.landmarks[:, 1])), 1.0)
    if factor >= 1.0:
        return photo, face
    size = (max(1, round(photo.shape[1] * factor)), max(1, round(photo.shape[0] * factor)))
    small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA)
    scale = np.array([size[0] / photo.shape[1], size[1] / photo.shape[0], size[0] / photo.shape[1]], np.float32)
    return small, Face(face.landmarks * scale)


def _occlusion(vertices: np.ndarray, faces: np.ndarray, normals: np.ndarray, iterations: int = 25) -> np.ndarray:
    """(V,) light reaching each vertex: darker where the surface lies below its smoothed self (creases)."""
    concave = ((smooth(faces, vertices, iterations) - vertices) * normals).sum(1)
    return 1.0 - 0.25 * smoothstep(0.0, 0.025, concave)


def _detail_tiles(
    image: np.ndarray, hair: np.ndarray, skin: np.ndarray, sigma: float, scale: float
) -> tuple[np.ndarray, float]:
    """The hair and skin detail tiles (2, T, T, 3) from the photo's pixels in those masks, at no finer
    than _MIN_TEXEL world units a texel and no stronger than _MAX_DETAIL (a texture that reads at
    the default size, not noise that neither a viewer nor a 1000-step fit resolves); and the tile's
    size in world units."""
    factor = max(1.0, _MIN_TEXEL / scale)
    if factor > 1.0:
        size = (max(8, round(image.shape[1] / factor)), max(8, round(image.shape[0] / factor)))
        image, hair, skin = (cv2.resize(a, size, interpolation=cv2.INTER_AREA) for a in (image, hair, skin))
    tiles = np.stack(
        [spot_noise(image, hair, sigma / factor), 0.5 * spot_noise(image, skin, 0.5 * sigma / factor, seed=1)]
    )
    tiles *= np.minimum(1.0, _MAX_DETAIL / np.maximum(tiles.std(axis=(1, 2, 3)), 1e-6))[:, None, None, None]
    return tiles, TILE * scale * factor


def build_avatar(photo: np.ndarray, face: Face, resolution: int = 192) -> Avatar:
    """photo: HxWx3 uint8; face: its landmarks (468 or more); resolution: grid vertices around the head."""
    photo, face = _working_copy(photo, face)
    frame, head = head_frame(face)
    maps = photo_maps(photo, face)
    shape = build_shape(head, resolution)
    faces = shape.grid.faces
    skull = shape.vertices
    centre = shape.template.cranium_centre
    profile = hair_profile(maps, frame, skull[skull[:, 2] > head.nose_base - 0.1], centre)
    # The skull beyond a photo cut off at the forehead is not seen: its hair is guessed, not the edge's skin.
    seen = photo_visibility(frame, skull, faces) * in_photo_frame(frame, maps, skull)
    hair = hair_coverage(maps, frame, head, profile, skull, seen)
    hair *= 1 - shape.ears.weight(skull) * (1 - profile.at(skull)[1])  # ears show unless hair hangs over them
    hair *= 1 - smoothstep(0.0, 0.05, -(skull[:, 2] - head.chin))  # none on the neck below the chin
    hair = smooth(faces, hair, 4)
    thickness = profile.thickness_at(head, skull)
    volume = smooth(faces, smoothstep(0.1, 0.7, hair), 40) ** 2  # the volume tapers off at its edges
    t = shape.t + thickness * volume * (1 - shape.face_weight)
    vertices = shape.grid.points(t)
    normals = vertex_normals(vertices, faces)

    projected = photo_texture(frame, maps, head, vertices, faces)
    uv, texture_weight = projected.uv, projected.weight
    facing = normals @ frame.view_direction

    image = photo.astype(np.float32) / 255.0
    sigma = 0.03 * maps.face_height
    thin = max(3, int(0.015 * maps.face_height)) | 1
    hair_mask = cv2.erode((maps.hair > 0.5).astype(np.float32), np.ones((thin, thin), np.float32))
    rows = row_colours(image, hair_mask, sigma)
    hair_color = maps.skin_color * 0.5 if rows is None else rows[np.clip(uv[:, 1].astype(int), 0, len(rows) - 1)]
    base = hair[:, None] * hair_color + (1 - hair[:, None]) * maps.skin_color
    # Carry the photo's own colours across the seam: the difference to the photo's local mean, fixed
    # where the photo shows, fades harmonically to nothing on the side the photo never sees.
    weight = (maps.person > 0.5).astype(np.float32)
    blur = lambda a: cv2.GaussianBlur(a, (0, 0), sigma)  # noqa: E731
    local = blur(image * weight[..., None]) / np.maximum(blur(weight), 1e-6)[..., None]
    shown, unseen = texture_weight > 0.8, facing < -0.2
    residual = np.where(shown[:, None], sample_map(local, uv) - base, 0.0)
    base = np.clip(base + Harmonic(faces, len(vertices), shown | unseen)(residual), 0.0, 1.0)

    textures, tile = _detail_tiles(
        image, hair_mask, ((maps.face > 0.5) & (maps.skin > 0.5)).astype(np.float32), sigma, frame.scale
    )
    detail_frame = [tile, max(1, round(2 * np.pi * 0.42 / tile)), float(shape.grid.origins[-1, 1])]
    occlusion = _occlusion(vertices, faces, normals) * shape.ears.occlusion(vertices)
    nearest = torch.cdist(torch.from_numpy(head.landmarks[:468]), torch.from_numpy(vertices)).argmin(1)
    as_tensor = lambda v: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32)  # noqa: E731
    return Avatar(
        vertices=as_tensor(vertices),
        faces=torch.from_numpy(faces),
        uv=as_tensor(uv),
        texture_weight=as_tensor(texture_weight),
        base_color=as_tensor(base),
        # the photo's finest grain (JPEG noise, single-pixel glints) softened: it reads as noise at the
        # default size and no 1000-step fit resolves it
        photo=as_tensor(cv2.GaussianBlur(image, (0, 0), _PHOTO_BLUR)),
        face_weight=as_tensor(shape.face_weight),
        landmark_vertex_ids=nearest,
        rest=as_tensor(vertices),
        detail_weight=as_tensor(np.stack([hair, 1 - hair], 1)),
        crown=as_tensor(smoothstep(0.55, 0.85, normals[:, 2])),
        occlusion=as_tensor(occlusion),
        detail_textures=as_tensor(textures),
        detail_frame=as_tensor(detail_frame),
        mirror_uv=as_tensor(projected.mirror_uv),
        mirror_share=as_tensor(projected.mirror_share),
    )


def _sample_photo(photo: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of photo (H, W, 3) at pixel coordinates uv (..., 2) -> (..., 3)."""
    height, width = photo.shape[:2]
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)
    sampled = F.grid_sample(
        photo.permute(2, 0, 1)[None], grid.reshape(1, 1, -1, 2), align_corners=False, padding_mode="border"
    )
    return sampled[0, :, 0].T.reshape(*uv.shape[:-1], 3)


def shading(avatar: Avatar) -> Tensor:
    """(V,) light at each vertex: soft Lambert from a light fixed in the world, 1 on a surface facing
    the front, times the occlusion."""
    lambert = lambda n: _AMBIENT + (1 - _AMBIENT) * (n @ _LIGHT).clamp_min(0)  # noqa: E731
    return lambert(avatar.normals) / lambert(torch.tensor([0.0, -1.0, 0.0])) * avatar.occlusion


def render_avatar(avatar: Avatar, cameras: Cameras, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render every camera: RGBA (N, H, W, 4) uint8 (straight alpha, white where empty) and depth
    (N, H, W) float32 (camera z of the surface averaged over the covered supersamples; inf where
    empty). `supersample` x `supersample` samples per pixel anti-alias the edges."""
    big = cameras.scaled(supersample)
    attributes = torch.cat(
        [
            avatar.uv,
            avatar.texture_weight[:, None],
            avatar.base_color,
            shading(avatar)[:, None],
            avatar.rest,
            avatar.detail_weight,
            avatar.crown[:, None],
            avatar.mirror_uv,
            avatar.mirror_share[:, None],
        ],
        1,
    )
    pix, depth = big.project(avatar.vertices)
    rgba, depths = [], []
    for i in range(len(big)):
        face_id, bary = rasterize(pix[i], depth[i], avatar.faces, big.height, big.width)
        covered = face_id >= 0
        values = interpolate(torch.cat([attributes, depth[i][:, None]], 1), avatar.faces, face_id, bary)[covered]
        weight, shade = values[:, 2:3], values[:, 6:7]
        detail = wrapped_detail(avatar.detail_textures, values[:, 7:10], values[:, 12], avatar.detail_frame)
        synthesized = values[:, 3:6] + (values[:, 10:12].T[..., None] * detail).sum(0)
        share = values[:, 15:16]
        pixel = (1 - share) * _sample_photo(avatar.photo, values[:, :2]) + share * _sample_photo(
            avatar.photo, values[:, 13:15]
        )
        albedo = weight * pixel + (1 - weight) * synthesized
        lit = albedo * (weight * shade.clamp_min(1e-3) ** _PHOTO_SHADING + (1 - weight) * shade)
        channels = torch.zeros(*face_id.shape, 5)
        channels[covered] = torch.cat([lit, values[:, 16:17], torch.ones_like(shade)], 1)
        pooled = F.avg_pool2d(channels.permute(2, 0, 1)[None], supersample)[0].permute(1, 2, 0)
        alpha = pooled[..., 4:5]
        seen = alpha > 0
        rgba.append(torch.cat([torch.where(seen, pooled[..., :3] / alpha.clamp_min(1e-6), 1.0), alpha], -1))
        depths.append(torch.where(seen, pooled[..., 3:4] / alpha.clamp_min(1e-6), torch.inf)[..., 0])
    rgba_u8 = (torch.stack(rgba).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return rgba_u8, torch.stack(depths).numpy()
