import math
import subprocess

import imageio
import imageio_ffmpeg
import numpy as np
import pytest
import torch

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE
from implicit_deepfake.render.cameras import Cameras, look_at
from implicit_deepfake.render.video import orbit_cameras, view_range, write_video
from tests.conftest import orbit_cameras as ring_cameras


def _azimuths_deg(offsets: torch.Tensor, up: torch.Tensor, start: torch.Tensor) -> np.ndarray:
    """Angles (deg, [0, 360)) of offsets (N, 3) around the axis `up`, counter-clockwise from `start`."""
    side = torch.linalg.cross(up, start)
    return np.degrees(np.arctan2(offsets @ side, offsets @ start).numpy()) % 360.0


def _assert_orbit(orbit: Cameras, target: torch.Tensor, up: torch.Tensor, distance: float, height: float) -> None:
    """Every camera looks at `target` (it projects on the principal point), `distance` away, `height`
    above it along `up`, with a level horizon, and the cameras split 360 degrees in equal steps."""
    pix, depth = orbit.project(target[None])
    principal = orbit.intrinsics[:, :2, 2]
    torch.testing.assert_close(pix[:, 0], principal, atol=1e-3, rtol=0)
    torch.testing.assert_close(depth[:, 0], torch.full((len(orbit),), distance), atol=1e-4, rtol=0)
    offsets = orbit.centers - target
    torch.testing.assert_close(offsets @ up, torch.full((len(orbit),), height), atol=2e-3, rtol=0)
    right = orbit.camera_to_world[:, :3, 0]
    assert (right @ up).abs().max() < 1e-3  # no roll: the horizon stays level
    start = offsets[0] - (offsets[0] @ up) * up
    azimuths = _azimuths_deg(offsets, up, start / start.norm())
    steps = np.diff(np.append(azimuths, azimuths[0])) % 360.0  # counter-clockwise steps, last one closing the loop
    np.testing.assert_allclose(steps, 360.0 / len(orbit), atol=0.05)


def test_orbit_of_z_up_ring_keeps_target_distance_and_elevation():
    cameras = ring_cameras(5, 32)  # a 70-degree arc around the origin, 0.5 above it, z up
    orbit = orbit_cameras(cameras, 12, turn="full")
    assert len(orbit) == 12 and (orbit.width, orbit.height) == (32, 32)
    torch.testing.assert_close(orbit.intrinsics, cameras.intrinsics[:1].expand(12, 3, 3))
    _assert_orbit(orbit, torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), math.hypot(4.0, 0.5), 0.5)
    # It starts where the dataset's cameras are on average: in front, at -y.
    torch.testing.assert_close(orbit.centers[0, :2], torch.tensor([0.0, -4.0]), atol=1e-3, rtol=0)


def test_orbit_of_y_up_partial_views_around_an_off_centre_target():
    target, up = torch.tensor([1.0, 2.0, -0.5]), torch.tensor([0.0, 1.0, 0.0])
    azimuth = torch.tensor([-0.5, -0.2, 0.1, 0.4, 0.6])
    elevation = torch.tensor([0.1, 0.5, -0.2, 0.3, 0.2])
    direction = torch.stack(
        [torch.cos(elevation) * torch.sin(azimuth), torch.sin(elevation), torch.cos(elevation) * torch.cos(azimuth)], 1
    )
    c2w = look_at(target + 3.0 * direction, target.expand(5, 3), up)
    cameras = Cameras.from_blender(c2w, 0.7, 40, 30)
    orbit = orbit_cameras(cameras, 8, elevation_deg=20.0, turn="full")
    assert (orbit.width, orbit.height) == (40, 30)
    _assert_orbit(orbit, target, up, 3.0, 3.0 * math.sin(math.radians(20.0)))
    mean_elevation = float(elevation.mean())
    _assert_orbit(orbit_cameras(cameras, 8, turn="full"), target, up, 3.0, 3.0 * math.sin(mean_elevation))

    # By default the orbit stays within the views' azimuth and elevation ranges and reaches their ends.
    seen = view_range(cameras)
    assert not seen.all_around
    np.testing.assert_allclose(seen.azimuth_deg[1] - seen.azimuth_deg[0], math.degrees(0.6 + 0.5), atol=0.01)
    np.testing.assert_allclose(seen.elevation_deg, (math.degrees(-0.2), math.degrees(0.5)), atol=0.01)
    arc = orbit_cameras(cameras, 16)
    offsets = arc.centers - target
    torch.testing.assert_close(offsets.norm(dim=1), torch.full((16,), 3.0), atol=1e-4, rtol=0)
    pix, _ = arc.project(target[None])
    torch.testing.assert_close(pix[:, 0], arc.intrinsics[:, :2, 2], atol=1e-3, rtol=0)
    start = torch.tensor([math.sin(float(azimuth.mean())), 0.0, math.cos(float(azimuth.mean()))])
    yaw = (_azimuths_deg(offsets, up, start) + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose(yaw.max() - yaw.min(), math.degrees(1.1), atol=0.05)  # frames 4 and 12: the ends
    pitch = np.degrees(np.arcsin((offsets @ up / 3.0).numpy()))
    np.testing.assert_allclose((pitch.min(), pitch.max()), seen.elevation_deg, atol=0.05)


def test_orbit_of_front_cameras_swings_over_their_arc_and_loops():
    cameras = ring_cameras(5, 32)  # azimuth -0.6..0.6 rad around -y, all 0.5 above the origin
    seen = view_range(cameras)
    np.testing.assert_allclose(seen.azimuth_deg, (-math.degrees(0.6), math.degrees(0.6)), atol=0.01)
    np.testing.assert_allclose(seen.elevation_deg, [math.degrees(math.atan2(0.5, 4.0))] * 2, atol=0.01)
    assert not seen.all_around
    orbit = orbit_cameras(cameras, 24)
    up, front = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, -1.0, 0.0])
    yaw = (_azimuths_deg(orbit.centers, up, front) + 180.0) % 360.0 - 180.0
    np.testing.assert_allclose((yaw.min(), yaw.max()), (-math.degrees(0.6), math.degrees(0.6)), atol=0.05)
    assert abs(yaw[0]) < 1e-3  # starts in the middle of the arc, so the loop closes smoothly
    np.testing.assert_allclose(np.diff(np.append(yaw, yaw[0])).sum(), 0.0, atol=1e-6)
    torch.testing.assert_close(orbit.centers[:, 2], torch.full((24,), 0.5), atol=1e-4, rtol=0)


