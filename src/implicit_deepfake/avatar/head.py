"""A textured, closed 3D head built from one frontal photo, and its view-independent renderer.

The head is a watertight ellipsoid grid whose front pole faces the photo's camera; its front is
pushed onto the face surface of mediapipe's 468-point mesh (a C1 heightfield through the
landmarks), blended back into the ellipsoid over the outer band of the face oval, so the surface
stays closed without cracks. A capped cylinder makes the neck. Face pixels are textured by a
bilinear lookup in the photo (per-vertex photo coordinates); elsewhere the colour blends into
skin, curly grey hair over the back of the head and a dark cap. Ears are flaps pushed out of the
sides of the ellipsoid (a displacement, so the mesh stays one closed surface). Shading is Lambert
with a light fixed in the world, so a surface point has the same colour in every view.

World axes: z up, the face looks toward -y (a camera at (0, -d, 0) sees it frontally); the head
ellipsoid is centred at the origin and 1 unit tall. Photo pixels (x right, y down, depth away)
map to world (x, depth, -y) by a rotation and a scale, so a frontal render is not mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.path import Path as Polygon
from scipy.interpolate import RBFInterpolator
from torch import Tensor

from implicit_deepfake.faces.landmarks import Face, face_oval_indices
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.mesh_raster import interpolate, rasterize

_HAT = (0.10, 0.10, 0.15)  # grace_hopper.jpg: a dark navy cap over grey hair
_HAIR = (0.78, 0.76, 0.74)
_LIGHT = F.normalize(torch.tensor([-0.4, -1.0, 0.7]), dim=0)  # toward the light, world axes
_AMBIENT = 0.55
_FOREHEAD = 10  # mediapipe's top-of-forehead landmark: the cap's brim starts here
_BROWS = (105, 334)  # mediapipe's upper brow landmarks and the base of the nose: the ears' height
_NOSE_BASE = 2
_CURL_CONTRAST = 0.08  # relative light/dark of the hair's curls: visible, and cheap to learn
_NECK_RINGS = 24


@dataclass(frozen=True)
class Avatar:
    """A textured head mesh; float32 tensors unless noted, V vertices, F triangles.

    vertices (V, 3) world; faces (F, 3) long; uv (V, 2) pixel coordinates in `photo`;
    texture_weight (V,) in [0, 1] (1 = photo colour, 0 = `base_color` (V, 3) in [0, 1]);
    photo (H, W, 3) in [0, 1]; face_weight (V,) in [0, 1]: how far a vertex follows the face
    surface (1 inside the face, 0 on skull and neck) — where an expression deformation applies;
    landmark_vertex_ids (468,) long: the vertex nearest each mediapipe landmark.
    """

    vertices: Tensor
    faces: Tensor
    uv: Tensor
    texture_weight: Tensor
    base_color: Tensor
    photo: Tensor
    face_weight: Tensor
    landmark_vertex_ids: Tensor

    @property
    def normals(self) -> Tensor:
        """(V, 3) outward unit vertex normals (area-weighted)."""
        tri = self.vertices[self.faces]
        face_normals = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        corners = face_normals.repeat_interleave(3, 0)
        normals = torch.zeros_like(self.vertices).index_add_(0, self.faces.reshape(-1), corners)
        return F.normalize(normals, dim=1)


def _smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def polar_grid_faces(n_rings: int, n_seg: int) -> np.ndarray:
    """Triangles (F, 3) of a closed polar grid: vertex 0 is the first pole, then `n_rings` rings of
    `n_seg` vertices each, then the last pole. Outward-facing (counter-clockwise seen from outside)
    when the rings turn counter-clockwise seen from the first pole."""
    ring = 1 + np.arange(n_rings)[:, None] * n_seg + np.arange(n_seg)  # (n_rings, n_seg)
    nxt = np.roll(ring, -1, axis=1)
    a, b, a1, b1 = ring[:-1], ring[1:], nxt[:-1], nxt[1:]
    last = 1 + n_rings * n_seg
    return np.concatenate(
        [
            np.stack([np.zeros(n_seg, np.int64), ring[0], nxt[0]], 1),
            np.stack([a, b, a1], -1).reshape(-1, 3),
            np.stack([a1, b, b1], -1).reshape(-1, 3),
            np.stack([ring[-1], np.full(n_seg, last), nxt[-1]], 1),
        ]
    )


def _signed_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance (P,) from 2D points (P, 2) to a closed polygon (K, 2), positive inside."""
    a, ab = polygon, np.roll(polygon, -1, axis=0) - polygon
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0.0, 1.0)
    dist = np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=-1).min(1)
    return np.where(Polygon(polygon).contains_points(points), dist, -dist)


