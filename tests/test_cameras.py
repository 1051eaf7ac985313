import math

import pytest
import torch

from implicit_deepfake.render.cameras import Cameras, look_at

UP = torch.tensor([0.0, 0.0, 1.0])


def front_camera(size: int = 100, angle_x: float = math.pi / 2) -> Cameras:
    c2w = look_at(torch.tensor([[0.0, -4.0, 0.0]]), torch.zeros(1, 3), UP)
    return Cameras.from_blender(c2w, angle_x, size, size)


def test_blender_opengl_convention_maps_to_opencv_pixels():
    cam = front_camera()
    # fov 90 deg at W=100 -> focal 50 px; origin on the optical axis lands on the image centre.
    assert torch.allclose(cam.intrinsics[0], torch.tensor([[50.0, 0, 50], [0, 50, 50], [0, 0, 1]]))
    pix, depth = cam.project(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    assert depth[0].tolist() == pytest.approx([4.0, 4.0, 4.0])
    assert pix[0, 0].tolist() == pytest.approx([50.0, 50.0])
    assert pix[0, 1].tolist() == pytest.approx([62.5, 50.0])  # world +x -> image right
    assert pix[0, 2].tolist() == pytest.approx([50.0, 37.5])  # world +z (up) -> image up
    assert cam.centers[0].tolist() == pytest.approx([0.0, -4.0, 0.0], abs=1e-5)


def test_blender_round_trip_and_camera_axes():
    eye = torch.tensor([[3.0, -2.0, 1.0], [-1.0, -4.0, 2.0]])
    c2w = look_at(eye, torch.zeros(2, 3), UP)
    cams = Cameras.from_blender(c2w, 0.7, 64, 48)
    back, angle = cams.to_blender()
    assert torch.allclose(back, c2w, atol=1e-5) and angle == pytest.approx(0.7)
    # OpenCV axes: the camera looks along +z, so the target is in front at the eye's distance.
    _, depth = cams.project(torch.zeros(1, 3))
    assert depth[:, 0].tolist() == pytest.approx(eye.norm(dim=1).tolist(), rel=1e-5)


def test_scaled_keeps_field_of_view_and_pixel_centres():
    cam = front_camera(size=64)
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (32, 32)
    point = torch.tensor([[0.3, 0.2, -0.4]])
    full_pix, _ = cam.project(point)
    half_pix, _ = half.project(point)
    assert torch.allclose(half_pix, full_pix * 0.5, atol=1e-5)


def test_indexing_and_shape_check():
    eye = torch.tensor([[3.0, -2.0, 1.0], [-1.0, -4.0, 2.0], [0.0, -3.0, 0.0]])
    cams = Cameras.from_blender(look_at(eye, torch.zeros(3, 3), UP), 0.7, 8, 8)
    assert len(cams[1]) == 1 and len(cams[0:2]) == 2
    assert torch.equal(cams[2].world_to_camera[0], cams.world_to_camera[2])
    with pytest.raises(ValueError, match="Cameras"):
        Cameras(torch.eye(4)[None], torch.eye(3).expand(2, 3, 3), 8, 8)
