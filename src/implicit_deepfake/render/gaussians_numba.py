"""Compiled (numba) CPU rasterizer: `rasterize_numba`, `gaussians_cpu.rasterize_cpu` with compiled steps.

The projection (`gaussians_numba_projection`) and SH colours (`sh_numba`) have their own modules;
here is the splatting, `splat_numba`, with the results and gradients of `gaussians_cpu.splat_pairs`
(gsplat's `rasterize_to_pixels`: alpha = min(0.999, o exp(-sigma)), skip alpha < 1/255 or sigma < 0,
stop before the Gaussian that would take T to <= 1e-4), as loops instead of tensors, over the pairs
that `gaussians_numba_pairs` orders by depth and lists per tile:

- forward: one tile at a time, its Gaussians front to back, each over the rows of its box inside
  the tile, exp(-sigma) carried along a row and down the box's first column by multiplications
  (where sigma over that rectangle stays moderate; else each row is its ellipse's chord
  (alpha >= 1/255), started by two exps); T and the sums are kept in float64;
- the forward records, when gradients are wanted, each contributing pair's alpha and pixel in the
  order it composited them (room for at most the pairs' box pixels per tile, known from the binning);
- backward: gsplat's gradient over those records, T rebuilt per pixel as the forward built it, what
  lies behind a pair from the forward's per-pixel sums (sum behind = total - sum so far): no second
  walk over the boxes, no exp, no pixel that did not contribute (2.5x faster than walking again).

Tiles are dealt to `chunks` (one per thread) round-robin, each chunk sums its gradients in its own
rows, and the chunks are added at the end: no atomics, and the result does not depend on timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from implicit_deepfake.render.gaussians_composite import ALPHA_MAX, ALPHA_MIN, T_MIN
from implicit_deepfake.render.gaussians_cpu import Projection, rasterize_cpu
from implicit_deepfake.render.gaussians_numba_pairs import (
    SUMS,
    TILE,
    bin_tiles,
    gather_pairs,
    pair_gradients,
    visible_pairs,
)
from implicit_deepfake.render.gaussians_numba_projection import project_gaussians_numba
from implicit_deepfake.render.numba_support import ScratchPool, as_array, as_tensor, kernel_threads, numpy_dtype
from implicit_deepfake.render.sh_numba import sh_colors_numba


@njit(cache=True)
def _tile_rect(tile, tiles_x, tiles_y, width, height):
    """Tile index -> (first pixel index of its image, x0, y0, x1, y1) with x1, y1 exclusive."""
    img, rest = divmod(tile, tiles_x * tiles_y)
    ty, tx = divmod(rest, tiles_x)
    x0, y0 = tx * TILE, ty * TILE
    return img * width * height, x0, y0, min(x0 + TILE, width), min(y0 + TILE, height)


@njit(cache=True)
def _alpha(a, b, c, o, dx, dy, gauss):
    """alpha = min(0.999, o exp(-sigma)) of a Gaussian at offset (dx, dy) = mean - pixel centre, 0 where no hit.

    gauss is exp(-sigma), carried along the row by `_row_exp`: one multiplication instead of an exp.
    """
    sigma = 0.5 * a * dx * dx + 0.5 * c * dy * dy + b * dx * dy
    if sigma < 0.0:
        return 0.0
    alpha = min(ALPHA_MAX, o * gauss)
    return alpha if alpha >= ALPHA_MIN else 0.0


@njit(cache=True)
def _row_exp(mx, a, b, c, dy, px):
    """(exp(-sigma), exp(-(sigma at px + 1 - sigma at px))) at pixel px of a row: sigma is quadratic in px, so
    along the row exp(-sigma) steps by the second factor, which itself steps by exp(-a)."""
    dx = mx - (px + 0.5)
    sigma = 0.5 * a * dx * dx + 0.5 * c * dy * dy + b * dx * dy
    return math.exp(-sigma), math.exp(a * dx - 0.5 * a + b * dy)


# Within a tile, exp(-sigma) is carried from row to row too (sigma is quadratic in py as well) when it stays in
# float64's comfortable range over the tile's part of the box; else each row starts with two exps.
_SIGMA_CARRY_MAX = 200.0


@njit(cache=True)
def _box_exp(mx, my, a, b, c, x_first, x_last, y_first, y_last):
    """-> (carry, (exp(-sigma), x-step, y-step) at pixel (x_first, y_first), exp(-b), exp(-c)).

    carry is False where sigma at a corner of the rectangle (its maximum: sigma is convex) exceeds
    _SIGMA_CARRY_MAX: products of the steps could then underflow.
    """
    for px in (x_first, x_last):
        for py in (y_first, y_last):
            dx, dy = mx - (px + 0.5), my - (py + 0.5)
            if 0.5 * a * dx * dx + 0.5 * c * dy * dy + b * dx * dy > _SIGMA_CARRY_MAX:
                return False, (0.0, 0.0, 0.0), 0.0, 0.0
    dx, dy = mx - (x_first + 0.5), my - (y_first + 0.5)
    gauss, x_step = _row_exp(mx, a, b, c, dy, x_first)
    y_step = math.exp(c * dy - 0.5 * c + b * dx)
    return True, (gauss, x_step, y_step), math.exp(-b), math.exp(-c)


@njit(cache=True)
def _next_row(column, exp_b, exp_c):
    """(exp(-sigma), x-step, y-step) at the box's first column one row down."""
    gauss, x_step, y_step = column
    return gauss * y_step, x_step * exp_b, y_step * exp_c


