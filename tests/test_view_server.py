"""The interactive viewer: viser + nerfview rendering through the model's own render path."""

from __future__ import annotations

import io
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from nerfview import CameraState, RenderTabState
from omegaconf import OmegaConf
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import SYNTHETIC_NOTICE
from implicit_deepfake.data.expressions import EXPRESSION_NAMES
from implicit_deepfake.render.video import uint8_images
from implicit_deepfake.reports.runs import LAST_CHECKPOINT, write_run_info
from implicit_deepfake.view.camera import initial_view
from implicit_deepfake.view.run import view
from implicit_deepfake.view.server import ExpressionControls, ModelViewer
from implicit_deepfake.view.training import ViewerCallback
from tests.view_scene import (
    BACKGROUND,
    chromium_page,
    drawn_fraction,
    head_module,
    middle,
    needs_chromium,
    reference_render,
    ring_cameras,
    view_head_box,
)


@pytest.fixture(scope="module")
def viewer():
    view = initial_view(ring_cameras())
    served = ModelViewer(head_module(), view, "test head", host="127.0.0.1", port=0, resolution=256)
    yield served
    served.stop()


def camera_state(cameras, index: int) -> CameraState:
    """nerfview's camera for a project camera (square images: fov from fy)."""
    fov = 2 * np.arctan(0.5 * cameras.height / float(cameras.intrinsics[index, 1, 1]))
    return CameraState(fov=fov, aspect=cameras.width / cameras.height, c2w=cameras.camera_to_world[index].numpy())


def test_viewer_renders_what_evaluation_renders(viewer):
    cameras = ring_cameras(64)
    tab = RenderTabState(viewer_width=64, viewer_height=64)
    image = viewer.render(camera_state(cameras, 2), tab)
    expected = uint8_images(viewer.module.render_views(cameras[2]))[0]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - expected).max() <= 1
    assert 0.2 < (np.abs(image.astype(int) - 255).max(-1) > 30).mean() < 0.8  # the head, and background around it


def test_expression_controls_take_a_frames_expression_and_the_sliders():
    import viser

    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    try:
        expressions = torch.rand(5, 76)
        changes = []
        controls = ExpressionControls(server.gui, expressions, named=True, on_change=lambda: changes.append(1))
        assert torch.allclose(controls.vector(), expressions.mean(0))  # the mean at first
        controls.frame.value = 3
        assert torch.allclose(controls.vector(), expressions[3], atol=1e-6)  # sliders follow the frame
        assert [s.label for s in controls.components] == list(EXPRESSION_NAMES)
        controls.components[0].value = 1.0  # jaw open
        vector = controls.vector()
        assert vector[0] == 1.0 and torch.allclose(vector[1:], expressions[3, 1:], atol=1e-6)
        assert changes
        unnamed = ExpressionControls(server.gui, expressions, named=False, on_change=lambda: None)
        unnamed.frame.value = 1
        assert unnamed.components == [] and torch.equal(unnamed.vector(), expressions[1])
        unnamed.playing.value = True  # steps through the frames' expressions
        deadline = time.monotonic() + 10
        while unnamed.frame.value in (1, 2) and time.monotonic() < deadline:
            time.sleep(0.05)
        unnamed.playing.value = False
        assert unnamed.frame.value not in (1, 2)
    finally:
        server.stop()


def test_training_waits_while_paused_and_holds_the_render_lock_during_a_step(tmp_path):
    module = head_module(n=500)
    datamodule = SimpleNamespace(frames=lambda split: SimpleNamespace(cameras=ring_cameras()), root=tmp_path)
    trainer = SimpleNamespace(global_rank=0, global_step=7, datamodule=datamodule)
    callback = ViewerCallback("training", host="127.0.0.1", port=0)
    callback.on_train_start(trainer, module)
    try:
        nerfview_viewer = callback.viewer.viewer
        nerfview_viewer.state = "paused"  # as the Pause button sets it
        step = threading.Thread(target=callback.on_train_batch_start, args=(trainer, module, {}, 0))
        step.start()
        time.sleep(0.3)
        assert step.is_alive() and not nerfview_viewer.lock.locked()  # waiting, not training
        nerfview_viewer.state = "training"
        step.join(timeout=5)
        assert not step.is_alive() and nerfview_viewer.lock.locked()  # a render now waits for the step
        callback.on_train_batch_end(trainer, module, None, {"rgb": torch.zeros(1, 8, 8, 3)}, 0)
        assert not nerfview_viewer.lock.locked()
        assert nerfview_viewer.render_tab_state.num_train_rays_per_sec > 0
        assert nerfview_viewer._training_tab_handles["step_number"].value == 7
        callback.on_train_batch_start(trainer, module, {}, 1)  # a step that raises: fit ends holding the lock
    finally:
        callback.teardown(trainer, module, "fit")
    assert callback.viewer is None and not nerfview_viewer.lock.locked()


