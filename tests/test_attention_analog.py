"""Transformer encoders on analog tiles (issue 11): every projection with a constant weight (Q, K, V or
the fused in-projection, the output projection, the MLP, embeddings, the head) is analog; the MatMuls of
two activations (QK^T, AV) stay digital with the reason; LayerNorm, Softmax and GELU run in the
emulator's digital ops. Three encoders as a user exports them: torch's nn.TransformerEncoder, a ViT-style
patch model and a BERT-style block written out, each with both torch exporters; with the ideal target the
mapped model equals onnxruntime on the original.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional


class Encoder(nn.Module):
    """nn.TransformerEncoder over the 28 rows of an MNIST image."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Linear(28, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu")
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.enc(self.emb(x[:, 0])).mean(1))


class ViT(nn.Module):
    """Patch embedding (7x7 conv, stride 7: 16 tokens), class token, position embedding, pre-norm
    encoder, LayerNorm, head."""

    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(1, 32, 7, stride=7)
        self.cls = nn.Parameter(torch.randn(1, 1, 32) * 0.1)
        self.pos = nn.Parameter(torch.randn(1, 17, 32) * 0.1)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True, activation="gelu",
                                           norm_first=True)
        self.enc = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1) + self.pos
        return self.head(self.norm(self.enc(t))[:, 0])


class BertBlock(nn.Module):
    """A BERT-style layer written out: separate Q / K / V projections, scaled dot-product attention with a
    softmax, output projection + residual + LayerNorm, GELU MLP + residual + LayerNorm."""

    def __init__(self, d: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.emb = nn.Linear(28, d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.head = nn.Linear(d, 10)

    def _split(self, t):
        n, s, _ = t.shape
        return t.reshape(n, s, self.h, self.dk).transpose(1, 2)

    def forward(self, x):
        h = self.emb(x[:, 0])
        n, s, d = h.shape
        q, k, v = self._split(self.q(h)), self._split(self.k(h)), self._split(self.v(h))
        p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk), dim=-1)
        ctx = (p @ v).transpose(1, 2).reshape(n, s, d)
        h = self.ln1(h + self.o(ctx))
        h = self.ln2(h + self.fc2(F.gelu(self.fc1(h))))
        return self.head(h[:, 0])


MODELS = {"encoder": (Encoder, 2), "vit": (ViT, 1), "bert": (BertBlock, 1)}
# analog matrices each model must have: embedding / patch conv + per layer (fused in-projection or Q, K,
# V) + output projection + 2 MLP + head
ANALOG = {"encoder": 1 + 2 * 4 + 1, "vit": 1 + 4 + 1, "bert": 1 + 6 + 1}


def _export(model, x, path: Path, dynamo: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], verbose=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("batch")}})
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              dynamic_axes={"x": {0: "batch"}})
    return path


@pytest.fixture(scope="module", params=[(m, d) for m in MODELS for d in (False, True)],
                ids=[f"{m}-{'dynamo' if d else 'legacy'}" for m in MODELS for d in (False, True)])
def compiled(request, tmp_path_factory):
    from compiler.pipeline import map_model
    from compiler.targets import load_target

    name, dynamo = request.param
    torch.manual_seed(0)
    model = MODELS[name][0]().eval()
    x = torch.randn(3, 1, 28, 28)
    path = _export(model, x, tmp_path_factory.mktemp(name) / "m.onnx", dynamo)
    mapped, report = map_model(path, load_target("ideal"))
    return name, model, x, path, mapped, report


def test_every_constant_projection_is_analog(compiled):
    name, _, _, _, _, report = compiled
    analog = [ly for ly in report["layers"] if ly["analog"]]
    assert len(analog) == ANALOG[name], [(ly["name"], ly["op"], ly["matrix"]) for ly in analog]
    weights = sum(ly["weights"] for ly in analog)
    model = MODELS[name][0]()
    mats = sum(p.numel() for n, p in model.named_parameters() if p.dim() >= 2 and n not in ("pos", "cls")
               and not n.endswith("norm.weight"))
    assert weights == mats  # every weight matrix of the model sits on tiles, nothing else


def test_activation_matmuls_stay_digital_with_the_reason(compiled):
    name, _, _, _, _, report = compiled
    digital = [ly for ly in report["layers"] if not ly["analog"]]
    # QK^T and AV of every layer
    assert len(digital) == 2 * MODELS[name][1], [(ly["name"], ly["reason"]) for ly in digital]
    for ly in digital:
        assert ly["op"] == "MatMul" and "attention" in ly["reason"] and "QK^T" in ly["reason"]
        assert ly["matrix"] is None and ly["weights"] == 0


def test_norms_softmax_gelu_run_in_the_emulator(compiled):
    _, _, _, _, mapped, report = compiled
    ops = {n.op_type for n in mapped.graph.node}
    assert "Softmax" in ops
    assert {"LayerNormalization"} <= ops or {"ReduceMean", "Sqrt"} <= ops
    assert "Erf" in ops or "Gelu" in ops
    assert report["eval_supported"] and report["warnings"] == []


def test_ideal_equals_onnxruntime_on_the_original(compiled):
    import onnxruntime as ort

    from compiler.targets import load_target
    from runtime.analog_nodes import analog_factory
    from runtime.analog_settings import AnalogSettings
    from runtime.executor import Executor

    _, model, x, path, mapped, _ = compiled
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = s.run(None, {s.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(want, model(x).numpy(), rtol=1e-4, atol=1e-5)
    settings = AnalogSettings.from_target(load_target("ideal"))
    cpu = torch.device("cpu")
    for ex in (Executor(mapped), Executor(mapped, analog_factory=analog_factory(settings, cpu))):
        for layer in ex.analog_layers:
            if hasattr(layer, "program"):
                layer.program(None)
        np.testing.assert_allclose(ex(x).numpy(), want, rtol=1e-4, atol=1e-5)


def test_pcm_evaluates_over_time_by_agreement(tmp_path):
    """The encoder on pcm through `acompile eval --metric agreement` on MNIST (no labels needed)."""
    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime.evaluate import EvalConfig, evaluate

    torch.manual_seed(0)
    path = _export(Encoder().eval(), torch.randn(3, 1, 28, 28), tmp_path / "m.onnx", dynamo=False)
    mapped, _ = map_model(path, load_target("pcm"))
    out = tmp_path / "m.pcm.onnx"
    onnx.save(mapped, str(out))
    cfg = EvalConfig(data="mnist", times=[1.0, 3.15e7], chips=1, compensation=["none"], limit=64, threads=1,
                     metric="agreement", calib=32, dac_calib_images=32)
    res = evaluate(out, cfg, progress=False)
    assert [r["t"] for r in res["results"]] == [1.0, 3.15e7]
    assert all(0.0 <= r["mean"] <= 1.0 for r in res["results"])
