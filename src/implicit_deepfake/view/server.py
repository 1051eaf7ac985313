"""The interactive viewer: a trained model served to the browser with viser and nerfview.

nerfview renders through a `render_fn(camera) -> image` and sends the image to viser's web client
(shipped in the viser wheel, so it works offline): small images while the camera moves, the full
resolution once it rests. The render function is the model's own `render_views`, the one evaluation
uses, so every model works (Gaussians on the CPU rasterizer or gsplat, the NeRFs, NeRFace).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import nerfview
import numpy as np
import torch
import viser
from torch import Tensor

from implicit_deepfake.core.io import SYNTHETIC_NOTICE
from implicit_deepfake.data.expressions import EXPRESSION_NAMES, EXPRESSION_RANGES
from implicit_deepfake.lit.base import SceneModule
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.video import uint8_images
from implicit_deepfake.view.camera import InitialView

log = logging.getLogger(__name__)
MEAN_EXPRESSION = -1  # the "expression of frame" slider's value for the training frames' mean
PLAY_FPS = 12  # "Play" steps through the frames at most this fast


def viewer_cameras(camera_to_world: np.ndarray, intrinsics: np.ndarray, width: int, height: int) -> Cameras:
    """One project camera from a viser/nerfview camera: camera-to-world (4, 4) in OpenCV axes, as ours."""
    world_to_camera = torch.linalg.inv(torch.as_tensor(camera_to_world, dtype=torch.float64)).float()
    return Cameras(world_to_camera[None], torch.as_tensor(intrinsics, dtype=torch.float32)[None], width, height)


class ExpressionControls:
    """A talking head's expression: "expression of frame k" (or the mean) as the base, and for the
    synthetic head sliders for its named components (jaw, smile, brows), which replace the base's;
    "Play" steps through the training frames' expressions (as fast as the model renders them)."""

    def __init__(self, gui: viser.GuiApi, train_expressions: Tensor, named: bool, on_change: Callable) -> None:
        self.train_expressions = train_expressions.detach().cpu()
        with gui.add_folder("Expression"):
            self.frame = gui.add_slider(
                "Of frame", min=MEAN_EXPRESSION, max=len(self.train_expressions) - 1, step=1,
                initial_value=MEAN_EXPRESSION, hint="A training frame's expression; -1: their mean.",
            )  # fmt: skip
            self.playing = gui.add_checkbox("Play", initial_value=False, hint="Play the training frames' expressions.")
            self.components = [
                gui.add_slider(name, min=float(low), max=float(high), step=0.01, initial_value=float(base))
                for name, (low, high), base in zip(EXPRESSION_NAMES, EXPRESSION_RANGES, self.base())
            ] if named else []  # fmt: skip

        @self.frame.on_update
        def _(_) -> None:
            for slider, value in zip(self.components, self.base()):
                # its own update re-renders (ignore: viser types GuiSliderHandle.value read-only, the setter exists)
                slider.value = float(value)  # type: ignore[misc]
            on_change()

        for slider in self.components:
            slider.on_update(lambda _: on_change())

        @self.playing.on_update
        def _(_) -> None:
            if self.playing.value:
                threading.Thread(target=self._play, daemon=True).start()

    def _play(self) -> None:
        while self.playing.value:
            time.sleep(1.0 / PLAY_FPS)
            # Each step re-renders through the slider's update (ignore: viser types the value read-only).
            self.frame.value = (int(self.frame.value) + 1) % len(self.train_expressions)  # type: ignore[misc]

    def base(self) -> Tensor:
        k = int(self.frame.value)
        return self.train_expressions.mean(0) if k == MEAN_EXPRESSION else self.train_expressions[k]

    def vector(self) -> Tensor:
        """(D,) the expression to render."""
        vector = self.base().clone()
        vector[: len(self.components)] = torch.tensor([float(s.value) for s in self.components])
        return vector


class _Viewer(nerfview.Viewer):
    """nerfview's viewer with our resolution control only (its render tab's camera-path video export
    would write files without the synthetic-media marks)."""

    def __init__(self, server: viser.ViserServer, render_fn: Callable, resolution: int, mode: str) -> None:
        self._resolution = resolution
        super().__init__(server, render_fn, mode=mode)

    def _populate_rendering_tab(self) -> None:
        self.render_tab_state.viewer_res = self._resolution
        with self._rendering_folder:
            slider = self.server.gui.add_slider(
                "Resolution", min=64, max=2048, step=16, initial_value=self._resolution,
                hint="The longer side of the image rendered once the camera rests (smaller while it moves).",
            )  # fmt: skip

        @slider.on_update
        def _(event) -> None:
            self.render_tab_state.viewer_res = int(slider.value)
            self.rerender(event)


class ModelViewer:
    """Serve `module` at http://host:port, opening on `view` (see `view.camera`).

    expressions: a talking head's training expressions (N, D), for its expression controls;
    named_expressions: show the synthetic head's jaw/smile/brows sliders. mode "training": nerfview's
    pause button and step counter (see `view.training.ViewerCallback`)."""

    def __init__(
        self,
        module: SceneModule,
        view: InitialView,
        title: str,
        host: str = "0.0.0.0",
        port: int = 8080,
        resolution: int = 256,
        expressions: Tensor | None = None,
        named_expressions: bool = False,
        mode: str = "rendering",
    ) -> None:
        self.module = module
        self.view = view
        self.server = viser.ViserServer(host=host, port=port, verbose=False)
        self._open_on(self.view)
        self.server.gui.add_markdown(f"**{SYNTHETIC_NOTICE}**")
        self.expression = None
        if expressions is not None:
            self.expression = ExpressionControls(self.server.gui, expressions, named_expressions, self.rerender)
        # One render before serving: loads (or compiles) the renderer in this thread, not in nerfview's.
        self._render_view(view.cameras(32, 32))
        self.viewer = _Viewer(self.server, self.render, resolution, mode)
        self.server.gui.set_panel_label(f"{title} (synthetic)")

    @property
    def port(self) -> int:
        return self.server.get_port()

    def _open_on(self, view: InitialView) -> None:
        camera = self.server.initial_camera
        camera.position, camera.look_at, camera.up = view.position, view.look_at, view.up
        camera.fov, camera.near, camera.far = np.radians(view.fov_y_deg), view.near, view.far
        self.server.scene.set_up_direction(view.up)

    def rerender(self) -> None:
        self.viewer.rerender(None)

    def render(self, camera_state: nerfview.CameraState, tab: nerfview.RenderTabState) -> np.ndarray:
        """nerfview's render_fn: (H, W, 3) uint8 of the camera at the size nerfview asks for."""
        width, height = tab.viewer_width, tab.viewer_height
        return self._render_view(viewer_cameras(camera_state.c2w, camera_state.get_K((width, height)), width, height))

    def _render_view(self, camera: Cameras) -> np.ndarray:
        device = self.module.device
        expressions = None if self.expression is None else self.expression.vector()[None].to(device)
        return uint8_images(self.module.render_views(camera.to(device), expressions))[0]

    def stop(self) -> None:
        if self.expression is not None:
            # (ignore: viser types the value read-only, the setter exists)
            self.expression.playing.value = False  # type: ignore[misc]
        self.server.stop()
