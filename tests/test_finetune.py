"""`acompile finetune`: the user's graph in, the same graph with new weights out.

Covered: the trainable graph equals onnxruntime when no noise is on (legacy and dynamo exports, BN kept,
the `view(size(0), -1)` flatten); the written model has the input's nodes, names, inputs, outputs and
initializer shapes, with changed weights and BN statistics and the parent's SHA-256; a short run on real
MNIST lowers the loss; an interrupted run resumed from its checkpoint ends where an uninterrupted one
does; bad input is one line, exit 2, nothing written.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from compiler.targets import load_target
from hwtrain import finetune as ft
from hwtrain.analog_hwa import HWAKnobs
from hwtrain.graph_module import OnnxGraphModule
from models import DATA_DIR, model_path
from runtime import contract
from runtime.data import Dataset, load_dataset
from runtime.errors import AcompileError

MNIST_1K = DATA_DIR / "mnist-test-1k.npz"  # bundled: these tests never skip
MEAN_STD = ["--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = cout - cin

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x
        if self.pad:  # option A: strided identity, zero-padded channels
            s = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))
        return F.relu(y + s)


class TinyResNet(nn.Module):
    """A CIFAR ResNet in Idelbayev's style (option-A shortcuts, `view(size(0), -1)` flatten), small."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = _Block(8, 8, 1)
        self.layer2 = _Block(8, 16, 2)
        self.linear = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def export(model: nn.Module, x: torch.Tensor, path: Path, dynamo: bool) -> Path:
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=18,
                              dynamic_shapes={"x": {0: torch.export.Dim("N", min=1, max=1024)}})
        else:
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
                              input_names=["x"], output_names=["y"],
                              dynamic_axes={"x": {0: "N"}, "y": {0: "N"}})
    return path


