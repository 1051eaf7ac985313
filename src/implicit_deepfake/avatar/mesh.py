"""The head's mesh layout and the smooth fields on it.

One closed surface for head and neck: a capsule grid. A top pole (the crown), then rings of
`n_seg` vertices each, then a bottom pole under the neck. The upper rings lie on rays from a centre
inside the skull (a dome: polar angles 0-90 degrees), the lower rings on horizontal rays from a
vertical axis through the neck, one ring per height: every ray leaves the solid once, so the
surface is the solid's boundary sampled along the rays. Fields on it (a displacement, a colour) are
carried smoothly from where they are known into the rest by harmonic interpolation on the grid.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu

_LAST_MEAN: list = []  # [key, matrix] of the last neighbour_mean


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


@dataclass(frozen=True)
class CapsuleGrid:
    """Rays (V, 3) origins and unit directions, one per vertex, in `polar_grid_faces` order; the
    vertices lie at origins + t * directions."""

    origins: np.ndarray
    directions: np.ndarray
    n_rings: int
    n_seg: int

    @classmethod
    def around(
        cls, centre: np.ndarray, axis_y: float | np.ndarray, heights: np.ndarray, n_dome: int, n_seg: int
    ) -> CapsuleGrid:
        """A dome of `n_dome` rings about `centre` (3,) over horizontal rings at `heights` (top down,
        below the centre) about the points x = 0, y = `axis_y` (one, or one per height) at their
        heights; the bottom pole is there at the last height. Rings turn counter-clockwise seen from
        above (the first pole)."""
        axis_y = np.broadcast_to(np.asarray(axis_y, np.float64), (len(heights),))
        phi = 2 * np.pi * np.arange(n_seg) / n_seg
        around = np.stack([np.cos(phi), np.sin(phi)], 1)
        theta = 0.5 * np.pi * np.arange(1, n_dome + 1) / n_dome  # the last dome ring is horizontal
        dome = np.concatenate(
            [
                np.sin(theta)[:, None, None] * around[None],
                np.broadcast_to(np.cos(theta)[:, None, None], (n_dome, n_seg, 1)),
            ],
            -1,
        ).reshape(-1, 3)
        flat = np.concatenate([np.tile(around, (len(heights), 1)), np.zeros((len(heights) * n_seg, 1))], 1)
        ring_origin = np.stack([np.zeros(len(heights)), axis_y, np.asarray(heights, np.float64)], 1)
        origins = np.concatenate(
            [centre[None], np.tile(centre, (n_dome * n_seg, 1)), ring_origin.repeat(n_seg, 0), ring_origin[-1:]]
        )
        directions = np.concatenate([[[0.0, 0.0, 1.0]], dome, flat, [[0.0, 0.0, -1.0]]])
        return cls(origins, directions, n_dome + len(heights), n_seg)

    @property
    def faces(self) -> np.ndarray:
        return polar_grid_faces(self.n_rings, self.n_seg)

    def points(self, t: np.ndarray) -> np.ndarray:
        return self.origins + t[:, None] * self.directions


def ray_exit(
    inside: Callable[[np.ndarray], np.ndarray],
    origins: np.ndarray,
    directions: np.ndarray,
    t_max: float,
    steps: int = 48,
) -> np.ndarray:
    """(N,) the largest t in [0, t_max] at which `inside` (a signed function of points (M, 3), <= 0
    inside) is <= 0 along each ray: the outermost surface crossing; 0 where the origin is outside."""
    t = np.linspace(t_max, 0.0, steps)
    values = inside((origins[:, None] + t[None, :, None] * directions[:, None]).reshape(-1, 3)).reshape(
        len(origins), steps
    )
    first = np.argmax(values <= 0, axis=1)  # first sample inside, walking in from t_max
    hi = t[np.maximum(first - 1, 0)]
    lo = t[first]
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        out = inside(origins + mid[:, None] * directions) > 0
        hi, lo = np.where(out, mid, hi), np.where(out, lo, mid)
    return np.where(values[np.arange(len(origins)), first] <= 0, lo, 0.0)


class Harmonic:
    """Harmonic interpolation on a mesh's edge graph: values fixed at some vertices, each other
    vertex the mean of its neighbours. One factorisation serves every field with the same fixed set."""

    def __init__(self, faces: np.ndarray, n_vertices: int, fixed: np.ndarray) -> None:
        adjacency = edge_adjacency(_triangle_edges(faces), n_vertices)
        laplacian = sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency
        self.fixed = np.asarray(fixed, bool)
        free = ~self.fixed
        self._coupling = laplacian[free][:, self.fixed]
        self._solver = splu(laplacian[free][:, free].tocsc()) if free.any() else None

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """values (V,) or (V, C), read at the fixed vertices -> the harmonic field (same shape)."""
        out = np.array(values, np.float64)
        if self._solver is not None:
            rhs = -(self._coupling @ out[self.fixed])
            out[~self.fixed] = self._solver.solve(np.asarray(rhs)).reshape(out[~self.fixed].shape)
        return out


def _triangle_edges(faces: np.ndarray) -> np.ndarray:
    """(3F, 2) the edges of triangles (F, 3), each listed by both triangles it borders."""
    return np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])


def edge_adjacency(edges: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) sparse, 1 between the vertices `edges` (E, 2) join: each edge once, whichever way round
    and however often it is listed."""
    edges = np.unique(np.sort(edges, 1), axis=0)
    i, j = np.concatenate([edges[:, 0], edges[:, 1]]), np.concatenate([edges[:, 1], edges[:, 0]])
    return sp.csr_matrix((np.ones(len(i)), (i, j)), shape=(n_vertices, n_vertices))


def edge_mean(edges: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) sparse: each vertex's mean over its neighbours along `edges` (E, 2)."""
    adjacency = edge_adjacency(edges, n_vertices)
    return sp.diags(1.0 / np.maximum(np.asarray(adjacency.sum(1)).ravel(), 1)) @ adjacency


def neighbour_mean(faces: np.ndarray, n_vertices: int) -> sp.csr_matrix:
    """(V, V) sparse: each vertex's mean over its edge neighbours (the last mesh's is kept)."""
    key = (n_vertices, hashlib.blake2b(np.ascontiguousarray(faces).tobytes(), digest_size=16).digest())
    if _LAST_MEAN and _LAST_MEAN[0] == key:
        return _LAST_MEAN[1]
    mean = edge_mean(_triangle_edges(faces), n_vertices)
    _LAST_MEAN[:] = [key, mean]
    return mean


def smooth(faces: np.ndarray, values: np.ndarray, iterations: int) -> np.ndarray:
    """`values` (V,) or (V, C) blurred over the mesh: each step halfway to the neighbours' mean."""
    return smooth_with(neighbour_mean(faces, len(values)), values, iterations)


def smooth_with(mean: sp.csr_matrix, values: np.ndarray, iterations: int) -> np.ndarray:
    """`values` (V,) or (V, C) blurred by `mean` (V, V), a neighbour mean: each step halfway to it."""
    out = np.asarray(values, np.float64)
    for _ in range(iterations):
        out = 0.5 * out + 0.5 * (mean @ out)
    return out


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(V, 3) outward unit normals (area-weighted)."""
    tri = vertices[faces]
    face_normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals = np.zeros_like(vertices)
    for k in range(3):
        np.add.at(normals, faces[:, k], face_normals)
    return normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)


def smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3 - 2 * t)
