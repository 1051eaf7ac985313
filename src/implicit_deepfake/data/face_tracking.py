"""Offline head and expression tracking of a monocular talking-head clip from its face-mesh landmarks.

NeRFace's own tracker (Face2Face) was never released; this one gets the same fields from
mediapipe's 468-point face mesh (`faces.py`), per frame (x, y in pixels, z a relative depth in
pixels, OpenCV axes: x right, y down, z away from the camera):

- the **mean face** of the clip by generalised Procrustes: every frame's landmarks are aligned to
  the current mean by a similarity (rotation, scale, shift) and averaged, a few times over; the
  landmarks that move least after alignment (forehead, nose, temples: not the jaw or lips) become
  the rigid set (those above the nose tip: the mesh's lower half tilts a little with the jaw), and
  the fits are redone on that set alone, so talking does not turn the head;
- the **head pose**: PnP of the rigid set of the mean face (in head units) against the frame's 2D
  landmarks with the clip's intrinsics, started from the similarity fit. The face mesh's landmarks
  are themselves biased with the pose (on the synthetic head, PnP of its true landmark positions on
  the detected ones errs by 2.8 degrees, on their true projections by 0.06), so with the frames the
  pose is refined by points of the skin's own texture: corners found on the upper face of the most
  frontal frame, followed through the clip by optical flow (frame to frame, kept while the
  forward-backward check holds), placed in 3D by triangulating them from the landmark poses of all
  the frames that see them, then PnP of the landmarks and those points together. Head coordinates
  are the mean face turned to the clip's mean pose with z up, the face looking along -y (as the
  synthetic head's); poses are smoothed over time like the expressions;
- the **expression**: what the similarity fit leaves (every landmark's offset from the mean face,
  in head units) projected on a PCA basis fitted on the clip, scaled so the first coefficient's
  standard deviation is EXPRESSION_STD, zero-padded to the requested size and smoothed over time.
  Optionally the offsets' linear dependence on the head rotation is removed first: the mesh's shape
  changes with the pose (a turned face is not just the frontal one turned), and without this the
  leading components follow the pose, so an expression edit also carries pose-dependent changes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation

# Head units: the mean face's landmarks span this height (forehead to chin); the synthetic head's
# (1 unit tall) span about 0.6. Only ratios matter to the model: its scene box comes from the cameras.
FACE_HEIGHT = 0.6
RIGID_FRACTION = 0.4  # the share of landmarks that move least: the rigid set (those above the nose tip)
NOSE_TIP = 1  # face-mesh landmark
PROCRUSTES_ROUNDS = 4
EXPRESSION_STD = 0.3  # the first expression coefficient's spread; NeRFace's weights are of this order
# Texture points refining the pose: at most this many corners, followed by pyramidal Lucas-Kanade in
# windows of this size, dropped when tracking back misses their previous place by more than this (px).
MAX_FEATURES = 200
FLOW_WINDOW = 11
FLOW_CHECK_PX = 0.5
MIN_FEATURE_VIEWS = 10  # frames a point must be followed in to be triangulated
# Camera axes (x right, y down, z forward) -> head axes (x right, y into the head, z up).
_CAMERA_TO_HEAD = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class HeadTrack:
    """world_to_camera: (N, 4, 4) head pose per frame (head coordinates -> OpenCV camera); mean_face:
    (468, 3) in head coordinates; rigid: indices of the rigid landmarks; expressions: (N, D) float32;
    explained: (K,) the share of the non-rigid motion each PCA component explains."""

    world_to_camera: np.ndarray
    mean_face: np.ndarray
    rigid: np.ndarray
    expressions: np.ndarray
    explained: np.ndarray


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama's least-squares similarity: target ~ scale * source @ R.T + shift, for (P, D) point
    sets (D = 2 or 3); R is a rotation, never a reflection."""
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    u, sigma, vt = np.linalg.svd(t.T @ s / len(s))
    d = np.diag([1.0] * (source.shape[1] - 1) + [np.sign(np.linalg.det(u @ vt))])
    rotation = u @ d @ vt
    scale = float(np.trace(np.diag(sigma) @ d) / (s**2).sum(1).mean())
    return scale, rotation, mu_t - scale * rotation @ mu_s