@njit(cache=True)
def _row_span(mx, dy, a, b, c, level, x_first, x_last):
    """Pixels x_first..x_last of a row (dy = mean - centre) where alpha can reach 1/255 (2 sigma <= level), +-1e-3 px.

    The ellipse's chord on the row, from the quadratic in dx: a dx^2 + 2 b dy dx + c dy^2 = level.
    Boxes are the ellipse's bounding boxes: visiting chords only skips their empty corners.
    """
    half = math.sqrt(max(b * b * dy * dy - a * (c * dy * dy - level), 0.0)) / a
    centre = mx - 0.5 + b * dy / a  # px at dx = -b dy / a
    first = centre - half - 1e-3
    last = centre + half + 1e-3
    return (x_first if first <= x_first else math.ceil(first)), (x_last if last >= x_last else int(last))


@njit(cache=True)
def _row_setup(carry, column, mx, dy, a, b, c, level, x_first, x_last):
    """(first pixel, last pixel, exp(-sigma) there, x-step there) of a row: with carry the tile's whole box row,
    multiplications only (the few pixels outside the ellipse fall under 1/255); else its chord and two exps."""
    if carry:
        return x_first, x_last, column[0], column[1]
    row_first, row_last = _row_span(mx, dy, a, b, c, level, x_first, x_last)
    gauss, step = _row_exp(mx, a, b, c, dy, row_first)
    return row_first, row_last, gauss, step


@njit(cache=True)
def _rgb(features, g):
    """Gaussian g's three features when there are three (RGB, the common case: kept in registers, the loops
    over a run-time feature count cost ~15% of the forward), else zeros (the general loops are used)."""
    if features.shape[1] != 3:
        return 0.0, 0.0, 0.0
    return features[g, 0], features[g, 1], features[g, 2]


