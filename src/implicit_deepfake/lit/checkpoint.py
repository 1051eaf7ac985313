"""last.ckpt that always holds the run's final step."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint writes last.ckpt at the end of training only when no step-triggered
    save happened, so a 150-step run saving every 100 steps kept step 100: `evaluate.py ckpt=last` then
    re-evaluated another model than the run's. This one also writes the final step."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
