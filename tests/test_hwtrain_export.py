"""ONNX export: BN kept, metadata written, onnxruntime equals torch, dynamic batch, HWA stripped."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwtrain.export import RECIPE_KEY, export_onnx, read_metadata
from hwtrain.noise import HWAConfig, apply_hwa
from models import zoo
from runtime.data import PREPROCESSING_KEY, Preprocessing


def _randomize_bn(model: nn.Module) -> nn.Module:
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(1 + 0.1 * torch.randn(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def test_resnet32_export_keeps_bn_and_matches_torch(tmp_path):
    torch.manual_seed(0)
    model = _randomize_bn(zoo.build("resnet32"))
    apply_hwa(model, HWAConfig(noise=0.05, dac_bits=8, adc_bits=8))  # must be stripped by the export
    model.eval()
    pre = zoo.default_preprocessing("resnet32")
    path = export_onnx(
        model,
        tmp_path / "r32.onnx",
        example_input=zoo.example_input("resnet32"),
        preprocessing=pre,
        recipe={"epochs": 3, "noise": 0.05},
    )
    proto = onnx.load(str(path))
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["BatchNormalization"] == 33 and ops["Conv"] == 33
    assert "Identity" not in ops
    assert not any("parametrizations" in t.name for t in proto.graph.initializer)
    meta = read_metadata(path)
    assert Preprocessing.from_json(meta[PREPROCESSING_KEY]) == pre
    assert json.loads(meta[RECIPE_KEY]) == {"epochs": 3, "noise": 0.05}
    # dynamic batch and agreement with torch on a fresh input of another batch size
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 32, 32)
    from hwtrain.noise import strip_hwa

    strip_hwa(model)
    with torch.no_grad():
        ref = model(x).numpy()
    got = sess.run(None, {"input": x.numpy()})[0]
    assert np.allclose(got, ref, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("name", ["mlp", "lenet5"])
def test_small_models_export(tmp_path, name):
    model = zoo.build(name).eval()
    path = export_onnx(
        model,
        tmp_path / f"{name}.onnx",
        example_input=zoo.example_input(name),
        preprocessing=zoo.default_preprocessing(name),
        recipe={},
    )
    proto = onnx.load(str(path))
    dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "batch"
    ops = {n.op_type for n in proto.graph.node}
    assert "Gemm" in ops
    if name == "mlp":
        assert ops == {"Gemm", "Relu"}
        assert {t.name for t in proto.graph.initializer} >= {"fc1.weight", "fc2.weight"}


@pytest.mark.parametrize("name, layout", [("mlp-mnist", "flat"), ("lenet5-mnist", "NCHW")])
def test_bundled_models_metadata(name, layout):
    from models import model_path

    path = model_path(f"{name}.onnx")
    if not path.exists():
        pytest.skip("bundled model not built yet")
    assert path.stat().st_size < 2_000_000
    assert (path.with_suffix(".md")).exists()  # every bundled model has a model card
    meta = read_metadata(path)
    recipe = json.loads(meta[RECIPE_KEY])
    assert recipe["model"] == name.split("-")[0] and recipe["dataset"] == "mnist"
    assert recipe["digital_test_accuracy"] >= 0.975
    assert recipe["noise"] == 0.038 and recipe["clip"] == 2.5
    assert Preprocessing.from_json(meta[PREPROCESSING_KEY]).layout == layout
