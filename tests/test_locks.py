"""Jobs that share caches: started together on an empty data folder, one builds (or swaps) while the
other waits and then reuses the result, instead of failing on a half-built folder."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from implicit_deepfake.core.io import exclusive
from tests.conftest import REPO, TINY_AVATAR
from tests.test_sweep import TINY_JOB

SMALL_SWAP = [o for o in TINY_AVATAR if o.startswith("data.")] + ["progress=false"]


def test_a_second_holder_waits_for_the_first(tmp_path: Path) -> None:
    order = []

    def job(name: str, hold: float) -> None:
        with exclusive(tmp_path / "cache", "a test cache"):
            order.append(f"{name} in")
            time.sleep(hold)
            order.append(f"{name} out")

    first = threading.Thread(target=job, args=("first", 0.5))
    first.start()
    time.sleep(0.1)
    job("second", 0.0)
    first.join()
    assert order == ["first in", "first out", "second in", "second out"]


def test_two_swap_jobs_on_an_empty_data_folder_both_succeed_with_the_same_result(tmp_path: Path) -> None:
    command = [sys.executable, "swap.py", f"paths.root_dir={tmp_path}", *SMALL_SWAP]
    jobs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)]
    time.sleep(2)  # the second starts while the first builds the dataset
    jobs.append(subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [job.communicate(timeout=600)[0] for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "waiting for another job building" in outputs[1], outputs[1][-2000:]
    (swapped,) = (tmp_path / "data" / "swapped").glob("synthetic__landmark__*/manifest.json")
    manifest = json.loads(swapped.read_text())
    assert manifest["complete"] and manifest["summary"]["frames"] == 12 and manifest["summary"]["swapped"] > 0
    # One job swapped, the other reused every frame it swapped ("12 already done"): which one depends
    # on which takes the swap's lock first once the dataset is built (the second, on a quiet machine).
    assert sum("12 already done" in output for output in outputs) == 1, [o[-2000:] for o in outputs]


def test_a_parallel_sweep_on_an_empty_data_folder(tmp_path: Path) -> None:
    """Two train.py jobs in two processes (hydra/launcher=parallel) share the dataset and the swap."""
    overrides = [o for o in TINY_JOB if not o.startswith("trainer.max_steps")]
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=parallel",
            "seed=0,1",
            "logger=csv",
            "trainer.max_steps=4",
            f"paths.root_dir={tmp_path}",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    folder = next((tmp_path / "logs" / "train" / "multiruns").iterdir())
    for job in ("0", "1"):
        metrics = json.loads((folder / job / "metrics.json").read_text())
        assert metrics["steps"] == 4 and metrics["swap"] == "landmark"
    assert len(list((tmp_path / "data" / "swapped").glob("synthetic__landmark__*/manifest.json"))) == 1
