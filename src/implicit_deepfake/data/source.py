"""Dataset sources: where a run's base frames and target photo come from.

A source has a `name`, a `root` and a `target_photo`, and `prepare()` returns the root once the
dataset is ready (built, for generated sources; checked, for downloaded ones).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.data.blender import SPLITS, transforms_path

TINA_URL = "https://drive.google.com/drive/folders/1ZSUoqH1sv3ln-BuWznnDqSx0-Erg5TZU"
TINA_LAYOUT = """\
  {root}/
    famous.jpg                      the target photo (the person to swap in)
    train/ val/ test/               r_<i>.png frames of the base avatar (RGBA)
    transforms_train.json           camera_angle_x + frames[file_path, transform_matrix]
    transforms_val.json
    transforms_test.json"""


class DatasetSource(Protocol):
    """What every `data.source` class has (see above)."""

    @property
    def root(self) -> Path: ...

    @property
    def target_photo(self) -> Path: ...

    def prepare(self) -> Path: ...


class GivenTargetPhoto:
    """For a source that takes `target_photo=<path>`: that photo, else <root>/famous.jpg (the data's own)."""

    root: Path
    given_target_photo: Path | None = None

    @property
    def target_photo(self) -> Path:
        return self.given_target_photo or self.root / "famous.jpg"


class BlenderSource:
    """A Blender/NeRF-synthetic dataset on disk (e.g. the paper's "tina" head) plus famous.jpg."""

    def __init__(self, root: str, name: str = "tina", url: str = TINA_URL) -> None:
        self.name = name
        self.root = Path(root)
        self.url = url

    @property
    def target_photo(self) -> Path:
        return self.root / "famous.jpg"

    def prepare(self) -> Path:
        missing = [p for p in (transforms_path(self.root, s) for s in SPLITS) if not p.is_file()]
        if not self.root.is_dir() or missing or not self.target_photo.is_file():
            what = "does not exist" if not self.root.is_dir() else "is incomplete"
            raise DeepfakeError(
                f"Dataset '{self.name}' at {self.root} {what}.\n"
                f"Download it from {self.url} (the ImplicitDeepfake authors' data: base avatar views and "
                f"famous.jpg) and unpack it so that it looks like:\n{TINA_LAYOUT.format(root=self.root)}\n"
                "or point paths.data_dir (or data.root) at the folder that holds it."
            )
        return self.root
