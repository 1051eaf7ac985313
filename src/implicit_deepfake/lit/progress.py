"""One progress bar over the run's optimisation steps (step k of max_steps, ETA, loss, Gaussians).

Lightning's bars count batches per epoch; these models train for a number of steps over epochs
of a few dozen views, so an epoch bar ("Epoch 2/-2 ... 56/60") says nothing about when the run ends.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from rich.console import Console, RenderableType
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

# The figures a bar line has room for, in this order (the loggers get every figure).
SHOWN = ("train/loss", "train/psnr", "gaussians", "val/psnr")


def format_stats(metrics: dict[str, Any]) -> str:
    """The bar's figures: `train/loss` as `loss 0.0213`, whole numbers (a Gaussian count) as integers."""
    parts = []
    for key in SHOWN:
        if key not in metrics:
            continue
        number = float(metrics[key])
        shown = f"{int(number)}" if number.is_integer() else f"{number:.4g}"
        parts.append(f"{key.removeprefix('train/').replace('/', ' ')} {shown}")
    return "  ".join(parts)


class _TwoLineProgress(Progress):
    """The bar on one line and its figures on the next, so both fit an 80-column terminal."""

    def get_renderables(self) -> Iterable[RenderableType]:
        yield self.make_tasks_table(self.tasks)
        for task in self.tasks:
            yield Text(f"  {task.fields.get('stats', '')}")


class StepProgressBar(ProgressBar):
    """A rich bar of the global step against `trainer.max_steps`, drawn on the main process only."""

    def __init__(self, refresh_per_second: float = 4.0) -> None:
        super().__init__()
        self.refresh_per_second = refresh_per_second
        self._enabled = True
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        self._progress = _TwoLineProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("step {task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(),
            refresh_per_second=self.refresh_per_second,
        )
        self._progress.start()
        total = trainer.max_steps if trainer.max_steps > 0 else None
        self._task = self._progress.add_task("training", total=total, completed=trainer.global_step, stats="")

    def _update(self, trainer: pl.Trainer, pl_module: pl.LightningModule, description: str) -> None:
        if self._progress is not None and self._task is not None:
            stats = format_stats(self.get_metrics(trainer, pl_module))
            self._progress.update(self._task, completed=trainer.global_step, description=description, stats=stats)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self._update(trainer, pl_module, "training")

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._update(trainer, pl_module, "validating")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._update(trainer, pl_module, "training")

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress, self._task = None, None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._update(trainer, pl_module, "trained")
        self._stop()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop()
