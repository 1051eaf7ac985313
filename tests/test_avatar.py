"""The synthetic head built from one portrait (avatar/): a closed head-and-neck surface with the
photo's face, hair, ears and skin, framed so the face reads, that carries the photo's identity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from scipy import ndimage

from implicit_deepfake.avatar.frame import head_frame
from implicit_deepfake.avatar.head import Avatar, _working_copy, build_avatar, render_avatar
from implicit_deepfake.avatar.mesh import CapsuleGrid, Harmonic, ray_exit
from implicit_deepfake.avatar.photo import photo_maps
from implicit_deepfake.avatar.shape import HeadShape, build_shape
from implicit_deepfake.avatar.texture import row_colours, spot_noise
from implicit_deepfake.core.io import composite, read_image
from implicit_deepfake.data.synthetic import BASE_PHOTO, CAMERA_ANGLE_X, DISTANCE, view_cameras
from implicit_deepfake.faces.landmarks import Face, FaceLandmarker
from implicit_deepfake.metrics.identity_dlib import DlibEmbedder
from implicit_deepfake.swap.target import load_target
from tests.test_identity import load_photo

RESOLUTION = 128


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker()


@pytest.fixture(scope="module")
def hopper(landmarker: FaceLandmarker) -> tuple[np.ndarray, Face]:
    photo = read_image(BASE_PHOTO)[..., :3]
    return photo, landmarker.detect_required(photo, str(BASE_PHOTO))


@pytest.fixture(scope="module")
def avatar(hopper) -> Avatar:
    return build_avatar(*hopper, resolution=RESOLUTION)


def views(azimuths: list[float], elevation: float = 0.0) -> np.ndarray:
    return np.stack([np.asarray(azimuths, np.float64), np.full(len(azimuths), elevation)], 1)


def test_head_mesh_is_closed_outward_and_head_sized(avatar: Avatar):
    faces = avatar.faces
    edges = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    # Watertight and consistently wound: each directed edge once, its reverse exactly once.
    _, directed = torch.unique(edges, dim=0, return_counts=True)
    _, undirected = torch.unique(edges.sort(1).values, dim=0, return_counts=True)
    assert (directed == 1).all() and (undirected == 2).all()
    head = avatar.vertices[:, 2] > -0.5
    centre = avatar.vertices[head].mean(0)
    outward = (avatar.normals[head] * (avatar.vertices[head] - centre)).sum(1) > 0
    assert outward.float().mean() > 0.97
    # Chin at -0.5, skull 0.9 tall plus hair; a head's width and length (not an egg's, not a ball's).
    low, high = avatar.vertices[head].amin(0), avatar.vertices[head].amax(0)
    width, length, height = (high - low).tolist()
    assert 0.9 <= height <= 1.2 and low[2] > -0.52
    assert 0.6 < width < 0.9 and 0.75 < length < 1.05 and width < length
    # The photo's face is on the front (the side facing -y), where the expressions act.
    assert avatar.vertices[avatar.texture_weight > 0.99, 1].max() < 0
    assert avatar.face_weight[avatar.landmark_vertex_ids].mean() > 0.7


def test_ears_stand_out_of_both_sides_of_the_head(avatar: Avatar):
    """Behind the cheeks, at the height between the brows and the nose, the head is wider on both
    sides than the straight line between the rows above and below the ears."""
    vertices = avatar.vertices
    side = (vertices[:, 1] > 0.06) & (vertices[:, 1] < 0.16)
    heights = torch.arange(-0.4, 0.201, 0.025)
    rows = [side & ((vertices[:, 2] - z).abs() < 0.02) for z in heights]
    for width in (
        torch.stack([vertices[r, 0].max() for r in rows]),
        torch.stack([-vertices[r, 0].min() for r in rows]),
    ):
        chord = width[0] + (width[-1] - width[0]) * (heights - heights[0]) / (heights[-1] - heights[0])
        bump = width - chord
        assert bump.max() > 0.04, bump
        assert -0.3 < heights[bump.argmax()] < 0.05  # beside the eyes and nose, not at the crown or the chin


def test_the_hair_is_the_photos_own_all_round_in_a_closed_silhouette(avatar: Avatar):
    """Grace Hopper's head wears what her photo shows over her hair: a dark cap over grey hair. From
    behind, the head is those colours (not skin, not one flat paint); from every side one region."""
    rgba, _ = render_avatar(avatar, view_cameras(views(list(range(-180, 180, 45))), 96, CAMERA_ANGLE_X, DISTANCE))
    for image in rgba:
        mask = image[..., 3] > 0
        _, count = ndimage.label(mask)
        assert count == 1 and (ndimage.binary_fill_holes(mask) == mask).all()
    back = rgba[0, :60, :, :3][rgba[0, :60, :, 3] == 255] / 255.0  # the head above the neck
    grey = np.ptp(back, axis=1) < 0.12
    assert back.mean() < 0.45 and grey.mean() > 0.7, (back.mean(), grey.mean())  # dark navy and grey, not skin
    assert back.mean(1).std() > 0.04  # with its texture
    front = rgba[4, ..., :3][rgba[4, ..., 3] == 255] / 255.0
    skin = (front[:, 0] - front[:, 2] > 0.15).mean()  # the face's warm skin tones fill the frontal view
    assert skin > 0.4 and (back[:, 0] - back[:, 2] > 0.15).mean() < 0.1, skin


def test_the_face_reads_at_the_default_size(avatar: Avatar, landmarker: FaceLandmarker):
    """Issue 23: at the default 256 px the frontal face is at least 120 px wide, and found within 45 degrees."""
    rgba, _ = render_avatar(avatar, view_cameras(views([0.0, 20.0, -40.0, 40.0], 10.0), 256, CAMERA_ANGLE_X, DISTANCE))
    faces = [landmarker.detect(composite(image)) for image in rgba]
    assert all(f is not None for f in faces)
    assert np.ptp(faces[0].landmarks[:, 0]) >= 120


def test_frontal_views_carry_the_photos_identity(avatar: Avatar, landmarker: FaceLandmarker):
    """The head's views within 30 degrees of frontal are the person of the photo it was built from:
    dlib distance to the photo 0.45 or less on average (issue 23's frontal target; measured 0.26 here, 0.27
    on the bench's views, docs/benchmarks.md), and no view past 0.55 (measured 0.41 at most)."""
    cameras = view_cameras(
        np.array([[0, 0], [15, 5], [-15, 5], [25, -10], [-25, 20], [10, 30]], float), 256, CAMERA_ANGLE_X, DISTANCE
    )
    embedder = DlibEmbedder(landmarker=landmarker)
    target = embedder.embed(load_target(BASE_PHOTO, 0, landmarker).crop()[0])
    distances = [
        embedder.distance(embedder.embed(composite(image)), target) for image in render_avatar(avatar, cameras)[0]
    ]
    assert np.mean(distances) <= 0.45 and max(distances) <= 0.55, distances


def test_hair_hangs_from_the_scalp_and_a_shadow_by_the_jaw_is_not_hair(landmarker: FaceLandmarker):
    """A patch of 'hair' beside the jaw that no hair above the eyes reaches is a shadow or a collar;
    a strand hanging from the top down past the jaw is hair."""
    from implicit_deepfake.avatar.photo import _from_scalp

    mask = np.zeros((100, 100), bool)
    mask[5:20, 20:80] = True  # over the head
    mask[5:90, 75:80] = True  # a strand down the right side
    mask[60:75, 10:18] = True  # a patch by the left jaw
    kept = _from_scalp(mask, row=30)
    assert kept[10, 50] and kept[85, 77] and not kept[65, 12]
    # The astronaut's photo: her short hair ends at her ears; the dark side of her neck under the jaw
    # was taken as hair (15% of the map below the mouth, a dark blotch on the head's jaw), now 2%.
    photo = read_image(Path(skimage.__file__).parent / "data" / "astronaut.png")[..., :3]
    face = landmarker.detect_required(photo, "astronaut")
    hair = photo_maps(photo, face).hair
    assert hair[int(face.landmarks[13, 1]) :].sum() < 0.05 * hair.sum()
    assert hair[: int(face.landmarks[10, 1])].sum() > 0.5 * hair.sum()  # the hair over her brow stays


@pytest.fixture(scope="module")
def shape(hopper) -> HeadShape:
    _, head = head_frame(_working_copy(*hopper)[1])
    return build_shape(head, RESOLUTION)


def test_inside_its_oval_the_face_is_its_own_surface(shape: HeadShape):
    """Inside the face oval the head's surface is the face's own (the spline through its landmarks):
    the cranium's ellipsoid had stood in front of it at the forehead's sides and filled the eye
    sockets, up to 0.04 units (the face is 0.8 tall)."""
    vertices = shape.vertices
    inner = vertices[shape.face_weight > 0.99]
    gap = inner[:, 1] - shape.template.face.depth(inner[:, [0, 2]])
    assert np.abs(gap).max() < 0.002, np.abs(gap).max()  # measured 0.0001 (0.041 before)


def test_the_rings_meet_the_dome_without_shearing_the_face(shape: HeadShape):
    """Down the face, the first horizontal ring's vertices lie under the dome's last: the dome's rays
    (from the cranium's centre) and the rings' (from the neck's axis) had met there, and the face's
    vertices jumped sideways by 1.7 grid spacings, a crease across the forehead."""
    grid = shape.grid
    rings = shape.vertices[1:-1].reshape(grid.n_rings, grid.n_seg, 3)
    origins = grid.origins[1:-1].reshape(grid.n_rings, grid.n_seg, 3)[:, 0]
    first = int(np.argmax(np.abs(origins[:, 2] - origins[0, 2]) > 1e-9))  # the first ring below the dome
    front = grid.directions[1:-1].reshape(grid.n_rings, grid.n_seg, 3)[first, :, 1] < -0.8
    sideways = np.abs(rings[first, front, 0] - rings[first - 1, front, 0])
    spacing = 2 * np.pi * 0.4 / RESOLUTION
    assert sideways.max() < 0.25 * spacing, sideways.max() / spacing  # measured 0.08 (1.7 before)


def test_ray_exit_finds_a_sphere_and_harmonic_fill_stays_within_its_bounds():
    grid = CapsuleGrid.around(np.zeros(3), 0.0, np.linspace(-0.05, -0.9, 20), 8, 24)
    t = ray_exit(lambda p: np.linalg.norm(p, axis=1) - 1.0, grid.origins, grid.directions, 2.0)
    np.testing.assert_allclose(np.linalg.norm(grid.points(t), axis=1), 1.0, atol=1e-5)
    faces = grid.faces
    fixed = np.zeros(len(t), bool)
    fixed[[0, -1]] = True  # the two poles
    values = np.zeros(len(t))
    values[-1] = 1.0
    field = Harmonic(faces, len(t), fixed)(values)
    assert field[0] == 0.0 and field[-1] == 1.0 and (np.diff(field[1:-1].reshape(-1, 24).mean(1)) > 0).all()


def test_spot_noise_is_a_seamless_tile_with_the_patchs_spread_and_rows_hold_their_colour():
    rng = np.random.default_rng(0)
    patch = np.clip(0.5 + 0.1 * rng.normal(size=(64, 48, 3)), 0, 1).astype(np.float32)
    tile = spot_noise(patch, np.ones((64, 48), np.float32), sigma=4.0, size=128)
    assert tile.shape == (128, 128, 3) and np.abs(tile.mean((0, 1))).max() < 1e-3
    assert 0.05 < tile.std() < 0.12  # the patch's detail, about 0.1 per channel
    inside = np.abs(np.diff(tile, axis=1)).mean()
    assert np.abs(tile[:, 0] - tile[:, -1]).mean() < 1.2 * inside  # no seam where it wraps
    colours = row_colours(
        np.tile(np.linspace(0, 1, 40)[:, None, None], (1, 10, 3)), np.pad(np.ones((20, 10)), ((10, 10), (0, 0))), 2.0
    )
    assert colours is not None and colours[0, 0] == pytest.approx(colours[8, 0], abs=0.02)  # held above the first row
    assert colours[20, 0] == pytest.approx(20 / 39, abs=0.03)


def _nodded(face: Face, degrees: float) -> Face:
    """The face's landmarks turned about the image's horizontal axis through its nasion (chin back)."""
    a = np.radians(degrees)
    lm = face.landmarks.astype(np.float64)
    y, z = lm[:, 1] - lm[168, 1], lm[:, 2] - lm[168, 2]
    lm[:, 1] = lm[168, 1] + np.cos(a) * y - np.sin(a) * z
    lm[:, 2] = lm[168, 2] + np.sin(a) * y + np.cos(a) * z
    return Face(lm.astype(np.float32))


@pytest.mark.parametrize("nod", [-10.0, 15.0])
def test_a_nodding_photo_builds_the_same_upright_head(hopper, nod: float):
    """A nod (or a camera above the face) is undone: the head's landmarks are the same as without
    it, and the photo's camera sees the head from that much above; the face then stands as an
    upright face does (nasion over chin: 4.4 degrees in mediapipe's canonical face)."""
    face = _working_copy(*hopper)[1]
    frame, head = head_frame(face)
    nodded_frame, nodded_head = head_frame(_nodded(face, nod))
    np.testing.assert_allclose(nodded_head.landmarks, head.landmarks, atol=1e-4)
    raised = np.degrees(np.arcsin(nodded_frame.view_direction[2]) - np.arcsin(frame.view_direction[2]))
    assert abs(raised - nod) < 0.5, raised
    line = head.landmarks[168] - head.landmarks[152]
    assert abs(np.degrees(np.arctan2(-line[1], line[2])) - 4.4) < 2.0  # 11.8 with the photo's nod kept


def test_the_photo_fades_out_towards_its_own_edge(hopper, landmarker: FaceLandmarker):
    """A portrait cut off across the forehead: the head takes the photo's pixels less and less towards
    the cut, over a few percent of the face's height (a hard cut followed the mesh's vertices in steps:
    a notch in the texture where a crop like Tom Hanks' ends)."""
    photo, face = hopper
    top = round(face.landmarks[10, 1] + 0.1 * (face.landmarks[152, 1] - face.landmarks[10, 1]))
    cut = np.ascontiguousarray(photo[top:])
    avatar = build_avatar(cut, landmarker.detect_required(cut, "cut photo"), resolution=RESOLUTION)
    uv, weight = avatar.uv.numpy(), avatar.texture_weight.numpy()
    ids = avatar.landmark_vertex_ids.numpy()
    height = float(np.linalg.norm(uv[ids[152]] - uv[ids[10]]))  # the face's height in the photo's pixels
    x_min, x_max = uv[ids, 0].min(), uv[ids, 0].max()
    across = (uv[:, 0] > x_min) & (uv[:, 0] < x_max) & (avatar.vertices[:, 1].numpy() < 0)  # the front
    near = weight[across & (uv[:, 1] > 0) & (uv[:, 1] < 0.02 * height)]
    far = weight[across & (uv[:, 1] > 0.07 * height) & (uv[:, 1] < 0.1 * height)]
    assert len(near) > 5 and len(far) > 5, (len(near), len(far))
    assert near.mean() < 0.25 * far.mean() and far.mean() > 0.5, (near.mean(), far.mean())


def test_a_photo_cut_off_at_the_forehead_gives_the_head_hair_not_the_edges_skin(landmarker: FaceLandmarker):
    """Tom Hanks' 112-px crop ends across his forehead, his dark hair showing in its top corners. The
    skull beyond the photo's edge is not seen: it takes the hair the photo shows, not the skin its edge
    repeats (the crown was a third hair, a bald light-grey dome)."""
    photo = load_photo("tom_hanks")
    face = landmarker.detect_required(photo, "Tom Hanks")
    avatar = build_avatar(photo, face, resolution=RESOLUTION)
    crown = avatar.vertices[:, 2] > torch.quantile(avatar.vertices[:, 2], 0.9)
    skin = photo_maps(*_working_copy(photo, face)).skin_color
    assert avatar.detail_weight[crown, 0].mean() > 0.9  # measured 1.0 (0.34 before)
    assert avatar.base_color[crown].mean() < float(skin.mean()) - 0.1  # measured 0.30 against his skin's 0.6