def _aligned(landmarks: np.ndarray, reference: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's landmarks (N, P, 3) mapped onto `reference` by the similarity fitted on `ids`,
    and the fits' rotations (N, 3, 3) (landmarks -> reference)."""
    out, rotations = np.empty_like(landmarks), np.empty((len(landmarks), 3, 3))
    for i, points in enumerate(landmarks):
        scale, rotation, shift = similarity_fit(points[ids], reference[ids])
        out[i], rotations[i] = scale * points @ rotation.T + shift, rotation
    return out, rotations


def mean_face(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generalised Procrustes over the clip (N, 468, 3): the mean face (468, 3) in the landmarks'
    axes, centred, FACE_HEIGHT tall; the rigid landmark ids; each frame aligned onto it (N, 468, 3)."""
    ids = np.arange(landmarks.shape[1])
    reference = landmarks[len(landmarks) // 2]
    for round_ in range(PROCRUSTES_ROUNDS):
        aligned, _ = _aligned(landmarks, reference, ids)
        reference = aligned.mean(0)
        reference = (reference - reference.mean(0)) * (FACE_HEIGHT / np.ptp(reference[:, 1]))
        if round_ == 0:  # from here on, only the landmarks that moved least drive the fit
            spread = np.linalg.norm(aligned - aligned.mean(0, keepdims=True), axis=2).mean(0)
            least_moving = np.argsort(spread)[: int(RIGID_FRACTION * len(spread))]
            # above the nose tip only: the mesh tilts a little with the jaw, and that is not the head turning
            ids = np.sort(least_moving[reference[least_moving, 1] < reference[NOSE_TIP, 1]])
    aligned, _ = _aligned(landmarks, reference, ids)
    return reference, ids, aligned


def _pnp(
    face: np.ndarray, pixels: np.ndarray, intrinsics: np.ndarray, guess: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """(4, 4) pose (face coordinates -> OpenCV camera) of `face` (P, 3) seen at `pixels` (P, 2)."""
    rvec, tvec = cv2.Rodrigues(guess[0])[0], guess[1].reshape(3, 1)
    # ignore: cv2's stubs refuse distCoeffs=None (no distortion), which OpenCV takes
    _, rvec, tvec = cv2.solvePnP(  # type: ignore[call-overload]
        face, pixels, intrinsics, None, rvec, tvec, True, cv2.SOLVEPNP_ITERATIVE
    )
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = cv2.Rodrigues(rvec)[0], tvec[:, 0]
    return pose


def head_poses(landmarks: np.ndarray, face: np.ndarray, rigid: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """(N, 4, 4) face coordinates -> OpenCV camera per frame: PnP of the rigid landmarks of `face`
    against each frame's (N, 468, 2+) pixels, started from the weak-perspective similarity fit."""
    focal, centre = intrinsics[0, 0], intrinsics[:2, 2]
    poses = np.empty((len(landmarks), 4, 4))
    for i, points in enumerate(landmarks):
        # The similarity maps the face onto the landmarks (pixels); its scale gives the depth.
        scale, rotation, shift = similarity_fit(face[rigid], points[rigid])
        depth = focal / scale
        guess = np.array([(shift[0] - centre[0]) * depth / focal, (shift[1] - centre[1]) * depth / focal, depth])
        poses[i] = _pnp(face[rigid], points[rigid, :2].astype(np.float64), intrinsics, (rotation, guess))
    return poses


def feature_tracks(frames: np.ndarray, landmarks: np.ndarray, rigid: np.ndarray, reference: int) -> tuple:
    """Corners inside the rigid landmarks' hull on frame `reference` of frames (N, H, W, 3) uint8,
    followed to every frame, frame to frame, both ways in time: pixels (N, F, 2) and alive (N, F)
    bool (a point stays dropped once optical flow loses it or fails the forward-backward check)."""
    gray = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in frames]
    mask = np.zeros(gray[reference].shape, np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(landmarks[reference, rigid, :2].astype(np.float32)).astype(np.int32), (1,))
    corners = cv2.goodFeaturesToTrack(gray[reference], MAX_FEATURES, 0.01, 2, mask=mask)
    count = 0 if corners is None else len(corners)
    pixels, alive = np.zeros((len(frames), count, 2), np.float32), np.zeros((len(frames), count), bool)
    if not count:
        return pixels, alive
    pixels[reference], alive[reference] = corners[:, 0], True
    flow: dict[str, Any] = {"winSize": (FLOW_WINDOW, FLOW_WINDOW), "maxLevel": 2}
    for order in (range(reference + 1, len(frames)), range(reference - 1, -1, -1)):
        previous = reference
        for k in order:
            # ignore: cv2's stubs refuse nextPts=None (no initial guess), which OpenCV takes
            moved, found, _ = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
                gray[previous], gray[k], pixels[previous], None, **flow
            )
            back, found_back, _ = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
                gray[k], gray[previous], moved, None, **flow
            )
            check = np.linalg.norm(back - pixels[previous], axis=1) < FLOW_CHECK_PX
            pixels[k], alive[k] = moved, alive[previous] & (found[:, 0] == 1) & (found_back[:, 0] == 1) & check
            previous = k
    return pixels, alive


