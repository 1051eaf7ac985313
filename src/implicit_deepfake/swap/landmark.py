"""Offline face swap: warp the target's face onto each frame's 468 mediapipe landmarks.

The target's landmarks are triangulated once, and each frame pulls the target's pixels through a
piecewise-affine warp onto its own landmarks (`warp.py`: back-facing and collapsed triangles of a turned
head dropped, the near side painted last). The frame's landmarks come from the runner (one mesh for
every view, or a smoothed video track) or from the frame itself. Compositing (`target_skin.py`,
`compositing.py`): the target's non-skin pixels painted over with its skin, a blend mask from the mesh's
silhouette feathered by distance, one LAB colour transfer for the whole dataset (`calibrate`), each
frame's own light (`relight`) and a multi-band blend (or a plain feather, or Poisson). What the frame
does stays the frame's, as learned swappers keep the driving frame's expression: an open mouth (inside
its inner lips: the target photo has no pixels for it, and the warp would only stretch its lips) and the
eyes inside their lids (the frame's gaze; the target's lids, drawn on the frame's landmarks, open and
close with the frame's): with the refined mesh's irises, only the irises, in the photo's eye colour,
the photo's own eye drawn around them (`iris.py`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.person_masks import PersonSegmenter
from implicit_deepfake.faces.landmarks import EYE_OUTLINES, INNER_LIPS, Face, FaceLandmarker
from implicit_deepfake.swap.base import FaceSwapper
from implicit_deepfake.swap.compositing import (
    ColourTransfer,
    blend_levels,
    disk,
    face_size,
    frame_chroma,
    is_grey,
    lay_brows,
    pyramid_blend,
    relight,
    silhouette_alpha,
    skin_only,
    to_lab,
)
from implicit_deepfake.swap.iris import iris_colour, kept_eye, recolour_irises
from implicit_deepfake.swap.reshape import UPPER_LIDS, ShapeOffset, bend_frame
from implicit_deepfake.swap.shut_eyes import shut_eyes
from implicit_deepfake.swap.target_skin import skin_fill
from implicit_deepfake.swap.warp import face_triangles, triangles_mask, untangled, warp_triangles

_BLENDS = ("pyramid", "feather", "poisson")
# Raised when the same settings make other pixels, so a swap cached by an older version is redone.
# 2: the skin model's fit below the eyes and the dark-lens rule; 3: skin_fill; 4: a lens hides its brow too
# (2026-12-07); 5: with keep_eyes, so does a fringe; 6: a multi-view head takes the photo's features and smile;
# 7: a bent frame's background stays; 8: brows under a fringe painted over, each frame's laid on.
# 9: the photo triangulated turned frontal, and used inside its triangles (no teeth on a turned photo's far side);
# 10: a black-and-white photo's skin takes the frame's skin colour under a median (no glasses rims drawn across it);
# 11: a bent frame's loose hair moves with the head.
# 12: above the lids the frame is bent by the offset's affine part (a thick brow no longer folds into horns).
# 13: above the lids the offset is pulled back where it turns triangles over (no shards of the photo at raised brows).
# 14: with keep_eyes and irises, the frame keeps its irises only, in the photo's eye colour (`iris.py`).
# 15: a video frame's shut eye stays shut (its lids' offset in proportion) and its own lids and lashes (`shut_eyes.py`).
# 16: brows laid under a fringe keep the frame's brow texture, in the photo's hair colour half-way to grey.
LANDMARK_SWAP_VERSION = 16
# How far past the segmented person a bent frame still bends (a share of the face size): the wisps of
# loose hair the segmenter leaves out; beyond, the background stays.
_LOOSE_HAIR = 0.04


def _polygon_area(xy: np.ndarray) -> float:
    """Signed area of a closed polygon (P, 2) (the shoelace formula)."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _poisson(face: np.ndarray, frame: np.ndarray, mask: np.ndarray, pad: int) -> np.ndarray:
    """cv2.seamlessClone of `face` into `frame` under the binary uint8 `mask` (all HxW).

    The images are padded first: seamlessClone misbehaves when the mask touches the border."""
    padded = [cv2.copyMakeBorder(im, pad, pad, pad, pad, cv2.BORDER_REFLECT) for im in (face, frame)]
    mask = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0,))
    x, y, w, h = cv2.boundingRect(mask)
    # OpenCV places the mask's bounding box at centre - size // 2: this centre keeps it in place.
    out = cv2.seamlessClone(padded[0], padded[1], mask, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return out[pad:-pad, pad:-pad]


def _fill(image: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """`image` (HxWxC uint8) with the pixels where `holes` (HxW bool) inpainted from around them."""
    if not holes.any():
        return image
    mask = holes.astype(np.uint8)
    return np.dstack(
        [cv2.inpaint(np.ascontiguousarray(image[..., c]), mask, 3, cv2.INPAINT_TELEA) for c in range(image.shape[-1])]
    )


@dataclass(frozen=True)
class _Warped:
    """A target face warped into one frame: rgb (HxWx3 uint8, holes filled), alpha (HxW float32 blend
    weight: silhouette x skin x not kept), kept (HxW float32: the frame's own mouth and eyes, laid
    back over the blend), shut (HxW float32: the part of `kept` that is shut eyes, `shut_eyes`) and the
    face size in the frame."""

    rgb: np.ndarray
    alpha: np.ndarray
    kept: np.ndarray
    shut: np.ndarray
    size: float


class LandmarkSwapper(FaceSwapper):
    """Piecewise-affine landmark warp of the target face, colour-matched and blended into frames.

    blend: "pyramid" (multi-band), "feather" (the alpha alone) or "poisson" (cv2.seamlessClone
    under the alpha's core, then the alpha). feather: width of the alpha's ramp inside the face
    silhouette, as a fraction of the face size. skin: paint the target's pixels that are not skin
    (hair, glasses rims, background) over with its skin, and leave out eyes behind dark lenses
    (`target_skin.skin_fill`). min_area_ratio: frame triangles smaller than this fraction of their
    target area (at the frame's face size) are edge-on and left out of the warp (their pixels are
    inpainted; the mask is the silhouette's, whole).
    keep_mouth: keep the frame's pixels inside its inner lips (an open mouth). keep_eyes: keep the
    frame's eyes inside their lids (its gaze; only its irises where the mesh has them and the photo shows
    its own eyes), a shut eye's lids and lashes (a blink, `shut_eyes.py`), and its brows where the
    target's are under a fringe. eye_colour: the kept irises take
    the photo's iris colour (`iris.py`; not from a black-and-white photo).
    relight: the frame's shading on the target's skin (`compositing.relight`), smoothed over
    `relight_sigma` x the face size. Both are for a video, whose frames each have their own gaze and
    light; a multi-view dataset's one face takes the target's eyes (and brows: the base head may wear
    glasses under its own), and its views' light is already one. reshape: how far each frame's face takes the target's
    proportions (`reshape.py`; 0: the frame's own, 1: the target's), fitted in `calibrate`; reshape_outline: its face
    oval too, the frame bent to follow (a video's); else only its eyes, brows, nose and mouth move (a multi-view
    head's, whose views could not be bent alike), with the photo's expression where the base has none of its own.
    """

    name = "landmark"

    def __init__(
        self,
        blend: str = "pyramid",
        color_transfer: bool = True,
        feather: float = 0.08,
        skin: bool = True,
        min_area_ratio: float = 0.05,
        keep_mouth: bool = True,
        keep_eyes: bool = True,
        eye_colour: bool = True,
        relight: bool = True,
        relight_sigma: float = 0.12,
        reshape: float = 0.0,
        reshape_outline: bool = True,
        landmarker: FaceLandmarker | None = None,
    ) -> None:
        if blend not in _BLENDS:
            raise DeepfakeError(f"swap.blend must be one of {_BLENDS}, got {blend!r}")
        self.blend = blend
        self.color_transfer = color_transfer
        self.feather = feather
        self.skin = skin
        self.min_area_ratio = min_area_ratio
        self.keep_mouth = keep_mouth
        self.keep_eyes = keep_eyes
        self.eye_colour = eye_colour
        self.relight = relight
        self.relight_sigma = relight_sigma
        self.reshape = float(reshape)
        self.reshape_outline = reshape_outline
        self.landmarker = landmarker or FaceLandmarker()
        self._target: np.ndarray | None = None
        self._grey = False  # a black-and-white target photo
        self._iris: np.ndarray | None = None  # the photo's iris colour, ring by ring (`iris.py`)
        self._brow_tint: np.ndarray | None = None  # brows under a fringe: each frame's go on, in this tint
        self._colour: ColourTransfer | None = None
        self._shape: ShapeOffset | None = None
        self._segmenter: PersonSegmenter | None = None  # built on first use: only a bent frame needs it

    def config(self) -> dict:
        return {
            "name": self.name,
            "version": LANDMARK_SWAP_VERSION,
            "blend": self.blend,
            "color_transfer": self.color_transfer,
            "feather": self.feather,
            "skin": self.skin,
            "min_area_ratio": self.min_area_ratio,
            "keep_mouth": self.keep_mouth,
            "keep_eyes": self.keep_eyes,
            "eye_colour": self.eye_colour,
            "relight": self.relight,
            "relight_sigma": self.relight_sigma,
            "reshape": self.reshape,
            "reshape_outline": self.reshape_outline,
        }

    def prepare(self, target: np.ndarray, frames: Mapping[str, tuple[int, int]], face: Face | None = None) -> None:
        face = face or self.landmarker.detect_required(target, "target photo")
        # Keep only a crop around the face: it is resized for every frame.
        x0, y0, x1, y1 = face.bbox
        margin = 0.1 * max(x1 - x0, y1 - y0)
        left, top = int(max(0, x0 - margin)), int(max(0, y0 - margin))
        right = int(min(target.shape[1], x1 + margin + 1))
        bottom = int(min(target.shape[0], y1 + margin + 1))
        crop = np.ascontiguousarray(target[top:bottom, left:right])
        self._target_landmarks = face.landmarks
        self._target_xy: np.ndarray = face.landmarks[:, :2] - np.array([left, top], np.float32)
        self._target_extent = np.ptp(self._target_xy, 0)  # (2,) face width, height
        self._triangles = face_triangles(face.landmarks)
        # Where the target's pixels may be used rides along as a 4th channel, so one remap warps both: inside
        # the triangles (an outline polygon would cut the compressed far side of a turned photo into teeth).
        keep = triangles_mask(self._target_xy, self._triangles, crop.shape[:2])
        usable, painted = np.ones(crop.shape[:2], np.float32), crop
        if self.skin:
            painted, usable, self._brow_tint = skin_fill(crop, self._target_xy, frame_brows=self.keep_eyes)
            keep = np.round(keep * usable).astype(np.uint8)
        self._iris = iris_colour(crop, self._target_xy, usable)  # the photo's own eyes, where no lens covers them
        crop = painted
        self._target = np.dstack([crop, keep])
        self._grey = is_grey(crop, keep > 127)
        self._colour = None
        self._shape = None

    def calibrate(self, samples: Sequence[tuple[np.ndarray, Face]]) -> None:
        """One face shape and one colour transfer for every frame, fitted on `samples` (frame, its
        face) pooled: the views of one head or the frames of one video then get the same, not one fit each."""
        if self.reshape and samples:
            self._shape = ShapeOffset.fit(
                [face.landmarks for _, face in samples],
                self._target_landmarks,
                self.reshape,
                self.reshape_outline,
                guessed_brows=self._brow_tint is not None,
                lids=self.keep_eyes,  # a video's eyes open and close (a multi-view head's never move)
            )
        if not self.color_transfer or not samples:
            return
        reshaped = [self._reshaped(frame, face) for frame, face in samples]
        pooled = [self._colour_samples(frame, self._warp(frame, face)) for frame, face in reshaped]
        pooled = [p for p in pooled if p is not None]
        if pooled:
            self._colour = ColourTransfer.fit(*(np.concatenate(part) for part in zip(*pooled)))

    def swap(self, frame: np.ndarray, relpath: str, face: Face | None = None) -> np.ndarray | None:
        if self._target is None:
            raise RuntimeError("LandmarkSwapper.swap called before prepare")
        face = face or self.landmarker.detect(frame)
        if face is None:
            return None
        shut = self._shut_eyes(face, frame.shape[:2])
        frame, face = self._reshaped(frame, face)
        warped = self._warp(frame, face, shut)
        if warped.alpha.max() < 0.5:
            return None
        rgb = warped.rgb
        if self.color_transfer:
            colour = self._colour
            if colour is None:
                samples = self._colour_samples(frame, warped)
                colour = ColourTransfer.fit(*samples) if samples is not None else None
            rgb = colour.apply(rgb) if colour is not None else rgb
        if self.relight:
            skin = skin_only(warped.alpha, face.landmarks)
            rgb = relight(rgb, frame, skin, max(1.0, self.relight_sigma * warped.size))
        if self._grey:  # a black-and-white photo: each feature takes the frame's colour at its place
            rgb = frame_chroma(rgb, frame, face.landmarks)
        if self._brow_tint is not None:
            rgb = lay_brows(rgb, frame, face.landmarks, self._brow_tint)
        out = self._blend(rgb, frame, warped)
        if self.eye_colour and self._iris is not None and not self._grey and warped.kept.any():
            exposure = self._colour.exposure if self._colour is not None else 1.0
            iris = warped.kept * (1.0 - warped.shut)  # a shut eye's slit is lashes and lids, not an iris
            out = recolour_irises(out, face.landmarks, self._iris * [exposure, 1.0, 1.0], iris)
        return out

    def _reshaped(self, frame: np.ndarray, face: Face) -> tuple[np.ndarray, Face]:
        """The frame and its face with the target's proportions (as they are before `calibrate`)."""
        if self._shape is None:
            return frame, face
        # Above the upper lids the photo's offset may turn triangles over against raised brows (a fringe
        # lowers its forehead's points); it is pulled back there. Below, the lips keep theirs (its mouth).
        above_lids = face.landmarks[:, 1] < face.landmarks[list(UPPER_LIDS), 1].mean()
        moved = untangled(face.landmarks, self._shape.apply(face.landmarks), self._triangles, above_lids)
        if not self.reshape_outline:  # the target's face covers all that moved: there is nothing to bend
            return frame, Face(moved)
        self._segmenter = self._segmenter or PersonSegmenter()
        person = self._segmenter(frame)  # all zeros where it finds nobody: then the whole frame bends
        still = None
        if person.any():  # grown: loose hair the segmenter leaves out moves with the head, not left as a ghost
            reach = max(1.0, _LOOSE_HAIR * face_size(face.landmarks))
            grown = cv2.dilate(person, disk(reach)).astype(np.float32) / 255.0
            still = 1.0 - cv2.GaussianBlur(grown, (0, 0), reach / 3.0)
        bent = bend_frame(frame, face.landmarks, self._shape.apply(face.landmarks, bend=True), still=still)
        return bent, Face(moved)

    def _shut_eyes(self, face: Face, shape: tuple[int, ...]) -> np.ndarray:
        """HxW: where the frame keeps its own shut eyes (a blink), by how open its eyes are against the
        clip's mean face (with `reshape`), else against the photo's; drawn where its eyes will be drawn."""
        if not self.keep_eyes:
            return np.zeros(shape, np.float32)
        usual = self._shape.base if self._shape is not None else self._target_landmarks
        drawn = self._shape.apply(face.landmarks) if self._shape is not None else face.landmarks
        return shut_eyes(face.landmarks, drawn, usual, shape)

    def _warp(self, frame: np.ndarray, face: Face, shut: np.ndarray | None = None) -> _Warped:
        # Sample from a copy of the target no larger than the frame's face, so remap cannot alias.
        size = face_size(face.landmarks)
        scale = min(1.0, float(np.max(np.ptp(face.landmarks[:, :2], 0) / self._target_extent)))
        assert self._target is not None  # prepare() comes first
        target = self._target
        if scale < 1.0:
            shape = (max(1, round(target.shape[1] * scale)), max(1, round(target.shape[0] * scale)))
            target = cv2.resize(target, shape, interpolation=cv2.INTER_AREA)
        target_xy = self._target_xy * (np.array(target.shape[1::-1]) / self._target.shape[1::-1])
        warped, covered = warp_triangles(
            target, target_xy, face.landmarks, self._triangles, frame.shape[:2], self.min_area_ratio
        )
        eyes = [eye for eye in EYE_OUTLINES if self._eye_faces_camera(face.landmarks, eye)] if self.keep_eyes else []
        kept = [face.landmarks[list(INNER_LIPS), :2]] if self.keep_mouth else []
        # The photo's eye is drawn around the frame's iris where the photo shows its own (its iris's colour read).
        kept += [kept_eye(face.landmarks, eye, iris_only=self._iris is not None) for eye in eyes]
        kept = [polygon for polygon in kept if len(polygon) >= 3]
        alpha, kept_weight = silhouette_alpha(face.landmarks, self._triangles, frame.shape[:2], self.feather, kept)
        # A shut eye (a blink) keeps the frame's lids and lashes: the photo's open eye would be squeezed into it.
        shut = np.zeros_like(alpha) if shut is None else shut
        alpha, kept_weight = alpha * (1.0 - shut), np.maximum(kept_weight, shut)
        warped = _fill(warped, (alpha > 0) & ~covered)
        rgb = np.ascontiguousarray(warped[..., :3])
        return _Warped(rgb, alpha * (warped[..., 3] / 255.0), kept_weight, shut, size)

    def _eye_faces_camera(self, landmarks: np.ndarray, eye: tuple[int, ...]) -> bool:
        """Whether an eye's outline in the frame turns the way the photo's does and is not edge-on: the
        far eye of a turned head folds over itself, and keeping it would cut into the face."""
        area = _polygon_area(landmarks[list(eye), :2])
        photo = _polygon_area(self._target_xy[list(eye)])
        scale = np.max(np.ptp(landmarks[:, :2], 0) / self._target_extent)
        return bool(area / (photo * scale**2) > self.min_area_ratio)

    @staticmethod
    def _colour_samples(frame: np.ndarray, warped: _Warped) -> tuple[np.ndarray, np.ndarray] | None:
        """LAB pixels of the warped face and of the frame where the face is surely blended in."""
        core = warped.alpha > 0.5
        if core.sum() < 4:
            return None
        return to_lab(warped.rgb)[core], to_lab(frame)[core]

    def _blend(self, face: np.ndarray, frame: np.ndarray, warped: _Warped) -> np.ndarray:
        """`face` (HxWx3 uint8) into `frame` under the warp's alpha, inside a box around the face (the
        rest of the frame is returned untouched)."""
        levels = blend_levels(warped.size)
        ys, xs = np.nonzero(warped.alpha > 0)
        pad = 5 * 2**levels
        top, left = max(0, ys.min() - pad), max(0, xs.min() - pad)
        bottom, right = min(frame.shape[0], ys.max() + pad + 1), min(frame.shape[1], xs.max() + pad + 1)
        box = (slice(top, bottom), slice(left, right))
        alpha, fg, bg = warped.alpha[box], face[box], frame[box]
        if self.blend == "pyramid":
            out = pyramid_blend(fg, bg, alpha, levels)
        else:
            if self.blend == "poisson":
                fg = _poisson(fg, bg, np.where(alpha > 0.5, 255, 0).astype(np.uint8), pad=4)
            out = alpha[..., None] * fg.astype(np.float32) + (1.0 - alpha[..., None]) * bg
        kept = warped.kept[box][..., None]
        out = kept * bg + (1.0 - kept) * out
        result = frame.copy()
        result[box] = np.clip(out + 0.5, 0, 255).astype(np.uint8)
        return result
