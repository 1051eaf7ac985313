"""`model=gaussian_avatar`: a 4D head of expression-driven 3D Gaussians (`models/gaussian_avatar.py`).

LitGaussians' training (per-tensor Adam, L1 + D-SSIM, gsplat's densification, here resizing the
offsets with the Gaussians) on the talking-head video NeRFace's model trains on: Gaussians in the
head's coordinates (each frame's head pose is its camera), posed per frame by the code of its
expression (and, optionally, a learned per-frame latent code as NeRFace's, the mean one for unseen
frames), rendered over transparent and composited over the static background image; the loss
weights a pixel inside the frame's face bbox `bbox_weight / (1 - bbox_weight)` times one outside
(NeRFace's ray sampling as a weight); offsets are kept small (L2) and smooth (neighbours alike).
With `pose_refine` (a tracked clip, `data=video`) each training frame's pose learns a correction
(`pose_correction.py`, applied to the Gaussians so any rasterizer differentiates it); test frames
get theirs from `fit_view_poses` with the model frozen, as LitNeRFace's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor
from torchmetrics.functional.image import structural_similarity_index_measure

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path
from implicit_deepfake.data.datamodule import Frames, batch_cameras
from implicit_deepfake.lit.base import trainer_datamodule
from implicit_deepfake.lit.gaussians import LitGaussians
from implicit_deepfake.lit.pose_correction import PoseCorrection
from implicit_deepfake.lit.talking_head import (
    TalkingHeadState,
    background_at,
    foreground_masks,
    frozen,
    talking_head_frames,
)
from implicit_deepfake.models.gaussian_avatar import (
    OFFSET_NAMES,
    ExpressionCloud,
    ExpressionCode,
    moved,
)
from implicit_deepfake.models.gaussian_init import hull_points, neighbour_scales
from implicit_deepfake.render.cameras import Cameras

AVATAR_FILE = "avatar4d.npz"  # what viewer.html plays: the Gaussians, their offsets, the frames' codes
CARVING_VIEWS = 64  # training frames whose foreground places the first Gaussians
_SMOOTH_SAMPLE = 1024  # Gaussians whose offsets are compared with their neighbours' per step


def bbox_weights(bbox: Tensor | None, height: int, width: int, weight: float) -> Tensor:
    """(H, W) pixel weights of mean 1: inside the face bbox [top, bottom, left, right] (fractions)
    weight / (1 - weight) times outside (uniform without a bbox)."""
    if bbox is None:
        return torch.ones(height, width)
    weights = torch.full((height, width), 1.0 - weight)
    top, bottom = round(float(bbox[0]) * height), round(float(bbox[1]) * height)
    left, right = round(float(bbox[2]) * width), round(float(bbox[3]) * width)
    weights[top:bottom, left:right] = weight
    return weights / weights.mean()


class LitGaussianAvatar(TalkingHeadState, LitGaussians):
    """LitGaussians' arguments, and: expression_dims (the dataset's expression length); code_dims (K,
    offsets per Gaussian) with code_lr (the expression -> code map); offset_lr per offset tensor
    (means_offsets scaled by the scene, like means); offset_start (steps before the offsets join);
    offset_weight, smooth_weight and smooth_neighbours (`offset_penalties`); latent_dims
    (0: none), latent_lr, latent_weight (the per-frame latent codes); pose_refine, pose_lr, pose_weight
    (LitNeRFace's)."""

    cloud: ExpressionCloud
    pose_center: Tensor

    def __init__(
        self,
        expression_dims: int,
        code_dims: int,
        code_lr: float,
        offset_lr: dict[str, float],
        offset_start: int,
        offset_weight: float,
        smooth_weight: float,
        smooth_neighbours: int,
        latent_dims: int,
        latent_lr: float,
        latent_weight: float,
        pose_refine: bool,
        pose_lr: float,
        pose_weight: float,
        **gaussians,
    ) -> None:
        super().__init__(**gaussians)
        if sorted(offset_lr) != sorted(OFFSET_NAMES):
            raise DeepfakeError(
                f"model.module.offset_lr must give exactly {list(OFFSET_NAMES)}, got {sorted(offset_lr)}."
            )
        self.cloud = ExpressionCloud(self.hparams.sh_degree, code_dims, rasterizer=self.hparams.rasterizer)
        self.code = ExpressionCode(expression_dims, code_dims, latent_dims)
        self.init_talking_head(expression_dims, latent_dims)
        self.register_buffer("pose_center", torch.zeros(3))
        self._bboxes: Tensor | None = None  # the training frames' face boxes (F, 4), for the loss's weights
        self._bbox_weight = 0.9
        self._neighbours = torch.zeros(0, smooth_neighbours, dtype=torch.long)

    def setup(self, stage: str) -> None:
        if stage == "fit":
            datamodule = trainer_datamodule(self.trainer)
            frames = talking_head_frames(datamodule, "gaussian_avatar", self.hparams.expression_dims)
            if datamodule.mode != "images" or datamodule.batch_size != 1:
                raise DeepfakeError(
                    "model=gaussian_avatar trains on one whole frame per step (each frame poses the Gaussians "
                    "its own way): set datamodule.mode=images datamodule.batch_size=1."
                )
            self.hold_training_frames(frames, self.hparams.latent_dims, self.hparams.pose_refine)
            self._bboxes, self._bbox_weight = frames.bboxes, datamodule.bbox_weight
        super().setup(stage)

    def initialize_cloud(self, frames: Frames, sparse: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Gaussians on the visual hull of the frames' foreground (they have no alpha; a talking-head
        video has no sparse points, `sparse` is None); the scene scale
        1.1 x the cameras' distance from the head (what gsplat's camera spread is for cameras all around
        a head; a video's cameras barely move); the code map at the expressions' principal components."""
        assert frames.expressions is not None and frames.background_image is not None  # a talking head
        views = torch.linspace(0, len(frames) - 1, min(len(frames), CARVING_VIEWS)).round().long()
        rgb8 = frames.rgb8[views]
        masks = foreground_masks(rgb8.float() / 255.0, frames.background_image)
        alpha8 = (masks * 255).to(torch.uint8)[..., None]
        points, colors = hull_points(
            Frames(frames.cameras[views], rgb8, alpha8, []), self.hparams.init_points, self.hparams.seed
        )
        self.cloud.initialize(points, colors, neighbour_scales(points), self.hparams.init_opacity)
        self.pose_center.copy_(frames.cameras.look_at_point())
        self.scene_scale.fill_(1.1 * float((frames.cameras.centers - self.pose_center).norm(dim=1).mean()))
        self.code.initialize(frames.expressions, self.hparams.seed)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.shape_like(checkpoint["state_dict"])

    def optimized(self) -> dict[str, tuple[list[Tensor], float]]:
        scale = float(self.scene_scale)
        groups = super().optimized()
        for name, lr in self.hparams.offset_lr.items():
            groups[name] = ([self.cloud.params[name]], lr * (scale if name == "means_offsets" else 1.0))
        groups["code"] = (list(self.code.parameters()), self.hparams.code_lr)
        if self.hparams.latent_dims:
            groups["latents"] = ([self.latents], self.hparams.latent_lr)
        if len(self.pose_correction):
            groups["pose"] = ([self.pose_correction.params], self.hparams.pose_lr)
        return groups

    def frame_code(self, expressions: Tensor, frames: Tensor | None = None) -> Tensor:
        """Expressions (B, D) of training frames `frames` (B,) (their latent codes), or of other views
        (None: the mean latent code) -> codes (B, K)."""
        latents = self.latents.mean(0, keepdim=True) if frames is None else self.latents[frames]
        return self.code(expressions, latents)

    def composite(
        self, values: dict[str, Tensor], cameras: Cameras, sh_degree: int, absgrad: bool = False
    ) -> tuple[Tensor, dict]:
        """Posed Gaussians rendered in one camera over the background image -> rgb (1, H, W, 3), meta."""
        rgb, alpha, meta = self.cloud.render_values(
            values, cameras, sh_degree, torch.zeros_like(self.background), absgrad
        )
        return rgb + (1.0 - alpha) * background_at(self.background_image, cameras.height, cameras.width), meta

    def training_render(self, batch: dict[str, Tensor], sh_degree: int) -> tuple[Tensor, Tensor, dict]:
        target, frame = batch["rgb"], batch["index"]
        # The offsets join once the neutral head has taken shape: else they learn to mend its geometry per frame.
        code = self.frame_code(batch["expression"], frame)[0] * float(self.global_step >= self.hparams.offset_start)
        values = self.cloud.posed(code)
        if len(self.pose_correction):
            rotation, shift = self.pose_correction.motions(frame, self.pose_center)
            values = moved(values, self.pose_correction.params[frame[0], :3], rotation[0], shift[0])
        cameras = batch_cameras(batch, target.shape[2], target.shape[1])
        rgb, meta = self.composite(values, cameras, sh_degree, absgrad=self.strategy.absgrad)
        return rgb, target, meta

    def training_loss(self, batch: dict[str, Tensor], rgb: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        box = None if self._bboxes is None else self._bboxes[int(batch["index"][0])]
        weights = bbox_weights(box, target.shape[1], target.shape[2], self._bbox_weight).to(rgb)  # (H, W), mean 1
        rgb, target = rgb.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
        l1 = ((rgb - target).abs() * weights).mean()
        _, ssim_map = structural_similarity_index_measure(rgb, target, data_range=1.0, return_full_image=True)
        ssim = (ssim_map * weights).mean()
        offsets, smooth = self.offset_penalties()
        loss = (1 - self.hparams.ssim_lambda) * l1 + self.hparams.ssim_lambda * (1 - ssim)
        loss = loss + self.hparams.offset_weight * offsets + self.hparams.smooth_weight * smooth
        if self.hparams.latent_dims:
            loss = loss + self.hparams.latent_weight * self.latents.norm(dim=1).mean()
        if len(self.pose_correction):
            loss = loss + self.hparams.pose_weight * self.pose_correction.penalty()
        logged = {"train/loss": loss, "train/l1": l1, "train/ssim": ssim}
        return loss, logged | {"train/offsets": offsets.detach(), "train/offset_smoothness": smooth.detach()}

    def offset_penalties(self) -> tuple[Tensor, Tensor]:
        """Sums over the Gaussians (so a Gaussian's pull does not fade as they multiply) of their offsets'
        absolute values (L1: most Gaussians do not move with the face) and of their mean absolute
        difference to their `smooth_neighbours` nearest by neutral position (total variation: parts move
        as a whole), the latter estimated on a sample; positions in scene units."""
        p, n = self.cloud.params, len(self.cloud)
        parts = {"means_offsets": 1.0 / float(self.scene_scale), "sh0_offsets": 1.0, "opacities_offsets": 1.0}
        small = torch.stack([(p[name] * factor).abs().sum() for name, factor in parts.items()]).sum()
        if len(self._neighbours) != n:  # new or densified Gaussians
            means = p["means"].detach().cpu().numpy()
            _, nearest = cKDTree(means).query(means, k=min(self.hparams.smooth_neighbours, n - 1) + 1)
            self._neighbours = torch.from_numpy(np.asarray(nearest)[:, 1:]).to(self.device)
        sample = torch.randint(n, (min(n, _SMOOTH_SAMPLE),), device=self.device)
        neighbours = self._neighbours[sample]
        differences = [(p[name][sample, None] - p[name][neighbours]) * factor for name, factor in parts.items()]
        smooth = torch.stack([d.abs().sum() / d.shape[1] for d in differences]).sum() * (n / len(sample))
        return small, smooth

    @torch.no_grad()
    def render_views(self, cameras: Cameras, expressions: Tensor | None = None) -> Tensor:
        if expressions is None:
            expressions = self.train_expressions.mean(0, keepdim=True).expand(len(cameras), -1)
        codes = self.frame_code(expressions)
        sh_degree = self.cloud.sh_degree
        return torch.cat(
            [self.composite(self.cloud.posed(codes[i]), cameras[i], sh_degree)[0] for i in range(len(cameras))]
        )

    def training_cameras(self, cameras: Cameras) -> Cameras:
        """The training frames' `cameras` with the pose corrections learned for them (none: as they are)."""
        if not len(self.pose_correction):
            return cameras
        return self.pose_correction.cameras(cameras.to(self.device), self.pose_center).to(
            cameras.world_to_camera.device
        )

    def fit_view_poses(
        self, frames: Frames, steps: int, lr: float = 2e-3, bbox_weight: float = 0.9, views: int = 4, **_
    ) -> tuple[Cameras, Tensor]:
        """Frames outside training (their own expressions, the mean latent code) -> their cameras with
        a pose correction fitted photometrically with the model frozen (`steps` Adam steps, each over
        `views` of the frames in turn, bbox-weighted as in training), and each correction's rotation in
        degrees (F,)."""
        assert frames.expressions is not None  # a talking-head split
        correction = PoseCorrection(len(frames)).to(self.device)
        optimizer = torch.optim.Adam(correction.parameters(), lr=lr)
        cameras, size = frames.cameras.to(self.device), (frames.cameras.height, frames.cameras.width)
        with frozen(self):
            codes = self.frame_code(frames.expressions.to(self.device))
            for step in range(steps):
                loss = torch.zeros((), device=self.device)
                for view in (torch.arange(views) + step * views) % len(frames):
                    index = view[None].to(self.device)
                    rotation, shift = correction.motions(index, self.pose_center)
                    values = moved(self.cloud.posed(codes[view]), correction.params[view, :3], rotation[0], shift[0])
                    rgb, _ = self.composite(values, cameras[int(view)], self.cloud.sh_degree)
                    box = None if frames.bboxes is None else frames.bboxes[view]
                    weights = bbox_weights(box, *size, bbox_weight).to(self.device)
                    target = frames.colors(int(view)).to(self.device)
                    loss = loss + ((rgb[0] - target).abs().mean(-1) * weights).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        degrees = correction.params.detach()[:, :3].norm(dim=1).rad2deg()
        return correction.cameras(cameras, self.pose_center), degrees

    def player_arrays(self) -> dict[str, np.ndarray]:
        """What a player needs to pose the head per frame: the Gaussians' parameters and offsets, the
        training frames' codes (their own latent codes), their expressions and d code / d expression."""
        arrays = {name: value.detach().cpu().numpy() for name, value in self.cloud.params.items()}
        with torch.no_grad():
            frames = torch.arange(len(self.train_expressions), device=self.device)
            arrays["codes"] = self.frame_code(self.train_expressions, frames).cpu().numpy()
        arrays["expressions"] = self.train_expressions.cpu().numpy()
        arrays["code_jacobian"] = self.code.linear.weight[:, : self.hparams.expression_dims].detach().cpu().numpy()
        return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in arrays.items()}

    def export(self, run_dir: Path) -> dict[str, str]:
        """The neutral head as point_cloud.ply (any 3DGS viewer) and the whole avatar as avatar4d.npz."""
        ply = Path(run_dir) / "point_cloud.ply"
        self.cloud.neutral().save_ply(ply)
        avatar = Path(run_dir) / AVATAR_FILE
        with atomic_path(avatar) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, **self.player_arrays())
        return {"ply": str(ply), "avatar": str(avatar)}

    def model_stats(self) -> dict[str, int | float]:
        return {"num_gaussians": len(self.cloud), "code_dims": self.cloud.code_dims}