def triangulate(pixels: np.ndarray, alive: np.ndarray, poses: np.ndarray, intrinsics: np.ndarray) -> np.ndarray:
    """Points (F, 3) in the poses' coordinates seen at pixels (N, F, 2) where alive (N, F), by
    poses (N, 4, 4): least squares of each point's distance to its rays (NaN if seen too rarely)."""
    rays = np.concatenate([pixels, np.ones(pixels.shape[:2] + (1,))], 2) @ np.linalg.inv(intrinsics).T
    rays /= np.linalg.norm(rays, axis=2, keepdims=True)
    across = np.eye(3) - rays[..., :, None] * rays[..., None, :]  # (N, F, 3, 3): the off-ray projector P
    # The camera point R X + t lies on the ray: P (R X + t) = 0; normal equations summed over the frames.
    rotations, shifts = poses[:, :3, :3], poses[:, :3, 3]
    lhs = np.einsum("nf,nji,nfjk,nkl->fil", alive, rotations, across, rotations)
    rhs = -np.einsum("nf,nji,nfjk,nk->fi", alive, rotations, across, shifts)
    points = np.full((pixels.shape[1], 3), np.nan)
    seen = alive.sum(0) >= MIN_FEATURE_VIEWS
    points[seen] = np.linalg.solve(lhs[seen], rhs[seen][..., None])[..., 0]
    return points


def refine_with_features(
    poses: np.ndarray, landmarks: np.ndarray, face: np.ndarray, rigid: np.ndarray, intrinsics: np.ndarray, frames
) -> np.ndarray:
    """Landmark poses (N, 4, 4) refined by texture points (see the module doc): PnP of the rigid
    landmarks and the points followed in each frame together, started from its landmark pose."""
    reference = int(np.argmin(np.linalg.norm(head_rotations(poses), axis=1)))  # the most frontal frame
    pixels, alive = feature_tracks(frames, landmarks, rigid, reference)
    points = triangulate(pixels, alive, poses, intrinsics)
    alive &= np.isfinite(points[:, 0])
    refined = np.empty_like(poses)
    for i, pose in enumerate(poses):
        model = np.concatenate([face[rigid], points[alive[i]]])
        seen = np.concatenate([landmarks[i, rigid, :2], pixels[i, alive[i]]]).astype(np.float64)
        refined[i] = _pnp(model, seen, intrinsics, (pose[:3, :3], pose[:3, 3]))
    return refined


def smooth_poses(poses: np.ndarray, sigma: float) -> np.ndarray:
    """Poses (N, 4, 4) smoothed over time: a Gaussian of `sigma` frames over the rotations (as
    quaternions on one hemisphere) and translations; 0 leaves them as they are."""
    if sigma <= 0:
        return poses
    quaternions = Rotation.from_matrix(poses[:, :3, :3]).as_quat()
    quaternions *= np.sign(quaternions @ quaternions[0])[:, None]
    out = poses.copy()
    out[:, :3, :3] = Rotation.from_quat(gaussian_filter1d(quaternions, sigma, axis=0, mode="nearest")).as_matrix()
    out[:, :3, 3] = gaussian_filter1d(poses[:, :3, 3], sigma, axis=0, mode="nearest")
    return out


