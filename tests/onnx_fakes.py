"""Tiny stand-ins for insightface's inswapper_128.onnx and w600k_r50.onnx, built in milliseconds.

They have the input/output names and shapes insightface's `ModelRouter` routes on (two inputs of
128x128 -> INSwapper; one square input of 112 -> ArcFaceONNX) and the graph features its model
classes read (INSwapper takes `emap` from the graph's last initializer; ArcFaceONNX picks
mean/std 127.5 when the first nodes are not named Sub/Mul), so the real insightface code loads
and runs them. Their outputs are simple closed-form functions the tests can predict.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_OPSET = 13
LATENT = 512


@dataclass(frozen=True)
class FakeSwapper:
    """output = mix * target_crop + (1 - mix) * sigmoid(source @ colour_proj): a flat colour
    chosen by the identity latent, blended over the aligned frame crop (RGB in [0, 1])."""

    emap: np.ndarray  # (512, 512)
    colour_proj: np.ndarray  # (512, 3)
    mix: float

    def colour(self, normed_embedding: np.ndarray) -> np.ndarray:
        """(3,) RGB in [0, 1] the model paints for an ArcFace embedding, following INSwapper.get:
        latent = normalize(embedding @ emap)."""
        latent = normed_embedding.reshape(1, -1) @ self.emap
        latent /= np.linalg.norm(latent)
        return (1.0 / (1.0 + np.exp(-(latent @ self.colour_proj))))[0]


@dataclass(frozen=True)
class FakeArcFace:
    """embedding = proj^T (pooled - mean(pooled)), pooled = the (x - 127.5) / 127.5 RGB crop
    averaged over 14x14 blocks: (3, 8, 8) flattened."""

    proj: np.ndarray  # (192, 512)

    def normed_embedding(self, crop_rgb: np.ndarray) -> np.ndarray:
        """crop_rgb: (112, 112, 3) uint8 aligned face -> (512,) unit embedding."""
        chw = (crop_rgb.astype(np.float32).transpose(2, 0, 1) - 127.5) / 127.5
        pooled = chw.reshape(3, 8, 14, 8, 14).mean(axis=(2, 4)).reshape(-1)
        embedding = (pooled - pooled.mean()) @ self.proj
        return embedding / np.linalg.norm(embedding)


def _save(graph: onnx.GraphProto, path: str | Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def write_fake_inswapper(path: str | Path, seed: int = 0, mix: float = 0.5) -> FakeSwapper:
    """Write an inswapper-like model: inputs target (1,3,128,128), source (1,512) -> output
    (1,3,128,128). `emap` is the last initializer, unused by the graph as in the real model."""
    rng = np.random.default_rng(seed)
    fake = FakeSwapper(
        emap=rng.standard_normal((LATENT, LATENT)).astype(np.float32),
        colour_proj=(2.0 * rng.standard_normal((LATENT, 3))).astype(np.float32),
        mix=mix,
    )
    initializers = [
        numpy_helper.from_array(fake.colour_proj, "colour_proj"),
        numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "colour_shape"),
        numpy_helper.from_array(np.array(mix, np.float32), "mix"),
        numpy_helper.from_array(np.array(1.0 - mix, np.float32), "one_minus_mix"),
        numpy_helper.from_array(fake.emap, "emap"),
    ]
    nodes = [
        helper.make_node("MatMul", ["source", "colour_proj"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["colour"]),
        helper.make_node("Reshape", ["colour", "colour_shape"], ["colour4"]),
        helper.make_node("Mul", ["colour4", "one_minus_mix"], ["paint"]),
        helper.make_node("Mul", ["target", "mix"], ["kept"]),
        helper.make_node("Add", ["kept", "paint"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_inswapper",
        inputs=[
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
            helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, LATENT]),
        ],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])],
        initializer=initializers,
    )
    _save(graph, path)
    return fake


def write_fake_arcface(path: str | Path, seed: int = 1) -> FakeArcFace:
    """Write an ArcFace-like model: input (N,3,112,112) -> (N,512), a fixed random projection of
    the 14x14-average-pooled crop with its mean removed (so brightness alone does not dominate)."""
    fake = FakeArcFace(proj=np.random.default_rng(seed).standard_normal((3 * 8 * 8, LATENT)).astype(np.float32))
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["pooled"], kernel_shape=[14, 14], strides=[14, 14]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("ReduceMean", ["flat"], ["flat_mean"], axes=[1], keepdims=1),
        helper.make_node("Sub", ["flat", "flat_mean"], ["centred"]),
        helper.make_node("MatMul", ["centred", "proj"], ["embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fake_arcface",
        inputs=[helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        outputs=[helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", LATENT])],
        initializer=[numpy_helper.from_array(fake.proj, "proj")],
    )
    _save(graph, path)
    return fake
