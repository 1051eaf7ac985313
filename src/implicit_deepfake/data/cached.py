"""A dataset built once from a config and cached on disk, replaced whole and atomically.

The build goes to a temporary sibling folder that replaces the dataset folder whole, so a killed
build leaves no half dataset (a later build clears its leftovers); a stamp json holds the config's
fingerprint, and a changed config rebuilds. A file lock makes a parallel job wait and then reuse it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import exclusive, read_json, sha256_json, write_json

log = logging.getLogger(__name__)


class CachedDataset:
    """Subclasses set `name`, `kind` (what the error messages call it), `stamp` (the stamp file's name),
    `self.root`, `self.config`, and `_build(out)`, which writes the dataset into `out` (stamp last)."""

    name = "dataset"
    kind = "built"
    stamp = "dataset.json"
    root: Path
    config: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return sha256_json(self.config)

    def is_built(self) -> bool:
        stamp = self.root / self.stamp
        try:
            return stamp.is_file() and read_json(stamp).get("fingerprint") == self.fingerprint
        except (DeepfakeError, AttributeError):  # an unreadable stamp means: build again
            return False

    def prepare(self) -> Path:
        """The dataset root, built first if missing or built with another config (one job at a time:
        a parallel job waits for the build, then uses it)."""
        if self.is_built():
            return self.root
        with exclusive(self.root, "the dataset"):
            return self.root if self.is_built() else self._build_here()

    def write_stamp(self, out: Path, **extra: Any) -> None:
        """The stamp that marks `out` as built from this config (the last file a build writes)."""
        write_json(out / self.stamp, {"config": self.config, "fingerprint": self.fingerprint, **extra})

    def _build(self, out: Path) -> None:
        raise NotImplementedError

    def _build_here(self) -> Path:
        if self.root.is_dir() and any(self.root.iterdir()) and not (self.root / self.stamp).is_file():
            raise DeepfakeError(
                f"{self.root} exists and is not a {self.kind} dataset (no {self.stamp}); building would replace it. "
                "Set data.source.root to an empty or new folder, or delete this one."
            )
        log.info("Building the %s dataset (%s) in %s", self.name, self.config, self.root)
        start = time.perf_counter()
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for stale in self.root.parent.glob(f".{self.root.name}.building.*"):  # left by a killed build
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{self.root.name}.building.", dir=self.root.parent))
        try:
            self._build(staging)
            if self.root.exists():
                retired = staging.with_name(staging.name + ".old")
                os.replace(self.root, retired)
                os.replace(staging, self.root)
                shutil.rmtree(retired)
            else:
                os.replace(staging, self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("Built %s in %.1f s", self.root, time.perf_counter() - start)
        return self.root
