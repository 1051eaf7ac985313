"""The head's shape: a skull, jaw and neck proportioned from the face mesh, with the face's relief.

A template solid (a smooth union of a cranium, a jaw and a neck, sized from the face's landmarks:
see frame.py's proportions) is sampled along the rays of a capsule grid (mesh.py). Inside the face
oval the surface is the face itself: a thin-plate spline through the 3D landmarks, met along each
ray; the difference to the template is carried harmonically into the cheeks, temples, jaw line and
under the chin, so the face's relief fades smoothly into the skull. Ears are pushed out of the sides.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as Polygon
from scipy.interpolate import RBFInterpolator
from scipy.ndimage import map_coordinates

from implicit_deepfake.avatar.frame import Proportions
from implicit_deepfake.avatar.mesh import CapsuleGrid, Harmonic, ray_exit, smooth, smoothstep

NECK_BOTTOM = -2.2  # out of every frame
_BLEND = 0.06  # smooth-union radius of the template's parts
_RIM = 0.04  # the face oval's rim is rounded over about this distance (world units)
_RELIEF, _RELIEF_SMOOTHING = 0.6, 10.0
_FACE_FADE = 0.15  # the face's difference to the template fades out this far beyond its oval (world units)


def _ellipsoid(p: np.ndarray, centre: np.ndarray, axes: np.ndarray) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipsoid (negative inside); axes (..., 3)."""
    q = (p - centre) / axes
    k0 = np.linalg.norm(q, axis=-1)
    k1 = np.linalg.norm(q / axes, axis=-1)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-9)


