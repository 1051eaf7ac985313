"""`model=nerface`: the expression-conditioned dynamic NeRF of NeRFace (Gafni et al., CVPR 2021).

LitNeRF's training and rendering with NeRFace's three changes: every ray is conditioned on its
frame's expression vector and a learned per-frame latent code (32-d, L2-regularised, as theirs),
rays end on the dataset's static background image instead of a colour, and rays come from the
DataModule's bbox-weighted sampling (`datamodule.bbox_weight`). Views outside the training frames
(validation, test, edits, the orbit) use the mean latent code; a view without an expression takes
the training frames' mean expression. The frames have no alpha: the occupancy grid is carved to
the visual hull of their foreground against the background image instead.

With `pose_refine` (a tracked clip's poses, `data=video`), each training frame's pose also learns a
correction (`pose_correction.py`); frames outside training get theirs from `fit_view_poses`, a short
photometric fit with the model frozen (evaluate.test_pose_steps), as BARF and NeRF-- evaluate.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import Frames, RayDataset
from implicit_deepfake.lit.base import trainer_datamodule
from implicit_deepfake.lit.nerf import LitNeRF
from implicit_deepfake.lit.pose_correction import PoseCorrection
from implicit_deepfake.lit.talking_head import (
    TalkingHeadState,
    background_at,
    foreground_masks,
    frozen,
    talking_head_frames,
)
from implicit_deepfake.render.cameras import Cameras


class LitNeRFace(TalkingHeadState, LitNeRF):
    """expression_dims: the dataset's expression length (NeRFace: 76); latent_dims: per-frame latent
    code length; latent_lr: its learning rate; latent_weight: weight of the codes' L2 norm in the
    loss. The model's field must take condition_dims = expression_dims + latent_dims. pose_refine:
    learn a pose correction per training frame, with pose_lr and pose_weight (the corrections' L2
    norm in the loss)."""

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        lr: dict[str, float],
        expression_dims: int,
        latent_dims: int,
        latent_lr: float,
        latent_weight: float,
        pose_refine: bool,
        pose_lr: float,
        pose_weight: float,
        **kwargs,
    ) -> None:
        super().__init__(model, optimizer, lr, **kwargs)
        self.init_talking_head(expression_dims, latent_dims)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != "fit":
            return
        frames = talking_head_frames(trainer_datamodule(self.trainer), "nerface", self.hparams.expression_dims)
        self.hold_training_frames(frames, self.hparams.latent_dims, self.hparams.pose_refine)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.shape_like(checkpoint["state_dict"])

    def carving_masks(self, frames: Frames, views: Tensor) -> Tensor:
        """The frames are opaque (alpha 1): their foreground against the background image instead."""
        if frames.background_image is None:  # LitNeRF.setup carves before this class's setup checks the data
            raise DeepfakeError(
                "model=nerface needs a NeRFace-format dataset (per-frame `expression` and a static background "
                "image): use data=synthetic4d or data=nerface."
            )
        return foreground_masks(frames.colors(views), frames.background_image)

    def param_groups(self) -> list[dict]:
        groups = [*super().param_groups(), {"params": [self.latents], "lr": self.hparams.latent_lr}]
        if len(self.pose_correction):
            groups.append({"params": [self.pose_correction.params], "lr": self.hparams.pose_lr})
        return groups

    def conditions(self, expressions: Tensor, latents: Tensor) -> Tensor:
        """(R, D) expressions and (R, L) latent codes -> the field's condition (R, D + L)."""
        return torch.cat([expressions, latents], dim=1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        if len(self.pose_correction):
            origins, directions = self.pose_correction.rays(
                batch["origins"], batch["directions"], batch["frame"], self.box_center
            )
            batch = {**batch, "origins": origins, "directions": directions}
        return super().training_step(batch, batch_idx)

    def training_rays(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        return batch["rgb"], batch["background"], self.conditions(batch["expression"], self.latents[batch["frame"]])

    def training_conditions(self) -> Tensor | None:
        return self.conditions(self.train_expressions, self.latents.detach())

    def regularization(self) -> Tensor:
        latents = self.hparams.latent_weight * self.latents.norm(dim=1).mean()
        if not len(self.pose_correction):
            return latents
        return latents + self.hparams.pose_weight * self.pose_correction.penalty()

    def background_for(self, cameras: Cameras) -> Tensor:
        """The background image at the cameras' size (H, W, 3): resized when they render smaller or larger."""
        return background_at(self.background_image, cameras.height, cameras.width)

    def view_rays(self, cameras: Cameras, view: int, flat: Tensor, expressions: Tensor | None) -> tuple[Tensor, Tensor]:
        expression = self.train_expressions.mean(0) if expressions is None else expressions[view]
        condition = self.conditions(expression.expand(len(flat), -1), self.latents.mean(0).expand(len(flat), -1))
        return self.background_for(cameras).reshape(-1, 3)[flat], condition

    def training_cameras(self, cameras: Cameras) -> Cameras:
        """The training frames' `cameras` with the pose corrections learned for them (none: as they are)."""
        if not len(self.pose_correction):
            return cameras
        corrected = self.pose_correction.cameras(cameras.to(self.device), self.box_center)
        return corrected.to(cameras.world_to_camera.device)

    def fit_view_poses(
        self, frames: Frames, steps: int, rays: int = 4096, lr: float = 2e-3, bbox_weight: float = 0.9, seed: int = 0
    ) -> tuple[Cameras, Tensor]:
        """Frames outside training (their own expressions, the mean latent code) -> their cameras
        with a pose correction fitted photometrically with the model frozen (`steps` Adam steps of
        `rays` rays over all the frames, bbox-weighted as in training), and each correction's
        rotation in degrees (F,)."""
        correction = PoseCorrection(len(frames)).to(self.device)
        optimizer = torch.optim.Adam(correction.parameters(), lr=lr)
        batches = RayDataset(frames, rays, bbox_weight, torch.Generator().manual_seed(seed))
        latent = self.latents.detach().mean(0)
        with frozen(self):
            for step in range(steps):
                batch = {k: v.to(self.device) for k, v in batches[step].items()}
                origins, directions = correction.rays(
                    batch["origins"], batch["directions"], batch["frame"], self.box_center
                )
                condition = self.conditions(batch["expression"], latent.expand(len(origins), -1))
                out = self.render_rays(origins, directions, batch["background"], False, condition)
                loss = nn.functional.mse_loss(out.rgb, batch["rgb"])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        degrees = correction.params.detach()[:, :3].norm(dim=1).rad2deg()
        return correction.cameras(frames.cameras.to(self.device), self.box_center), degrees
