"""`model=nerf` and `model=nerf_fast`: NeRFs trained on random ray batches (`datamodule.mode=rays`).

One LightningModule for both: the `RayModel` (coarse/fine MLPs, or a grid field with an occupancy
grid) comes from config, the training step is the same. The scene box is the cube around the point
the training cameras look at whose inscribed ball every camera sees whole (times `box_scale`);
world rays are mapped into it, so models always see [-1, 1]^3.
"""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.datamodule import Frames
from implicit_deepfake.lit.base import SceneModule, trainer_datamodule
from implicit_deepfake.models.gaussian_init import inside_hull, visible_radius
from implicit_deepfake.models.nerf import RayModel, RayOutputs
from implicit_deepfake.render.cameras import Cameras
from implicit_deepfake.render.rays import pixel_coordinates, pixel_rays, ray_box


def mse_to_psnr(mse: Tensor) -> Tensor:
    return -10.0 * torch.log10(mse)


# Views the occupancy grid is carved against (evenly spread over the training frames).
CARVING_VIEWS = 64


class LitNeRF(SceneModule):
    """model: Hydra config of a `RayModel`; optimizer: a `_partial_` optimizer config; lr: learning
    rate per parameter-name prefix of the model (e.g. {"coarse": 5e-4, "fine": 5e-4}), each decayed
    exponentially to `lr_decay` x itself at `lr_decay_steps`; chunk: rays per rendering pass (memory
    bound of `render_views`); random_background: composite each training ray onto a random colour
    (its alpha known), which forces empty space to be empty instead of background-coloured."""

    box_center: Tensor
    box_radius: Tensor

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        lr: dict[str, float],
        lr_decay: float,
        lr_decay_steps: int,
        chunk: int,
        box_scale: float,
        seed: int,
        random_background: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model: RayModel = instantiate(model)
        self.register_buffer("box_center", torch.zeros(3))
        self.register_buffer("box_radius", torch.tensor(1.0))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage == "fit":  # a resumed run's box and model state come back with its checkpoint, after this
            frames = trainer_datamodule(self.trainer).frames("train")
            center = frames.cameras.look_at_point()
            self.box_center.copy_(center)
            self.box_radius.fill_(visible_radius(frames.cameras, center) * self.hparams.box_scale)
            # A spread subset of the views carves nearly the same hull; a 5,500-frame video's masks
            # would not fit in memory.
            views = torch.linspace(0, len(frames) - 1, min(len(frames), CARVING_VIEWS)).round().long()
            masks, cameras = self.carving_masks(frames, views), frames.cameras[views]
            self.model.carve(lambda x: inside_hull(self.box_center + self.box_radius * x, cameras, masks))

    def carving_masks(self, frames: Frames, views: Tensor) -> Tensor:
        """(V, H, W) masks of training frames `views` whose visual hull may hold matter: their alpha."""
        return frames.opacities(views)[..., 0]

    def param_groups(self) -> list[dict]:
        """The optimizer's parameter groups: the model's, by `lr` prefix."""
        lr = self.hparams.lr
        groups: dict[str, list[Tensor]] = {prefix: [] for prefix in lr}
        for name, parameter in self.model.named_parameters():
            prefix = next((p for p in lr if name == p or name.startswith(p + ".")), None)
            if prefix is None:
                raise DeepfakeError(
                    f"model.module.lr has no learning rate for parameter {name!r}: add one for a prefix of it."
                )
            groups[prefix].append(parameter)
        return [{"params": params, "lr": lr[prefix]} for prefix, params in groups.items() if params]

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        optimizer: torch.optim.Optimizer = instantiate(self.hparams.optimizer)(self.param_groups())
        decay, steps = self.hparams.lr_decay, self.hparams.lr_decay_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: decay ** min(step / steps, 1.0))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def render_rays(
        self, origins: Tensor, directions: Tensor, background: Tensor, perturb: bool, condition: Tensor | None = None
    ) -> RayOutputs:
        """World rays (R, 3), unit directions, background (3,) or (R, 3), condition (R, C) -> the
        model's outputs, depth in world units."""
        origins = (origins - self.box_center) / self.box_radius
        near, far = ray_box(origins, directions)
        out = self.model(origins, directions, near, far, background, perturb, condition)
        out.depth = out.depth * self.box_radius
        return out

    def training_rays(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """A training batch -> target colours (B, 3), the background they are on, condition (B, C) or None."""
        if not self.hparams.random_background:
            return batch["rgb"], self.background, None
        background = torch.rand_like(batch["rgb"])
        return batch["rgb"] + (background - self.background) * (1.0 - batch["alpha"]), background, None

    def view_rays(
        self, cameras: Cameras, view: int, flat: Tensor, expressions: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Background and condition of the pixels `flat` (R,) of view `view` when rendering."""
        return self.background, None

    def training_conditions(self) -> Tensor | None:
        """Every training frame's condition (K, C) for the model's occupancy refresh; None: unconditioned."""
        return None

    def regularization(self) -> Tensor | float:
        """Extra loss terms."""
        return 0.0

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        self.model.before_step(self.global_step, self.training_conditions())
        target, background, condition = self.training_rays(batch)
        out = self.render_rays(batch["origins"], batch["directions"], background, perturb=True, condition=condition)
        mse = torch.nn.functional.mse_loss(out.rgb, target)
        loss = mse + sum(torch.nn.functional.mse_loss(rgb, target) for rgb in out.extra_rgb) + self.regularization()
        self.check_finite(loss)
        rays = len(target)
        self.log_dict({"train/loss": loss, "train/psnr": mse_to_psnr(mse)}, prog_bar=True, batch_size=rays)
        scheduler = self.lr_schedulers()
        assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)  # configure_optimizers' LambdaLR
        self.log_dict(
            {"train/samples_per_ray": out.samples / rays, "lr": scheduler.get_last_lr()[0]},
            batch_size=rays,
        )
        return loss

    @torch.no_grad()
    def render_views(self, cameras: Cameras, expressions: Tensor | None = None) -> Tensor:
        pixels = cameras.width * cameras.height
        images = []
        for view in range(len(cameras)):
            rows = []
            for flat in torch.arange(pixels, device=self.device).split(self.hparams.chunk):
                origins, directions = pixel_rays(
                    cameras, torch.full_like(flat, view), pixel_coordinates(flat, cameras.width)
                )
                background, condition = self.view_rays(cameras, view, flat, expressions)
                rows.append(self.render_rays(origins, directions, background, perturb=False, condition=condition).rgb)
            images.append(torch.cat(rows).view(cameras.height, cameras.width, 3))
        return torch.stack(images).clamp(0.0, 1.0)

    def model_stats(self) -> dict[str, float]:
        return self.model.stats()
