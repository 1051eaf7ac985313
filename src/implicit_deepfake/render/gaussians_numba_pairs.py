"""The compiled rasterizer's (camera, Gaussian) pairs: their depth order, pixel boxes and tile lists before
compositing, their rows gathered from the projection's outputs, and their gradient sums scattered back.

- depth order: per camera, a radix sort of the visible pairs' float32 depth bits (as gsplat);
- binning: each pair's pixel box is listed in the TILE x TILE tiles it touches, in depth order.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

TILE = 16
# Per-Gaussian gradient sums the backward keeps, in this order, then dL/d feature (D):
# sum grad_sigma, sum grad_sigma dx, dy, dx dx, dx dy, dy dy, sum |dL/d mean2d| x, y (absgrad).
SUMS = 8


@njit(cache=True)
def _box_tiles(lo, hi, g):
    """(first tile row, end tile row, first tile column, end tile column) that Gaussian g's pixel box
    lo[g]..hi[g] (inclusive) touches; empty ranges for an empty box."""
    if hi[g, 0] < lo[g, 0] or hi[g, 1] < lo[g, 1]:
        return 0, 0, 0, 0
    return lo[g, 1] // TILE, hi[g, 1] // TILE + 1, lo[g, 0] // TILE, hi[g, 0] // TILE + 1


@njit(cache=True)
def bin_tiles(lo, hi, image, tiles_x, tiles_y, n_tiles):
    """Gaussian rows per tile, in input (depth) order -> (start (n_tiles + 1,), rows, entry_start (n_tiles + 1,)):
    tile t's rows are rows[start[t]:start[t + 1]], and entry_start[t] sums the box pixels inside the tiles
    before t (the room the forward's records of contributing pairs may need)."""
    counts = np.zeros(n_tiles + 1, np.int64)
    room = np.zeros(n_tiles + 1, np.int64)
    for g in range(len(lo)):
        base = image[g] * tiles_x * tiles_y
        ty0, ty1, tx0, tx1 = _box_tiles(lo, hi, g)
        for ty in range(ty0, ty1):
            for tx in range(tx0, tx1):
                tile = base + ty * tiles_x + tx
                counts[tile + 1] += 1
                width = min(hi[g, 0], tx * TILE + TILE - 1) - max(lo[g, 0], tx * TILE) + 1
                height = min(hi[g, 1], ty * TILE + TILE - 1) - max(lo[g, 1], ty * TILE) + 1
                room[tile + 1] += width * height
    start = np.cumsum(counts)
    rows = np.empty(start[-1], np.int64)
    fill = start[:-1].copy()
    for g in range(len(lo)):
        base = image[g] * tiles_x * tiles_y
        ty0, ty1, tx0, tx1 = _box_tiles(lo, hi, g)
        for ty in range(ty0, ty1):
            for tx in range(tx0, tx1):
                tile = base + ty * tiles_x + tx
                rows[fill[tile]] = g
                fill[tile] += 1
    return start, rows, np.cumsum(room)


@njit(cache=True, error_model="numpy")
def _radix_argsort(keys, order):
    """Sort `order` (indices into keys, uint32) stably by key: three counting passes of 11 bits."""
    spare = np.empty_like(order)
    for shift in range(0, 33, 11):
        counts = np.zeros(2049, np.int64)
        for i in order:
            counts[((keys[i] >> shift) & 2047) + 1] += 1
        counts = np.cumsum(counts)
        for i in order:
            bucket = (keys[i] >> shift) & 2047
            spare[counts[bucket]] = i
            counts[bucket] += 1
        order, spare = spare, order
    return order


@njit(cache=True, error_model="numpy")
def visible_pairs(radii, keys, xy, width, height):
    """Visible pairs in (camera, depth) order and their pixel boxes -> flat (V,), image (V,), lo (V, 2), hi (V, 2).

    radii (C, N, 2); keys (C * N,) uint32, monotone in depth; xy (C * N, 2) pixel means.
    """
    n_cameras, n = radii.shape[0], radii.shape[1]
    flat = np.empty(n_cameras * n, np.int64)
    count = 0
    for cam in range(n_cameras):
        first = count
        for g in range(n):
            if radii[cam, g, 0] > 0 and radii[cam, g, 1] > 0:
                flat[count] = cam * n + g
                count += 1
        flat[first:count] = _radix_argsort(keys, flat[first:count].copy())
    flat = flat[:count]
    image, lo, hi = np.empty(count, np.int64), np.empty((count, 2), np.int64), np.empty((count, 2), np.int64)
    limit = (width - 1, height - 1)
    for k in range(count):
        image[k] = flat[k] // n
        for axis in range(2):
            # Pixel j (centre j + 0.5) is in the box when |j + 0.5 - x| <= r.
            r = radii[image[k], flat[k] % n, axis]
            lo[k, axis] = max(math.ceil(xy[flat[k], axis] - r - 0.5), 0)
            hi[k, axis] = min(math.floor(xy[flat[k], axis] + r - 0.5), limit[axis])
    return flat, image, lo, hi


@njit(cache=True, error_model="numpy")
def gather_pairs(xy, conic, opacity, flat):
    """The pairs' rows of the projection's (C * N, ...) xy, conic, opacity."""
    n = len(flat)
    out_xy, out_conic, out_opacity = np.empty((n, 2), xy.dtype), np.empty((n, 3), xy.dtype), np.empty(n, xy.dtype)
    for k in range(len(flat)):
        f = flat[k]
        out_xy[k, 0], out_xy[k, 1] = xy[f, 0], xy[f, 1]
        out_conic[k, 0], out_conic[k, 1], out_conic[k, 2] = conic[f, 0], conic[f, 1], conic[f, 2]
        out_opacity[k] = opacity[f]
    return out_xy, out_conic, out_opacity


@njit(cache=True, error_model="numpy")
def pair_gradients(sums, conic, opacity, flat, grad_xy, grad_conic, grad_opacity, absgrad, grad_features):
    """Sum the chunks' per-pair sums (chunks, V, SUMS + D) into the (C * N, ...) gradients of the projection's
    outputs, and the pairs' feature gradients (V, D). (Scalar loops: slices per pair took 3x as long.)"""
    for k in range(len(flat)):
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for chunk in range(sums.shape[0]):
            row = sums[chunk, k]
            s0, s1, s2, s3 = s0 + row[0], s1 + row[1], s2 + row[2], s3 + row[3]
            s4, s5, s6, s7 = s4 + row[4], s5 + row[5], s6 + row[6], s7 + row[7]
        for d in range(grad_features.shape[1]):
            total = 0.0
            for chunk in range(sums.shape[0]):
                total += sums[chunk, k, SUMS + d]
            grad_features[k, d] = total
        a, b, c = conic[k, 0], conic[k, 1], conic[k, 2]
        f = flat[k]
        grad_xy[f, 0] = a * s1 + b * s2
        grad_xy[f, 1] = b * s1 + c * s2
        grad_conic[f, 0], grad_conic[f, 1], grad_conic[f, 2] = 0.5 * s3, s4, 0.5 * s5
        # sum_i (dL / d alpha_i) alpha_i / o = -sum_i grad_sigma_i / o
        grad_opacity[f] = -s0 / opacity[k]
        absgrad[f, 0], absgrad[f, 1] = s6, s7
