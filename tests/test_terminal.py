"""What a user sees in the terminal: one bar over the training steps, no third-party noise, and the
run's summary table at the end (train.py on a pseudo-terminal, as in tmux)."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from implicit_deepfake.core import quiet
from implicit_deepfake.lit.progress import format_stats
from implicit_deepfake.reports.run_table import print_run_summary, short_lpips_reason
from tests.conftest import REPO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NOISE = ("litlogger", "LeafSpec", "W0000", "TensorFlow Lite", "absl::InitializeLog", "Epoch 0/")


def run_on_pty(args: list[str], columns: int = 100, timeout: float = 300) -> tuple[int, str]:
    """Run a command with a pseudo-terminal as stdin, stdout and stderr; (exit status, text without colours)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "TERM": "xterm-256color"}
    env.pop("COLUMNS", None)
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child's side closed
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    status = proc.wait(timeout=timeout)
    return status, ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))


TOY_RUN = r"""
import sys
from pathlib import Path
import numpy as np, torch, pytorch_lightning as pl
from torch.utils.data import DataLoader, TensorDataset
from implicit_deepfake.core.quiet import quiet_third_party
quiet_third_party()  # as train.py's entry point does
from implicit_deepfake.faces.landmarks import FaceLandmarker
from implicit_deepfake.lit.progress import StepProgressBar
from implicit_deepfake.reports.run_table import print_run_summary

class Toy(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
    def training_step(self, batch, batch_idx):
        loss = (self.layer(batch[0]) - 1).pow(2).mean()
        self.log("train/loss", loss, prog_bar=True)
        self.log("gaussians", float(20000 + self.global_step), prog_bar=True, logger=False)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

FaceLandmarker().detect(np.zeros((64, 64, 3), np.uint8))  # mediapipe's native start-up lines
data = DataLoader(TensorDataset(torch.randn(5, 4)), batch_size=1)  # epochs of 5 steps
trainer = pl.Trainer(max_steps=12, max_epochs=-1, logger=False, enable_checkpointing=False,
                     enable_model_summary=False, callbacks=[StepProgressBar()], log_every_n_steps=1)
trainer.fit(Toy(), data)
run = Path(sys.argv[1])
print_run_summary({"model": "toy", "data": "random", "swap": "none", "test.psnr": 21.5, "test.ssim": 0.5,
    "test.lpips": None,
    "test.lpips_reason": "LPIPS (alex) unavailable offline: torchvision is not installed (pip install torchvision)",
    "test.identity_distance_to_target": None, "test.face_detection_rate": 0.0, "num_gaussians": 20011,
    "steps": 12, "train_seconds": 1.0, "orbit_video": str(run / "orbit.mp4"),
    "contact_sheet": str(run / "summary.png")}, run)
"""


def test_a_run_on_a_terminal_shows_one_bar_over_the_steps_and_the_table_without_noise(tmp_path: Path):
    status, text = run_on_pty([sys.executable, "-c", TOY_RUN, str(tmp_path)], columns=80)
    assert status == 0, text[-3000:]
    steps = [int(k) for k in re.findall(r"step (\d+)/12\b", text)]
    assert steps and steps[-1] == 12 and steps == sorted(steps), steps
    assert "ETA" in text and re.search(r"loss \d\.\d+", text)
    counts = re.findall(r"gaussians (\d+(?:\.\d+)?)", text)
    assert counts and all(c.isdigit() for c in counts) and counts[-1] == "20011", counts  # a count, not "20011.000"
    for noise in NOISE:
        assert noise not in text, noise
    table = text[text.rindex("step 12/12") :]
    for row in ("test PSNR", "21.50 dB", "n/a: torchvision is not installed", "Gaussians", "20011"):
        assert row in table, row
    assert "pip install" not in table
    assert f"contact sheet {tmp_path / 'summary.png'}" in table  # whole, though longer than the 80 columns


@pytest.mark.slow
def test_train_py_on_a_terminal_shows_a_step_bar_and_ends_with_the_summary_table(tmp_path: Path):
    status, text = run_on_pty([
        sys.executable, "train.py", f"paths.root_dir={tmp_path}", "data.source.image_size=48",
        "data.source.n_train=8", "data.source.n_val=2", "data.source.n_test=2", "+data.source.mesh_resolution=64",
        "swap=none", "logger=csv", "trainer.max_steps=30", "trainer.val_check_interval=15",
        "trainer.log_every_n_steps=5", "model.module.init_points=500", "evaluate.orbit_frames=2",
    ])  # fmt: skip
    assert status == 0, text[-3000:]
    steps = [int(k) for k in re.findall(r"step (\d+)/30\b", text)]
    assert steps and steps[-1] == 30 and steps == sorted(steps), steps
    assert "ETA" in text and re.search(r"loss \d\.\d+", text)
    counts = re.findall(r"gaussians (\d+(?:\.\d+)?)", text)
    assert counts and all(c.isdigit() for c in counts), counts  # a count, never "500.000"
    for noise in NOISE:
        assert noise not in text, noise
    assert "pip install torchvision" not in text  # the LPIPS reason stays in metrics.json
    table = text[text.rindex("step 30/30") :]
    for row in ("test PSNR", "Gaussians", "orbit.mp4", "point_cloud.ply", "summary.png", "metrics.json"):
        assert row in table, row
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    assert (run_dir / "summary.png").is_file()


