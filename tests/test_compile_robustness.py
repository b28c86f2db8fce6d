"""Reliability: data paths the user gives are used or refused; compile refuses what it cannot map (NaN /
Inf weights, custom op domains, absurd tile counts) and says what eval cannot run (CumSum) or at which batch
size a model works; empty weights do not crash; a transformer compiles and evaluates at any batch size;
progress is reported on and off a terminal; the tile picture shows every tile; `--digital` takes the
names users write; `acompile targets` shows units; outputs follow the umask."""

from __future__ import annotations

import ast
import gzip
import io
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.errors import AcompileError

ROOT = Path(__file__).resolve().parents[1]
LENET = ROOT / "models" / "lenet5-mnist.onnx"
MLP = ROOT / "models" / "mlp-mnist.onnx"


# ---- helpers -----------------------------------------------------------------------------------------


def _mlp_onnx(path: Path, w1: np.ndarray, *, custom_domain: bool = False, local_function: bool = False,
              mapped_domain: bool = False) -> Path:
    """x [N, K] -> MatMul W1 -> Relu -> MatMul W2 [H, 10]: a two-layer graph built by hand."""
    k, h = w1.shape
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    w2 = np.random.default_rng(0).standard_normal((h, 10)).astype(np.float32)
    act = helper.make_node("Relu", ["h"], ["r"], name="relu")
    opsets = [helper.make_opsetid("", 17)]
    functions = []
    if custom_domain:
        act = helper.make_node("FancyRelu", ["h"], ["r"], name="fancy", domain="com.example")
        opsets.append(helper.make_opsetid("com.example", 1))
    if mapped_domain:
        act = helper.make_node("AnalogMatMul", ["h"], ["r"], name="already", domain="ai.acompile")
        opsets.append(helper.make_opsetid("ai.acompile", 1))
    if local_function:  # Relu wrapped in a model-local function, as exporters wrap modules
        fn = helper.make_function("local.fns", "MyRelu", ["a"], ["b"],
                                  [helper.make_node("Relu", ["a"], ["b"])], [helper.make_opsetid("", 17)])
        functions.append(fn)
        act = helper.make_node("MyRelu", ["h"], ["r"], name="myrelu", domain="local.fns")
        opsets.append(helper.make_opsetid("local.fns", 1))
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"), act,
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(w1, "W1"),
                                                 numpy_helper.from_array(w2, "W2")])
    model = helper.make_model(g, opset_imports=opsets, functions=functions)
    onnx.save(model, path)
    return path


def _target(name: str = "ideal") -> dict:
    from compiler.targets import load_target

    return load_target(name)