def to_head_coordinates(face: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Re-express `face` (468, 3) and `poses` (N, 4, 4) (face -> camera) in head coordinates: the
    clip's mean head rotation becomes the frontal one, axes z up and y into the head."""
    mean_rotation = Rotation.from_matrix(poses[:, :3, :3]).mean().as_matrix()
    head_from_face = _CAMERA_TO_HEAD @ mean_rotation  # the mean pose looks straight at the camera
    change = np.eye(4)
    change[:3, :3] = head_from_face.T  # head -> face coordinates
    return face @ head_from_face.T, poses @ change


def expression_codes(
    aligned: np.ndarray, face: np.ndarray, dim: int, sigma: float, rotations: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float32 expression vectors from the landmarks aligned to the mean face (N, 468, 3):
    their offsets from it (less their least-squares linear fit on `rotations`, (N, 3) head rotation
    vectors, when given) projected on the clip's principal components (as many as the clip
    allows, zero-padded), scaled so the first has standard deviation EXPRESSION_STD, smoothed
    over time with a Gaussian of `sigma` frames (0: not smoothed); and each component's share of
    the offsets' variance."""
    offsets = (aligned - face).reshape(len(aligned), -1)
    regressors = np.ones((len(offsets), 1)) if rotations is None else np.c_[rotations, np.ones(len(offsets))]
    offsets = offsets - regressors @ np.linalg.lstsq(regressors, offsets, rcond=None)[0]
    u, singular, _ = np.linalg.svd(offsets, full_matrices=False)
    count = min(dim, len(singular))
    coefficients = u[:, :count] * singular[:count]
    coefficients *= EXPRESSION_STD / max(float(coefficients[:, 0].std()), 1e-12)
    if sigma > 0:
        coefficients = gaussian_filter1d(coefficients, sigma, axis=0, mode="nearest")
    codes = np.zeros((len(aligned), dim), np.float32)
    codes[:, :count] = coefficients
    variance = singular**2
    return codes, (variance / max(variance.sum(), 1e-12))[:count]


def head_rotations(poses: np.ndarray) -> np.ndarray:
    """(N, 3) rotation vectors of poses (N, 4, 4) relative to their mean rotation."""
    rotations = Rotation.from_matrix(poses[:, :3, :3])
    return (rotations.mean().inv() * rotations).as_rotvec()


def track_head(
    landmarks: np.ndarray,
    intrinsics: np.ndarray,
    expression_dim: int,
    smooth: float,
    decorrelate_pose: bool = False,
    frames: np.ndarray | None = None,
) -> HeadTrack:
    """Head pose and expression of every frame of a clip from its landmarks (N, 468, 3) (see module
    doc), the poses refined by texture points when the frames (N, H, W, 3) uint8 are given;
    `decorrelate_pose`: the expressions carry no linear dependence on the head rotation."""
    landmarks = landmarks.astype(np.float64)
    face, rigid, aligned = mean_face(landmarks)
    poses = head_poses(landmarks, face, rigid, intrinsics)
    if frames is not None:
        poses = refine_with_features(poses, landmarks, face, rigid, intrinsics, frames)
    poses = smooth_poses(poses, smooth)
    rotations = head_rotations(poses) if decorrelate_pose else None
    codes, explained = expression_codes(aligned, face, expression_dim, smooth, rotations)
    head_face, head_poses_ = to_head_coordinates(face, poses)
    return HeadTrack(head_poses_, head_face, rigid, codes, explained)


def head_mask(xy: np.ndarray, oval: np.ndarray, shape: tuple[int, ...], grow: float, rise: float) -> np.ndarray:
    """(H, W) bool: the head around landmarks (468, 2) in pixels: the face oval (landmark ids `oval`,
    in order) grown `grow` times about its centre (ears, hair at the sides), swept up the face by
    `rise` times the oval's height (the skull and hair above the forehead)."""
    polygon = xy[oval]
    centre = polygon.mean(0)
    polygon = centre + grow * (polygon - centre)
    chin_to_brow = xy[oval].max(0)[1] - xy[oval].min(0)[1]
    up = xy[10] - xy[152]  # chin -> forehead (face-mesh landmarks), so a tilted head rises along its own axis
    up = up / max(float(np.linalg.norm(up)), 1e-9) * rise * chin_to_brow
    mask = np.zeros(shape, np.uint8)
    for step in np.linspace(0.0, 1.0, 5):
        cv2.fillPoly(mask, [np.round(polygon + step * up).astype(np.int32)], (1,))
    return mask.astype(bool)


def median_background(frames: np.ndarray, masks: np.ndarray, min_samples: int = 3) -> tuple[np.ndarray, float]:
    """The static background (H, W, 3) uint8: each pixel's median over the frames (N, H, W, 3) where
    the head masks (N, H, W) leave it uncovered; pixels uncovered in fewer than `min_samples` frames
    are inpainted from around them. Also the share of pixels inpainted."""
    samples = np.where(masks[..., None], np.nan, frames.astype(np.float32))
    counts = (~masks).sum(0)
    with warnings.catch_warnings():  # all-NaN pixels (never uncovered) are filled below
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(samples, axis=0)
    hidden = counts < min_samples
    background = np.nan_to_num(median, nan=0.0).round().clip(0, 255).astype(np.uint8)
    if hidden.any():
        background = cv2.inpaint(background, hidden.astype(np.uint8), 5, cv2.INPAINT_TELEA)
    return background, float(hidden.mean())
