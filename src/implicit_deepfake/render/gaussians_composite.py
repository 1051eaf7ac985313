"""Front-to-back alpha compositing of screen-space Gaussians on the CPU, with gsplat's pixel rules.

Rules (gsplat `rasterize_to_pixels`): pixel centres at +0.5; alpha = min(0.999, o exp(-sigma));
a Gaussian is skipped where alpha < 1/255 or sigma < 0; a pixel stops before the Gaussian that
would take its transmittance T to <= 1e-4.

Why no 16x16 tiles: tiles share work between GPU threads; on a CPU every pixel of a tile outside a
Gaussian's footprint is wasted work. Binning goes down to single pixels instead: each Gaussian is
tested against the pixels of its opacity-aware box (which holds every pixel where its alpha can
reach 1/255), hits are sorted by (pixel, depth) with one integer sort, and T is a segmented
cumulative sum of log(1 - alpha) in float64. Pairs behind a pixel's termination are dropped
before the differentiable part, and the backward is gsplat's, written out with segmented sums,
so neither pass keeps more than a few floats per contributing (pixel, Gaussian) pair.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD
ALPHA_MAX = 0.999
T_MIN = 1e-4
_GRID_ELEMENTS = 1 << 20  # padded box pixels tested per batch: bounds the hit test's memory


@dataclass(frozen=True)
class KeyLayout:
    """Bit layout of a pair's sort key, [image | y | x | Gaussian row], so fields come out by shifts.

    Pixel keys (sort key >> gaussian_bits) run over n_images * 2^y_bits * 2^x_bits slots: the
    images padded to power-of-two sizes; padding slots hold no pairs.
    """

    x_bits: int
    y_bits: int
    gaussian_bits: int
    n_images: int

    @classmethod
    def make(cls, n_gaussians: int, n_images: int, width: int, height: int) -> KeyLayout:
        gaussian_bits = max(1, (n_gaussians - 1).bit_length())
        return cls((width - 1).bit_length(), (height - 1).bit_length(), gaussian_bits, n_images)

    @property
    def n_slots(self) -> int:
        return self.n_images << (self.x_bits + self.y_bits)

    @property
    def dtype(self) -> torch.dtype:
        return torch.int32 if self.n_slots << self.gaussian_bits < 2**31 else torch.int64

    def sort_key(self, image: Tensor, x: Tensor, y: Tensor, row: Tensor) -> Tensor:
        image, x, y, row = (t.to(self.dtype) for t in (image, x, y, row))
        return (((((image << self.y_bits) | y) << self.x_bits) | x) << self.gaussian_bits) | row

    def centres(self, key: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Pixel keys (P,) -> pixel centres x, y (P,)."""
        x = (key & ((1 << self.x_bits) - 1)).to(dtype) + 0.5
        y = ((key >> self.x_bits) & ((1 << self.y_bits) - 1)).to(dtype) + 0.5
        return x, y


@dataclass(frozen=True)
class PixelPairs:
    """Contributing (pixel, Gaussian) pairs sorted by (pixel, depth): (P,) tensors, counts per pixel slot."""

    gaussian: Tensor  # row of the Gaussian in the depth-ordered input
    key: Tensor  # pixel slot, see KeyLayout
    alpha: Tensor
    transmittance: Tensor  # T in front of the Gaussian
    counts: Tensor  # (n_slots,) pairs per pixel slot
    layout: KeyLayout


