"""The photo's hair as a volume over the skull and down the back of the head.

The photo's person silhouette, seen from the centre of the skull in the frontal plane, is compared
with the bare skull's silhouette angle by angle: the gap is the hair's thickness at that angle (a
default where the photo cuts the head off). A point of the surface takes the thickness of the angle
matching its elevation above the skull's centre, on its own side, so the back of the head carries
the hair of the sides at the same height, and the crown that of the top. Which points are hair: where
the photo sees the surface, its hair map; elsewhere the hair at the silhouette at that elevation,
and behind the ears the whole back of the skull down to the nape (if the photo shows hair at all).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from implicit_deepfake.avatar.frame import HeadFrame, Proportions
from implicit_deepfake.avatar.mesh import smoothstep
from implicit_deepfake.avatar.photo import PhotoMaps, sample_map

_ANGLES = np.arange(-40.0, 221.0, 2.0)  # frontal-plane angles (degrees from +x, counter-clockwise)
_MAX_THICKNESS = 0.3
_DEFAULT_THICKNESS = 0.04  # where the photo cuts the head off


@dataclass(frozen=True)
class HairProfile:
    """Per frontal-plane angle (_ANGLES): the hair's thickness (world units) and how much the
    silhouette there is hair (0-1); centre: the world point the angles turn about."""

    thickness: np.ndarray
    edge_hair: np.ndarray
    centre: np.ndarray

    def at(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(thickness, edge hair) (V,) for world points (V, 3), by their elevation and side."""
        rel = points - self.centre
        elevation = np.degrees(np.arctan2(rel[:, 2], np.hypot(rel[:, 0], rel[:, 1])))
        right = smoothstep(-0.05, 0.05, rel[:, 0])
        out = []
        for values in (self.thickness, self.edge_hair):
            on_right = np.interp(elevation, _ANGLES, values)
            on_left = np.interp(180.0 - elevation, _ANGLES, values)
            out.append(right * on_right + (1 - right) * on_left)
        return out[0], out[1]

    def thickness_at(self, head: Proportions, points: np.ndarray) -> np.ndarray:
        """(V,) the hair's thickness at world points (V, 3): the profile's, thinning down the back of
        the head to a third at the nape (hair lies flat there)."""
        thickness, _ = self.at(points)
        low = smoothstep(head.nose_base - 0.06, self.centre[2], points[:, 2])
        behind = smoothstep(head.ear_depth - 0.05, head.ear_depth + 0.15, points[:, 1])
        return thickness * (1 - behind * (1 - low) * 0.7)


def _march(mask: np.ndarray, start: np.ndarray, step: np.ndarray, length: int) -> tuple[float, bool]:
    """Pixels from `start` along `step` (unit) until `mask` drops under 0.5; (distance, cut by the frame)."""
    s = np.arange(length, dtype=np.float64)
    points = start + s[:, None] * step
    height, width = mask.shape
    in_frame = (points[:, 0] >= 0) & (points[:, 0] < width) & (points[:, 1] >= 0) & (points[:, 1] < height)
    values = sample_map(mask, points)
    out = (values < 0.5) | ~in_frame
    first = int(np.argmax(out)) if out.any() else length - 1
    return float(s[first]), bool(not in_frame[first] or not out.any())


def hair_profile(maps: PhotoMaps, frame: HeadFrame, skull: np.ndarray, centre: np.ndarray) -> HairProfile:
    """The hair's profile from the photo's person silhouette and the bare skull's vertices (V, 3)."""
    origin = frame.uv(centre[None])[0]
    pixels_per_unit = 1.0 / frame.scale
    skull_uv = frame.uv(skull) - origin
    skull_angle = np.degrees(np.arctan2(-skull_uv[:, 1], skull_uv[:, 0]))
    skull_angle = np.where(skull_angle < -90, skull_angle + 360, skull_angle)
    skull_radius = np.hypot(*skull_uv.T)
    length = int(np.hypot(maps.person.shape[0], maps.person.shape[1])) + 1
    thickness, edge_hair = np.full(len(_ANGLES), np.nan), np.zeros(len(_ANGLES))
    inward = 0.03 * maps.face_height
    for i, angle in enumerate(_ANGLES):
        a = np.radians(angle)
        step = frame.uv((centre + 0.05 * np.array([np.cos(a), 0.0, np.sin(a)]))[None])[0] - origin
        step /= np.linalg.norm(step)
        reach, cut = _march(maps.person, origin, step, length)
        near = np.abs(skull_angle - angle) < 1.5
        skull_reach = skull_radius[near].max() if near.any() else 0.0
        if not cut:
            thickness[i] = np.clip((reach - skull_reach) / pixels_per_unit, 0.0, _MAX_THICKNESS)
        edge_hair[i] = sample_map(maps.hair, (origin + max(reach - inward, 0.0) * step)[None])[0]
    upper = (_ANGLES >= 20) & (_ANGLES <= 160) & np.isfinite(thickness)
    fallback = float(np.median(thickness[upper])) if upper.any() else _DEFAULT_THICKNESS
    thickness = np.where(np.isfinite(thickness), thickness, fallback)
    kernel = np.exp(-0.5 * (np.arange(-4, 5) / 2.0) ** 2)
    kernel /= kernel.sum()
    smooth = lambda v: np.convolve(np.pad(v, 4, mode="edge"), kernel, mode="valid")  # noqa: E731
    return HairProfile(smooth(thickness), smooth(edge_hair), centre)


def hair_coverage(
    maps: PhotoMaps, frame: HeadFrame, head: Proportions, profile: HairProfile, points: np.ndarray, seen: np.ndarray
) -> np.ndarray:
    """(V,) in [0, 1]: how much each surface point (V, 3) is hair; `seen` (V,) in [0, 1]: how well
    the photo sees the point (where it does, the photo's hair map decides)."""
    if not maps.has_hair:
        return np.zeros(len(points))
    in_photo = sample_map(maps.hair, frame.uv(points))
    _, at_edge = profile.at(points)
    rel_z = points[:, 2] - profile.centre[2]
    crown = smoothstep(0.05, 0.2, rel_z)  # the top of the head is hair when the photo shows any
    nape = smoothstep(-0.06, 0.04, points[:, 2] - (head.nose_base - 0.06))
    behind = smoothstep(head.ear_depth - 0.02, head.ear_depth + 0.12, points[:, 1])
    # In front of the ears hair starts at a hairline just before them, running forward over the temples.
    rise = smoothstep(head.brow - 0.05, head.brow + 0.2, points[:, 2])
    hairline = head.ear_depth - 0.1 + rise * (head.front - head.ear_depth + 0.1)
    sides = np.maximum(at_edge, crown) * smoothstep(hairline - 0.03, hairline + 0.03, points[:, 1])
    hidden = (1 - behind) * sides + behind * np.maximum(nape, sides)
    return np.clip(seen * in_photo + (1 - seen) * hidden, 0.0, 1.0)
