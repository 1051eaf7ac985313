"""A textured, closed 3D head mesh built from one frontal photo, and its renderer.

The head is a watertight spherical-grid ellipsoid (z up, the face looking toward -y). Its front is
pushed onto the face surface that mediapipe's 468-point mesh gives for the photo (a depth map
interpolated over the landmarks, blended into the ellipsoid toward the face oval, so there are no
cracks). Vertices carry photo coordinates: pixels are textured by a bilinear lookup in the photo
inside the face, blending to skin and hair colours elsewhere. Shading is Lambert with a light
fixed in the world, so a surface point has the same colour in every view.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from scipy.interpolate import LinearNDInterpolator
from torch import Tensor

from implicit_deepfake.data.cameras import Cameras
from implicit_deepfake.faces import Face, face_oval_indices
from implicit_deepfake.render.mesh_raster import interpolate, rasterize

# Head ellipsoid in face units (the landmarks' half-width is 1): semi-axes x, y (depth), z.
_AXES = (1.12, 1.3, 1.5)
_CENTER_Z = 0.3  # the skull's centre sits above the face's centre
_LIGHT = F.normalize(torch.tensor([-0.4, -1.0, 0.7]), dim=0)  # toward the light, world axes
_AMBIENT = 0.55
_HAIR = (0.32, 0.27, 0.24)


@dataclass(frozen=True)
class Avatar:
    """vertices (V, 3) world; faces (F, 3); uv (V, 2) photo pixels; texture_weight (V,) in [0, 1]
    (1 = photo colour); base_color (V, 3) in [0, 1]; photo (H, W, 3) float in [0, 1];
    landmark_vertex_ids (468,) the vertex nearest each mediapipe landmark (for later deformation)."""

    vertices: Tensor
    faces: Tensor
    uv: Tensor
    texture_weight: Tensor
    base_color: Tensor
    photo: Tensor
    landmark_vertex_ids: Tensor

    @property
    def normals(self) -> Tensor:
        """(V, 3) outward unit vertex normals (area-weighted)."""
        tri = self.vertices[self.faces]
        face_normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normals = torch.zeros_like(self.vertices).index_add_(0, self.faces.reshape(-1), face_normals.repeat_interleave(3, 0))
        return F.normalize(normals, dim=1)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _sphere_grid(n_azimuth: int, n_elevation: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-sphere grid with a vertex at each pole: azimuth (V,), elevation (V,), faces (F, 3)
    wound so normals point outward for the ellipsoid parametrisation below."""
    az = np.linspace(-np.pi, np.pi, n_azimuth, endpoint=False)
    el = np.linspace(-np.pi / 2, np.pi / 2, n_elevation + 2)[1:-1]
    azimuth = np.concatenate([np.tile(az, n_elevation), [0.0, 0.0]])
    elevation = np.concatenate([np.repeat(el, n_azimuth), [-np.pi / 2, np.pi / 2]])
    ring = lambda r, a: r * n_azimuth + (a % n_azimuth)  # noqa: E731
    south, north = n_elevation * n_azimuth, n_elevation * n_azimuth + 1
    faces = []
    for r in range(n_elevation - 1):
        for a in range(n_azimuth):
            faces += [(ring(r, a), ring(r, a + 1), ring(r + 1, a)), (ring(r, a + 1), ring(r + 1, a + 1), ring(r + 1, a))]
    for a in range(n_azimuth):
        faces += [(south, ring(0, a + 1), ring(0, a)), (north, ring(n_elevation - 1, a), ring(n_elevation - 1, a + 1))]
    return azimuth, elevation, np.array(faces, np.int64)


