"""The target's face proportions on each frame's face: where its eyes, nose, mouth and jaw line sit.

A landmark warp alone puts the target's skin on the frame's own geometry, and face recognition
reads identity from the geometry as much as from the skin (on real clips, dlib, 5 clips x 4 targets:
0.56 from the target with the frame's shape, 0.44 with the target's). So the driving landmarks are
moved by the target's offset from the base face: both faces are aligned (a similarity on the rigid
landmarks, as the head tracker does), the offset is taken in that common frame, and each frame gets
it turned and scaled by its own pose. What the frame's face does (its mouth, lids and brows moving)
rides on top, since only the identity offset is added. The frame itself is then bent by a smooth
displacement field so its jaw, ears and hair follow the new face outline instead of showing beside it.

The base face is the generalised-Procrustes mean of the calibration frames (a video's frames, or
a multi-view dataset's views of its one face). The photo has an expression of its own (a smile, eyes
wide open), which is not identity: the offset's share along the base's own ways of moving its mouth,
lids and brows (the leading modes of its `OPENINGS`, each with the whole face's move that goes with
it) is taken out, fitted on those openings alone, which a wider or longer face barely changes. A
multi-view head never moves: it has no modes, and the photo's expression goes along (its smile, its
teeth). One rigid head cannot be bent alike in every view, so there the outline stays the base's
(`outline=False`): the offset fades out towards the face oval, and only the eyes, brows, nose and
mouth move, and a photo of a turned head gives less of its offset there, none from TURNED[1] degrees of
yaw (measured on one 20-degree portrait: with its inner offset the default head went 0.53 -> 0.64 from
it, dlib; on a video, outline and all, its offset brings the frames nearer, 0.73 -> 0.62 on one clip).
Above the upper lids the frame is bent by the offset's affine part only (`_broad`): neighbouring brow
points offset differently (the photo's brow tails, a fringe's tips) would fold the frame's brows into
waves and horns between them, where thick brows reach past the swapped face. The swapped face keeps
the exact offset (the photo's brow shape is identity), unless the photo's brows hang under a fringe:
then they are mediapipe's guesses, and the face takes the offset smoothed there (`guessed_brows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
import scipy.sparse as sp
from scipy.interpolate import RBFInterpolator

from implicit_deepfake.avatar.frame import face_rotation, photo_space
from implicit_deepfake.avatar.mesh import edge_mean, smooth_with, smoothstep
from implicit_deepfake.data.face_tracking import mean_face, similarity_fit
from implicit_deepfake.faces.landmarks import EYE_CORNERS, EYE_OUTLINES, IRISES, Face, eye_opening, face_oval_indices

MESH_POINTS = 468  # the irises (468-477 of a refined mesh) follow their eye's outline
FIELD_STEP = 8  # the displacement field is evaluated on a grid this many pixels apart, then resized
# The field fades from full inside FADE[0] x the face size from the face centre to none beyond FADE[1].
FADE = (0.6, 1.0)
# Mesh point pairs across the inner and outer lips, across each eye's lids, and from each brow to its eye.
OPENINGS = (
    *((13, 14), (82, 87), (312, 317), (81, 178), (311, 402), (80, 88), (310, 318), (0, 17), (37, 84), (267, 314)),
    *((159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373)),
    *((70, 159), (63, 159), (105, 159), (66, 159), (107, 159)),
    *((300, 386), (293, 386), (334, 386), (296, 386), (336, 386)),
)
EXPRESSION_SHARE = 0.95  # the expression modes: the leading ones that make up this share of the openings' variance
OUTLINE_FADE = 0.12  # outline=False: the offset grows from none on the face oval to full this far in (face sizes)
TURNED = (10.0, 20.0)  # outline=False: the photo's yaw (degrees) from which its offset fades, and where it is gone
# Steps of smoothing the offset takes over the face mesh above the eyes when the photo's brows are
# guessed (`_smoothed`): at a brow under a fringe neighbours differed by up to 3% of the face size.
SMOOTHING = 4
UPPER_LIDS, _BROWS = (159, 386), (105, 334)  # mesh points: the middle of each upper lid and each brow


def _openings(points: np.ndarray) -> np.ndarray:
    """(..., P, 3) -> (..., len(OPENINGS), 3): each pair's difference: how open the mouth and eyes are
    and how high the brows sit. The expression modes are fitted on these alone: a face wider or
    longer than the base's moves its points too, but barely these differences."""
    first, second = (np.array(side) for side in zip(*OPENINGS))
    return points[..., first, :] - points[..., second, :]