@njit(parallel=True, cache=True, fastmath=False)
def _forward(
    xy, conic, opacity, features, lo, hi, start, rows, width, height, tiles_x, tiles_y, chunks, out,
    store, entry_start, entry_alpha, entry_pixel, pair_count,
):  # fmt: skip
    """Composite every tile into out (I*H*W, D + 1) float64: sums of w f (D) and of w (alpha).

    With store, each contributing pair's alpha and pixel (index in its tile) go to entry_alpha and
    entry_pixel from entry_start[tile] on, in compositing order, and pair_count[k] says how many
    pixels the tile list's pair k has there."""
    n_features = features.shape[1]
    n_tiles = len(start) - 1
    for chunk in prange(chunks):
        for tile in range(chunk, n_tiles, chunks):
            first, x0, y0, x1, y1 = _tile_rect(tile, tiles_x, tiles_y, width, height)
            tw = x1 - x0
            n_pixels = tw * (y1 - y0)
            trans = np.ones(n_pixels)  # T in front of the next Gaussian; < 0 once the pixel has stopped
            row_done = np.zeros(TILE, np.int64)  # stopped pixels per row of the tile: whole rows are skipped
            acc = np.zeros((n_pixels, n_features + 1))
            n_done = 0
            entry = entry_start[tile]
            for k in range(start[tile], start[tile + 1]):
                first_entry = entry
                g = rows[k]
                mx, my, a, b, c, o = xy[g, 0], xy[g, 1], conic[g, 0], conic[g, 1], conic[g, 2], opacity[g]
                level = 2.0 * math.log(o / ALPHA_MIN)
                step_step = math.exp(-a)
                f0, f1, f2 = _rgb(features, g)
                x_first, x_last = max(lo[g, 0], x0), min(hi[g, 0], x1 - 1)
                y_first, y_last = max(lo[g, 1], y0), min(hi[g, 1], y1 - 1)
                carry, col, exp_b, exp_c = _box_exp(mx, my, a, b, c, x_first, x_last, y_first, y_last)
                for py in range(y_first, y_last + 1):
                    if py > y_first:
                        col = _next_row(col, exp_b, exp_c)
                    if row_done[py - y0] == tw:
                        continue
                    dy = my - (py + 0.5)
                    row_first, row_last, gauss, step = _row_setup(carry, col, mx, dy, a, b, c, level, x_first, x_last)
                    for px in range(row_first, row_last + 1):
                        if px > row_first:
                            gauss *= step
                            step *= step_step
                        i = (py - y0) * tw + px - x0
                        t = trans[i]
                        if t < 0.0:
                            continue
                        alpha = _alpha(a, b, c, o, mx - (px + 0.5), dy, gauss)
                        if alpha == 0.0:
                            continue
                        t_next = t * (1.0 - alpha)
                        if t_next <= T_MIN:
                            trans[i] = -1.0
                            n_done += 1
                            row_done[py - y0] += 1
                            continue
                        w = alpha * t
                        if n_features == 3:
                            acc[i, 0] += w * f0
                            acc[i, 1] += w * f1
                            acc[i, 2] += w * f2
                        else:
                            for d in range(n_features):
                                acc[i, d] += w * features[g, d]
                        acc[i, n_features] += w
                        trans[i] = t_next
                        if store:
                            entry_alpha[entry] = alpha
                            entry_pixel[entry] = i
                            entry += 1
                if store:
                    pair_count[k] = entry - first_entry
                if n_done == n_pixels:
                    break
            for i in range(n_pixels):
                pixel = first + (y0 + i // tw) * width + x0 + i % tw
                out[pixel] = acc[i]


@njit(parallel=True, cache=True, fastmath=False)
def _backward(
    xy, conic, features, start, rows, width, height, tiles_x, tiles_y,
    entry_start, entry_alpha, entry_pixel, pair_count, out, grad, absgrad, sums,
):  # fmt: skip
    """Per-chunk gradient sums (chunks, V, SUMS + D) of the pairs, given dL/d out (I*H*W, D + 1) float64
    and the forward's records of the contributing pairs.

    Per pixel, L = sum_i w_i s_i with s_i = f_i . dL/dC + dL/dA, so
    dL/d alpha_i = T_i s_i - (sum_{j behind i} w_j s_j) / (1 - alpha_i), and the sum over all j is
    out . grad: the forward's sums.
    """
    n_features = features.shape[1]
    n_tiles = len(start) - 1
    chunks = sums.shape[0]
    for chunk in prange(chunks):
        mine = sums[chunk]
        for tile in range(chunk, n_tiles, chunks):
            first, x0, y0, x1, y1 = _tile_rect(tile, tiles_x, tiles_y, width, height)
            tw = x1 - x0
            n_pixels = tw * (y1 - y0)
            trans = np.ones(n_pixels)
            done_sum = np.zeros(n_pixels)  # sum of w_j s_j over the pairs so far
            total = np.zeros(n_pixels)
            tile_grad = np.empty((n_pixels, n_features + 1))  # the tile's dL/d out, at hand
            for i in range(n_pixels):
                pixel = first + (y0 + i // tw) * width + x0 + i % tw
                for d in range(n_features + 1):
                    tile_grad[i, d] = grad[pixel, d]
                    total[i] += out[pixel, d] * grad[pixel, d]
            grad_features = np.zeros(n_features)  # one Gaussian's sums, added to `mine` once per tile
            entry = entry_start[tile]
            for k in range(start[tile], start[tile + 1]):
                n = pair_count[k]
                if n == 0:
                    continue
                g = rows[k]
                mx, my, a, b, c = xy[g, 0], xy[g, 1], conic[g, 0], conic[g, 1], conic[g, 2]
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = gf0 = gf1 = gf2 = 0.0
                grad_features[:] = 0.0
                f0, f1, f2 = _rgb(features, g)
                for e in range(entry, entry + n):
                    i = entry_pixel[e]
                    alpha = entry_alpha[e]
                    dx = mx - (x0 + i % tw + 0.5)
                    dy = my - (y0 + i // tw + 0.5)
                    t = trans[i]
                    w = alpha * t
                    s = tile_grad[i, n_features]
                    if n_features == 3:
                        g0, g1, g2 = tile_grad[i, 0], tile_grad[i, 1], tile_grad[i, 2]
                        s += f0 * g0 + f1 * g1 + f2 * g2
                        gf0 += w * g0
                        gf1 += w * g1
                        gf2 += w * g2
                    else:
                        for d in range(n_features):
                            s += features[g, d] * tile_grad[i, d]
                            grad_features[d] += w * tile_grad[i, d]
                    done_sum[i] += w * s
                    grad_alpha = t * s - (total[i] - done_sum[i]) / (1.0 - alpha)
                    # Below the 0.999 clamp alpha = o exp(-sigma): d alpha / d sigma = -alpha.
                    grad_sigma = 0.0 if alpha >= ALPHA_MAX else -grad_alpha * alpha
                    gx, gy = grad_sigma * dx, grad_sigma * dy
                    s0 += grad_sigma
                    s1 += gx
                    s2 += gy
                    s3 += gx * dx
                    s4 += gx * dy
                    s5 += gy * dy
                    if absgrad:
                        s6 += abs(a * gx + b * gy)
                        s7 += abs(b * gx + c * gy)
                    trans[i] = t * (1.0 - alpha)  # as the forward: the same T in front of the next pair
                entry += n
                mine[g, 0] += s0
                mine[g, 1] += s1
                mine[g, 2] += s2
                mine[g, 3] += s3
                mine[g, 4] += s4
                mine[g, 5] += s5
                mine[g, 6] += s6
                mine[g, 7] += s7
                if n_features == 3:
                    grad_features[0], grad_features[1], grad_features[2] = gf0, gf1, gf2
                for d in range(n_features):
                    mine[g, SUMS + d] += grad_features[d]


# The forward's records for the backward (each contributing pair's alpha and pixel): up to ~10 bytes per box pixel.
_RECORDS = ScratchPool((np.float64, np.uint8))


class _Composite(torch.autograd.Function):
    """Per-pixel sums of w_i f_i and w_i (w_i = alpha_i T_i) by the compiled kernels, with gsplat's backward.

    Takes the projection's (C, N, ...) outputs whole and gathers the visible pairs (bins["flat"]) itself,
    so their gradients come back whole too: no gather/scatter nodes in the graph.
    """

    @staticmethod
    def forward(ctx, means2d, conics, opacities, features, bins, means2d_for_absgrad):
        dtype = numpy_dtype(features.dtype)
        full = [as_array(t, dtype).reshape(-1, *t.shape[2:]) for t in (means2d, conics, opacities)]
        arrays = [*gather_pairs(*full, bins["flat"]), as_array(features, dtype)]
        out = np.zeros((bins["n_pixels"], features.shape[1] + 1))
        store = bins["store"]
        room, n_pairs = (bins["entry_start"][-1], len(bins["tiles"][1])) if store else (0, 0)
        entries = _RECORDS.take(ctx, room) if store else (np.empty(0), np.empty(0, np.uint8))
        records = (bins["entry_start"], *entries, np.zeros(n_pairs, np.int64))
        _forward(*arrays, *bins["boxes"], *bins["tiles"], *bins["size"], kernel_threads(), out, store, *records)
        ctx.arrays, ctx.bins, ctx.out, ctx.absgrad_of = arrays, bins, out, means2d_for_absgrad
        ctx.records = records
        ctx.shape = means2d.shape[:2]
        result = as_tensor(out, features.dtype)
        return result[:, :-1], result[:, -1]

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        n_features = ctx.arrays[3].shape[1]
        grad = np.empty((len(ctx.out), n_features + 1))
        grad[:, :n_features], grad[:, n_features] = grad_render.numpy(), grad_alpha.numpy()
        n_pairs = len(ctx.arrays[0])
        sums = np.zeros((kernel_threads(), n_pairs, SUMS + n_features))
        xy, conic, _, features = ctx.arrays
        _backward(xy, conic, features, *ctx.bins["tiles"], *ctx.bins["size"], *ctx.records, ctx.out, grad,
                  ctx.absgrad_of is not None, sums)  # fmt: skip
        n_total = ctx.shape[0] * ctx.shape[1]
        grad_xy, grad_conic = np.zeros((n_total, 2)), np.zeros((n_total, 3))
        grad_opacity, absgrad = np.zeros(n_total), np.zeros((n_total, 2))
        grad_features = np.empty((n_pairs, n_features))
        pair_gradients(sums, *ctx.arrays[1:3], ctx.bins["flat"], grad_xy, grad_conic, grad_opacity, absgrad,
                        grad_features)  # fmt: skip
        dtype = grad_render.dtype
        if ctx.absgrad_of is not None:
            ctx.absgrad_of.absgrad = as_tensor(absgrad, dtype).reshape(*ctx.shape, 2)
        grads = [as_tensor(g, dtype).reshape(*ctx.shape, *g.shape[1:]) for g in (grad_xy, grad_conic, grad_opacity)]
        return (*grads, as_tensor(grad_features, dtype), None, None)


def splat_numba(
    proj: Projection, features_of: Callable[[Tensor], Tensor], width: int, height: int, absgrad: bool
) -> tuple[Tensor, Tensor]:
    """`gaussians_cpu.splat_pairs` by the compiled kernels: render (C*H*W, D') and alpha (C*H*W,)."""
    n_cameras = proj.depths.shape[0]
    # float32 bits made order-preserving (as gsplat and the PyTorch path sort them)
    bits = as_array(proj.depths, np.float32).reshape(-1).view(np.uint32)
    keys = np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))
    xy = as_array(proj.means2d).reshape(-1, 2)
    flat, image, lo, hi = visible_pairs(as_array(proj.radii, np.int32), keys, xy, width, height)
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    start, rows, entry_start = bin_tiles(lo, hi, image, tiles_x, tiles_y, n_cameras * tiles_x * tiles_y)
    features = features_of(torch.from_numpy(flat))
    # Records for the backward only where there will be one (not under no_grad: the viewer, evaluation).
    inputs = (proj.means2d, proj.conics, proj.opacities, features)
    bins = {"flat": flat, "n_pixels": n_cameras * width * height, "boxes": (lo, hi), "tiles": (start, rows),
            "size": (width, height, tiles_x, tiles_y), "entry_start": entry_start,
            "store": torch.is_grad_enabled() and any(t.requires_grad for t in inputs)}  # fmt: skip
    return _Composite.apply(proj.means2d, proj.conics, proj.opacities, features, bins,
                            proj.means2d if absgrad else None)  # fmt: skip


def rasterize_numba(*args, **options) -> tuple[Tensor, Tensor, dict]:
    """`gaussians_cpu.rasterize_cpu` with the compiled projection, SH and splatting."""
    return rasterize_cpu(*args, project=project_gaussians_numba, sh=sh_colors_numba, splat=splat_numba, **options)