def _filtered(*chunks: bytes) -> bytes:
    """What the stderr filter lets through of `chunks`, each one read of the pipe."""
    read_fd, write_fd = os.pipe()
    out_read, out_write = os.pipe()
    for chunk in chunks:
        os.write(write_fd, chunk)
        if chunk is not chunks[-1]:
            time.sleep(0.05)  # its own read
    os.close(write_fd)
    quiet._forward(read_fd, out_write)
    os.close(out_write)
    with os.fdopen(out_read, "rb") as out:
        return out.read()


def test_a_native_line_written_right_after_a_progress_bar_goes_and_the_bar_stays():
    native = b"W0000 00:00:1796609082.161617    7040 inference_feedback_manager.cc:114] Feedback manager\n"
    bar = b"\rswap [none]:   8%|8         | 1/12 [00:03<00:42,  3.86s/frame]"
    # Seen on a loaded machine: the bar has no newline, so mediapipe's line starts in the bar's line.
    assert _filtered(bar + native + b"\rswap [none]:  42%") == bar + b"\rswap [none]:  42%"
    # The same, the native line cut by the reads (after its first letter, inside its date).
    assert _filtered(bar + b"W", native[1:20], native[20:]) == bar
    assert _filtered(b"our line\n", b"W0000 00:00:1.5", b"  13 f.cc:1] x\n", b"I said W1 is fine\n") == (
        b"our line\nI said W1 is fine\n"
    )


def test_native_noise_and_lightning_chatter_go_but_our_warnings_errors_and_tracebacks_stay():
    script = r"""
import logging, os, warnings
from implicit_deepfake.core.quiet import quiet_third_party
quiet_third_party()
os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n")
os.write(2, b"W0000 00:00:1796173151.385784   13246 inference_feedback_manager.cc:114] Feedback manager\n")
os.write(2, b"E0000 00:00:1796173151.385784   13246 graph.cc:1] a native error\n")
warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
warnings.warn("our own warning")
logging.basicConfig()
logging.getLogger("pytorch_lightning.utilities.rank_zero").warning("Tip: try installing [litlogger] ...")
logging.getLogger("pytorch_lightning.utilities.rank_zero").warning("GPU available: False")
logging.getLogger("implicit_deepfake").warning("our log line")
raise RuntimeError("the traceback survives")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    for kept in ("a native error", "our own warning", "GPU available", "our log line", "RuntimeError: the traceback"):
        assert kept in result.stderr, (kept, result.stderr)
    for noise in NOISE:
        assert noise not in result.stderr, (noise, result.stderr)


def test_bar_figures_are_short_and_counts_are_integers():
    metrics = {
        "train/loss": torch.tensor(0.021345),
        "train/l1": 0.1,
        "gaussians": 20000.0,
        "val/psnr": 25.3121,
        "v_num": 3,
    }
    assert format_stats(metrics) == "loss 0.02135  gaussians 20000  val psnr 25.31"
    assert format_stats({"train/loss": 0.5, "train/psnr": 17.25}) == "loss 0.5  psnr 17.25"


def _metrics(run_dir: Path, **extra) -> dict:
    return {
        "model": "gaussians", "data": "synthetic", "swap": "landmark", "test.psnr": 27.213, "test.ssim": 0.9214,
        "test.lpips": None, "test.lpips_reason": "LPIPS (alex) unavailable offline: torchvision is not installed "
        "(pip install torchvision, the build matching torch); backbone weights /x are missing: run once ...",
        "test.identity_distance_to_target": 0.5312, "test.identity_distance_to_base": 0.6121,
        "test.face_detection_rate": 0.9, "num_gaussians": 20000, "steps": 3000, "train_seconds": 391.6,
        "orbit_video": str(run_dir / "orbit.mp4"), "ply": str(run_dir / "point_cloud.ply"),
        "contact_sheet": str(run_dir / "summary.png"), **extra,
    }  # fmt: skip


def _render(metrics: dict, run_dir: Path) -> str:
    console = Console(file=io.StringIO(), width=80, color_system=None)
    print_run_summary(metrics, run_dir, console)
    return console.file.getvalue()


def test_summary_table_has_the_headline_metrics_and_the_paths(tmp_path: Path):
    text = _render(_metrics(tmp_path), tmp_path)
    for row in ("27.21 dB", "0.921", "n/a: torchvision is not installed", "0.531 to the target photo (to the base "
                "frames 0.612)", "90% of the test renders", "20000", "3000 steps in 6 min 32 s",
                str(tmp_path / "orbit.mp4"), str(tmp_path / "point_cloud.ply"), str(tmp_path / "summary.png"),
                str(tmp_path / "metrics.json")):  # fmt: skip
        assert row in text, row
    assert "viewer.html" not in text and "pip install" not in text
    page = str(tmp_path / "viewer.html")  # a Gaussians run's metrics.json names its page
    assert page in _render(_metrics(tmp_path, viewer_html=page), tmp_path)


def test_short_lpips_reason():
    assert short_lpips_reason("LPIPS (alex) unavailable offline: a is missing (reinstall x); b") == "a is missing"
    assert short_lpips_reason(None) == "not computed"