def _expression_moves(deviations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, P, 3) each frame's aligned landmarks minus the mean face -> the face's own ways of
    opening its mouth and eyes and raising its brows: (K, F) orthonormal modes of its `_openings`
    (the leading EXPRESSION_SHARE of their variance) and (K, P, 3) the whole face's move per unit of
    each (its jaw drops as its lips part), regressed over the frames."""
    openings = _openings(deviations).reshape(len(deviations), -1)
    left, sigma, modes = np.linalg.svd(openings, full_matrices=False)
    if float((sigma**2).sum()) < 1e-12:  # a face that never moves
        return modes[:0], np.zeros((0, *deviations.shape[1:]))
    count = int(np.searchsorted(np.cumsum(sigma**2) / (sigma**2).sum(), EXPRESSION_SHARE)) + 1
    amounts = left[:, :count] * sigma[:count]  # (N, K) each frame's amount of each mode
    moves = np.linalg.lstsq(amounts, deviations.reshape(len(deviations), -1), rcond=None)[0]
    return modes[:count], moves.reshape(count, *deviations.shape[1:])


def _inner_weights(face: np.ndarray) -> np.ndarray:
    """(P,) in [0, 1]: 0 on the face oval, rising to 1 at OUTLINE_FADE x the face size inside it."""
    oval = face[face_oval_indices(), :2]
    distance = np.linalg.norm(face[:, None, :2] - oval[None], axis=2).min(1)
    return smoothstep(0.0, OUTLINE_FADE * float(np.ptp(face[:, :2], 0).max()), distance)


@lru_cache(maxsize=1)
def _neighbour_mean() -> sp.csr_matrix:
    """(468, 468) each mesh point's mean over its neighbours in mediapipe's face tessellation (which
    leaves the eyes and the mouth open: the lids and the lips are not smoothed into each other)."""
    import mediapipe as mp

    return edge_mean(np.array(sorted(mp.solutions.face_mesh.FACEMESH_TESSELATION)), MESH_POINTS)


def _above_lids(offset: np.ndarray, base: np.ndarray, reach: float) -> tuple[np.ndarray, np.ndarray]:
    """The offset's part beyond the best affine map of the base's points (P, 3): what makes the
    photo's brows and forehead their own shape, not only a wider, longer or sheared face; and (P, 1)
    weights rising from 0 at the upper lids' middle to 1 at `reach` of the way up to the brows'."""
    design = np.concatenate([base, np.ones((len(base), 1))], 1)
    rest = offset - design @ np.linalg.lstsq(design, offset, rcond=None)[0]
    lids, brows = base[list(UPPER_LIDS), 1].mean(), base[list(_BROWS), 1].mean()
    return rest, smoothstep(lids, lids + reach * (brows - lids), base[:, 1])[:, None]  # image y grows downwards


def _smoothed(offset: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The offset (P, 3) at the base's points (P, 3) with the brows' and the forehead's landmark noise
    taken out: under a fringe, where mediapipe guesses them, neighbours a few pixels apart are offset
    differently. Its part beyond the best affine map (a wider, longer or sheared face, kept exactly) is
    smoothed over the mesh, SMOOTHING steps each halfway to the neighbours' mean, from the upper lids
    up; the eyes, nose, mouth and jaw keep their offset as it is (their shapes are identity)."""
    rest, upper = _above_lids(offset, base, 1.0)
    return offset + upper * (smooth_with(_neighbour_mean(), rest, SMOOTHING) - rest)