def build_avatar(photo: np.ndarray, face: Face, resolution: int = 192) -> Avatar:
    """photo: HxWx3 uint8, face: its landmarks; resolution: grid vertices around the head."""
    lm = face.landmarks.astype(np.float64)
    oval_ids = face_oval_indices()
    centre = lm[oval_ids, :2].mean(0)
    scale = 0.5 * (lm[:, 0].max() - lm[:, 0].min())
    fx, fz = (lm[:, 0] - centre[0]) / scale, -(lm[:, 1] - centre[1]) / scale  # face x, z (up)
    a, b, c = _AXES

    def ellipsoid_depth(x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return b * np.sqrt(np.clip(1 - (x / a) ** 2 - ((z - _CENTER_Z) / c) ** 2, 0, None))

    # Landmark depth (mediapipe z: smaller is nearer) placed so the oval lies on the ellipsoid.
    front = -lm[:, 2] / scale
    front += np.median(ellipsoid_depth(fx[oval_ids], fz[oval_ids]) - front[oval_ids])
    face_depth = LinearNDInterpolator(np.stack([fx, fz], 1), front)

    azimuth, elevation, faces = _sphere_grid(resolution, resolution // 2)
    x = a * np.cos(elevation) * np.sin(azimuth)
    z = _CENTER_Z + c * np.sin(elevation)
    depth = b * np.cos(elevation) * np.cos(azimuth)  # toward the viewer (-y)

    # How deep inside the face oval each vertex lies (in face units), from the oval polygon.
    oval_xz = np.stack([fx[oval_ids], fz[oval_ids]], 1).astype(np.float32)
    inside = np.array([cv2.pointPolygonTest(oval_xz, (float(px), float(pz)), True) for px, pz in zip(x, z)])
    inside[depth <= 0] = -1.0
    geometry_weight = _smoothstep(0.0, 0.25, inside)
    surface = face_depth(x, z)
    surface = np.where(np.isfinite(surface), surface, depth)
    depth = np.where(geometry_weight > 0, (1 - geometry_weight) * depth + geometry_weight * surface, depth)

    vertices = np.stack([x, -depth, z], 1)
    uv = np.stack([centre[0] + x * scale, centre[1] - z * scale], 1)
    texture_weight = _smoothstep(0.05, 0.3, inside)
    skin = np.median(photo[np.clip(uv[texture_weight > 0.99, 1].astype(int), 0, photo.shape[0] - 1),
                           np.clip(uv[texture_weight > 0.99, 0].astype(int), 0, photo.shape[1] - 1)], axis=0) / 255.0
    # Hair over the crown and the back of the head; skin on the sides, chin and neck.
    hair = _smoothstep(0.05, 0.35, (z - _CENTER_Z) / c + 0.3 - 0.35 * np.cos(azimuth))
    hair = np.maximum(hair, _smoothstep(-0.1, 0.3, -np.cos(azimuth)) * (z > -0.6))
    base = (1 - hair)[:, None] * skin + hair[:, None] * np.array(_HAIR)

    nearest = np.argmin(((vertices[None, :, [0, 2]] - np.stack([fx, fz], 1)[:, None]) ** 2).sum(-1)
                        - 1e-3 * vertices[None, :, 1], axis=1)
    as_tensor = lambda v, dtype=torch.float32: torch.as_tensor(np.ascontiguousarray(v), dtype=dtype)  # noqa: E731
    return Avatar(
        vertices=as_tensor(vertices),
        faces=as_tensor(faces, torch.long),
        uv=as_tensor(uv),
        texture_weight=as_tensor(texture_weight),
        base_color=as_tensor(base),
        photo=as_tensor(photo / 255.0),
        landmark_vertex_ids=as_tensor(nearest, torch.long),
    )


def _sample_photo(photo: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of photo (H, W, 3) at pixel coordinates uv (..., 2) -> (..., 3)."""
    height, width = photo.shape[:2]
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)
    sampled = F.grid_sample(photo.permute(2, 0, 1)[None], grid.reshape(1, 1, -1, 2), align_corners=False)
    return sampled[0, :, 0].T.reshape(*uv.shape[:-1], 3)


def render_avatar(avatar: Avatar, cameras: Cameras, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render every camera: RGBA (N, H, W, 4) uint8 (straight alpha, white where empty) and depth
    (N, H, W) float32 (camera z of the nearest surface at the supersampled pixel centres, averaged;
    inf where empty)."""
    big = cameras.scaled(supersample)
    shade = _AMBIENT + (1 - _AMBIENT) * (avatar.normals @ _LIGHT).clamp_min(0)
    attributes = torch.cat([avatar.uv, avatar.texture_weight[:, None], avatar.base_color * shade[:, None], shade[:, None]], 1)
    rgba, depths = [], []
    for i in range(len(big)):
        pix, depth = big[i].project(avatar.vertices)
        face_id, bary = rasterize(pix[0], depth[0], avatar.faces, big.height, big.width)
        values = interpolate(attributes, avatar.faces, face_id, bary)
        covered = (face_id >= 0).float()
        photo = _sample_photo(avatar.photo, values[..., :2]) * values[..., 6:7]
        colour = values[..., 2:3] * photo + (1 - values[..., 2:3]) * values[..., 3:6]
        pixel_depth = interpolate(depth[0][:, None], avatar.faces, face_id, bary)[..., 0]
        premultiplied = torch.cat([colour * covered[..., None], covered[..., None]], -1)
        pooled = F.avg_pool2d(premultiplied.permute(2, 0, 1)[None], supersample)[0].permute(1, 2, 0)
        alpha = pooled[..., 3:4]
        straight = torch.where(alpha > 0, pooled[..., :3] / alpha.clamp_min(1e-6), torch.ones_like(pooled[..., :3]))
        rgba.append(torch.cat([straight, alpha], -1))
        masked = torch.where(face_id >= 0, pixel_depth, torch.zeros_like(pixel_depth))
        depth_sum = F.avg_pool2d(masked[None, None], supersample)[0, 0]
        coverage = F.avg_pool2d(covered[None, None], supersample)[0, 0]
        depths.append(torch.where(coverage > 0, depth_sum / coverage.clamp_min(1e-6), torch.full_like(depth_sum, torch.inf)))
    rgba_u8 = (torch.stack(rgba).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return rgba_u8, torch.stack(depths).numpy()
