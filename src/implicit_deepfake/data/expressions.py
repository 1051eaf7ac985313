"""Facial expressions of the synthetic avatar: a few blendshapes driven by an expression vector.

The vector has NeRFace's 76 entries; the first three drive the face and the rest stay zero:
0 `jaw_open` in [0, 1] (the lower lip, chin and jaw drop, and the opening between the lips
darkens to a mouth interior), 1 `smile` in [-1, 1] (mouth corners out and up; negative: down),
2 `brow_raise` in [-1, 1] (both brows up; negative: down). Each is a linear per-vertex offset
(like FLAME's expression basis), placed with the avatar's mediapipe landmarks and faded out with
its `face_weight`, so skull and neck never move. Texture coordinates stay attached to the
vertices, so the photo's lips, brows and skin move with the surface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from implicit_deepfake.avatar.head import Avatar
from implicit_deepfake.avatar.mesh import smoothstep
from implicit_deepfake.data.nerface import EXPRESSION_DIM

EXPRESSION_NAMES = ("jaw_open", "smile", "brow_raise")
EXPRESSION_RANGES = np.array([[0.0, 1.0], [-1.0, 1.0], [-1.0, 1.0]])
# mediapipe face-mesh landmarks
_MOUTH_LEFT, _MOUTH_RIGHT, _LIPS_INNER = 61, 291, (13, 14)
_BROWS = ((70, 63, 105, 66, 107), (336, 296, 334, 293, 300))  # upper edge of each brow
# Sizes in world units (the head is 1 unit tall).
_LIP = 0.015  # half the band over which the jaw's pull fades in across the mouth line
_JAW = (0.0, 0.012, -0.06)  # jaw_open = 1: down, and a little back (+y is away from the face)
_SMILE = (0.025, 0.004, 0.03)  # smile = 1 at the right corner (x mirrored at the left): out, back, up
_SMILE_SIGMA = 0.035
_BROW = (0.0, 0.0, 0.032)
_BROW_SIGMA = (0.06, 0.03)  # across, up
_MOUTH_INSIDE = np.array([0.22, 0.07, 0.08])  # the dark red of an open mouth, linear [0, 1]


def expression_vector(jaw_open: float = 0.0, smile: float = 0.0, brow_raise: float = 0.0) -> np.ndarray:
    """(76,) float32: a NeRFace-sized expression vector with the avatar's three components set."""
    vector = np.zeros(EXPRESSION_DIM, np.float32)
    vector[: len(EXPRESSION_NAMES)] = (jaw_open, smile, brow_raise)
    return vector


@dataclass(frozen=True)
class ExpressionRig:
    """offsets (K, V, 3): world displacement per unit of each of the K = 3 components;
    mouth (V,) in [0, 1]: how far a vertex turns mouth-interior dark per unit of jaw_open."""

    offsets: Tensor
    mouth: Tensor

    @classmethod
    def for_avatar(cls, avatar: Avatar) -> ExpressionRig:
        vertices = avatar.vertices.double().numpy()
        landmark = lambda i: vertices[int(avatar.landmark_vertex_ids[i])]  # noqa: E731
        weight = avatar.face_weight.double().numpy()[:, None]
        x, z = vertices[:, 0], vertices[:, 2]

        # Jaw: everything below the mouth line (through the corners and the lips' meeting point)
        # drops; the line's band widens beyond the corners, so the cheeks stretch instead of tearing.
        left, right = landmark(_MOUTH_LEFT), landmark(_MOUTH_RIGHT)
        centre = np.mean([landmark(i) for i in _LIPS_INNER], axis=0)
        below = np.interp(x, [left[0], centre[0], right[0]], [left[2], centre[2], right[2]]) - z
        middle, half_width = 0.5 * (left[0] + right[0]), 0.5 * (right[0] - left[0])
        across = np.abs(x - middle)
        band = _LIP + np.clip(across - half_width, 0.0, None)
        jaw = smoothstep(-band, band, below) * (1 - smoothstep(1.3 * half_width, 2.3 * half_width, across))
        # Vertices on the line end up in the middle of the opening: they turn dark.
        mouth = np.exp(-((below / _LIP) ** 2)) * (1 - smoothstep(0.75 * half_width, 1.0 * half_width, across))

        smile = np.zeros_like(vertices)
        for corner, side in ((left, -1.0), (right, 1.0)):
            near = np.exp(-((vertices - corner) ** 2).sum(1) / (2 * _SMILE_SIGMA**2))[:, None]
            smile += near * np.array([side * _SMILE[0], _SMILE[1], _SMILE[2]])

        brow = np.zeros(len(vertices))
        for ids in _BROWS:
            cx, _, cz = np.mean([landmark(i) for i in ids], axis=0)
            brow += np.exp(-0.5 * (((x - cx) / _BROW_SIGMA[0]) ** 2 + ((z - cz) / _BROW_SIGMA[1]) ** 2))

        offsets = np.stack([jaw[:, None] * np.array(_JAW), smile, brow[:, None] * np.array(_BROW)]) * weight
        return cls(
            torch.as_tensor(offsets, dtype=torch.float32), torch.as_tensor(mouth * weight[:, 0], dtype=torch.float32)
        )

    def apply(self, avatar: Avatar, expression: np.ndarray | Tensor) -> Avatar:
        """The avatar with `expression` (D >= 3,) applied (components clipped to their ranges)."""
        low, high = EXPRESSION_RANGES.T
        clipped = np.clip(np.asarray(expression, np.float64)[: len(EXPRESSION_NAMES)], low, high)
        weights = torch.as_tensor(clipped, dtype=torch.float32)
        vertices = avatar.vertices + torch.einsum("k,kvc->vc", weights, self.offsets)
        # Blend the colour toward the mouth's inside: (1 - d) * photo/base mix + d * inside, written
        # back as the renderer's texture weight and base colour.
        dark = (weights[0] * self.mouth)[:, None]
        texture = avatar.texture_weight[:, None]
        new_texture = texture * (1 - dark)
        mixed = (1 - dark) * (1 - texture) * avatar.base_color + dark * torch.as_tensor(
            _MOUTH_INSIDE, dtype=torch.float32
        )
        base = torch.where(1 - new_texture > 1e-6, mixed / (1 - new_texture).clamp_min(1e-6), avatar.base_color)
        return dataclasses.replace(avatar, vertices=vertices, texture_weight=new_texture[:, 0], base_color=base)
