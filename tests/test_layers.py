"""The package reads as the pipeline: each room imports only the rooms before it, no two modules
import each other, every room is a package, and the public API resolves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import implicit_deepfake

PACKAGE = Path(implicit_deepfake.__file__).parent
LAYERS = (
    "core",
    "render",
    "faces",
    "avatar",
    "data",
    "metrics",
    "swap",
    "models",
    "lit",
    "reports",
    "view",
    "evaluation",
    "pipeline",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The package's modules that `path` imports (at any depth: lazy imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("implicit_deepfake."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("implicit_deepfake."))
    return found


def _room(module: str) -> str:
    return module.split(".")[1]


MODULES = {_module_name(p): _imports(p) for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE or p.stem != "__init__"}


def test_the_top_level_is_the_stages():
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or p.is_dir()}
    rooms -= {"__init__", "__pycache__"}
    assert rooms == set(LAYERS)


@pytest.mark.parametrize("room", [r for r in LAYERS if (PACKAGE / r).is_dir()])
def test_every_room_is_a_package(room):
    for folder in [PACKAGE / room, *(p for p in (PACKAGE / room).rglob("*") if p.is_dir())]:
        if any(folder.glob("*.py")):
            assert (folder / "__init__.py").is_file(), folder


def test_no_import_runs_upwards():
    upward = [
        f"{module} -> {imported}"
        for module, imports in MODULES.items()
        for imported in imports
        if LAYERS.index(_room(imported)) > LAYERS.index(_room(module))
    ]
    assert upward == []


def test_no_two_modules_import_each_other():
    pairs = [(a, b) for a, imports in MODULES.items() for b in imports if a < b and a in MODULES.get(b, set())]
    assert pairs == []


def test_a_room_of_the_layers_would_catch_an_upward_import(tmp_path):
    """The check itself: a render module importing the DataModule is flagged."""
    probe = tmp_path / "probe.py"
    probe.write_text("from implicit_deepfake.data.datamodule import FrameDataModule\n")
    (imported,) = _imports(probe)
    assert LAYERS.index(_room(imported)) > LAYERS.index("render")


def test_the_public_api_resolves():
    for name in implicit_deepfake.__all__:
        assert getattr(implicit_deepfake, name) is not None, name
    with pytest.raises(AttributeError):
        implicit_deepfake.no_such_name  # noqa: B018
