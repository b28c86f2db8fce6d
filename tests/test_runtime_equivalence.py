"""Target `ideal`: the emulator must reproduce onnxruntime on every test architecture."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from compiler.pipeline import map_model
from compiler.targets import load_target
from models.archs import ARCHS, export
from runtime import contract
from runtime.baseline import OrtBaseline, reconstruct
from runtime.executor import Executor

FAST = ["mlp_matmul", "resnet20", "mobilenet", "vgg", "resnet50_small"]


def _check(name: str, tmp_path, dynamo: bool = False) -> None:
    model, x = ARCHS[name]()
    p = export(model, x, tmp_path / f"{name}.onnx", dynamo=dynamo, dynamic_batch=True)
    mapped, _ = map_model(p, load_target("ideal"))
    ex = Executor(mapped)
    assert ex.analog_layers, "the ideal target maps something analog"
    xb = torch.randn(3, *x.shape[1:], generator=torch.Generator().manual_seed(1))
    y = ex(xb).numpy()
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {sess.get_inputs()[0].name: xb.numpy()})[0]
    scale = np.abs(ref).max()
    assert np.abs(y - ref).max() <= 1e-5 * max(scale, 1.0)
    # the baseline rebuilt from the mapped artifact alone is the original network
    rb = OrtBaseline(mapped)(xb.numpy())
    assert np.abs(rb - ref).max() <= 1e-4 * max(scale, 1.0)
    assert not any(n.domain == contract.DOMAIN for n in reconstruct(mapped).graph.node)


@pytest.mark.parametrize("name", FAST)
def test_ideal_matches_onnxruntime(name, tmp_path):
    _check(name, tmp_path)


def test_ideal_matches_onnxruntime_dynamo_export(tmp_path):
    _check("resnet20", tmp_path, dynamo=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet32", "resnet50"])
def test_ideal_matches_onnxruntime_large(name, tmp_path):
    _check(name, tmp_path)
