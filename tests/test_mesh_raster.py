import numpy as np
import pytest
import torch

from implicit_deepfake.render.mesh_raster import interpolate, rasterize


def dense_reference(pix_xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Every triangle against every pixel centre, nearest perspective-correct depth wins."""
    face_id = np.full((height, width), -1)
    bary = np.zeros((height, width, 3))
    zbuf = np.full((height, width), np.inf)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    for f, (i, j, k) in enumerate(faces):
        (ax, ay), (bx, by), (cx, cy) = pix_xy[i], pix_xy[j], pix_xy[k]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        w0 = ((cx - bx) * (ys - by) - (cy - by) * (xs - bx)) / area
        w1 = ((ax - cx) * (ys - cy) - (ay - cy) * (xs - cx)) / area
        w2 = ((bx - ax) * (ys - ay) - (by - ay) * (xs - ax)) / area
        inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
        w_over_z = np.stack([w0 / depth[i], w1 / depth[j], w2 / depth[k]], -1)
        z = 1.0 / w_over_z.sum(-1)
        for y, x in zip(*np.nonzero(inside & (z < zbuf))):
            zbuf[y, x], face_id[y, x], bary[y, x] = z[y, x], f, w_over_z[y, x] * z[y, x]
    return face_id, bary


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_dense_reference_on_overlapping_triangles(seed: int):
    rng = np.random.default_rng(seed)
    height, width, n_faces = 37, 53, 12
    # Triangles of very different sizes (a few pixels to larger than the image), overlapping.
    centres = rng.uniform([0, 0], [width, height], (n_faces, 1, 2))
    scales = rng.choice([2.0, 8.0, 30.0, 80.0], n_faces)[:, None, None]
    pix_xy = (centres + scales * rng.normal(size=(n_faces, 3, 2))).reshape(-1, 2)
    depth = rng.uniform(1.0, 5.0, n_faces * 3)
    faces = np.arange(n_faces * 3).reshape(-1, 3)

    face_id, bary = rasterize(torch.tensor(pix_xy), torch.tensor(depth), torch.tensor(faces), height, width)
    ref_id, ref_bary = dense_reference(pix_xy, depth, faces, height, width)

    assert (ref_id >= 0).mean() > 0.3 and len(np.unique(ref_id)) > 6  # a real test: many visible faces
    np.testing.assert_array_equal(face_id.numpy(), ref_id)
    np.testing.assert_allclose(bary.numpy(), ref_bary, atol=1e-9)


def test_perspective_correct_barycentrics_interpolate_3d_points_exactly():
    # A quad in 3D, tilted away from a pinhole camera: barycentric interpolation of the 3D
    # corners must give points that re-project onto their own pixel centres.
    corners = torch.tensor(
        [[-1.0, -1.0, 2.0], [1.0, -1.0, 2.0], [1.0, 1.0, 6.0], [-1.0, 1.0, 6.0]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    focal, size = 20.0, 32
    pix = corners[:, :2] / corners[:, 2:] * focal + size / 2
    face_id, bary = rasterize(pix, corners[:, 2], faces, size, size)
    points = interpolate(corners, faces, face_id, bary)
    covered = face_id >= 0
    assert covered.sum() > 150
    reprojected = points[covered][:, :2] / points[covered][:, 2:] * focal + size / 2
    ys, xs = torch.nonzero(covered, as_tuple=True)
    expected = torch.stack([xs, ys], -1).to(torch.float64) + 0.5
    torch.testing.assert_close(reprojected, expected, atol=1e-9, rtol=0)


def test_closed_mesh_edges_leave_no_cracks():
    # A fan of thin triangles around a centre: every pixel inside the disc must be covered.
    n, size = 97, 64
    angles = torch.linspace(0, 2 * torch.pi, n + 1, dtype=torch.float64)[:-1]
    rim = torch.stack([torch.cos(angles), torch.sin(angles)], -1) * 25 + 32.1
    pix = torch.cat([torch.tensor([[32.1, 32.1]], dtype=torch.float64), rim])
    faces = torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(1, n + 1), torch.arange(1, n + 1) % n + 1], 1)
    face_id, _ = rasterize(pix, torch.ones(n + 1, dtype=torch.float64), faces, size, size)
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    well_inside = (xs - 32.1) ** 2 + (ys - 32.1) ** 2 < 24**2
    assert (face_id[well_inside] >= 0).all()


def test_triangles_behind_the_camera_or_off_screen_are_skipped():
    pix = torch.tensor([[1.0, 1.0], [30.0, 1.0], [1.0, 30.0], [-50.0, -50.0], [-40.0, -50.0], [-50.0, -40.0]])
    depth = torch.tensor([-1.0, 2.0, 2.0, 1.0, 1.0, 1.0])
    face_id, bary = rasterize(pix, depth, torch.tensor([[0, 1, 2], [3, 4, 5]]), 16, 16)
    assert (face_id == -1).all() and (bary == 0).all()
