"""Sweeps end to end on a tiny avatar: the ablation config as a two-job multirun logging offline to
W&B (one job after the other, and in two processes with hydra/launcher=parallel),
`evaluate.py summary=<sweep folder>` over it, an Optuna search of two trials; and the summary's
table, chart and errors on hand-written job folders."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import image_text, write_json
from implicit_deepfake.reports.summary import objective, summarize
from tests.conftest import REPO, TINY_AVATAR

# Gaussians in a few CPU seconds per job; W&B (the default logger, offline) stays on.
TINY_JOB = [
    *(o for o in TINY_AVATAR if not o.startswith(("swap=", "logger="))),
    "progress=false",
    "trainer.max_steps=30",
    "trainer.val_check_interval=15",
    "model.module.init_points=500",
    "model.module.densify.refine_start_iter=10",
    "model.module.densify.refine_every=10",
]
# The ablation's grid shrunk to two jobs: full and half resolution of fast_gaussians, unswapped.
TWO_JOBS = 'hydra.sweeper.params={experiment:fast_gaussians,swap:none,data.downscale:"1,2"}'


def cli(script: str, *overrides: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, script, *overrides], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def sweep_folder(root: Path, name: str) -> Path:
    (folder,) = (root / "logs" / "train" / "multiruns").glob(f"{name}_*")
    return folder


def wandb_records(run_dir: Path) -> list:
    """The records of the one offline W&B run under run_dir/wandb/, read with wandb's own reader."""
    from wandb.proto import wandb_internal_pb2
    from wandb.sdk.internal.datastore import DataStore

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    store = DataStore()
    store.open_for_scan(str(path))
    records = []
    while (data := store.scan_data()) is not None:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        records.append(record)
    return records