def _size_classes(side: Tensor) -> tuple[Tensor, list[int]]:
    """Class of each box side (V,): exact up to 16 pixels, then a ~1.25x ladder, so padding stays small."""
    ladder = list(range(1, 17))
    while ladder[-1] < int(side.max()):
        ladder.append(ladder[-1] * 5 // 4)
    return torch.bucketize(side, torch.tensor(ladder, dtype=side.dtype)), ladder


def _box_hits(
    xy: Tensor, conic: Tensor, opacity: Tensor, lo: Tensor, size: Tensor, key0: Tensor, layout: KeyLayout
) -> tuple[Tensor, Tensor]:
    """Pixels of each Gaussian's box where alpha >= 1/255 -> (sort key, alpha), unsorted.

    Boxes of one size class are padded to S x S; sigma is separable in dx (n, S) and dy (n, S),
    so a grid costs a few broadcast ops, and the NaN padding never hits. key0 (V,) is the sort
    key of each box's top-left pixel.
    """
    keys, alphas = [], []
    if len(xy) == 0:
        return torch.empty(0, dtype=key0.dtype), torch.empty(0, dtype=xy.dtype)
    classes, ladder = _size_classes(torch.maximum(size[:, 0], size[:, 1]))
    for cls in torch.unique(classes).tolist():
        s = ladder[cls]
        steps = torch.arange(s, dtype=xy.dtype)
        grid = torch.arange(s, dtype=key0.dtype)
        offsets = (((grid[:, None] << layout.x_bits) | grid) << layout.gaussian_bits).reshape(-1)
        for ids in torch.nonzero(classes == cls).squeeze(1).split(max(1, _GRID_ELEMENTS // (s * s))):
            box_xy = xy.index_select(0, ids) - lo.index_select(0, ids).to(xy.dtype) - 0.5
            box_size = size.index_select(0, ids)
            dx = torch.where(steps < box_size[:, :1], box_xy[:, :1] - steps, torch.nan)  # (n, S)
            dy = torch.where(steps < box_size[:, 1:], box_xy[:, 1:] - steps, torch.nan)
            a, b, c = conic.index_select(0, ids).unbind(1)
            sigma = (0.5 * a[:, None] * dx * dx)[:, None, :] + (0.5 * c[:, None] * dy * dy)[:, :, None]
            sigma.addcmul_((b[:, None] * dy)[:, :, None], dx[:, None, :])
            alpha = torch.neg(sigma).exp_().mul_(opacity.index_select(0, ids)[:, None, None])
            hit = (alpha >= ALPHA_MIN).logical_and_(sigma >= 0)
            flat = torch.nonzero(hit.view(-1)).squeeze(1)
            box_keys = key0.index_select(0, ids)[:, None] + offsets
            keys.append(box_keys.view(-1).index_select(0, flat))
            alphas.append(alpha.view(-1).index_select(0, flat))
    if not keys:
        return torch.empty(0, dtype=key0.dtype), torch.empty(0, dtype=xy.dtype)
    return torch.cat(keys), torch.cat(alphas).clamp_max_(ALPHA_MAX)


def pixel_pairs(
    xy: Tensor, conic: Tensor, opacity: Tensor, image: Tensor, lo: Tensor, size: Tensor, layout: KeyLayout
) -> PixelPairs:
    """The contributing pairs of V Gaussians, given in (image, depth) order (no grad).

    xy (V, 2) pixels, conic (V, 3) [a, b, c] with sigma = a dx^2 / 2 + b dx dy + c dy^2 / 2,
    opacity (V,), image (V,) index; pixel boxes: top-left lo (V, 2) and size (V, 2), inside the image.
    """
    key0 = layout.sort_key(image, lo[:, 0], lo[:, 1], torch.arange(len(xy)))
    sort_key, alpha = _box_hits(xy, conic, opacity, lo, size, key0, layout)
    if len(sort_key) == 0:
        empty = torch.empty(0, dtype=torch.long)
        return PixelPairs(empty, empty, alpha, alpha, torch.zeros(layout.n_slots, dtype=torch.long), layout)
    # Rows are in depth order, so sorting by (pixel, row) puts each pixel's Gaussians front to back.
    sort_key, order = torch.sort(sort_key)
    alpha = alpha.index_select(0, order)
    key = (sort_key >> layout.gaussian_bits).long()

    counts = torch.bincount(key, minlength=layout.n_slots)
    log_t = torch.log1p(-alpha).double()
    before = torch.cumsum(log_t, 0).sub_(log_t)  # log T in front of each pair, over all pixels so far
    starts = (torch.cumsum(counts, 0) - counts).clamp_max_(len(key) - 1)
    transmittance = before.sub_(before.index_select(0, starts).index_select(0, key)).exp_()
    live_mask = transmittance * (1.0 - alpha) > T_MIN
    # A pixel loses a suffix of its run (T only falls), so runs stay contiguous and sorted.
    live = torch.nonzero(live_mask).squeeze(1)
    sort_key = sort_key.index_select(0, live)
    key = (sort_key >> layout.gaussian_bits).long()
    return PixelPairs(
        gaussian=(sort_key & ((1 << layout.gaussian_bits) - 1)).long(),
        key=key,
        alpha=alpha.index_select(0, live),
        transmittance=transmittance.index_select(0, live).to(alpha.dtype),
        counts=torch.bincount(key, minlength=layout.n_slots),
        layout=layout,
    )


class _Composite(torch.autograd.Function):
    """Per-pixel sums of w_i f_i and w_i (w_i = alpha_i T_i), with gsplat's backward written out."""

    @staticmethod
    def forward(ctx, xy, conic, opacity, features, pairs: PixelPairs, on_absgrad):
        weight = pairs.alpha * pairs.transmittance
        with_ones = torch.cat([features, features.new_ones(len(features), 1)], dim=1)  # last channel: alpha
        splat = with_ones.index_select(0, pairs.gaussian).mul_(weight[:, None])
        out = torch.segment_reduce(splat, "sum", lengths=pairs.counts, axis=0, unsafe=True)
        ctx.save_for_backward(xy, conic, opacity, features)
        ctx.pairs, ctx.on_absgrad = pairs, on_absgrad
        return out[:, :-1], out[:, -1]

    @staticmethod
    def backward(ctx, grad_render: Tensor, grad_alpha: Tensor) -> tuple[Tensor | None, ...]:
        xy, conic, opacity, features = ctx.saved_tensors
        p: PixelPairs = ctx.pairs
        g, n_features = p.gaussian, features.shape[1]
        # Channel-first (K, P) layouts keep the per-pair arithmetic on contiguous rows.
        grad_pixel = torch.cat([grad_render.t(), grad_alpha[None]]).index_select(1, p.key)  # (D + 1, P)
        feature = features.t().contiguous().index_select(1, g)  # (D, P)
        weight = p.alpha * p.transmittance
        s = grad_pixel[-1].clone()  # s_i = f_i . dL/dC + dL/dA: what a unit of weight adds to L
        for channel in range(n_features):
            s.addcmul_(feature[channel], grad_pixel[channel])
        rows = torch.empty(6 + n_features, len(g), dtype=s.dtype)
        torch.mul(grad_pixel[:-1], weight, out=rows[6:])  # dL/d features
        # L = sum_i w_i s_i per pixel: dL/d alpha_i = T_i s_i - (sum_{j behind i} w_j s_j) / (1 - alpha_i)
        inclusive = torch.cumsum(weight * s, 0, dtype=torch.float64)
        last = (torch.cumsum(p.counts, 0) - 1).index_select(0, p.key)
        behind = (inclusive.index_select(0, last) - inclusive).to(s.dtype)
        grad_alpha_pair = s.mul_(p.transmittance).sub_(behind.div_(1.0 - p.alpha))
        # Below the 0.999 clamp alpha = o exp(-sigma): d alpha / d sigma = -alpha, d alpha / d o = alpha / o.
        grad_sigma = torch.mul(grad_alpha_pair, p.alpha, out=rows[0]).neg_().masked_fill_(p.alpha >= ALPHA_MAX, 0.0)
        px, py = p.layout.centres(p.key, s.dtype)
        mean = xy.t().contiguous().index_select(1, g)
        dx, dy = mean[0].sub_(px), mean[1].sub_(py)
        gx, gy = torch.mul(grad_sigma, dx, out=rows[1]), torch.mul(grad_sigma, dy, out=rows[2])
        torch.mul(gx, dx, out=rows[3])
        torch.mul(gx, dy, out=rows[4])
        torch.mul(gy, dy, out=rows[5])
        # Conic and opacity are per-Gaussian constants, so they factor out of the per-pair sums.
        sums = torch.zeros(len(rows), len(xy), dtype=s.dtype).index_add_(1, g, rows)
        a, b, c = conic.unbind(1)
        grad_xy = torch.stack([a * sums[1] + b * sums[2], b * sums[1] + c * sums[2]], dim=1)
        grad_conic = torch.stack([0.5 * sums[3], sums[4], 0.5 * sums[5]], dim=1)
        if ctx.on_absgrad is not None:
            a, b, c = conic.t().contiguous().index_select(1, g)
            per_pair = torch.stack([(a * gx + b * gy).abs_(), (b * gx + c * gy).abs_()])
            ctx.on_absgrad(torch.zeros(2, len(xy), dtype=s.dtype).index_add_(1, g, per_pair).t())
        # sum_i (d L / d alpha_i) alpha_i / o = -sum_i grad_sigma_i / o
        return grad_xy, grad_conic, -sums[0] / opacity, sums[6:].t(), None, None


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
    """Render V screen-space Gaussians, given in (image, depth) order, front to back.

    xy (V, 2), conic (V, 3), opacity (V,), features (V, D) differentiable; image (V,), pixel
    boxes lo (V, 2) / size (V, 2) not. Returns render (I*H*W, D) and alpha (I*H*W,) (= 1 - T).
    on_absgrad, if given, receives sum over pixels of |dL/d xy| (V, 2) during backward.
    """
    layout = KeyLayout.make(len(xy), n_images, width, height)
    with torch.no_grad():
        pairs = pixel_pairs(xy, conic, opacity, image, lo, size, layout)
    render, alpha = _Composite.apply(xy, conic, opacity, features, pairs, on_absgrad)
    # Drop the padding slots of the power-of-two key layout.
    slots = (n_images, 1 << layout.y_bits, 1 << layout.x_bits)
    render = render.reshape(*slots, -1)[:, :height, :width].reshape(n_images * height * width, -1)
    return render, alpha.reshape(slots)[:, :height, :width].reshape(-1)
