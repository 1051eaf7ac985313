"""Opening a run folder someone else made: its checkpoint and its config.yaml are data, never code.

People share trained avatars. A checkpoint is a pickle, and unpickling can run any code: it is read
with `torch.load(weights_only=True)`, which builds only tensors and plain containers. A config's
`_target_` names what Hydra builds: only classes of this package (and torch's optimisers), each of
the kind its node needs, are built, whatever the file says. Both refusals name the file.
"""

from __future__ import annotations

import inspect
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from implicit_deepfake.core.errors import DeepfakeError

# Classes outside the package a config may build, by name: looked up before anything is imported.
_FOREIGN_CLASSES = frozenset({"torch.optim.Adam", "torch.optim.AdamW", "torch.optim.SGD"})
_PACKAGE = "implicit_deepfake."


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, read without running any of its code."""
    if not zipfile.is_zipfile(path):
        raise DeepfakeError(f"{path}: not a readable checkpoint (not a file torch.save wrote).")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        reason = next((line.strip() for line in lines if "Unsupported" in line or "WeightsUnpickler" in line), lines[0])
        raise DeepfakeError(
            f"{path}: refused: this checkpoint holds Python objects other than tensors and plain data "
            f"({reason}). Unpickling them could run its author's code, so nothing was loaded. Open only "
            "checkpoints written by train.py, or share the avatar as its point_cloud.ply."
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as err:
        raise DeepfakeError(f"{path}: not a readable checkpoint ({err}).") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), Mapping):
        raise DeepfakeError(f"{path}: not a train.py checkpoint (no state_dict).")
    return checkpoint


def _targets(node: object, where: str):
    """(key path, `_target_` value) of every node below `node` that Hydra would build."""
    if isinstance(node, Mapping):
        if "_target_" in node:
            yield where, node["_target_"]
        for key, value in node.items():
            yield from _targets(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _targets(value, f"{where}[{i}]")


def _allowed_class(target: object) -> type | None:
    if not isinstance(target, str) or not (target.startswith(_PACKAGE) or target in _FOREIGN_CLASSES):
        return None  # checked before import: nothing outside the package is even loaded
    try:
        found = get_class(target)
    except (ImportError, ValueError, AttributeError):
        return None
    return found if inspect.isclass(found) else None


def check_buildable(cfg: DictConfig, source: str | Path, nodes: Mapping[str, type]) -> None:
    """Refuse `cfg` (read from `source`) unless every `_target_` under the `nodes` it will build is a
    class of this package or a torch optimiser, and each node's own class is a subclass of its kind."""
    for key, kind in nodes.items():
        node = OmegaConf.select(cfg, key, default=None)
        node = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else None
        if not isinstance(node, Mapping) or "_target_" not in node:
            raise DeepfakeError(f"{source}: `{key}` must be a node with a `_target_` (a {kind.__name__}).")
        for where, target in _targets(node, key):
            found = _allowed_class(target)
            if found is None:
                raise DeepfakeError(
                    f"{source}: `{where}._target_: {target}` is refused: a run's config may only build classes "
                    "of implicit_deepfake (and torch optimisers). Nothing was built."
                )
        found = _allowed_class(node["_target_"])
        assert found is not None  # the node's own target was among those checked above
        if not issubclass(found, kind):
            raise DeepfakeError(f"{source}: `{key}._target_: {node['_target_']}` is not a {kind.__name__}.")
