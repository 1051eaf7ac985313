"""Logged keys are grouped the W&B way (test/psnr) while metrics.json keeps test.psnr."""

from __future__ import annotations

from pytorch_lightning.loggers import Logger

from implicit_deepfake.lit.logging import log_scalars, logger_key


class RecordingLogger(Logger):
    """A Lightning logger that keeps what it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[dict, int]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.logged.append((metrics, step))


def test_metrics_json_keys_reach_loggers_grouped_by_their_section():
    loggers = [RecordingLogger(), RecordingLogger()]
    scores = {"test.psnr": 27.5, "test.identity_distance_to_target": 0.53, "steps": 3000.0, "num_gaussians": 20000.0}
    log_scalars(loggers, scores, step=3000)
    expected = {"test/psnr": 27.5, "test/identity_distance_to_target": 0.53, "steps": 3000.0, "num_gaussians": 20000.0}
    assert [logger.logged for logger in loggers] == [[(expected, 3000)]] * 2
    assert logger_key("test.identity_by_yaw.0-30") == "test/identity_by_yaw.0-30"  # only the section splits off