def _smooth_min(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    h = np.clip(k - np.abs(a - b), 0.0, None) / k
    return np.minimum(a, b) - 0.25 * k * h * h


@dataclass(frozen=True)
class Template:
    """The head's solid: a cranium (an ellipsoid whose lower half is shorter), the face's prism (the
    face surface in front, the face oval's outline carried straight back to the ears: cheeks, jaw
    and chin) and a neck (an elliptic cylinder leaning back a little), smoothly united."""

    cranium_centre: np.ndarray
    cranium_axes: np.ndarray  # x, y, z above the centre, z below it
    face: FaceSurface
    face_back: float  # the prism's back (y)
    neck_centre: np.ndarray  # x, y at the top of the neck (z = neck_top)
    neck_axes: np.ndarray
    neck_top: float

    @classmethod
    def fit(cls, head: Proportions) -> Template:
        ear_y = head.ear_depth
        centre = np.array([0.0, 0.5 * (head.front + head.back), head.brow])
        below = head.brow - (head.nose_base - 0.04)
        axes = np.array([0.5 * head.breadth, 0.5 * (head.back - head.front), head.crown - head.brow, below])
        return cls(
            cranium_centre=centre,
            cranium_axes=axes,
            face=FaceSurface(head.landmarks, head.oval),
            face_back=ear_y + 0.05,
            neck_centre=np.array([0.0, ear_y + 0.02]),
            neck_axes=np.array([0.42 * head.face_width, 0.22]),
            neck_top=head.nose_base,
        )

    def __call__(self, p: np.ndarray) -> np.ndarray:
        """(N,) signed distance-like value of points (N, 3), negative inside."""
        c, a = self.cranium_centre, self.cranium_axes
        above = p[:, 2] > c[2]
        cranium = _ellipsoid(p, c, np.where(above[:, None], a[[0, 1, 2]], a[[0, 1, 3]]))
        xz = p[:, [0, 2]]
        prism = np.maximum(np.maximum(-self.face.outline(xz), self.face.depth(xz) - p[:, 1]), p[:, 1] - self.face_back)
        # The neck leans back as it goes down, and its back grows toward the shoulders.
        drop = np.clip(self.neck_top - p[:, 2], 0.0, None)
        centre_y = self.neck_centre[1] + 0.12 * drop
        axes = np.stack([self.neck_axes[0] * (1 + 0.15 * drop), self.neck_axes[1] * (1 + 0.2 * drop)], 1)
        q = np.stack([p[:, 0] - self.neck_centre[0], p[:, 1] - centre_y], 1)
        k0 = np.linalg.norm(q / axes, axis=1)
        neck = k0 * (k0 - 1.0) / np.maximum(np.linalg.norm(q / axes**2, axis=1), 1e-9)
        neck = np.maximum(neck, np.maximum(NECK_BOTTOM - p[:, 2], p[:, 2] - self.cranium_centre[2]))
        return _smooth_min(_smooth_min(cranium, prism, _BLEND), neck, 2 * _BLEND)


def _signed_distance(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance (P,) from 2D points (P, 2) to a closed polygon (K, 2), positive inside."""
    a, ab = polygon, np.roll(polygon, -1, axis=0) - polygon
    t = np.clip(((points[:, None] - a) * ab).sum(-1) / (ab * ab).sum(-1), 0.0, 1.0)
    dist = np.linalg.norm(points[:, None] - (a + t[..., None] * ab), axis=-1).min(1)
    return np.where(Polygon(polygon).contains_points(points), dist, -dist)


class FaceSurface:
    """The face as a depth map y = h(x, z) (a thin-plate spline through the landmarks) and its
    outline (the signed distance to the face oval in the x-z plane, positive inside), tabulated on
    a grid over the face and a margin around it for fast lookups (edge values beyond)."""

    def __init__(self, landmarks: np.ndarray, oval: np.ndarray, margin: float = 0.15, cells: int = 192) -> None:
        low, high = landmarks[:, [0, 2]].min(0) - margin, landmarks[:, [0, 2]].max(0) + margin
        xz, y = landmarks[:, [0, 2]], landmarks[:, 1]
        spline = RBFInterpolator(xz, y, kernel="thin_plate_spline", smoothing=1e-5)
        # mediapipe's relief (nose, brows, lips, sockets) is deeper than faces are: scaled about a
        # smooth fit of the same landmarks (the face's overall curve).
        curve = RBFInterpolator(xz / np.ptp(xz[:, 1]), y, kernel="thin_plate_spline", smoothing=_RELIEF_SMOOTHING)
        gx, gz = np.meshgrid(np.linspace(low[0], high[0], cells), np.linspace(low[1], high[1], cells), indexing="ij")
        grid = np.stack([gx.ravel(), gz.ravel()], 1)
        overall = curve(grid / np.ptp(xz[:, 1]))
        self._depth = (overall + _RELIEF * (spline(grid) - overall)).reshape(cells, cells)
        self._outline = _signed_distance(grid, oval[:, [0, 2]]).reshape(cells, cells)
        self._low, self._step = low, (high - low) / (cells - 1)

    def _lookup(self, table: np.ndarray, xz: np.ndarray) -> np.ndarray:
        return map_coordinates(table, ((xz - self._low) / self._step).T, order=1, mode="nearest")

    def depth(self, xz: np.ndarray) -> np.ndarray:
        """(N,) face depth y at points (N, 2) (x, z)."""
        return self._lookup(self._depth, xz)

    def outline(self, xz: np.ndarray) -> np.ndarray:
        """(N,) signed distance to the face oval at points (N, 2) (x, z), positive inside."""
        return self._lookup(self._outline, xz)

    def hit(self, origins: np.ndarray, directions: np.ndarray, t_max: float) -> np.ndarray:
        """(N,) ray parameter where each ray (starting behind the face, heading forward) meets it."""
        lo, hi = np.zeros(len(origins)), np.full(len(origins), t_max)
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            p = origins + mid[:, None] * directions
            behind = p[:, 1] > self.depth(p[:, [0, 2]])
            lo, hi = np.where(behind, mid, lo), np.where(behind, hi, mid)
        return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Ears:
    """Where the ears sit (world units): centre depth y and height z, half width and height."""

    y: float
    z: float
    half_width: float
    half_height: float

    @classmethod
    def from_proportions(cls, head: Proportions) -> Ears:
        """An ear spans from the brows down to the base of the nose, its front at the ear canal."""
        half_height = 0.55 * (head.brow - head.nose_base)
        half_width = 0.42 * half_height
        return cls(y=head.ear_depth + 0.6 * half_width, z=0.5 * (head.brow + head.nose_base) - 0.02,
                   half_width=half_width, half_height=half_height)  # fmt: skip

    def coordinates(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each point's (s, t) in ear units (the outline is s^2 + t^2 = 1; s grows backwards);
        inf for points not on a side of the head."""
        side = np.abs(points[:, 0]) > 0.5 * np.abs(points[:, 0]).max()
        s = np.where(side, (points[:, 1] - self.y) / self.half_width, np.inf)
        return s, np.where(side, (points[:, 2] - self.z) / self.half_height, np.inf)

    def displacement(self, points: np.ndarray) -> np.ndarray:
        """(V,) outward offset along x: a flap attached at its front edge that stands out most at its
        back, with a raised rim (helix) around a hollow (concha); zero off the ear."""
        s, t = self.coordinates(points)
        r = np.hypot(s, t)
        outline = 1 - smoothstep(0.7, 1.0, r)
        flare = 0.35 + 0.65 * smoothstep(-1.0, 0.7, s)
        rim = 0.7 + 0.3 * smoothstep(0.4, 0.8, r)
        return 0.8 * self.half_width * outline * flare * rim

    def weight(self, points: np.ndarray) -> np.ndarray:
        """(V,) 1 on the ear, 0 off it."""
        return 1 - smoothstep(0.85, 1.05, np.hypot(*self.coordinates(points)))

    def occlusion(self, points: np.ndarray) -> np.ndarray:
        """(V,) light reaching the surface: the hollow inside the rim and the groove behind the ear darker."""
        s, t = self.coordinates(points)
        r = np.hypot(s, t)
        return 1 - 0.3 * (1 - smoothstep(0.25, 0.7, r)) - 0.12 * np.exp(-(((r - 1.05) / 0.15) ** 2)) * (s > 0)


@dataclass(frozen=True)
class HeadShape:
    """The closed head-and-neck surface before hair: the grid, the ray parameter of each vertex,
    the face weight (1 inside the face oval, fading to 0 outside: where expressions act) and the ears."""

    grid: CapsuleGrid
    t: np.ndarray
    face_weight: np.ndarray
    ears: Ears
    template: Template

    @property
    def vertices(self) -> np.ndarray:
        return self.grid.points(self.t)


def head_grid(head: Proportions, template: Template, resolution: int) -> CapsuleGrid:
    """The capsule grid: a dome over the cranium's centre and one ring every ~1.3 vertex spacings
    below it, finer over the head than down the neck."""
    spacing = 2 * np.pi * 0.4 / resolution
    centre = template.cranium_centre
    n_dome = max(4, round(0.5 * np.pi * 0.45 / spacing / 1.3))
    head_rings = np.arange(centre[2] - spacing, -0.85, -1.3 * spacing)
    neck_rings = np.linspace(-0.85, NECK_BOTTOM, max(4, resolution // 16))
    heights = np.concatenate([head_rings, neck_rings])
    # The rings' axis runs from the dome's centre down to the neck's: where rays from two different
    # points met, the face's vertices sheared sideways into a crease across the forehead.
    down = smoothstep(centre[2], -0.85, heights)
    axis_y = (1 - down) * centre[1] + down * template.neck_centre[1]
    return CapsuleGrid.around(centre, axis_y, heights, n_dome, resolution)


def build_shape(head: Proportions, resolution: int) -> HeadShape:
    template = Template.fit(head)
    grid = head_grid(head, template, resolution)
    t = ray_exit(template, grid.origins, grid.directions, 2.6)
    inside = np.where(grid.directions[:, 1] < 0, template.face.outline(grid.points(t)[:, [0, 2]]), -1.0)
    # Inside the oval the face itself (the cranium's ellipsoid had stood in front of it at the sides of
    # the forehead and filled the eye sockets), its difference to the template carried harmonically out
    # to _FACE_FADE beyond the oval.
    face = inside > 0
    to_face = np.zeros_like(t)
    to_face[face] = template.face.hit(grid.origins[face], grid.directions[face], 2.6) - t[face]
    t = t + Harmonic(grid.faces, len(t), face | (inside < -_FACE_FADE) | (grid.directions[:, 1] >= 0))(to_face)
    # Round off the oval's rim, where the face's steep sides meet the cheeks and temples.
    rim = np.exp(-((inside / _RIM) ** 2))
    t = t + rim * (smooth(grid.faces, t, 8) - t)
    ears = Ears.from_proportions(head)
    t = t + ears.displacement(grid.points(t)) * np.abs(grid.directions[:, 0])
    face_weight = smoothstep(0.0, 0.15 * head.face_width, inside)
    return HeadShape(grid, t, face_weight, ears, template)
