"""Sweep results: the number a sweeper optimises, and `python evaluate.py summary=<multirun folder>`,
which gathers every job's metrics.json into summary.csv (summary.json: the same with the synthetic
marks), a chart (summary.png: test PSNR and identity distances per variant) and a W&B table in the
sweep's W&B project and group."""

from __future__ import annotations

import csv
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path, read_json, synthetic_metadata, write_json, write_png

log = logging.getLogger(__name__)

NAMES = ("model", "data", "swap")  # what each job trained, from its metrics.json
IDENTITY = ("test.identity_distance_to_target", "test.identity_distance_to_base")


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def objective(metrics: dict, key: str | None) -> float | None:
    """metrics[key] for a sweeper that optimises it (`optimized_metric`); None without a key."""
    if key is None:
        return None
    if not _number(metrics.get(key)):
        numeric = sorted(k for k, v in metrics.items() if _number(v))
        raise DeepfakeError(f"optimized_metric={key}: metrics.json has no number under that key; use one of {numeric}.")
    return float(metrics[key])


@dataclass(frozen=True)
class Job:
    folder: str  # relative to the sweep folder
    overrides: tuple[str, ...]  # the job's command-line overrides (Hydra's .hydra/overrides.yaml)
    metrics: dict


def _natural(path: Path) -> list:
    """Sort key: job 2 before job 10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def load_jobs(sweep_dir: Path) -> list[Job]:
    """Every finished job of a multirun folder, in job order."""
    if not sweep_dir.is_dir():
        raise DeepfakeError(f"summary={sweep_dir}: no such folder; give a `python train.py -m ...` sweep folder.")
    files = sorted((p.relative_to(sweep_dir) for p in sweep_dir.rglob("metrics.json")), key=_natural)
    if not files:
        raise DeepfakeError(
            f"summary={sweep_dir}: no metrics.json in any job folder under it. Give the folder of a "
            "finished `python train.py -m ...` sweep (logs/train/multiruns/<name>)."
        )
    unfinished = [p.parent.relative_to(sweep_dir).as_posix() for p in sweep_dir.rglob(".hydra")
                  if not (p.parent / "metrics.json").is_file()]  # fmt: skip
    if unfinished:
        log.warning("jobs without metrics.json (failed or still running), left out: %s", ", ".join(sorted(unfinished)))
    jobs = []
    for relpath in files:
        metrics = read_json(sweep_dir / relpath)
        if not isinstance(metrics, dict):
            raise DeepfakeError(
                f"{sweep_dir / relpath}: not a metrics.json of train.py or evaluate.py (no JSON object); "
                "remove it or rerun that job."
            )
        overrides = sweep_dir / relpath.parent / ".hydra" / "overrides.yaml"
        listed = tuple(OmegaConf.load(overrides)) if overrides.is_file() else ()
        jobs.append(Job(relpath.parent.as_posix(), listed, metrics))
    return jobs


def variants(jobs: list[Job]) -> list[str]:
    """Each job's overrides that not every job shares (what the sweep varied), or its folder."""
    shared = set.intersection(*(set(job.overrides) for job in jobs))
    return [" ".join(o for o in job.overrides if o not in shared) or job.folder for job in jobs]


def table(jobs: list[Job]) -> tuple[list[str], list[list]]:
    """Columns and rows: job, variant, model/data/swap, then every numeric metric (first seen first)."""
    numeric = list(dict.fromkeys(k for job in jobs for k, v in job.metrics.items() if _number(v)))
    columns = ["job", "variant", *NAMES, *numeric]
    rows = [
        [job.folder, variant, *(job.metrics.get(k) for k in NAMES), *(job.metrics.get(k) for k in numeric)]
        for job, variant in zip(jobs, variants(jobs))
    ]
    return columns, rows