def history(records: list) -> list[dict]:
    """Every logged row: {key: value}, media entries as {"key/field": value}."""
    rows = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    return [{"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in row.item} for row in rows]


def logged_config(records: list) -> dict:
    """The run's config: every config record's keys (Hydra's whole config, then the module's hyperparameters)."""
    updates = [u for r in records if r.WhichOneof("record_type") == "config" for u in r.config.update]
    return {u.key: json.loads(u.value_json) for u in updates}


def run_record(records: list):
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    return run


def wandb_files(run_dir: Path) -> Path:
    (files,) = run_dir.glob("wandb/offline-run-*/files")
    return files


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """One tiny avatar (built and 'swapped' once) for the sweeps of this module."""
    return tmp_path_factory.mktemp("sweeps")


@pytest.fixture(scope="module")
def ablation(root: Path) -> Path:
    cli("train.py", "hparams_search=ablation", TWO_JOBS, f"paths.root_dir={root}", *TINY_JOB)
    return sweep_folder(root, "ablation")


def test_two_job_ablation_sweep_trains_each_variant(ablation: Path):
    metrics = [json.loads((ablation / job / "metrics.json").read_text()) for job in ("0", "1")]
    for job, downscale in zip(metrics, (1, 2)):
        assert (job["model"], job["data"], job["swap"], job["steps"]) == ("gaussians", "synthetic", "none", 30)
        assert job["config"]["data"]["downscale"] == downscale and job["config"]["group"] == ablation.name
        assert 8.0 < job["test.psnr"] < 40.0 and job["test.images"] == 2
    # Half resolution renders 24-px test views from the 48-px avatar.
    assert [Image.open(ablation / job / "renders/test/r_0.png").size for job in ("0", "1")] == [(48, 48), (24, 24)]
    overrides = OmegaConf.load(ablation / "1" / ".hydra" / "overrides.yaml")
    assert overrides[:3] == ["experiment=fast_gaussians", "swap=none", "data.downscale=2"]


def test_each_job_logs_metrics_images_and_video_to_an_offline_wandb_run(ablation: Path):
    for job, downscale in (("0", 1), ("1", 2)):
        run_dir = ablation / job
        metrics = json.loads((run_dir / "metrics.json").read_text())
        records = wandb_records(run_dir)
        run = run_record(records)
        assert (run.run_group, run.job_type, run.display_name) == (ablation.name, "train", "synthetic__none__gaussians")
        assert list(run.tags) == ["gaussians", "synthetic", "none"]
        config = logged_config(records)
        assert config["data"]["downscale"] == downscale and config["trainer"]["max_steps"] == 30  # the whole config
        assert config["model"]["module"]["init_points"] == 500

        rows = history(records)
        assert len([r for r in rows if "train/loss" in r]) == 3  # every 10 of 30 steps
        assert [r["trainer/global_step"] for r in rows if "val/psnr" in r] == [14, 29]
        # Grouped the W&B way (test/psnr); metrics.json keeps test.psnr.
        assert not [k for r in rows for k in r if k.startswith("test.")]
        (test,) = [r for r in rows if "test/psnr" in r]
        assert test["test/psnr"] == pytest.approx(metrics["test.psnr"]) and test["steps"] == 30
        assert test["num_gaussians"] == metrics["num_gaussians"]

        files = wandb_files(run_dir)
        (renders,) = [r for r in rows if "test/renders/filenames" in r]
        assert renders["test/renders/count"] == 2 and renders["test/renders/width"] == 48 // downscale
        for name in renders["test/renders/filenames"]:
            assert Image.open(files / name).size == (48 // downscale, 48 // downscale)
        val = [r for r in rows if "val/render_vs_target/filenames" in r]
        assert len(val) == 2 and val[0]["val/render_vs_target/width"] == 2 * 48 // downscale  # render | target
        (orbit,) = [r for r in rows if "test/orbit/path" in r]
        video = (files / orbit["test/orbit/path"]).read_bytes()
        assert hashlib.sha256(video).hexdigest() == hashlib.sha256((run_dir / "orbit.mp4").read_bytes()).hexdigest()


def test_evaluate_py_summarizes_the_sweep(ablation: Path, root: Path):
    cli("evaluate.py", f"summary={ablation}", f"paths.root_dir={root}")
    metrics = [json.loads((ablation / job / "metrics.json").read_text()) for job in ("0", "1")]
    with (ablation / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["job"], r["variant"], r["model"], r["swap"]) for r in rows] == [
        ("0", "data.downscale=1", "gaussians", "none"),
        ("1", "data.downscale=2", "gaussians", "none"),
    ]
    for row, job in zip(rows, metrics):
        for key in ("test.psnr", "test.ssim", "num_gaussians", "steps"):
            assert float(row[key]) == pytest.approx(job[key]), key
    chart = Image.open(ablation / "summary.png")
    assert chart.size == (1100, 300) and image_text(ablation / "summary.png")["AIGenerated"] == "true"

    records = wandb_records(ablation)  # the summary's own W&B run, in the sweep's group
    run = run_record(records)
    assert (run.run_group, run.job_type, list(run.tags)) == (ablation.name, "summary", ["summary"])
    (logged,) = [r for r in history(records) if "summary/table/path" in r]
    assert logged["summary/table/_type"] == "table-file" and logged["summary/table/nrows"] == 2
    table = json.loads((wandb_files(ablation) / logged["summary/table/path"]).read_text())
    psnr = table["columns"].index("test.psnr")
    assert [row[psnr] for row in table["data"]] == pytest.approx([job["test.psnr"] for job in metrics])
    assert any("summary/chart/filenames" in r for r in history(records))


def test_optuna_search_keeps_the_best_trials_psnr(root: Path):
    import optuna

    storage = f"sqlite:///{root}/optuna.db"  # a study that a later search resumes
    cli("train.py", "hparams_search=gaussians_optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
        "swap=none", "logger=none", f"paths.root_dir={root}", *TINY_JOB)  # fmt: skip
    folder = sweep_folder(root, "gaussians_optuna")
    trials = [json.loads((folder / job / "metrics.json").read_text()) for job in ("0", "1")]
    lrs = [trial["config"]["model"]["module"]["lr"]["means"] for trial in trials]
    assert lrs[0] != lrs[1] and all(4.0e-5 <= lr <= 6.4e-4 for lr in lrs)
    best = OmegaConf.load(folder / "optimization_results.yaml")
    winner = max(trials, key=lambda trial: trial["test.psnr"])  # train.py returned each trial's test.psnr
    assert best.best_value == pytest.approx(winner["test.psnr"])
    assert best.best_params["model.module.lr.means"] == pytest.approx(
        winner["config"]["model"]["module"]["lr"]["means"]
    )
    study = optuna.load_study(study_name="gaussians_lr_densify", storage=storage)
    assert [t.value for t in study.trials] == pytest.approx([trial["test.psnr"] for trial in trials])


def test_parallel_launcher_runs_the_jobs_in_processes(tmp_path: Path):
    cli(
        "train.py",
        "hparams_search=ablation",
        "hydra/launcher=parallel",
        TWO_JOBS,
        f"paths.root_dir={tmp_path}",
        *TINY_JOB,
    )
    folder = sweep_folder(tmp_path, "ablation")
    for job, downscale in (("0", 1), ("1", 2)):
        metrics = json.loads((folder / job / "metrics.json").read_text())
        assert metrics["config"]["data"]["downscale"] == downscale and metrics["steps"] == 30
        assert run_record(wandb_records(folder / job)).run_group == folder.name  # one group across processes


def write_job(sweep: Path, job: str, overrides: list[str], **metrics) -> None:
    write_json(sweep / job / "metrics.json", {"model": "gaussians", "data": "synthetic", "swap": "none", **metrics})
    (sweep / job / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.create(overrides), sweep / job / ".hydra" / "overrides.yaml")


def test_summary_tabulates_hand_written_jobs(tmp_path: Path, caplog):
    sweep = tmp_path / "sweep"
    write_job(
        sweep,
        "0",
        ["hparams_search=ablation", "swap=none"],
        **{"test.psnr": 20.5, "test.identity_distance_to_target": 0.41},
    )
    write_job(sweep, "1", ["hparams_search=ablation", "swap=landmark"], **{"test.psnr": 18.0, "test.lpips": None})
    write_job(sweep, "10", ["hparams_search=ablation", "swap=external"], **{"test.psnr": 17.25, "steps": 30})
    (sweep / "2" / ".hydra").mkdir(parents=True)  # a failed job: no metrics.json
    result = summarize(sweep)
    assert result["jobs"] == 3 and result["wandb_run"] is None  # these jobs logged no W&B config
    assert "left out: 2" in caplog.text
    rows = list(csv.reader((sweep / "summary.csv").open()))
    assert rows == [
        ["job", "variant", "model", "data", "swap", "test.psnr", "test.identity_distance_to_target", "steps"],
        ["0", "swap=none", "gaussians", "synthetic", "none", "20.5", "0.41", ""],
        ["1", "swap=landmark", "gaussians", "synthetic", "none", "18.0", "", ""],
        ["10", "swap=external", "gaussians", "synthetic", "none", "17.25", "", "30"],
    ]
    assert json.loads((sweep / "summary.json").read_text())["rows"][2][5] == 17.25
    assert Image.open(sweep / "summary.png").size[0] == 1100


def test_summary_of_a_folder_without_jobs_says_what_to_give(tmp_path: Path):
    with pytest.raises(DeepfakeError, match=rf"summary={tmp_path}: no metrics.json .* \(logs/train/multiruns/<name>\)"):
        summarize(tmp_path)
    with pytest.raises(DeepfakeError, match="no such folder"):
        summarize(tmp_path / "nowhere")
    write_json(tmp_path / "0" / "metrics.json", [1, 2])
    with pytest.raises(DeepfakeError, match=rf"{tmp_path}/0/metrics.json: not a metrics.json"):
        summarize(tmp_path)


def test_objective_is_the_optimized_metric():
    metrics = {"test.psnr": 21.5, "test.lpips": None, "steps": 30, "model": "gaussians"}
    assert objective(metrics, "test.psnr") == 21.5 and objective(metrics, None) is None
    with pytest.raises(DeepfakeError, match=r"optimized_metric=test.lpips: .* \['steps', 'test.psnr'\]"):
        objective(metrics, "test.lpips")