@pytest.fixture
def saved_run(tmp_path, compose_cfg, tiny_dataset):
    """A train.py run folder holding the head as a Gaussians checkpoint, on the tiny dataset's cameras."""
    cfg = compose_cfg(
        "train", ["model=gaussians", "model.module.sh_degree=1", "swap=none", f"datamodule.root={tiny_dataset}"]
    )
    run_dir = tmp_path / "logs" / "train" / "runs" / "head"
    module = head_module(n=800)
    (run_dir / LAST_CHECKPOINT).parent.mkdir(parents=True)
    torch.save({"state_dict": module.state_dict(), "global_step": 3}, run_dir / LAST_CHECKPOINT)
    OmegaConf.save(cfg, run_dir / "config.yaml")
    write_run_info(run_dir, cfg, status="trained")
    return run_dir, module


def view_cfg(tmp_path, **overrides):
    base = {"ckpt": "last", "host": "127.0.0.1", "port": 0, "resolution": 64, "device": "cpu", "export": False}
    return OmegaConf.create({**base, "block": False, "paths": {"log_dir": str(tmp_path / "logs")}, **overrides})


def test_view_py_serves_the_newest_run_through_its_checkpoint(saved_run, tmp_path):
    _, module = saved_run
    viewer = view(view_cfg(tmp_path))
    try:
        cameras = ring_cameras(32)
        image = viewer.render(camera_state(cameras, 4), RenderTabState(viewer_width=32, viewer_height=32))
        assert np.array_equal(image, uint8_images(module.render_views(cameras[4]))[0])
    finally:
        viewer.stop()


def test_view_py_export_writes_the_page_and_refuses_a_foreign_checkpoint(saved_run, tmp_path):
    run_dir, _ = saved_run
    assert view(view_cfg(tmp_path, export=True)) is None
    page = (run_dir / "viewer.html").read_text(encoding="utf-8")
    assert SYNTHETIC_NOTICE in page and (run_dir / "point_cloud.ply").is_file()
    torch.save({"state_dict": {}, "hook": SimpleNamespace()}, run_dir / LAST_CHECKPOINT)
    with pytest.raises(DeepfakeError, match="refused"):
        view(view_cfg(tmp_path, export=True))


@needs_chromium
def test_browser_shows_the_head_and_the_notice(viewer, tmp_path):
    with chromium_page(1024, 640) as page:
        page.goto(f"http://127.0.0.1:{viewer.port}/")
        canvas = page.locator("canvas").first
        page.get_by_text("SYNTHETIC IMAGE", exact=False).first.wait_for(timeout=60_000)
        deadline, drawn = time.monotonic() + 60, 0.0
        while drawn < 0.95 and time.monotonic() < deadline:
            time.sleep(1.0)
            box = canvas.bounding_box()
            png = page.screenshot(path=str(tmp_path / "viser.png"))
            image = np.array(Image.open(io.BytesIO(png)).convert("RGB"))
            frame = image[int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])]
            head = view_head_box(viewer.view, frame.shape[1], frame.shape[0])
            drawn = drawn_fraction(frame, head, BACKGROUND)
    assert drawn > 0.95, f"the head's box is {drawn:.0%} drawn (screenshot: {tmp_path / 'viser.png'})"
    reference = reference_render(viewer.module, viewer.view, frame.shape[1], frame.shape[0])
    assert np.abs(middle(frame, head).mean(0) - middle(reference, head).mean(0)).max() < 10  # JPEG, scaled up
    # Beside the head: the background (the model's, sent as the canvas's background image).
    beside = frame[head[1] : head[3], head[2] + 20 : frame.shape[1] - 10]
    assert (np.abs(beside.astype(int) - 255).max(-1) <= 30).mean() > 0.9