def write_csv(path: Path, columns: list[str], rows: list[list]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows(["" if v is None else v for v in row] for row in rows)


def _values(columns: list[str], rows: list[list], key: str) -> np.ndarray:
    if key not in columns:
        return np.full(len(rows), np.nan)
    i = columns.index(key)
    return np.array([np.nan if row[i] is None else row[i] for row in rows], dtype=float)


def _bars(ax, y: np.ndarray, values: np.ndarray, **style) -> None:
    """Horizontal bars with their values written on them ("n/a" where a job has none)."""
    bars = ax.barh(y, np.nan_to_num(values), **style)
    ax.bar_label(bars, [f"{v:.2f}" if np.isfinite(v) else "n/a" for v in values], padding=2, fontsize="small")
    ax.margins(x=0.15)  # room for the labels


def chart(path: Path, columns: list[str], rows: list[list], title: str) -> None:
    """Two bar panels per variant: test PSNR, and identity distance to the target and to the base."""
    labels = [row[1].replace(" ", "\n") for row in rows]
    y = np.arange(len(rows))
    height = 0.6 + 0.35 * sum(label.count("\n") + 1 for label in labels)
    fig = Figure(figsize=(11, max(3.0, height)), layout="constrained")  # no pyplot: no display, no global state
    psnr, identity = fig.subplots(1, 2, sharey=True)
    _bars(psnr, y, _values(columns, rows, "test.psnr"), color="tab:blue")
    psnr.set_xlabel("test PSNR (dB), higher is better")
    for offset, key, color in zip((-0.2, 0.2), IDENTITY, ("tab:red", "tab:gray")):
        _bars(identity, y + offset, _values(columns, rows, key), height=0.4, color=color, label=key.split(".", 1)[1])
    identity.set_xlabel("identity distance (to the target: lower means a better swap)")
    identity.legend(loc="lower right", fontsize="small")
    psnr.set_yticks(y, labels, fontsize="small")
    psnr.invert_yaxis()  # job order from the top
    fig.suptitle(title)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    write_png(path, np.asarray(canvas.buffer_rgba())[..., :3], source=f"sweep summary chart of {title}")


def _wandb_settings(jobs: list[Job], sweep_dir: Path) -> dict | None:
    """The jobs' W&B logger config (project, mode) for the summary run, in the sweep's group."""
    found = [((job.metrics.get("config") or {}).get("logger") or {}).get("wandb") for job in jobs]
    settings = [s for s in found if s]
    if not settings:
        return None
    groups = {s.get("group") for s in settings}
    group = groups.pop() if len(groups) == 1 else sweep_dir.name
    return {**settings[0], "save_dir": str(sweep_dir), "name": f"summary__{sweep_dir.name}", "group": group,
            "job_type": "summary", "tags": ["summary"]}  # fmt: skip


def log_wandb(settings: dict, columns: list[str], rows: list[list], chart_path: Path) -> Path:
    """The table and the chart as one W&B run (offline unless the jobs logged online); its folder."""
    logger = instantiate(settings)
    logger.log_hyperparams({"synthetic": synthetic_metadata()})
    logger.log_table("summary/table", columns=columns, data=rows)
    logger.log_image("summary/chart", [str(chart_path)])
    run_dir = Path(logger.experiment.dir).parent
    logger.experiment.finish()
    return run_dir


def summarize(sweep_dir: str | Path) -> dict:
    """summary.csv, .json and .png in the sweep folder, and a W&B table when its jobs logged to W&B."""
    sweep_dir = Path(sweep_dir)
    jobs = load_jobs(sweep_dir)
    columns, rows = table(jobs)
    write_csv(sweep_dir / "summary.csv", columns, rows)
    write_json(sweep_dir / "summary.json", {"synthetic": synthetic_metadata(), "columns": columns, "rows": rows})
    chart(sweep_dir / "summary.png", columns, rows, sweep_dir.name)
    settings = _wandb_settings(jobs, sweep_dir)
    wandb_run = log_wandb(settings, columns, rows, sweep_dir / "summary.png") if settings else None
    if wandb_run is None:
        log.info("the jobs did not log to W&B (logger=wandb), so neither does the summary")
    log.info("summary of %d jobs: %s, %s", len(jobs), sweep_dir / "summary.csv", sweep_dir / "summary.png")
    return {"jobs": len(jobs), "csv": str(sweep_dir / "summary.csv"), "chart": str(sweep_dir / "summary.png"),
            "wandb_run": str(wandb_run) if wandb_run else None}  # fmt: skip