def _fit_head(oval: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ellipsoid centre (3,) and semi-axes (3,) around a face oval (K, 3) in world-like axes.

    Width and height follow head proportions (the skull reaches 0.45 face heights above the
    forehead); centre depth and depth semi-axis are a least-squares fit through the oval, so the
    face surface meets the ellipsoid where the blend into it fades out.
    """
    x, y, z = oval.T
    height = z.max() - z.min()
    skull_top, bottom = z.max() + 0.45 * height, z.min() - 0.08 * height
    centre_x, centre_z = 0.5 * (x.max() + x.min()), 0.5 * (skull_top + bottom)
    axis_x, axis_z = 0.6 * np.ptp(x), 0.5 * (skull_top - bottom)
    # The ellipsoid's front at (x, z) has depth c_y - a_y * r: linear least squares in (c_y, a_y).
    r = np.sqrt(np.clip(1 - ((x - centre_x) / axis_x) ** 2 - ((z - centre_z) / axis_z) ** 2, 0, 1))
    (centre_y, axis_y), *_ = np.linalg.lstsq(np.stack([np.ones_like(r), -r], 1), y, rcond=None)
    if not 1.0 <= axis_y / axis_x <= 1.4:  # keep a head-like depth when the fit is ill-posed
        axis_y = np.clip(axis_y, axis_x, 1.4 * axis_x)
        centre_y = np.mean(y + axis_y * r)
    return np.array([centre_x, centre_y, centre_z]), np.array([axis_x, axis_y, axis_z])


@dataclass(frozen=True)
class _Ears:
    """Where the ears sit on the head (head units): centre depth y and height z, half width and height."""

    y: float
    z: float
    half_width: float
    half_height: float

    @classmethod
    def from_landmarks(cls, world: np.ndarray) -> _Ears:
        """An ear spans from the brows down to the base of the nose, a little behind the head's middle."""
        top, bottom = world[list(_BROWS), 2].mean(), world[_NOSE_BASE, 2]
        half_height = 0.55 * (top - bottom)
        return cls(y=0.05, z=0.5 * (top + bottom), half_width=0.42 * half_height, half_height=half_height)

    def coordinates(self, head: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each vertex's (s, t) in ear units (the ear's outline is s^2 + t^2 = 1; s grows backwards);
        vertices not on a side of the head get s = t = inf."""
        side = np.abs(head[:, 0]) > 0.5 * np.abs(head[:, 0]).max()
        s = np.where(side, (head[:, 1] - self.y) / self.half_width, np.inf)
        return s, np.where(side, (head[:, 2] - self.z) / self.half_height, np.inf)

    def displacement(self, head: np.ndarray) -> np.ndarray:
        """(V,) outward offset along x: a flap attached at its front edge that stands out most at its
        back, with a raised rim (helix) around a hollow (concha); zero off the ear."""
        s, t = self.coordinates(head)
        r = np.hypot(s, t)
        outline = 1 - _smoothstep(0.7, 1.0, r)
        flare = 0.35 + 0.65 * _smoothstep(-1.0, 0.7, s)
        rim = 0.7 + 0.3 * _smoothstep(0.4, 0.8, r)
        return 0.9 * self.half_width * outline * flare * rim

    def shade(self, head: np.ndarray) -> np.ndarray:
        """(V,) colour factor: the hollow inside the rim darker; 1 off the ear."""
        r = np.hypot(*self.coordinates(head))
        return 1 - 0.2 * (1 - _smoothstep(0.3, 0.75, r))


def _curls(points: np.ndarray, seed: int = 0, waves: int = 12) -> np.ndarray:
    """(V,) a smooth random field in about [-1, 1] (sum of plane waves with 0.08-0.2 unit periods):
    the light and dark of curly hair, the same in every view because it lives on the surface."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(waves, 3))
    directions *= (2 * np.pi / rng.uniform(0.08, 0.2, waves) / np.linalg.norm(directions, axis=1))[:, None]
    return np.sin(points @ directions.T + rng.uniform(0, 2 * np.pi, waves)).sum(1) / np.sqrt(waves / 2)


def _head_colors(unit: np.ndarray, head: np.ndarray, skin: np.ndarray, brim: float, ears: _Ears) -> np.ndarray:
    """Base colours (V, 3) from ellipsoid directions and vertices (V, 3): a cap above the brim (lower
    at the back), curly grey hair from just in front of the ears over the back of the head down to the
    nape, skin on the face, the ears and the neck."""
    s, t = ears.coordinates(head)
    on_ear = 1 - _smoothstep(0.85, 1.05, np.hypot(s, t))
    nape = ears.z - ears.half_height - 0.1 * _smoothstep(0.0, 0.8, unit[:, 1])  # lower at the back
    # The hairline runs down just in front of the ear, and forward over the temple above it.
    front = ears.y - ears.half_width * (1.1 + 1.4 * _smoothstep(ears.z, ears.z + 1.2 * ears.half_height, head[:, 2]))
    hair = _smoothstep(front - 0.03, front + 0.01, head[:, 1]) * _smoothstep(nape - 0.04, nape + 0.04, head[:, 2])
    hair *= 1 - on_ear
    hair_color = np.asarray(_HAIR) * (1 + _CURL_CONTRAST * _curls(head))[:, None]
    hat = _smoothstep(brim - 0.05, brim + 0.05, unit[:, 2] + 0.3 * np.clip(unit[:, 1] + 0.3, 0, None))
    colors = skin * ears.shade(head)[:, None] * (1 - hair[:, None]) + hair_color * hair[:, None]
    return colors * (1 - hat[:, None]) + np.asarray(_HAT) * hat[:, None]


def _neck(axes: np.ndarray, centre_y: float, n_seg: int, n_rings: int = _NECK_RINGS) -> np.ndarray:
    """Vertices of a capped elliptic cylinder from inside the head down out of every frame,
    laid out for `polar_grid_faces(n_rings, n_seg)` (top pole first)."""
    phi = 2 * np.pi * np.arange(n_seg) / n_seg  # counter-clockwise seen from the top pole
    z = np.linspace(-0.25, -2.2, n_rings)
    radius = np.array([0.55 * axes[0], 0.5 * axes[1]])
    ring = np.stack(
        [
            np.broadcast_to(radius[0] * np.cos(phi), (n_rings, n_seg)),
            np.broadcast_to(centre_y + radius[1] * np.sin(phi), (n_rings, n_seg)),
            np.broadcast_to(z[:, None], (n_rings, n_seg)),
        ],
        -1,
    ).reshape(-1, 3)
    return np.concatenate([[[0.0, centre_y, z[0]]], ring, [[0.0, centre_y, z[-1]]]])


def build_avatar(photo: np.ndarray, face: Face, resolution: int = 192) -> Avatar:
    """photo: HxWx3 uint8; face: its 468 landmarks; resolution: grid vertices around the head."""
    lm = face.landmarks.astype(np.float64)
    world = np.stack([lm[:, 0], lm[:, 2], -lm[:, 1]], 1)  # photo pixels -> (x, depth, up)
    centre, axes = _fit_head(world[face_oval_indices()])
    scale = 0.5 / axes[2]  # a head 1 unit tall, centred at the origin
    world, axes = (world - centre) * scale, axes * scale
    oval = world[face_oval_indices()][:, [0, 2]]

    n_rings = resolution // 2
    theta = np.pi * np.arange(1, n_rings + 1) / (n_rings + 1)  # from the front pole
    phi = 2 * np.pi * np.arange(resolution) / resolution
    th, ph = np.meshgrid(theta, phi, indexing="ij")
    unit = np.stack([np.sin(th) * np.cos(ph), -np.cos(th), np.sin(th) * np.sin(ph)], -1).reshape(-1, 3)
    unit = np.concatenate([[[0.0, -1.0, 0.0]], unit, [[0.0, 1.0, 0.0]]])
    head = unit * axes

    # Front vertices move onto the face surface, fading out over the outer band of the oval.
    face_width = np.ptp(oval[:, 0])
    inside = np.where(unit[:, 1] < 0, _signed_distance(head[:, [0, 2]], oval), -np.inf)
    face_weight = _smoothstep(0.0, 0.15 * face_width, inside)
    moving = face_weight > 0
    # A thin-plate spline through the landmarks: smooth, and no overshoot at the landmark hull.
    depth = RBFInterpolator(world[:, [0, 2]], world[:, 1], kernel="thin_plate_spline", smoothing=1e-5)
    head[moving, 1] += face_weight[moving] * (depth(head[moving][:, [0, 2]]) - head[moving, 1])
    texture_weight = _smoothstep(0.0, 0.07 * face_width, inside)
    ears = _Ears.from_landmarks(world)
    head[:, 0] += np.sign(head[:, 0]) * ears.displacement(head)

    uv = np.stack([head[:, 0] / scale + centre[0], -(head[:, 2] / scale + centre[2])], 1)
    in_face = texture_weight > 0.99
    skin = np.median(photo[uv[in_face, 1].astype(int), uv[in_face, 0].astype(int)], axis=0) / 255.0
    colors = _head_colors(unit, head, skin, world[_FOREHEAD, 2] / axes[2], ears)

    neck = _neck(axes, 0.15 * axes[1], resolution // 2)
    n_neck = len(neck)
    neck_faces = polar_grid_faces(_NECK_RINGS, resolution // 2) + len(head)
    faces = np.concatenate([polar_grid_faces(n_rings, resolution), neck_faces])
    nearest = torch.cdist(torch.from_numpy(world), torch.from_numpy(head)).argmin(1)
    as_tensor = lambda v: torch.as_tensor(np.ascontiguousarray(v), dtype=torch.float32)  # noqa: E731
    return Avatar(
        vertices=as_tensor(np.concatenate([head, neck])),
        faces=torch.from_numpy(faces),
        uv=as_tensor(np.concatenate([uv, np.zeros((n_neck, 2))])),
        texture_weight=as_tensor(np.concatenate([texture_weight, np.zeros(n_neck)])),
        base_color=as_tensor(np.concatenate([colors, np.tile(skin, (n_neck, 1))])),
        photo=as_tensor(photo / 255.0),
        face_weight=as_tensor(np.concatenate([face_weight, np.zeros(n_neck)])),
        landmark_vertex_ids=nearest,
    )


def _sample_photo(photo: Tensor, uv: Tensor) -> Tensor:
    """Bilinear lookup of photo (H, W, 3) at pixel coordinates uv (..., 2) -> (..., 3)."""
    height, width = photo.shape[:2]
    grid = torch.stack([uv[..., 0] / width * 2 - 1, uv[..., 1] / height * 2 - 1], -1)
    sampled = F.grid_sample(
        photo.permute(2, 0, 1)[None], grid.reshape(1, 1, -1, 2), align_corners=False, padding_mode="border"
    )
    return sampled[0, :, 0].T.reshape(*uv.shape[:-1], 3)


def render_avatar(avatar: Avatar, cameras: Cameras, supersample: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Render every camera: RGBA (N, H, W, 4) uint8 (straight alpha, white where empty) and depth
    (N, H, W) float32 (camera z of the surface averaged over the covered supersamples; inf where
    empty). `supersample` x `supersample` samples per pixel anti-alias the edges."""
    big = cameras.scaled(supersample)
    shade = _AMBIENT + (1 - _AMBIENT) * (avatar.normals @ _LIGHT).clamp_min(0)
    attributes = torch.cat([avatar.uv, avatar.texture_weight[:, None], avatar.base_color, shade[:, None]], 1)
    pix, depth = big.project(avatar.vertices)
    rgba, depths = [], []
    for i in range(len(big)):
        face_id, bary = rasterize(pix[i], depth[i], avatar.faces, big.height, big.width)
        values = interpolate(torch.cat([attributes, depth[i][:, None]], 1), avatar.faces, face_id, bary)
        weight = values[..., 2:3]
        albedo = weight * _sample_photo(avatar.photo, values[..., :2]) + (1 - weight) * values[..., 3:6]
        colour = albedo * values[..., 6:7]
        covered = (face_id >= 0).to(colour.dtype)[..., None]
        pixel_depth = values[..., 7:8]
        pooled = F.avg_pool2d(torch.cat([colour, pixel_depth, covered], -1).permute(2, 0, 1)[None], supersample)[0]
        pooled = pooled.permute(1, 2, 0)
        alpha = pooled[..., 4:5]
        seen = alpha > 0
        rgba.append(torch.cat([torch.where(seen, pooled[..., :3] / alpha.clamp_min(1e-6), 1.0), alpha], -1))
        depths.append(torch.where(seen, pooled[..., 3:4] / alpha.clamp_min(1e-6), torch.inf)[..., 0])
    rgba_u8 = (torch.stack(rgba).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return rgba_u8, torch.stack(depths).numpy()