def test_orbit_of_cameras_all_around_is_a_full_turn():
    angles = torch.arange(12) * (2 * math.pi / 12) + 0.1
    eye = torch.stack([4.0 * torch.sin(angles), -4.0 * torch.cos(angles), torch.full((12,), 1.0)], 1)
    cameras = Cameras.from_blender(look_at(eye, torch.zeros(12, 3), torch.tensor([0.0, 0.0, 1.0])), 0.8, 32, 32)
    assert view_range(cameras).all_around
    _assert_orbit(orbit_cameras(cameras, 10), torch.zeros(3), torch.tensor([0.0, 0.0, 1.0]), math.hypot(4.0, 1.0), 1.0)
    with pytest.raises(DeepfakeError, match="evaluate.orbit='half'"):
        orbit_cameras(cameras, 10, turn="half")


def test_orbit_rejects_cameras_that_all_look_the_same_way():
    eye = torch.tensor([[0.0, -4.0, 0.0], [1.0, -4.0, 0.0]])
    c2w = look_at(eye, eye + torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0]))
    with pytest.raises(DeepfakeError, match="same direction"):
        orbit_cameras(Cameras.from_blender(c2w, 0.8, 16, 16), 4)


def _frames(height: int, width: int, n: int = 10):
    """Left half red, right half a blue that brightens frame by frame (a generator)."""
    for i in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : width // 2] = (220, 30, 40)
        frame[:, width // 2 :] = (20, 40, 100 + 15 * i)
        yield frame


@pytest.mark.parametrize("height, width", [(128, 128), (97, 129)])
def test_write_video_round_trip(tmp_path, height, width):
    path = tmp_path / "out" / "orbit.mp4"
    assert write_video(path, _frames(height, width), fps=24) == 10
    assert sorted(p.name for p in path.parent.iterdir()) == ["orbit.mp4"]  # no temp file left

    with imageio.get_reader(path, format="FFMPEG") as reader:
        assert reader.get_meta_data()["fps"] == pytest.approx(24.0)
        frames = list(reader.iter_data())  # list(reader) asks len(): imageio says inf
    assert len(frames) == 10
    assert frames[0].shape == (height + height % 2, width + width % 2, 3)  # odd sizes padded by one
    for i in (0, 9):
        inner = frames[i][4:-4]  # away from the chroma-subsampled edge between the halves
        np.testing.assert_allclose(inner[:, 4 : width // 2 - 4].mean((0, 1)), (220, 30, 40), atol=6)
        np.testing.assert_allclose(inner[:, width // 2 + 4 : -4].mean((0, 1)), (20, 40, 100 + 15 * i), atol=6)

    metadata = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path), "-f", "ffmetadata", "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"comment={SYNTHETIC_NOTICE}" in metadata and f"description={SYNTHETIC_NOTICE}" in metadata


def test_write_video_leaves_nothing_behind_on_bad_frames(tmp_path):
    frames = [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 18, 3), np.uint8)]
    with pytest.raises(ValueError, match="frame 1"):
        write_video(tmp_path / "bad.mp4", frames)
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [])
    assert list(tmp_path.iterdir()) == []
