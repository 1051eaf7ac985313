"""What the 4D models (`model=nerface`, `model=gaussian_avatar`) share about a talking-head video:
the checked training frames and the state each model keeps of them, their foreground against the
static background image, the background image at a render's size, and the model held frozen while
test frames' poses are fitted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor, nn

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import FrameDataModule, Frames
from implicit_deepfake.lit.pose_correction import PoseCorrection

# A pixel is foreground where a channel differs from the background image by more than this.
_FOREGROUND_THRESHOLD = 0.06
_FOREGROUND_GROWTH = 2  # pixels the foreground masks are grown by, for a safe margin


def talking_head_frames(datamodule: FrameDataModule, model: str, expression_dims: int) -> Frames:
    """The training frames of a NeRFace-format dataset (per-frame expressions of `expression_dims`
    values and a static background image); a clear error for any other dataset."""
    frames = datamodule.frames("train")
    if frames.expressions is None or frames.background_image is None:
        raise DeepfakeError(
            f"model={model} needs a NeRFace-format dataset (per-frame `expression` and a static background "
            f"image): use data=synthetic4d, data=nerface or data=video; {datamodule.root} has neither."
        )
    if frames.expressions.shape[1] != expression_dims:
        raise DeepfakeError(
            f"{datamodule.root}: expressions have {frames.expressions.shape[1]} values, the model was configured "
            f"for {expression_dims}: set model.module.expression_dims={frames.expressions.shape[1]}."
        )
    return frames


class TalkingHeadState(nn.Module):
    """A 4D LightningModule's mixin (before its scene base class): a latent code and a pose correction
    per training frame, the training frames' expressions and the background image (buffers: checkpoints
    carry them), empty until sized from the training frames at fit or from a checkpoint at load."""

    latents: nn.Parameter
    pose_correction: PoseCorrection
    train_expressions: Tensor
    background_image: Tensor

    def init_talking_head(self, expression_dims: int, latent_dims: int) -> None:
        self.latents = nn.Parameter(torch.zeros(0, latent_dims))
        self.pose_correction = PoseCorrection(0)  # one per training frame with pose_refine
        self.register_buffer("train_expressions", torch.zeros(0, expression_dims))
        self.register_buffer("background_image", torch.ones(1, 1, 3))

    def hold_training_frames(self, frames: Frames, latent_dims: int, pose_refine: bool) -> None:
        """Sized for `frames` (talking_head_frames'), on the module's device."""
        assert frames.expressions is not None and frames.background_image is not None  # checked there
        device = self.background_image.device
        self.latents = nn.Parameter(torch.zeros(len(frames), latent_dims, device=device))
        if pose_refine:
            self.pose_correction = PoseCorrection(len(frames)).to(device)
        self.train_expressions = frames.expressions.to(device)
        self.background_image = frames.background_image.to(device)

    def shape_like(self, state: dict[str, Tensor]) -> None:
        """Sized like a checkpoint's `state_dict`, before it is loaded."""
        self.latents = nn.Parameter(torch.zeros_like(state["latents"]))
        state.setdefault("pose_correction.params", torch.zeros(0, 6))  # runs from before pose refinement
        self.pose_correction = PoseCorrection(len(state["pose_correction.params"]))
        self.train_expressions = torch.zeros_like(state["train_expressions"])
        self.background_image = torch.zeros_like(state["background_image"])


def foreground_masks(rgb: Tensor, background: Tensor) -> Tensor:
    """(N, H, W) float masks of what differs from the static background image (H, W, 3) in frames
    (N, H, W, 3): background subtraction, holes filled (head colours that happen to match the
    background), grown by _FOREGROUND_GROWTH pixels."""
    differs = ((rgb - background).abs().amax(-1) > _FOREGROUND_THRESHOLD).numpy()
    filled = torch.from_numpy(np.stack([ndimage.binary_fill_holes(mask) for mask in differs])).float()
    grow = _FOREGROUND_GROWTH
    return nn.functional.max_pool2d(filled[:, None], 2 * grow + 1, stride=1, padding=grow)[:, 0]


def background_at(image: Tensor, height: int, width: int) -> Tensor:
    """The background image (H, W, 3) at height x width: resized when a view renders smaller or larger."""
    if image.shape[:2] != (height, width):
        resized = nn.functional.interpolate(image.permute(2, 0, 1)[None], (height, width), mode="area")
        image = resized[0].permute(1, 2, 0)
    return image


@contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """The module's trainable parameters frozen for the block (gradients enabled for what else it fits)."""
    trainable = [p for p in module.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with torch.enable_grad():
            yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
