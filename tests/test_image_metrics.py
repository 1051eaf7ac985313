import os
import urllib.request

import pytest
import torch

from implicit_deepfake.metrics import image
from implicit_deepfake.metrics.image import ImageMetrics, backbone_checkpoint, image_metrics, lpips_status


def _no_network(*args, **kwargs):
    raise AssertionError("tried to download")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty TORCH_HOME and every download path of torch/urllib made to fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    return tmp_path


def test_psnr_matches_hand_computed_values(offline):
    target = torch.full((2, 24, 24, 3), 0.5)
    pred = target + torch.tensor([0.1, 0.01])[:, None, None, None]  # MSE 1e-2 and 1e-4
    result = image_metrics(pred, target)
    assert [row["psnr"] for row in result["per_image"]] == pytest.approx([20.0, 40.0], abs=1e-3)
    assert result["psnr"] == pytest.approx(30.0, abs=1e-3)


def test_ssim_is_one_for_identical_images_and_falls_with_noise(offline):
    # On a flat grey image SSIM reduces to its contrast-structure term C2 / (sigma^2 + C2), C2 = 0.03^2.
    target = torch.full((3, 64, 64, 3), 0.5)
    sigma = torch.tensor([0.0, 0.05, 0.2])
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0)) * sigma[:, None, None, None]
    ssim = [row["ssim"] for row in ImageMetrics()(target + noise, target)["per_image"]]
    c2 = 0.03**2
    assert ssim[0] == pytest.approx(1.0, abs=1e-6)
    assert ssim[1] == pytest.approx(c2 / (0.05**2 + c2), abs=0.03)
    assert ssim[2] == pytest.approx(c2 / (0.2**2 + c2), abs=0.01)


def test_lpips_unavailable_offline_gives_none_and_the_fix(offline):
    available, reason = lpips_status("alex")
    assert not available
    expected = offline / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert str(expected) in reason and "alexnet-owt-7be5be79.pth" in reason
    result = image_metrics(torch.zeros(2, 16, 16, 3), torch.ones(2, 16, 16, 3))
    assert result["lpips"] is None and result["lpips_reason"] == reason
    assert all(row["lpips"] is None for row in result["per_image"])
    assert result["psnr"] == pytest.approx(0.0, abs=1e-4)


def test_lpips_detection_finds_a_cached_backbone(offline, monkeypatch, tmp_path):
    home = tmp_path / "elsewhere"
    checkpoint = backbone_checkpoint("vgg", home)
    assert checkpoint == home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert os.environ["TORCH_HOME"] == str(offline)  # the override did not leak
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(image, "_torchvision_installed", lambda: True)
    assert lpips_status("vgg", home) == (True, f"LPIPS (vgg) weights found at {checkpoint}")
    available, reason = lpips_status("vgg")  # the env's TORCH_HOME has no weights
    assert not available and "vgg16-397923af.pth" in reason and "not installed" not in reason


@pytest.mark.skipif(not lpips_status()[0], reason="LPIPS weights not cached offline: " + lpips_status()[1])
def test_real_lpips_is_zero_for_identical_images_and_grows_with_noise():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(1, 64, 64, 3, generator=generator).repeat(2, 1, 1, 1)
    noise = torch.randn(target.shape, generator=generator) * torch.tensor([0.0, 0.2])[:, None, None, None]
    result = ImageMetrics()((target + noise).clamp(0, 1), target)
    lpips = [row["lpips"] for row in result["per_image"]]
    assert lpips[0] == pytest.approx(0.0, abs=1e-4) and lpips[1] > 0.05
    assert result["lpips_reason"] is None
