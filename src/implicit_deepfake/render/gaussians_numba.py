"""Compiled (numba) front-to-back compositing of screen-space Gaussians: `composite` of gaussians_composite, faster.

Same inputs, outputs, pixel rules and gradients as `gaussians_composite.composite` (gsplat's
`rasterize_to_pixels`: alpha = min(0.999, o exp(-sigma)), skip alpha < 1/255 or sigma < 0, stop
before the Gaussian that would take T to <= 1e-4), as loops instead of tensors:

- binning: each Gaussian's pixel box is listed in the 16x16 tiles it touches, in depth order;
- forward: one tile at a time, its Gaussians front to back, each over the rows of its ellipse
  (alpha >= 1/255) inside the tile, exp(-sigma) carried along a row by multiplications; T and the
  sums are kept in float64;
- backward: the same walk again with gsplat's gradient, where what lies behind a pair comes from
  the forward's per-pixel sums (sum behind = total - sum so far), so nothing per pair is stored.

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
from implicit_deepfake.render.gaussians_cpu import rasterize_cpu
from implicit_deepfake.render.gaussians_numba_projection import project_gaussians_numba
from implicit_deepfake.render.numba_threads import kernel_threads
from implicit_deepfake.render.sh_numba import sh_colors_numba

TILE = 16
# Per-Gaussian gradient sums the backward keeps, in this order, then dL/d feature (D):
# sum grad_sigma, sum grad_sigma dx, dy, dx dx, dx dy, dy dy, sum |dL/d mean2d| x, y (absgrad).
_SUMS = 8


@njit(cache=True)
def _bin_tiles(lo, hi, image, tiles_x, tiles_y, n_tiles):
    """Gaussian rows per tile, in input (depth) order -> (start (n_tiles + 1,), rows)."""
    counts = np.zeros(n_tiles + 1, np.int64)
    for g in range(len(lo)):
        if hi[g, 0] < lo[g, 0] or hi[g, 1] < lo[g, 1]:
            continue
        base = image[g] * tiles_x * tiles_y
        for ty in range(lo[g, 1] // TILE, hi[g, 1] // TILE + 1):
            for tx in range(lo[g, 0] // TILE, hi[g, 0] // TILE + 1):
                counts[base + ty * tiles_x + tx + 1] += 1
    start = np.cumsum(counts)
    rows = np.empty(start[-1], np.int64)
    fill = start[:-1].copy()
    for g in range(len(lo)):
        if hi[g, 0] < lo[g, 0] or hi[g, 1] < lo[g, 1]:
            continue
        base = image[g] * tiles_x * tiles_y
        for ty in range(lo[g, 1] // TILE, hi[g, 1] // TILE + 1):
            for tx in range(lo[g, 0] // TILE, hi[g, 0] // TILE + 1):
                tile = base + ty * tiles_x + tx
                rows[fill[tile]] = g
                fill[tile] += 1
    return start, rows


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


@njit(parallel=True, cache=True, fastmath=False)
def _forward(xy, conic, opacity, features, lo, hi, start, rows, width, height, tiles_x, tiles_y, chunks, out):
    """Composite every tile into out (I*H*W, D + 1) float64: sums of w f (D) and of w (alpha)."""
    n_features = features.shape[1]
    n_tiles = len(start) - 1
    for chunk in prange(chunks):
        for tile in range(chunk, n_tiles, chunks):
            first, x0, y0, x1, y1 = _tile_rect(tile, tiles_x, tiles_y, width, height)
            tw = x1 - x0
            n_pixels = tw * (y1 - y0)
            trans = np.ones(n_pixels)  # T in front of the next Gaussian; < 0 once the pixel has stopped
            acc = np.zeros((n_pixels, n_features + 1))
            n_done = 0
            for k in range(start[tile], start[tile + 1]):
                g = rows[k]
                mx, my, a, b, c, o = xy[g, 0], xy[g, 1], conic[g, 0], conic[g, 1], conic[g, 2], opacity[g]
                level = 2.0 * math.log(o / ALPHA_MIN)
                step_step = math.exp(-a)
                x_first, x_last = max(lo[g, 0], x0), min(hi[g, 0], x1 - 1)
                for py in range(max(lo[g, 1], y0), min(hi[g, 1], y1 - 1) + 1):
                    dy = my - (py + 0.5)
                    row_first, row_last = _row_span(mx, dy, a, b, c, level, x_first, x_last)
                    gauss, step = _row_exp(mx, a, b, c, dy, row_first)
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
                            continue
                        w = alpha * t
                        for d in range(n_features):
                            acc[i, d] += w * features[g, d]
                        acc[i, n_features] += w
                        trans[i] = t_next
                if n_done == n_pixels:
                    break
            for i in range(n_pixels):
                pixel = first + (y0 + i // tw) * width + x0 + i % tw
                out[pixel] = acc[i]


@njit(parallel=True, cache=True, fastmath=False)
def _backward(
    xy, conic, opacity, features, lo, hi, start, rows, width, height, tiles_x, tiles_y, out, grad, absgrad, sums
):
    """Per-chunk gradient sums (chunks, V, _SUMS + D) of the pairs, given dL/d out (I*H*W, D + 1) float64.

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
            for i in range(n_pixels):
                pixel = first + (y0 + i // tw) * width + x0 + i % tw
                for d in range(n_features + 1):
                    total[i] += out[pixel, d] * grad[pixel, d]
            grad_features = np.zeros(n_features)  # one Gaussian's sums, added to `mine` once per tile
            n_done = 0
            for k in range(start[tile], start[tile + 1]):
                g = rows[k]
                mx, my, a, b, c, o = xy[g, 0], xy[g, 1], conic[g, 0], conic[g, 1], conic[g, 2], opacity[g]
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                grad_features[:] = 0.0
                level = 2.0 * math.log(o / ALPHA_MIN)
                step_step = math.exp(-a)
                x_first, x_last = max(lo[g, 0], x0), min(hi[g, 0], x1 - 1)
                for py in range(max(lo[g, 1], y0), min(hi[g, 1], y1 - 1) + 1):
                    dy = my - (py + 0.5)
                    row_first, row_last = _row_span(mx, dy, a, b, c, level, x_first, x_last)
                    gauss, step = _row_exp(mx, a, b, c, dy, row_first)
                    for px in range(row_first, row_last + 1):
                        if px > row_first:
                            gauss *= step
                            step *= step_step
                        i = (py - y0) * tw + px - x0
                        t = trans[i]
                        if t < 0.0:
                            continue
                        dx = mx - (px + 0.5)
                        alpha = _alpha(a, b, c, o, dx, dy, gauss)
                        if alpha == 0.0:
                            continue
                        t_next = t * (1.0 - alpha)
                        if t_next <= T_MIN:
                            trans[i] = -1.0
                            n_done += 1
                            continue
                        pixel = first + py * width + px
                        w = alpha * t
                        s = grad[pixel, n_features]
                        for d in range(n_features):
                            s += features[g, d] * grad[pixel, d]
                            grad_features[d] += w * grad[pixel, d]
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
                        trans[i] = t_next
                mine[g, 0] += s0
                mine[g, 1] += s1
                mine[g, 2] += s2
                mine[g, 3] += s3
                mine[g, 4] += s4
                mine[g, 5] += s5
                mine[g, 6] += s6
                mine[g, 7] += s7
                for d in range(n_features):
                    mine[g, _SUMS + d] += grad_features[d]
                if n_done == n_pixels:
                    break


class _Composite(torch.autograd.Function):
    """Per-pixel sums of w_i f_i and w_i (w_i = alpha_i T_i) by the compiled kernels, with gsplat's backward."""

    @staticmethod
    def forward(ctx, xy, conic, opacity, features, bins, on_absgrad):
        arrays = [t.detach().contiguous().numpy() for t in (xy, conic, opacity, features)]
        out = np.zeros((bins["n_pixels"], features.shape[1] + 1))
        _forward(*arrays, *bins["args"], kernel_threads(), out)
        ctx.save_for_backward(xy, conic, opacity, features)
        ctx.arrays, ctx.bins, ctx.out, ctx.on_absgrad = arrays, bins, out, on_absgrad
        result = torch.from_numpy(out).to(features.dtype)
        return result[:, :-1], result[:, -1]

    @staticmethod
    def backward(ctx, grad_render, grad_alpha):
        xy, conic, opacity, _ = ctx.saved_tensors
        grad = torch.cat([grad_render, grad_alpha[:, None]], dim=1).double().contiguous().numpy()
        sums = np.zeros((kernel_threads(), len(xy), _SUMS + ctx.arrays[3].shape[1]))
        _backward(*ctx.arrays, *ctx.bins["args"], ctx.out, grad, ctx.on_absgrad is not None, sums)
        total = torch.from_numpy(sums.sum(0) if len(sums) > 1 else sums[0]).to(xy.dtype)
        a, b, c = conic.unbind(1)
        grad_xy = torch.stack([a * total[:, 1] + b * total[:, 2], b * total[:, 1] + c * total[:, 2]], dim=1)
        grad_conic = torch.stack([0.5 * total[:, 3], total[:, 4], 0.5 * total[:, 5]], dim=1)
        if ctx.on_absgrad is not None:
            ctx.on_absgrad(total[:, 6:8])
        # sum_i (dL / d alpha_i) alpha_i / o = -sum_i grad_sigma_i / o
        return grad_xy, grad_conic, -total[:, 0] / opacity, total[:, _SUMS:], None, None


def composite(
    xy: Tensor,
    conic: Tensor,
    opacity: Tensor,
    features: Tensor,
    image: Tensor,
    lo: Tensor,
    size: Tensor,
    n_images: int,
    width: int,
    height: int,
    on_absgrad: Callable[[Tensor], None] | None = None,
) -> tuple[Tensor, Tensor]:
    """`gaussians_composite.composite` by the compiled kernels: same arguments, render (I*H*W, D) and alpha (I*H*W,)."""
    tiles_x, tiles_y = -(-width // TILE), -(-height // TILE)
    lo_np = lo.contiguous().numpy().astype(np.int64)
    hi_np = lo_np + size.numpy().astype(np.int64) - 1
    image_np = image.numpy().astype(np.int64)
    start, rows = _bin_tiles(lo_np, hi_np, image_np, tiles_x, tiles_y, n_images * tiles_x * tiles_y)
    bins = {"n_pixels": n_images * width * height, "args": (lo_np, hi_np, start, rows, width, height, tiles_x, tiles_y)}
    render, alpha = _Composite.apply(xy, conic, opacity, features, bins, on_absgrad)
    return render, alpha


def rasterize_numba(*args, **options) -> tuple[Tensor, Tensor, dict]:
    """`gaussians_cpu.rasterize_cpu` with the compiled projection, SH and compositing."""
    return rasterize_cpu(*args, project=project_gaussians_numba, sh=sh_colors_numba, compositor=composite, **options)
