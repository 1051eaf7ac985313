"""A dataset's sparse structure-from-motion points (`points3D.ply` beside its frames): written by
`data=colmap` and `data=capture` in the normalised frame, copied with the swapped frames, and the
Gaussians' initial cloud where present (`models/gaussian_init.py`, as 3DGS starts from COLMAP's)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from implicit_deepfake.core.errors import DeepfakeError
from implicit_deepfake.core.io import atomic_path

SPARSE_POINTS = "points3D.ply"
_TYPES = {"float": "<f4", "uchar": "u1"}


def read_points_ply(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """`write_points_ply`'s file -> points (P, 3) float32 and colours (P, 3) uint8; read as data only."""
    raw = path.read_bytes()
    end = raw.find(b"end_header\n")
    header = raw[:end].decode("ascii", errors="replace").splitlines() if end >= 0 else []
    properties = [line.split()[1:] for line in header if line.startswith("property ")]
    counts = [line.split()[-1] for line in header if line.startswith("element vertex ")]
    names = [name for _, name in properties]
    if (
        header[:2] != ["ply", "format binary_little_endian 1.0"]
        or len(counts) != 1
        or not counts[0].isdigit()
        or any(kind not in _TYPES for kind, _ in properties)
        or not {"x", "y", "z", "red", "green", "blue"} <= set(names)
    ):
        raise DeepfakeError(
            f"{path}: not a sparse-point .ply this tool wrote (binary x y z red green blue); "
            f"delete it to start the Gaussians on the visual hull instead."
        )
    dtype = np.dtype([(name, _TYPES[kind]) for kind, name in properties])
    count = int(counts[0])
    body = raw[end + len(b"end_header\n") :]
    if len(body) < count * dtype.itemsize:
        raise DeepfakeError(f"{path}: {count} points announced, {len(body) // dtype.itemsize} stored; delete it.")
    vertex = np.frombuffer(body, dtype, count)
    points = np.stack([vertex[c] for c in "xyz"], 1).astype(np.float32)
    return points, np.stack([vertex[c] for c in ("red", "green", "blue")], 1).astype(np.uint8)


def sparse_points(root: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A dataset's sparse points and colours (`SPARSE_POINTS`), None where it has none."""
    path = Path(root) / SPARSE_POINTS
    return read_points_ply(path) if path.is_file() else None


def write_points_ply(path: Path, points: np.ndarray, colors: np.ndarray) -> None:
    """Points (P, 3) and colours (P, 3) uint8 as a binary PLY (x y z red green blue), as 3DGS reads them."""
    vertex = np.empty(
        len(points), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    for k, name in enumerate("xyz"):
        vertex[name] = points[:, k]
    for k, name in enumerate(("red", "green", "blue")):
        vertex[name] = colors[:, k]
    fields = vertex.dtype.fields
    assert fields is not None  # a structured dtype
    header = "\n".join(
        [
            "ply",
            "format binary_little_endian 1.0",
            "comment sparse points of the COLMAP model, in the dataset's normalised frame",
            f"element vertex {len(points)}",
            *(f"property {'float' if t == '<f4' else 'uchar'} {n}" for n, (t, *_) in fields.items()),
            "end_header",
        ]
    )
    with atomic_path(path) as tmp:
        tmp.write_bytes(header.encode() + b"\n" + vertex.tobytes())