def _torch_export(model, x, path: Path, dynamic: bool) -> Path:
    import torch

    kw = {"dynamic_axes": {"input": {0: "batch"}, "output": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"], **kw)
    return path


def _write_idx(folder: Path, name: str, split: str, n: int) -> None:
    """A tiny MNIST-format dataset (IDX, gzip) of n images."""
    prefix = "train" if split == "train" else "t10k"
    d = folder / name
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    head = np.array([2051, n, 28, 28], ">u4").tobytes()
    with gzip.open(d / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
        f.write(head + images.tobytes())
    with gzip.open(d / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
        f.write(np.array([2049, n], ">u4").tobytes() + labels.tobytes())


# ---- 1. data paths the user gives are used or refused ---------------------------------------------------


@pytest.fixture()
def no_env(monkeypatch):
    monkeypatch.delenv("ACOMPILE_DATA", raising=False)


def test_data_path_that_does_not_exist_is_refused(no_env):
    from runtime.data import load_dataset

    with pytest.raises(AcompileError, match="'/nonexistent/acompile-data'.*no such folder"):
        load_dataset("mnist:/nonexistent/acompile-data", "test")


def test_data_path_without_the_dataset_is_refused_not_replaced(no_env, tmp_path):
    """An empty folder used to fall back to ../shared/data or the bundled 1k subset silently."""
    from runtime.data import load_dataset

    for spec in ("mnist", "cifar10", "cifar10-exact", "fashion-mnist"):
        with pytest.raises(AcompileError, match=re.escape(str(tmp_path))) as err:
            load_dataset(f"{spec}:{tmp_path}", "test")
        assert "\n" not in str(err.value)


def test_env_data_path_is_used_or_refused(monkeypatch, tmp_path):
    from runtime.data import load_dataset

    monkeypatch.setenv("ACOMPILE_DATA", "/nonexistent/acompile-data")
    with pytest.raises(AcompileError, match=r"\$ACOMPILE_DATA '/nonexistent/acompile-data': no such folder"):
        load_dataset("mnist", "test")
    monkeypatch.setenv("ACOMPILE_DATA", str(tmp_path))  # empty: no fallback to the bundled subset
    with pytest.raises(AcompileError, match=r"\$ACOMPILE_DATA"):
        load_dataset("mnist", "test")
    _write_idx(tmp_path, "mnist", "test", 7)  # with the data: it is the one used
    assert len(load_dataset("mnist", "test")) == 7
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("ACOMPILE_DATA", str(tmp_path / "file"))
    with pytest.raises(AcompileError, match="not a folder"):
        load_dataset("mnist", "test")


def test_given_data_path_is_the_one_used(no_env, tmp_path):
    from runtime.data import load_dataset

    _write_idx(tmp_path, "mnist", "test", 5)
    assert len(load_dataset(f"mnist:{tmp_path}", "test")) == 5
    assert len(load_dataset(f"mnist:{tmp_path / 'mnist'}", "test")) == 5  # the dataset's own folder
    assert len(load_dataset("mnist", "test", root=tmp_path)) == 5  # `acompile train --data PATH`
    with pytest.raises(AcompileError, match="not found in data path"):  # no train split there
        load_dataset(f"mnist:{tmp_path}", "train")
    npz = tmp_path / "few.npz"
    np.savez(npz, x=np.zeros((3, 28, 28), np.uint8), y=np.arange(3))
    assert len(load_dataset(f"mnist:{npz}", "test")) == 3  # NAME:FILE.npz
    assert len(load_dataset("mnist", "test", root=npz)) == 3  # `acompile train --data FILE.npz`
    with pytest.raises(AcompileError, match="a folder, not a .npz file"):
        load_dataset(str(tmp_path) + os.sep, "test")


def test_eval_cli_refuses_a_missing_data_path(no_env, run_cli, tmp_path):
    code, out, _ = run_cli(MLP, "--target", "ideal", "-o", tmp_path / "m.pcm.onnx", "-q")
    assert code == 0
    code, _, err = run_cli("eval", tmp_path / "m.pcm.onnx", "--data", "mnist:/nonexistent/d", "--chips", "1",
                           "--times", "1s", "--quiet")
    assert code == 2
    assert err.strip().splitlines() == ["acompile: error: data path '/nonexistent/d': no such folder"]


# ---- 2. compile robustness ----------------------------------------------------------------------------


def test_zero_sized_weight_does_not_crash(tmp_path):
    """A weight with a zero-sized dim was a ZeroDivisionError; it stays digital with a reason."""
    from compiler.pipeline import compile_model

    src = _mlp_onnx(tmp_path / "empty.onnx", np.zeros((16, 0), np.float32))
    res = compile_model(src, _target(), tmp_path / "out.onnx")
    layers = {ly["name"]: ly for ly in res.report["layers"]}
    assert not layers["fc1"]["analog"] and "empty weight" in layers["fc1"]["reason"]
    assert res.report["totals"]["digital_layers"] == 2


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_naming_the_node(tmp_path, bad):
    from compiler.pipeline import compile_model

    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    w[3, 2] = bad
    src = _mlp_onnx(tmp_path / "bad.onnx", w)
    with pytest.raises(AcompileError, match=r"node 'fc1' \(MatMul\): weight 'W1' holds") as err:
        compile_model(src, _target(), tmp_path / "out.onnx")
    assert ("1 NaN" if np.isnan(bad) else "1 infinite") in str(err.value)
    assert not (tmp_path / "out.onnx").exists()


def test_non_finite_bias_is_refused(tmp_path):
    """The same for a Conv / Gemm bias (LeNet's fc1 bias set to NaN)."""
    from compiler.pipeline import compile_model

    m = onnx.load(LENET)
    for t in m.graph.initializer:
        if t.name == "fc1.bias":
            a = numpy_helper.to_array(t).copy()
            a[0] = np.nan
            t.CopyFrom(numpy_helper.from_array(a, t.name))
    onnx.save(m, tmp_path / "lenet.onnx")
    with pytest.raises(AcompileError, match=r"node '/fc1/Gemm' \(Gemm\): bias 'fc1.bias' holds 1 NaN"):
        compile_model(tmp_path / "lenet.onnx", _target(), tmp_path / "out.onnx")


def test_op_of_an_unknown_domain_is_refused_at_compile(tmp_path, run_cli):
    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    src = _mlp_onnx(tmp_path / "custom.onnx", w, custom_domain=True)
    code, _, err = run_cli(src, "--target", "ideal", "-o", tmp_path / "out.onnx")
    assert code == 2
    assert err.strip().splitlines() == [
        "acompile: error: node 'fancy' (com.example::FancyRelu): op domain 'com.example' is not standard "
        "ONNX; acompile compiles and emulates ai.onnx ops only (export without custom / contrib ops)"]
    src = _mlp_onnx(tmp_path / "mapped.onnx", w, mapped_domain=True)
    code, _, err = run_cli(src, "--target", "ideal", "-o", tmp_path / "out.onnx")
    assert code == 2 and "already mapped" in err


def test_local_functions_are_inlined(tmp_path):
    """A model-local function (not a custom op) is standard ONNX inside: it compiles."""
    from compiler.pipeline import compile_model

    w = np.random.default_rng(1).standard_normal((16, 8)).astype(np.float32)
    src = _mlp_onnx(tmp_path / "fn.onnx", w, local_function=True)
    res = compile_model(src, _target(), tmp_path / "out.onnx")
    assert res.report["totals"]["analog_layers"] == 2
    assert res.report["eval_supported"]


def test_tile_count_is_bounded_before_mapping(tmp_path, run_cli):
    """`--tile 1x1` used to run for minutes (ResNet-50: 25.5 M tiles, a 313 MB report): refused at once,
    saying how many tiles it would be."""
    import time

    t0 = time.perf_counter()
    code, _, err = run_cli(MLP, "--tile", "1x1", "-o", tmp_path / "m.onnx")
    assert code == 2
    assert time.perf_counter() - t0 < 20
    assert "would need 198,500 tiles" in err and "bound of 50,000" in err and "256x256 needs" in err
    assert len(err.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())
    from compiler.pipeline import MAX_TILES, map_model
    from compiler.targets import with_overrides

    assert MAX_TILES == 50_000
    _, report = map_model(MLP, with_overrides(_target(), (16, 16)))  # 49 x 16 + 16 x 1 tiles: fine
    assert report["totals"]["tiles"] == 800
    with pytest.raises(AcompileError, match="would need 800 tiles"):
        map_model(MLP, with_overrides(_target(), (16, 16)), max_tiles=500)


# ---- 3. what the user sees: layers without a lowering, ops eval lacks, batch sizes ----------------------


def test_emulator_ops_list_matches_the_runtime_registry():
    """The compiler learns what eval can run from runtime.contract.EMULATOR_OPS (it cannot import the
    torch op registry): the two must agree."""
    from runtime import contract
    from runtime.ops import supported_ops

    assert set(supported_ops()) == set(contract.EMULATOR_OPS)


def test_lstm_maps_analog_and_eval_runs_it(tmp_path, run_cli):
    import numpy as np
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(28, 32, batch_first=True)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            out, _ = self.lstm(x[:, 0])
            return self.fc(out[:, -1])

    src = _torch_export(Net(), torch.randn(1, 1, 28, 28), tmp_path / "lstm.onnx", dynamic=True)
    code, out, err = run_cli(src, "--target", "pcm", "-o", tmp_path / "lstm.pcm.onnx")
    assert code == 0, err
    assert "2 analog / 0 digital layers" in out and "warning" not in err
    report = json.loads((tmp_path / "lstm.pcm.json").read_text())
    lstm = next(ly for ly in report["layers"] if ly["op"] == "LSTM")
    assert lstm["analog"] and lstm["emulated"] and lstm["reason"] == "analog-eligible"
    # x_t (28) and h_{t-1} (32) drive the rows, the 4 gates x 32 columns side by side; 28 steps, 1 read
    assert lstm["matrix"] == [28 + 32, 4 * 32] and lstm["weights"] == 4 * 32 * (28 + 32)
    assert lstm["steps"] == 28 and lstm["mvms_per_step"] == 1 and lstm["mvms_per_inference"] == 28
    assert report["eval_supported"] is True
    np.savez(tmp_path / "in.npz", x=np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype("f4"))
    code, out, err = run_cli("eval", tmp_path / "lstm.pcm.onnx", "--data", tmp_path / "in.npz", "--chips",
                             "1",
                             "--times", "1s", "--metric", "rel-error", "--quiet")
    assert code == 0, err


def test_an_op_the_emulator_lacks_is_said_at_compile(tmp_path, run_cli):
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(28, 10)

        def forward(self, x):
            return self.fc(torch.cumsum(x, dim=-1)).mean(dim=(1, 2))

    src = _torch_export(Net(), torch.randn(1, 1, 28, 28), tmp_path / "cs.onnx", dynamic=True)
    code, out, err = run_cli(src, "--target", "ideal", "-o", tmp_path / "cs.pcm.onnx")
    assert code == 0
    assert "acompile: warning: acompile eval cannot run this model: the emulator has no CumSum" in err
    report = json.loads((tmp_path / "cs.pcm.json").read_text())
    assert report["eval_supported"] is False and list(report["eval_unsupported"]) == ["CumSum"]
    md = (tmp_path / "cs.pcm.md").read_text()
    assert "cannot run this model" in md and "**warning:**" in md
    code, _, err = run_cli("eval", tmp_path / "cs.pcm.onnx", "--chips", "1", "--times", "1s", "--quiet")
    assert code == 2 and "CumSum" in err  # what the compile said


def test_conv_transpose_maps_analog_and_eval_runs(tmp_path):
    import torch
    from torch import nn

    from compiler.pipeline import compile_model

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3, stride=2)
            self.up = nn.ConvTranspose2d(4, 2, 3, stride=2)
            self.fc = nn.Linear(2 * 27 * 27, 10)

        def forward(self, x):
            return self.fc(torch.flatten(self.up(torch.relu(self.c(x))), 1))

    src = _torch_export(Net(), torch.randn(1, 1, 28, 28), tmp_path / "ct.onnx", dynamic=True)
    res = compile_model(src, _target(), tmp_path / "ct.pcm.onnx")
    up = next(ly for ly in res.report["layers"] if ly["op"] == "ConvTranspose")
    assert up["analog"] and up["reason"] == "analog-eligible"  # AnalogConvTranspose (issue 11)
    assert up["matrix"] == [4 * 3 * 3, 2] and up["weights"] == 4 * 2 * 9
    assert res.report["totals"]["digital_layers"] == 0
    assert res.report["warnings"] == [] and res.report["eval_supported"]


def _transformer():
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Net(nn.Module):  # rows of an MNIST image as a sequence of 28 tokens
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Linear(28, 32)
            layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            return self.head(self.enc(self.emb(x[:, 0])).mean(1))

    return Net().eval(), torch.randn(2, 1, 28, 28)


@pytest.fixture(scope="module")
def transformers(tmp_path_factory):
    """A torch nn.TransformerEncoder exported (legacy exporter, opset 17) with and without a dynamic
    batch axis, both compiled for the ideal target."""
    from compiler.pipeline import compile_model

    root = tmp_path_factory.mktemp("transformer")
    model, x = _transformer()
    out = {}
    for kind in ("dynamic", "static"):
        src = _torch_export(model, x, root / f"{kind}.onnx", dynamic=kind == "dynamic")
        out[kind] = compile_model(src, _target(), root / f"{kind}.pcm.onnx")
    return out


def test_transformer_with_dynamic_batch_compiles(transformers):
    """It failed with 'cannot resolve the input leading (non-batch) shape ['batch']': attention reshapes
    [N, T, E] to [T, N, E], so the batch is not the first dim there."""
    dyn, static = transformers["dynamic"].report, transformers["static"].report
    assert dyn["fixed_batch"] is None and dyn["warnings"] == []
    assert dyn["totals"]["analog_layers"] == 10
    # MVMs per inference do not depend on how the batch was exported: 28 tokens per projection
    assert [ly["mvms_per_inference"] for ly in dyn["layers"]] == \
        [ly["mvms_per_inference"] for ly in static["layers"]]
    assert dyn["layers"][0]["mvms_per_inference"] == 28


def test_transformer_with_static_batch_says_what_it_accepts(transformers, run_cli, tmp_path):
    report = transformers["static"].report
    assert report["fixed_batch"] == 2
    assert len(report["warnings"]) == 1
    assert "works only at batch size 2" in report["warnings"][0] and "Reshape" in report["warnings"][0]
    src = transformers["static"].paths["model"].with_name("static.onnx")
    code, _, err = run_cli(src, "--target", "ideal", "-o", tmp_path / "s.onnx", "-q")
    assert code == 0 and "acompile: warning: the model works only at batch size 2" in err


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_transformer_evaluates_at_the_default_batch_and_a_short_last_batch(transformers, kind):
    """At --batch-size 128 over 131 images (a last batch of 3): the emulator (ideal target) agrees with
    the onnxruntime baseline. The static export crashed in a Reshape before."""
    from runtime.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(data="mnist", times=[1.0], chips=1, compensation=["none"], limit=131, batch_size=128,
                     calib=64, dac_calib_images=64)
    result = evaluate(transformers[kind].paths["model"], cfg, progress=False)
    assert result["n_images"] == 131
    assert result["results"][0]["mean"] == pytest.approx(result["baseline"]["accuracy"])


def test_static_batch_view_is_freed(tmp_path):
    """`x.view(x.size(0), -1)` exported at batch 1 is a Reshape to the constant [1, -1]: the compiler makes
    it [0, -1], the mapped model takes any batch, and eval at batch 128 matches onnxruntime."""
    import torch
    from torch import nn

    from compiler.pipeline import compile_model
    from runtime.evaluate import EvalConfig, evaluate

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c = nn.Conv2d(1, 4, 3)
            self.f = nn.Linear(4 * 26 * 26, 10)

        def forward(self, x):
            return self.f(torch.relu(self.c(x)).view(x.size(0), -1))

    src = _torch_export(Net(), torch.randn(1, 1, 28, 28), tmp_path / "view.onnx", dynamic=False)
    res = compile_model(src, _target(), tmp_path / "view.pcm.onnx")
    assert res.report["fixed_batch"] is None and res.report["warnings"] == []
    dim0 = onnx.load(tmp_path / "view.pcm.onnx").graph.input[0].type.tensor_type.shape.dim[0]
    assert dim0.dim_param and not dim0.HasField("dim_value")
    cfg = EvalConfig(data="mnist", times=[1.0], chips=1, compensation=["none"], limit=130, batch_size=128,
                     calib=64, dac_calib_images=64)
    result = evaluate(tmp_path / "view.pcm.onnx", cfg, progress=False)
    assert result["results"][0]["mean"] == pytest.approx(result["baseline"]["accuracy"])


# ---- 4. progress, in and out of a terminal ---------------------------------------------------------------


class _Clock:
    def __init__(self, step: float) -> None:
        self.t, self.step = 0.0, step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def test_progress_lines_off_a_terminal(monkeypatch):
    from runtime import progress

    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "_clock", _Clock(0.5))  # each call: half a second later
    stream = io.StringIO()
    with progress.Progress(total=200, desc="eval", unit="batches", stream=stream) as bar:
        for i in range(200):
            bar.set_postfix_str(f"chip {i // 100 + 1}/2")
            bar.update(1)
    lines = stream.getvalue().splitlines()
    assert 8 <= len(lines) <= 40, lines
    assert re.fullmatch(r"eval: \d+/200 batches \(\d+ %\), [\d.]+ s elapsed, ~[\w. ]+ left \(chip \d/2\)",
                        lines[0]), lines[0]
    assert lines[-1].startswith("eval: done, 200 batches in ")


def test_progress_is_quiet_for_short_loops_and_when_disabled(monkeypatch):
    from runtime import progress

    monkeypatch.delenv(progress.ENV, raising=False)
    stream = io.StringIO()
    for _ in progress.Progress(range(50), desc="fast", stream=stream):  # real clock: well under a second
        pass
    assert stream.getvalue() == ""
    monkeypatch.setattr(progress, "_clock", _Clock(5.0))
    with progress.Progress(total=10, desc="x", stream=stream, enabled=False) as bar:
        bar.update(10)
    monkeypatch.setenv(progress.ENV, "off")
    with progress.Progress(total=10, desc="x", stream=stream) as bar:
        bar.update(10)
    assert stream.getvalue() == ""


def test_progress_bar_on_a_terminal(monkeypatch):
    from runtime import progress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(progress.ENV, raising=False)
    stream = Tty()
    with progress.Progress(total=3, desc="train", unit="batches", stream=stream) as bar:
        assert bar.mode == "bar"
        bar.update(3)
    assert "train" in stream.getvalue() and "\r" in stream.getvalue()  # tqdm redraws in place
    monkeypatch.setenv(progress.ENV, "lines")
    assert progress.mode(Tty()) == "lines"


def test_compile_reports_progress_off_a_terminal(monkeypatch, run_cli, tmp_path):
    from runtime import progress

    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "_clock", _Clock(3.0))  # every stage "takes" seconds
    code, _, err = run_cli(LENET, "--target", "ideal", "-o", tmp_path / "m.onnx")
    assert code == 0
    lines = [ln for ln in err.splitlines() if ln.startswith("compile:")]
    assert len(lines) >= 3 and lines[-1].startswith("compile: done, 6 steps in")
    assert any("(partitioning)" in ln or "(tiling)" in ln for ln in lines)
    code, _, err = run_cli(LENET, "--target", "ideal", "-o", tmp_path / "q.onnx", "-q")
    assert code == 0 and "compile:" not in err  # --quiet


def test_eval_reports_progress_off_a_terminal(monkeypatch, run_cli, tmp_path):
    from runtime import progress

    assert run_cli(LENET, "--target", "ideal", "-o", tmp_path / "m.onnx", "-q")[0] == 0
    monkeypatch.delenv(progress.ENV, raising=False)
    monkeypatch.setattr(progress, "_clock", _Clock(4.0))
    code, _, err = run_cli("eval", tmp_path / "m.onnx", "--chips", "2", "--times", "1s,1d", "--limit", "256",
                           "--batch-size", "64", "--compensation", "none", "--no-baseline")
    assert code == 0
    lines = [ln for ln in err.splitlines() if ln.startswith("eval:")]
    assert len(lines) >= 3 and lines[-1] == "eval: done, 16 batches in " + lines[-1].split(" in ")[-1]


def test_every_loop_reports_through_the_shared_helper():
    """compile, eval, finetune, train, sweep and data decoding use runtime.progress; nobody else imports
    tqdm (a bar that is silent off a terminal was the bug)."""
    offenders = []
    for pkg in ("compiler", "runtime", "hwtrain", "models"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if path == ROOT / "runtime" / "progress.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) else []
                if any(n.split(".")[0] == "tqdm" for n in names):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
    users = {p: "runtime.progress" in (ROOT / p).read_text() for p in (
        "compiler/pipeline.py", "runtime/evaluate.py", "runtime/data.py", "hwtrain/train.py",
        "hwtrain/finetune.py", "hwtrain/inmemory/run.py")}
    assert all(users.values()), users


# ---- 5. the tile picture ---------------------------------------------------------------------------------


def _synthetic_report(n_layers: int, tiles_per_layer: int, R: int = 256, C: int = 256) -> dict:
    from collections import Counter

    from compiler.report import build_report

    target = _target("pcm")
    layers, blocks, t = [], [], 0
    for i in range(n_layers):
        name = f"/layers/layers.{i}/conv/Conv"
        layers.append({"name": name, "alias": f"layers.{i}.conv", "op": "Conv", "analog": True,
                       "reason": "analog-eligible", "emulated": True, "matrix": [R * tiles_per_layer, C],
                       "tiles": tiles_per_layer, "blocks": tiles_per_layer, "utilization": 1.0,
                       "devices": 2 * R * C * tiles_per_layer, "mvms_per_inference": 1,
                       "weights": R * C * tiles_per_layer})
        for k in range(tiles_per_layer):
            blocks.append({"layer": name, "tile": t, "chip": t // 64, "row_start": k * R,
                           "row_end": (k + 1) * R, "col_start": 0, "col_end": C if k else C // 3,
                           "tile_row": 0, "tile_col": 0})
            t += 1
    return build_report("big.onnx", target, layers, t, t, False, Counter({"Relu": 3}), blocks)


def test_picture_shows_every_tile_with_a_key_for_many_layers():
    """ResNet-50 size: 432 tiles, 54 layers. It used to draw the first 400 tiles, 20 colours, no key."""
    import matplotlib.pyplot as plt

    from compiler.report_plot import figure, layer_style, render_png

    report = _synthetic_report(54, 8)
    fig = figure(report)
    try:
        grid = next(ax for ax in fig.axes if ax.get_ylabel())
        assert len(grid.collections[0].get_paths()) == 432  # every tile
        assert sum(len(c.get_paths()) for c in grid.collections[1:]) == 432  # every block
        assert grid.get_xlabel() and grid.get_ylabel()
        assert any(t.get_text() == "L53" for t in grid.texts)  # layer indices on the tiles
        assert any("chip 6" == t.get_text() for t in grid.texts)
        key = next(ax.get_legend() for ax in fig.axes if ax.get_legend() is not None)
        labels = [t.get_text() for t in key.get_texts()]
        assert len(labels) == 54 and labels[53].startswith("L53 layers.53.conv")
        texts = [t.get_text() for t in fig.texts]
        assert any("big.onnx" in t for t in texts)  # the title
        band = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "432 tiles of 256x256 on 7 chips" in band and "utilization" in band
        # the title and the band fit in the figure (nothing cut off)
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        for artist in [*fig.texts, *(t for ax in fig.axes for t in ax.texts)]:
            bb = artist.get_window_extent(renderer)
            assert bb.x0 >= -1 and bb.x1 <= fig.bbox.x1 + 1, artist.get_text()
    finally:
        plt.close(fig)
    styles = {(layer_style(i)[0], layer_style(i)[1]) for i in range(100)}
    assert len(styles) == 100  # distinguishable for 100 layers
    assert render_png(report).startswith(b"\x89PNG")


# ---- 6. small ones ---------------------------------------------------------------------------------------


def test_readme_compile_example_works_on_a_bundled_model(run_cli, tmp_path, monkeypatch):
    line = next(ln for ln in (ROOT / "README.md").read_text().splitlines()
                if ln.startswith("acompile ") and "--digital" in ln)
    args = line.split("#")[0].split()[1:]
    assert (ROOT / args[0]).is_file(), f"the README example names no bundled model: {line}"
    monkeypatch.chdir(ROOT)
    i = args.index("-o")
    args[i + 1] = str(tmp_path / Path(args[i + 1]).name)
    code, out, err = run_cli(*args)
    assert code == 0, err
    report = json.loads((tmp_path / "m.json").read_text())
    assert {ly["alias"] for ly in report["layers"] if ly["reason"].startswith("forced")} == {"conv1", "fc3"}


@pytest.mark.parametrize("spec, forced", [
    ("conv1,fc3", {"/conv1/Conv", "/fc3/Gemm"}),
    ("/conv1/Conv", {"/conv1/Conv"}),  # the node name, as the report shows it
    ("CONV1/conv", {"/conv1/Conv"}),  # case and / vs .
    ("fc*", {"/fc1/Gemm", "/fc2/Gemm", "/fc3/Gemm"}),  # a pattern
    ("fc2.weight", {"/fc2/Gemm"}),  # the weight
])
def test_digital_takes_the_names_users_write(spec, forced):
    from compiler.pipeline import map_model

    _, report = map_model(LENET, _target(), [s for s in spec.split(",")])
    assert {ly["name"] for ly in report["layers"] if not ly["analog"]} == forced


def test_digital_unknown_name_suggests_the_close_ones():
    from compiler.pipeline import map_model

    with pytest.raises(AcompileError) as err:
        map_model(LENET, _target(), ["fc"])
    assert "did you mean fc1, fc2, fc3" in str(err.value) and "'fc*'" in str(err.value)


def test_report_shows_short_names_for_downsample_paths(onnx_export):
    """`/layers/layers.0/downsample/downsample.0/Conv` is module `layers.0.downsample.0`; both it and the
    older spelling are accepted by --digital."""
    from compiler.pipeline import map_model

    src = onnx_export("resnet50_small")
    _, report = map_model(src, _target())
    aliases = {ly["alias"] for ly in report["layers"]}
    assert "layers.0.downsample.0" in aliases and "layers.0.conv1" in aliases and "fc" in aliases
    for spec in ("layers.0.downsample.0", "layers.0.downsample.downsample.0"):
        _, r = map_model(src, _target(), [spec])
        assert [ly["alias"] for ly in r["layers"] if not ly["analog"]] == ["layers.0.downsample.0"]


def test_targets_show_units(run_cli):
    code, out, _ = run_cli("targets")
    assert code == 0
    for piece in ("g_max=25.0 uS", "g_min=0.0 uS", "t0=20.0 s", "t_read=2.5e-07 s",
                  "energy_per_mvm_pj=12483.0 pJ", "latency_per_mvm_ns=130.0 ns", "dac_bits=8 bits",
                  "out_bound=10.0 normalized units", "t0=300.0 s", "g_max=40.0 uS"):
        assert piece in out, piece
    assert "prog_noise=True," in out  # flags stay bare


def test_every_device_key_unit_comes_from_its_doc():
    from compiler.targets import unit_of
    from runtime.physics.devices import device_class, device_names

    for name in device_names():
        for key, spec in device_class(name).keys().items():
            head = spec.doc.split(",")[0]
            unit = unit_of({"device": {"model": name}}, "device", key)
            if head in ("uS", "s"):
                assert unit == head, (name, key)
            else:
                assert unit is None, (name, key, spec.doc)


@pytest.mark.parametrize("mask", [0o027, 0o002])
def test_compile_outputs_follow_the_umask(tmp_path, run_cli, mask):
    old = os.umask(mask)
    try:
        code, _, err = run_cli(LENET, "--target", "ideal", "-o", tmp_path / "new" / "m.onnx", "-q")
    finally:
        os.umask(old)
    assert code == 0, err
    for p in (tmp_path / "new").iterdir():
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask, (p, oct(p.stat().st_mode))
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o777 & ~mask


@pytest.mark.parametrize("location", ["../outside.bin", "/etc/hostname", "missing.bin"])
def test_emulator_loader_refuses_external_data_outside_the_model_folder(tmp_path, location):
    """The emulator reads files users hand it too: the same external-data check as the compiler,
    whatever the installed onnx version does on its own."""
    from onnx import TensorProto, helper

    from runtime.errors import AcompileError
    from runtime.executor import load_model

    (tmp_path / "outside.bin").write_bytes(b"\0" * 64)
    (tmp_path / "m").mkdir()
    w = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[4, 4])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value=location)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    path = tmp_path / "m" / "m.onnx"
    path.write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(AcompileError, match="external data"):
        load_model(path)