def _broad(offset: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The offset (P, 3) the frame is bent by: above the upper lids only its affine part (the photo's
    brows and forehead are drawn by the swapped face; the frame's brows, which may reach past it, then
    bend as one smooth arch: uneven brow points fold them, and 4 steps of smoothing still left waves
    on raised brows), in full from halfway up to the brows; the face oval's points (the outline the
    frame's jaw and hair follow), the eyes and below as they are."""
    rest, upper = _above_lids(offset, base, 0.5)
    upper[face_oval_indices()] = 0.0
    return offset - upper * rest


def _frontal_weight(face: np.ndarray) -> float:
    """1 for a photo of a frontal face, fading to 0 between TURNED[0] and TURNED[1] degrees of yaw."""
    right = face_rotation(photo_space(Face(face.astype(np.float32))))[0]
    yaw = abs(float(np.degrees(np.arctan2(right[1], right[0]))))
    return float(smoothstep(TURNED[1], TURNED[0], np.array(yaw)))


@dataclass(frozen=True)
class ShapeOffset:
    """base: (468, 3) the base's mean face; rigid: the landmark ids its alignments are fitted on;
    offset: (468, 3) the target's landmarks minus the base's, in the base's frame; bend_offset:
    the one the frame is bent by (`_broad`); lids: the base's lids move (a video's, not a multi-view
    head's, whose eyes look more or less open only as its views look down or up at them)."""

    base: np.ndarray
    rigid: np.ndarray
    offset: np.ndarray
    bend_offset: np.ndarray
    lids: bool = False

    @classmethod
    def fit(
        cls,
        base_faces: Sequence[np.ndarray],
        target: np.ndarray,
        strength: float = 1.0,
        outline: bool = True,
        guessed_brows: bool = False,
        lids: bool = False,
    ) -> ShapeOffset:
        """base_faces: the base's landmarks (P, 3) in some frames or views (one or more); target:
        the photo's (P, 3). strength scales the offset (0: the frame's shape, 1: the target's);
        outline: the face oval moves too (else it stays the base's, see the module doc);
        guessed_brows: the photo's brows are under a fringe, their landmarks mediapipe's guesses
        (`_smoothed`); lids: the base's lids move, so the offset opens each frame's eyes in proportion
        (`_open_lids_in_proportion`)."""
        stack = np.stack([np.asarray(f, np.float64)[:MESH_POINTS] for f in base_faces])
        points = np.asarray(target, np.float64)[:MESH_POINTS]
        if len(stack) == 1:
            base, rigid = stack[0], np.arange(MESH_POINTS)
        else:
            base, rigid, aligned = mean_face(stack)
        scale, rotation, shift = similarity_fit(points[rigid], base[rigid])
        offset = scale * points @ rotation.T + shift - base
        if len(stack) > 1:  # what the base's own face does is expression, not identity: that share goes
            modes, moves = _expression_moves(aligned - base)
            offset -= np.tensordot(modes @ _openings(offset).ravel(), moves, 1)
        offset = strength * offset.reshape(base.shape)
        bend = _broad(offset, base)
        offset = _smoothed(offset, base) if guessed_brows else offset
        if not outline:  # (a multi-view head is not bent)
            offset = offset * _frontal_weight(points) * _inner_weights(base)[:, None]
        return cls(base, rigid, offset, bend, lids)

    def apply(self, landmarks: np.ndarray, bend: bool = False) -> np.ndarray:
        """A frame's landmarks (P, 3) -> the same face with the target's proportions (P, 3): the
        offset (the bend's if `bend`) turned and scaled by the frame's pose; irises moved with their
        eye's outline."""
        points = np.asarray(landmarks, np.float64)
        scale, rotation, _ = similarity_fit(self.base[self.rigid], points[self.rigid])
        moved = scale * (self.bend_offset if bend else self.offset) @ rotation.T
        for side in range(len(EYE_OUTLINES) if self.lids else 0):
            _open_lids_in_proportion(moved, points, self.base, side)
        out = points.copy()
        out[:MESH_POINTS] += moved
        if len(points) > MESH_POINTS:
            for eye, iris in zip(EYE_OUTLINES, IRISES):
                out[list(iris)] += (out[list(eye)] - points[list(eye)]).mean(0)
        return out.astype(np.float32)


def _open_lids_in_proportion(moved: np.ndarray, points: np.ndarray, base: np.ndarray, eye: int) -> None:
    """The offset `moved` (P, 3, in the frame's pixels) opens the frame's eye (`points`, P, 3) in proportion
    to how open it is against the base's mean face (`base`): the part of its lids' offset across the eye
    (their change of shape, less the eye's mean move) is scaled by that share, at most 1. A shut eye stays
    shut (added in full, the photo's smaller eyes turned a blink's lids inside out), one open as usual
    takes the photo's whole eye. In place."""
    share = min(1.0, eye_opening(points, eye) / max(eye_opening(base, eye), 1e-6))
    if share >= 1.0:
        return
    ids = list(EYE_OUTLINES[eye])
    first, second = (points[i, :2] for i in EYE_CORNERS[eye])
    along = (second - first) / max(float(np.linalg.norm(second - first)), 1e-6)
    normal = np.array([along[1], -along[0]])
    change = moved[ids, :2] - moved[ids, :2].mean(0)
    moved[ids, :2] -= (1.0 - share) * (change @ normal)[:, None] * normal


def bend_frame(frame: np.ndarray, source: np.ndarray, moved: np.ndarray, still: np.ndarray | None = None) -> np.ndarray:
    """`frame` (HxWxC) bent so what it shows at the landmarks `source` (P, 2+) lies at `moved`
    (P, 2+): a thin-plate spline through the landmarks' displacements (exactly: a pixel's error in an
    eye corner would move the measured gaze by a fortieth of the eye), fading to none around the
    face (FADE), pulls each output pixel from its place in the frame. still: (H, W) in [0, 1], where
    the frame's own pixel stays (the background behind the person: the edge of a wall behind the
    head stays straight instead of waving with the jaw line)."""
    source, moved = np.asarray(source, np.float64)[:, :2], np.asarray(moved, np.float64)[:, :2]
    centre, size = source.mean(0), float(np.ptp(source, 0).max())
    angles = np.linspace(0.0, 2.0 * np.pi, 32, endpoint=False)
    ring = centre + FADE[1] * size * np.stack([np.cos(angles), np.sin(angles)], 1)  # held still
    spline = RBFInterpolator(
        np.concatenate([moved, ring]),
        np.concatenate([source - moved, np.zeros_like(ring)]),
        kernel="thin_plate_spline",
    )
    h, w = frame.shape[:2]
    # Samples at the centres of STEP x STEP blocks: cv2.resize's linear interpolation then lands them
    # on the pixels exactly (in landmark coordinates, pixel centres at +0.5).
    rows, cols = -(-h // FIELD_STEP), -(-w // FIELD_STEP)
    gy, gx = (np.mgrid[0:rows, 0:cols] + 0.5) * FIELD_STEP
    grid = np.stack([gx.ravel(), gy.ravel()], 1)
    radius = np.linalg.norm(grid - centre, axis=1) / size
    fade = smoothstep(FADE[1], FADE[0], radius)
    near = fade > 0  # the spline is evaluated around the face only: a large frame is mostly beyond it
    field = np.zeros((len(grid), 2), np.float32)
    field[near] = spline(grid[near]) * fade[near, None]
    shift = cv2.resize(
        field.reshape(rows, cols, 2), (cols * FIELD_STEP, rows * FIELD_STEP), interpolation=cv2.INTER_LINEAR
    )
    shift = np.asarray(shift[:h, :w], np.float32)
    if still is not None:
        shift = shift * (1.0 - still.astype(np.float32))[..., None]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(frame, xs + shift[..., 0], ys + shift[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