def trained_tiny_resnet() -> TinyResNet:
    """Weights and BN statistics away from their defaults (so BN scales are not de-duplicated)."""
    torch.manual_seed(0)
    m = TinyResNet()
    m.train()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for _ in range(3):
            m(torch.randn(32, 3, 32, 32))
    return m


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory) -> Path:
    """256 CIFAR-shaped uint8 images with labels (real CIFAR-10 when ../shared/data has it)."""
    path = tmp_path_factory.mktemp("data") / "cifar-small.npz"
    try:
        ds = load_dataset("cifar10-exact:test-1k", "test")
        x, y = ds.x[:256], ds.y[:256]
    except Exception:  # noqa: BLE001 - no shared data here: random images still exercise the graph
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (256, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 256)
    np.savez(path, x=x, y=y)
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
def test_graph_module_equals_onnxruntime(tmp_path, dynamo):
    path = export(trained_tiny_resnet(), torch.randn(2, 3, 32, 32), tmp_path / "r.onnx", dynamo)
    model = onnx.load(str(path))
    n_bn = sum(n.op_type == "BatchNormalization" for n in model.graph.node)
    assert n_bn == (0 if dynamo else 5)  # the dynamo exporter folds eval-mode BN into the convs
    gm = OnnxGraphModule(model)
    gm.eval()
    x = np.random.default_rng(1).normal(size=(5, 3, 32, 32)).astype(np.float32)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = gm(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    roles = set(gm.roles.values())
    assert roles == ({"weight", "bias"} if dynamo else {"weight", "bias", "bn_scale", "bn_bias", "bn_stat"})


def test_graph_module_trains_a_conv_without_kernel_shape(tmp_path):
    """kernel_shape is optional in ONNX (the weight's shape gives it); a trainable weight is no constant,
    so the graph module takes it from the initializer."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.2, (4, 3, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c", pads=[1, 1, 1, 1])
    f32 = onnx.TensorProto.FLOAT
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", f32, [2, 3, 5, 5])],
                          [helper.make_tensor_value_info("y", f32, [2, 4, 5, 5])],
                          [onnx.numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    gm = OnnxGraphModule(model)
    assert gm.roles == {"w": "weight"}
    x = rng.normal(size=(2, 3, 5, 5)).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(gm(torch.from_numpy(x)).detach().numpy(), sess.run(None, {"x": x})[0],
                               atol=1e-5, rtol=1e-5)


def test_finetune_writes_the_same_graph_with_new_weights(tmp_path, tiny_cifar, run_cli):
    src = export(trained_tiny_resnet(), torch.randn(2, 3, 32, 32), tmp_path / "user.onnx", dynamo=False)
    before = sha256(src)
    out = tmp_path / "out" / "user.hwa.onnx"
    code, stdout, err = run_cli("finetune", src, "--target", "pcm", "--data", tiny_cifar, *MEAN_STD,
                                "--epochs", "1", "--batch-size", "32", "--lr", "0.02", "-o", out, "--quiet")
    assert code == 0, err
    assert sha256(src) == before  # the user's file is untouched
    assert not (tmp_path / "out" / "user.hwa.onnx.ckpt.npz").exists()  # removed after a finished run
    a, b = onnx.load(str(src)), onnx.load(str(out))
    strip = [(n.op_type, n.name, list(n.input), list(n.output), n.domain,
              [helper.get_attribute_value(x) for x in n.attribute]) for n in a.graph.node]
    assert [(n.op_type, n.name, list(n.input), list(n.output), n.domain,
             [helper.get_attribute_value(x) for x in n.attribute]) for n in b.graph.node] == strip
    assert a.graph.input == b.graph.input and a.graph.output == b.graph.output
    ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
    ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
    assert {k: (v.shape, v.dtype) for k, v in ia.items()} == {k: (v.shape, v.dtype) for k, v in ib.items()}
    changed = {k for k in ia if not np.array_equal(ia[k], ib[k])}
    bn_stats = {n.input[i] for n in a.graph.node if n.op_type == "BatchNormalization" for i in (3, 4)}
    weights = {n.input[1] for n in a.graph.node if n.op_type in ("Conv", "Gemm")}
    assert bn_stats <= changed and weights <= changed
    unchanged_ints = [k for k, v in ia.items() if v.dtype.kind in "iu"]
    assert not changed & set(unchanged_ints)
    meta = {p.key: p.value for p in b.metadata_props}
    assert meta[contract.META_PARENT_SHA256] == before
    recipe = json.loads(meta[contract.META_RECIPE])
    assert recipe["target"] == "pcm" and recipe["config"]["epochs"] == 1
    assert json.loads(meta[contract.META_FINETUNE_TARGET])["name"] == "pcm"
    assert json.loads(meta[contract.META_PREPROCESSING])["mean"] == [0.5, 0.5, 0.5]
    assert "digital test accuracy" in stdout
    # weights were clipped to 2.5 std (the default) in the written model
    for k in weights:
        w = ib[k]
        assert np.abs(w).max() <= 2.5 * w.std() * 1.05


def test_finetune_the_bundled_mlp(tmp_path, run_cli):
    out = tmp_path / "mlp.hwa.onnx"
    code, stdout, err = run_cli("finetune", model_path("mlp-mnist.onnx"), "--data", MNIST_1K,
                                "--epochs", "1", "--limit", "500", "-o", out, "--quiet")
    assert code == 0, err
    acc = float(stdout.split("digital test accuracy")[1].split("%")[0])
    assert acc > 90.0  # a trained network stays trained (bundled 1k images: ~98 %)


def _mlp_untrained(path: Path) -> Path:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))
    export(m, torch.randn(2, 1, 28, 28), path, dynamo=False)
    proto = onnx.load(str(path))
    proto.metadata_props.add(key=contract.META_PREPROCESSING,
                             value='{"layout": "NCHW", "scale": 0.00392156862745098, "mean": [0.1307], '
                                   '"std": [0.3081], "input_shape": [1, 28, 28], "dataset": "mnist"}')
    onnx.save(proto, str(path))
    return path


def test_short_run_on_real_mnist_lowers_the_loss(tmp_path):
    src = _mlp_untrained(tmp_path / "mlp.onnx")
    prepared = ft.prepare(src, load_target("pcm"))
    ds = load_dataset(str(MNIST_1K), "test")
    train_ds, test_ds = Dataset(ds.x[:800], ds.y[:800], "a"), Dataset(ds.x[800:], ds.y[800:], "b")
    cfg = ft.FinetuneConfig(epochs=2, lr=0.05, batch_size=32)
    result = ft.train(prepared, cfg, train_ds, test_ds, progress=False)
    assert result["before"]["accuracy"] < 0.3
    last = result["history"][-1]
    assert last["test_loss"] < 0.6 * result["before"]["loss"]
    assert last["test_accuracy"] > 0.7


def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, monkeypatch):
    src = _mlp_untrained(tmp_path / "mlp.onnx")
    ds = load_dataset(str(MNIST_1K), "test")
    train_ds = Dataset(ds.x[:400], ds.y[:400], "a")
    cfg = ft.FinetuneConfig(epochs=2, lr=0.05, batch_size=50)
    target = load_target("pcm")

    whole = ft.prepare(src, target)
    ft.train(whole, cfg, train_ds, None, checkpoint=tmp_path / "a.npz", progress=False)

    saved = ft.save_checkpoint

    def save_then_die(*args, **kw):
        saved(*args, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(ft, "save_checkpoint", save_then_die)
    first = ft.prepare(src, target)
    with pytest.raises(KeyboardInterrupt):
        ft.train(first, cfg, train_ds, None, checkpoint=tmp_path / "b.npz", progress=False)
    monkeypatch.setattr(ft, "save_checkpoint", saved)
    second = ft.prepare(src, target)
    result = ft.train(second, cfg, train_ds, None, checkpoint=tmp_path / "b.npz", resume=tmp_path / "b.npz",
                      progress=False)
    assert [h["epoch"] for h in result["history"]] == [1, 2]
    for k, v in whole.module.state_arrays().items():
        np.testing.assert_allclose(second.module.state_arrays()[k], v, rtol=1e-5, atol=1e-6, err_msg=k)


def test_distillation_loss_is_hintons() -> None:
    """(1 - a) CE + a T^2 KL(teacher || student) at temperature T, written out by hand."""
    torch.manual_seed(0)
    out, soft, y = torch.randn(6, 10), torch.randn(6, 10), torch.randint(0, 10, (6,))
    cfg = ft.FinetuneConfig(distill=0.7, distill_temp=3.0)
    p_t = torch.softmax(soft / 3.0, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(out / 3.0, 1))).sum(1).mean()
    want = 0.3 * F.cross_entropy(out, y) + 0.7 * 9.0 * kl
    torch.testing.assert_close(ft.loss_fn(out, y, soft, cfg), want)
    torch.testing.assert_close(ft.loss_fn(out, y, soft, ft.FinetuneConfig()), F.cross_entropy(out, y))
    pure = ft.FinetuneConfig(distill=1.0)
    assert float(ft.loss_fn(soft, y, soft, pure)) == pytest.approx(0.0, abs=1e-6)  # student = teacher


def test_distillation_teaches_the_parent_s_outputs(tmp_path):
    """The teacher is the input model as it came in, not the student being trained: on scrambled labels,
    cross-entropy alone unlearns the digits, while half the loss from the parent's soft labels keeps them
    (a teacher that followed the student would give no signal and the digits would be lost too)."""
    src = model_path("mlp-mnist.onnx")
    ds = load_dataset(str(MNIST_1K), "test")
    test_ds = Dataset(ds.x[600:], ds.y[600:], "b")
    scrambled = Dataset(ds.x[:600], (ds.y[:600] + 1) % 10, "scrambled")
    acc = {}
    for a in (0.0, 0.5):
        prepared = ft.prepare(src, load_target("pcm"))
        cfg = ft.FinetuneConfig(epochs=3, lr=0.05, batch_size=32, distill=a)
        acc[a] = ft.train(prepared, cfg, scrambled, test_ds, progress=False)["history"][-1]["test_accuracy"]
    assert acc[0.5] > 0.9, acc
    assert acc[0.0] < 0.5, acc


# ---- bad input: one line, exit 2, nothing written ------------------------------------------------


def _graph(path: Path, nodes, inputs, outputs, inits, meta: bool = True) -> Path:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    if meta:
        m.metadata_props.add(key=contract.META_PREPROCESSING,
                             value='{"layout": "flat", "scale": 0.00392156862745098, "mean": [0.13], '
                                   '"std": [0.31], "input_shape": [1, 28, 28], "dataset": "mnist"}')
    onnx.save(m, str(path))
    return path


def _fc(path: Path, extra=(), meta: bool = True, out_dims=("N", 10)) -> Path:
    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 0.05, (784, 10)).astype(np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="fc"), *extra]
    last = nodes[-1].output[0]
    outs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, list(out_dims))]
    return _graph(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])], outs,
                  [w], meta)


def _bad_cases(tmp_path: Path, tiny_cifar: Path) -> dict[str, tuple[list, str]]:
    relu_only = _graph(tmp_path / "relu.onnx", [helper.make_node("Relu", ["x"], ["y"], name="r")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 784])], [])
    k = numpy_helper.from_array(np.array([3], np.int64), "k")
    topk = _fc(tmp_path / "topk.onnx", [helper.make_node("TopK", ["h", "k"], ["v", "i"], name="best")],
               out_dims=("N", 3))
    topk_m = onnx.load(str(topk))
    topk_m.graph.initializer.append(k)
    onnx.save(topk_m, str(topk))
    torch.manual_seed(0)
    untrained = export(TinyResNet(), torch.randn(2, 3, 32, 32), tmp_path / "untrained.onnx", dynamo=False)
    good = _fc(tmp_path / "fc.onnx")
    nometa = _fc(tmp_path / "nometa.onnx", meta=False)
    data = ["--data", str(MNIST_1K)]
    return {
        "no analog layer": ([relu_only, *data], "no layer maps"),
        "untrainable op": ([topk, *data], "'best' (TopK)"),
        "shared BN statistics": ([untrained, "--data", str(tiny_cifar), *MEAN_STD], "shared with other BN"),
        "wrong data shape": ([good, "--data", str(tiny_cifar)], "expects"),
        "missing preprocessing": ([nometa, *data], "--mean and --std"),
        "output is the input": ([good, *data, "-o", good], "overwrite the input"),
        "json is the output": ([good, *data, "-o", tmp_path / "o.onnx", "--json", tmp_path / "o.onnx"],
                               "same file"),
        "bad bits": ([good, *data, "--adc-bits", "1"], "--adc-bits"),
        "zero epochs": ([good, *data, "--epochs", "0"], "--epochs"),
        "bn-restat without BN": ([good, *data, "--epochs", "0", "--bn-restat", "100"], "BatchNormalization"),
        "noise out of range": ([good, *data, "--noise", "1.5"], "--noise"),
        "bad mean": ([nometa, *data, "--mean", "a", "--std", "1"], "--mean"),
        "unknown target": ([good, *data, "--target", "nope"], "unknown target"),
        "resume without checkpoint": ([good, *data, "--resume"], "no checkpoint"),
        "not an onnx output": ([good, *data, "-o", tmp_path / "x.txt"], ".onnx"),
        "bad noise times": ([good, *data, "--noise-times", "1s,abc"], "--noise-times"),
        "one noise time": ([good, *data, "--noise-times", "1d"], "two times"),
        "distill weight above 1": ([good, *data, "--distill", "1.5"], "--distill"),
        "distill temperature 0": ([good, *data, "--distill", "0.5", "--distill-temp", "0"], "--distill-temp"),
        "noise times need device noise": ([good, *data, "--noise-times", "1s,1y", "--noise-shape",
                                           "gaussian"], "--noise-shape device"),
    }


def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, tiny_cifar, run_cli):
    cases = _bad_cases(tmp_path, tiny_cifar)
    for label, (args, needle) in cases.items():
        before = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        code, out, err = run_cli("finetune", *args, "--quiet")
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2, (label, err)
        assert len(lines) == 1 and lines[0].startswith("acompile: error:"), (label, err)
        assert needle in lines[0], (label, lines[0])
        after = {p: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        assert after == before, (label, set(after) ^ set(before))


def test_bn_restat_averages_clean_batch_statistics(tmp_path, tiny_cifar):
    """--bn-restat: every BN's running statistics become the plain average of its clean (noise-free)
    input's batch statistics, here checked on the first BN against conv1 computed by hand from the
    initializer; training's noisy statistics are gone, and the accuracy train() reports after it is what
    onnxruntime gives the written model."""
    src = export(trained_tiny_resnet(), torch.randn(2, 3, 32, 32), tmp_path / "r.onnx", dynamo=False)
    model = onnx.load(str(src))
    data = np.load(tiny_cifar)
    ds = Dataset(data["x"][:192], data["y"][:192], "tiny")
    kw = dict(knobs=HWAKnobs(noise=0.2), mean=[0.5] * 3, std=[0.25] * 3)
    prepared = ft.prepare(src, load_target("pcm"), **kw)
    ft.train(prepared, ft.FinetuneConfig(epochs=1, lr=0.01, batch_size=64, augment=False), ds, None,
             progress=False)
    bn = next(n for n in model.graph.node if n.op_type == "BatchNormalization")
    conv = next(n for n in model.graph.node if n.output[0] == bn.input[0])
    m = prepared.module
    x = torch.from_numpy(prepared.preprocessing.apply(ds.x)).float()
    pre = F.conv2d(x, m.tensor(conv.input[1]).detach(), padding=1)
    noisy_mean = m.buffer(bn.input[3]).clone()
    ft.restat_bn(prepared, ds, 192, 64, np.random.default_rng(7), False, torch.device("cpu"))
    order = np.random.default_rng(7).permutation(192)  # batch_stream's batches: sorted slices of it
    batches = [pre[torch.from_numpy(np.sort(order[i:i + 64]))] for i in range(0, 192, 64)]
    np.testing.assert_allclose(m.buffer(bn.input[3]).numpy(), pre.mean((0, 2, 3)).numpy(), rtol=1e-4,
                               atol=1e-5)
    expected_var = torch.stack([b.var((0, 2, 3), unbiased=True) for b in batches]).mean(0)
    np.testing.assert_allclose(m.buffer(bn.input[4]).numpy(), expected_var.numpy(), rtol=1e-4, atol=1e-5)
    assert not np.allclose(noisy_mean.numpy(), pre.mean((0, 2, 3)).numpy(), rtol=1e-3, atol=1e-4)

    again = ft.prepare(src, load_target("pcm"), **kw)
    cfg = ft.FinetuneConfig(epochs=1, lr=0.01, batch_size=64, augment=False, bn_restat=128)
    result = ft.train(again, cfg, ds, ds, progress=False)
    assert result["test_accuracy"] == result["test_accuracy_after_bn_restat"]
    out = tmp_path / "restat.onnx"
    onnx.save(ft.finetuned_model(again, {"kind": "test"}), str(out))
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    pred = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0].reshape(len(x), -1).argmax(1)
    assert float(np.mean(pred == ds.y)) == pytest.approx(result["test_accuracy"], abs=1e-9)


def test_zero_epochs_only_with_bn_restat() -> None:
    with pytest.raises(AcompileError, match="--epochs"):
        ft.FinetuneConfig(epochs=0)
    assert ft.FinetuneConfig(epochs=0, bn_restat=100).epochs == 0
    with pytest.raises(AcompileError, match="--bn-restat"):
        ft.FinetuneConfig(bn_restat=-1)
