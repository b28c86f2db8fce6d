"""LSTM / GRU / RNN on analog tiles (issue 11): each direction's [W^T; R^T] on a crossbar, one analog read
per time step (a GRU: x_t and h_{t-1} apart), the recurrence digital (runtime/ops/recurrent.py).

Checked: with the ideal target the mapped model equals onnxruntime on the original for every variant
(forward / reverse / bidirectional, initial states as inputs and as constants, sequence lengths, batch-
first layout, peepholes, clip, non-default activations, GRU linear_before_reset 0 / 1), through the ideal
executor, through the analog layers (the emulator's AnalogRecurrentLayer) and through the baseline's
rebuilt ONNX; both torch exporters' forms; the ONNX backend node cases for LSTM, GRU and RNN with their
weights made constants run through the analog path; tile and MVM counts written out; on pcm the
outputs carry read noise drawn per read and drift over time.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

torch = pytest.importorskip("torch")
nn = torch.nn

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _ort(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs; for a batch-first (layout 1) recurrent node, which onnxruntime refuses,
    the onnx package's reference implementation."""
    import onnxruntime as ort

    if isinstance(model, onnx.ModelProto) and any(
            a.name == "layout" and a.i == 1 for n in model.graph.node for a in n.attribute):
        from onnx.reference import ReferenceEvaluator

        return list(ReferenceEvaluator(model).run(None, feeds))
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _map(path: Path, target: str = "ideal", tile: tuple[int, int] | None = None, digital=None):
    from compiler.pipeline import map_model
    from compiler.targets import load_target, with_overrides

    return map_model(path, with_overrides(load_target(target), tile=tile), digital)


def _emulator(mapped: onnx.ModelProto, target: str = "ideal", **overrides):
    """The emulator's analog layers (AnalogRecurrentLayer) for the mapped model's target, programmed."""
    from compiler.targets import load_target
    from runtime.analog_nodes import analog_factory
    from runtime.analog_settings import AnalogSettings
    from runtime.evaluate import make_generator
    from runtime.executor import Executor

    settings = AnalogSettings.from_target(load_target(target), **overrides)
    ex = Executor(mapped, analog_factory=analog_factory(settings, torch.device("cpu")))
    g = make_generator(torch.device("cpu"), 0, 0, 0)
    for layer in ex.analog_layers:
        layer.program(g)
        layer.set_time(0.0, g)
        layer.generator = make_generator(torch.device("cpu"), 0, 0, 3)
    return ex


def _run(ex, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    outs = ex.run(*[torch.from_numpy(feeds[n]) for n in ex.input_names])
    return [o.numpy() for o in outs]


# ---- hand-built ONNX recurrent nodes ------------------------------------------------------------------

VARIANTS = {
    # op, direction, layout, extras
    "lstm-forward": ("LSTM", "forward", 0, {}),
    "lstm-reverse-seqlens-states": ("LSTM", "reverse", 0, {"seq": True, "states": "input"}),
    "lstm-bidirectional-peepholes": ("LSTM", "bidirectional", 0,
                                     {"seq": True, "states": "input", "peep": True}),
    "lstm-bidirectional-const-states": ("LSTM", "bidirectional", 0, {"states": "const"}),
    "lstm-batchwise-bidirectional": ("LSTM", "bidirectional", 1, {"states": "input"}),
    "lstm-clip-input-forget": ("LSTM", "forward", 0, {"clip": 0.7, "input_forget": 1}),
    "lstm-activations": ("LSTM", "bidirectional", 0, {"acts": ["HardSigmoid", "Tanh", "Softsign",
                                                              "Sigmoid", "LeakyRelu", "Tanh"],
                                                     "alpha": [0.3, 0.05], "beta": [0.4]}),
    "gru-forward-lbr0": ("GRU", "forward", 0, {"lbr": 0, "states": "input"}),
    "gru-bidirectional-lbr1-seqlens": ("GRU", "bidirectional", 0, {"lbr": 1, "seq": True}),
    "gru-batchwise-reverse": ("GRU", "reverse", 1, {"lbr": 1, "states": "input"}),
    "rnn-reverse-relu": ("RNN", "reverse", 0, {"acts": ["Relu"], "seq": True}),
    "rnn-bidirectional-states": ("RNN", "bidirectional", 0, {"states": "input",
                                                            "acts": ["Tanh", "LeakyRelu"], "alpha": [0.2]}),
}
T, B, I, H = 5, 3, 6, 7


def _recurrent_model(op: str, direction: str, layout: int, extras: dict, seed: int = 0
                     ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    nd = 2 if direction == "bidirectional" else 1
    G = GATES[op]
    inits = [numpy_helper.from_array(rng.normal(0, 0.4, (nd, G * H, I)).astype("f4"), "W"),
             numpy_helper.from_array(rng.normal(0, 0.4, (nd, G * H, H)).astype("f4"), "R"),
             numpy_helper.from_array(rng.normal(0, 0.2, (nd, 2 * G * H)).astype("f4"), "B")]
    x_shape = [B, T, I] if layout else [T, B, I]
    s_shape = [B, nd, H] if layout else [nd, B, H]
    inputs = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    feeds = {"X": rng.normal(0, 1, x_shape).astype("f4")}
    ins = ["X", "W", "R", "B", "", "", "", ""]
    if extras.get("seq"):
        inputs.append(helper.make_tensor_value_info("seq", TensorProto.INT32, [B]))
        feeds["seq"] = np.array([T, 2, 4][:B], np.int32)
        ins[4] = "seq"
    states = extras.get("states")
    for k, name in ((5, "h0"), (6, "c0")):
        if not states or (name == "c0" and op != "LSTM"):
            continue
        value = rng.normal(0, 0.5, s_shape).astype("f4")
        if states == "input":
            inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, s_shape))
            feeds[name] = value
        else:
            inits.append(numpy_helper.from_array(value, name))
        ins[k] = name
    if extras.get("peep"):
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (nd, 3 * H)).astype("f4"), "P"))
        ins[7] = "P"
    while not ins[-1]:
        ins.pop()
    attrs: dict = {"hidden_size": H, "direction": direction, "layout": layout}
    if "acts" in extras:
        attrs["activations"] = extras["acts"]
    if "alpha" in extras:
        attrs["activation_alpha"] = extras["alpha"]
    if "beta" in extras:
        attrs["activation_beta"] = extras["beta"]
    if "clip" in extras:
        attrs["clip"] = extras["clip"]
    if "input_forget" in extras:
        attrs["input_forget"] = extras["input_forget"]
    if "lbr" in extras:
        attrs["linear_before_reset"] = extras["lbr"]
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    node = helper.make_node(op, ins, outs, name="rnn", **attrs)
    y_shape = [B, T, nd, H] if layout else [T, nd, B, H]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)]
    outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, s_shape) for o in outs[1:]]
    graph = helper.make_graph([node], "rnn", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model, feeds


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ideal_mapping_equals_onnxruntime(tmp_path, variant):
    from runtime import contract
    from runtime.baseline import reconstruct
    from runtime.executor import Executor

    op, direction, layout, extras = VARIANTS[variant]
    model, feeds = _recurrent_model(op, direction, layout, extras)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    want = _ort(model, feeds)
    mapped, report = _map(path)
    nodes = contract.analog_nodes(mapped)
    nd = 2 if direction == "bidirectional" else 1
    assert [a.op_type for a in nodes] == [f"Analog{op}"] * nd
    assert sorted(a.attrs["direction"] for a in nodes) == (["forward", "reverse"] if nd == 2 else [direction])
    for a in nodes:
        assert a.w_shape == (I + H, GATES[op] * H)
    assert all(ly["analog"] for ly in report["layers"])
    for got in (_run(Executor(mapped), feeds), _run(_emulator(mapped), feeds),
                _ort(reconstruct(mapped), feeds)):
        assert len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_the_array_holds_w_and_r_exactly(tmp_path):
    """W of the analog node is [W^T; R^T] of its direction: x_t on the first rows, h_{t-1} below, the
    gates' columns in ONNX order side by side; the reverse direction holds the second slice."""
    from runtime import contract

    model, _ = _recurrent_model("LSTM", "bidirectional", 0, {})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    mapped, _ = _map(path)
    by_dir = {a.attrs["direction"]: a for a in contract.analog_nodes(mapped)}
    for d, direction in enumerate(("forward", "reverse")):
        W = by_dir[direction].W
        np.testing.assert_array_equal(W[:I], inits["W"][d].T)
        np.testing.assert_array_equal(W[I:], inits["R"][d].T)


# ---- torch exports: both exporters ----------------------------------------------------------------------


class _Seq(nn.Module):
    def __init__(self, cls, bidirectional: bool) -> None:
        super().__init__()
        self.rnn = cls(8, 12, num_layers=2, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(12 * (2 if bidirectional else 1), 3)

    def forward(self, x):
        return self.fc(self.rnn(x)[0][:, -1])


def _export(model, x, path: Path, dynamo: bool) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(model.eval(), (x,), str(path), dynamo=True, input_names=["x"], verbose=False)
        else:
            torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return path


@pytest.mark.parametrize("dynamo", [False, True], ids=["legacy", "dynamo"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cls", ["LSTM", "GRU", "RNN"])
def test_torch_exports_map_every_direction_analog(tmp_path, cls, bidirectional, dynamo):
    torch.manual_seed(0)
    model = _Seq(getattr(nn, cls), bidirectional)
    x = torch.randn(3, 5, 8)
    path = _export(model, x, tmp_path / "m.onnx", dynamo)
    mapped, report = _map(path)
    rec = [ly for ly in report["layers"] if ly["op"] == cls]
    if dynamo and cls == "RNN":
        # the dynamo exporter unrolls nn.RNN into per-step MatMuls with constant weights: all analog
        assert not rec and all(ly["analog"] for ly in report["layers"])
    else:
        assert len(rec) == 2 * (2 if bidirectional else 1)
        assert all(ly["analog"] and ly["steps"] == 5 for ly in rec)
    want = _ort(path, {"x": x.numpy()})[0]
    got = _run(_emulator(mapped), {"x": x.numpy()})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)


# ---- the ONNX backend node cases through the analog path ------------------------------------------------


def _node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    ops = {*GATES, "ConvTranspose"}
    return [c for c in cases if c.data_sets and {n.op_type for n in c.model.graph.node} <= ops
            and not c.name.endswith("_expanded")]


NODE_CASES = _node_cases()


def test_node_cases_cover_the_variants():
    names = {c.name for c in NODE_CASES}
    for op in ("lstm", "gru"):
        for v in ("defaults", "with_initial_bias", "batchwise", "reverse", "bidirectional"):
            assert f"test_{op}_{v}" in names
    assert {"test_lstm_with_peepholes", "test_gru_seq_length", "test_rnn_seq_length",
            "test_simple_rnn_bidirectional", "test_simple_rnn_reverse"} <= names
    assert {"test_convtranspose", "test_convtranspose_1d", "test_convtranspose_3d",
            "test_convtranspose_pads", "test_convtranspose_dilations", "test_convtranspose_group_2"} <= names


# ConvTranspose cases that stay digital, and why (the lowerer's reasons)
_CT_DIGITAL = {"test_convtranspose_output_shape": "output_shape",
               "test_convtranspose_kernel_shape": "output_shape",
               "test_convtranspose_autopad_same": "auto_pad=SAME_UPPER",
               "test_convtranspose_group_2": "grouped",
               "test_convtranspose_group_2_image_3": "grouped"}


@pytest.mark.parametrize("case", NODE_CASES, ids=[c.name for c in NODE_CASES])
def test_onnx_node_case_through_the_analog_path(tmp_path, case):
    """The case's weight inputs (LSTM / GRU / RNN: W, R, B, P; ConvTranspose: W) become constants
    (weights a crossbar can hold); the rest stays a run-time input; the mapped model (ideal target, the
    emulator's analog layers) must give the reference outputs. ConvTranspose cases with output_shape,
    auto_pad SAME or groups stay digital, with that reason."""
    model = onnx.ModelProto()
    model.CopyFrom(case.model)
    ins, outs = case.data_sets[0]
    node = model.graph.node[0]
    const_pos = {1} if node.op_type == "ConvTranspose" else {1, 2, 3, 7}
    const_names = {node.input[i] for i in const_pos if len(node.input) > i and node.input[i]}
    feeds = {}
    keep = []
    for vi, value in zip(list(model.graph.input), ins, strict=True):
        if vi.name in const_names:
            model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), vi.name))
        else:
            keep.append(vi)
            feeds[vi.name] = np.asarray(value)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    path = tmp_path / "case.onnx"
    onnx.save(model, str(path))
    mapped, report = _map(path)
    if case.name in _CT_DIGITAL:
        (ly,) = report["layers"]
        assert not ly["analog"] and _CT_DIGITAL[case.name] in ly["reason"], ly["reason"]
        return
    assert all(ly["analog"] for ly in report["layers"]), report["layers"]
    got = _run(_emulator(mapped), feeds)
    for g, w in zip(got, outs, strict=False):
        np.testing.assert_allclose(g, w, rtol=max(case.rtol, 1e-4), atol=max(case.atol, 1e-5))


# ---- mapping arithmetic ----------------------------------------------------------------------------------


def test_tiles_and_mvms_written_out(tmp_path):
    """LSTM 28 -> 128 over 28 steps on 64x64 tiles: rows 28 + 128 = 156 -> 3 row blocks, cols 4 x 128 =
    512 -> 8 column blocks: 24 blocks, 28 MVMs each per inference (672 tile MVMs). GRU 40 -> 100 (torch:
    linear_before_reset=1), 10 steps on 256x256 tiles: 140 x 300 -> 1 x 2 blocks, 2 reads per step -> 20
    MVMs each, 40 tile MVMs."""
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(28, 128, batch_first=True)
            self.fc = nn.Linear(128, 10)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    path = _export(Net(), torch.randn(2, 28, 28), tmp_path / "l.onnx", dynamo=False)
    _, report = _map(path, tile=(64, 64))
    lstm = next(ly for ly in report["layers"] if ly["op"] == "LSTM")
    assert lstm["matrix"] == [156, 512] and lstm["blocks"] == 24 and lstm["tiles"] == 24
    assert lstm["steps"] == 28 and lstm["mvms_per_step"] == 1 and lstm["mvms_per_inference"] == 28
    assert lstm["weights"] == 156 * 512 and lstm["devices"] == 156 * 512 * 2

    class G(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(40, 100, batch_first=True)

        def forward(self, x):
            return self.gru(x)[0]

    path = _export(G(), torch.randn(2, 10, 40), tmp_path / "g.onnx", dynamo=False)
    _, report = _map(path, target="pcm")
    (gru,) = report["layers"]
    assert gru["matrix"] == [140, 300] and gru["blocks"] == 2
    assert gru["steps"] == 10 and gru["mvms_per_step"] == 2 and gru["mvms_per_inference"] == 20
    assert report["totals"]["tile_mvms_per_inference"] == 40


def test_gru_without_linear_before_reset_reads_three_times(tmp_path):
    # batch first: a sequence-first graph input [T, B, I] has its first dim taken for the batch by the
    # frontend (a symbolic batch), so the steps would be unknown there
    model, _ = _recurrent_model("GRU", "forward", 1, {"lbr": 0})
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    _, report = _map(path)
    (ly,) = report["layers"]
    assert ly["mvms_per_step"] == 3 and ly["mvms_per_inference"] == 3 * T


def test_digital_names_both_directions_and_report_lists_them(tmp_path, run_cli):
    model, _ = _recurrent_model("LSTM", "bidirectional", 1, {})
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    _, report = _map(path, digital=["rnn"])
    assert [ly["analog"] for ly in report["layers"]] == [False, False]
    code, _, err = run_cli(path, "--target", "pcm", "-o", tmp_path / "m.pcm.onnx")
    assert code == 0, err
    md = (tmp_path / "m.pcm.md").read_text()
    assert "rnn_forward" in md and "rnn_reverse" in md and "5 steps x 1 read(s) x 1 block(s)" in md
    rep = json.loads((tmp_path / "m.pcm.json").read_text())
    assert [ly["name"] for ly in rep["layers"]] == ["rnn_forward", "rnn_reverse"]


# ---- physics --------------------------------------------------------------------------------------------


def test_pcm_reads_are_noisy_per_read_and_drift(tmp_path):
    """On pcm each step's read carries fresh read / output noise: two passes of one input differ; over a
    year the error against the digital model grows, and global compensation takes part of it back."""
    from runtime.evaluate import EvalConfig, evaluate

    torch.manual_seed(0)
    model = _Seq(nn.LSTM, True)
    x = torch.randn(16, 5, 8)
    path = _export(model, x, tmp_path / "m.onnx", dynamo=False)
    mapped, _ = _map(path, target="pcm")
    ex = _emulator(mapped, "pcm")
    a = _run(ex, {"x": x.numpy()})[0]
    b = _run(ex, {"x": x.numpy()})[0]
    assert not np.array_equal(a, b)
    ref = _ort(path, {"x": x.numpy()})[0]
    assert np.linalg.norm(a - ref) / np.linalg.norm(ref) < 0.5

    out = tmp_path / "m.pcm.onnx"
    onnx.save(mapped, str(out))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(1).normal(0, 1, (64, 5, 8)).astype("f4"))
    cfg = EvalConfig(data=str(tmp_path / "x.npz"), times=[1.0, 3.15e7], chips=2,
                     compensation=["none", "global"], threads=1, metric="rel-error", calib=32,
                     dac_calib_images=32)
    res = evaluate(out, cfg, progress=False)
    err = {(r["t"], r["compensation"]): r["mean"] for r in res["results"]}
    assert err[(3.15e7, "none")] > 1.5 * err[(1.0, "none")]
    assert err[(3.15e7, "global")] < err[(3.15e7, "none")]


# ---- one array for the per-step MatMuls of an unrolled RNN ---------------------------------------------


def test_unrolled_rnn_steps_read_one_array(tmp_path):
    """The dynamo exporter unrolls nn.RNN: one MatMul per step, all with the same recurrent weight. They
    map onto one array (the first holds the tiles, the others `share` it): 2 layers x (W_ih + W_hh) = 4
    tiles of 256x256 plus the head, not one copy per step; on pcm they read the same programmed devices;
    a sharer whose tiles differ from its owner's is refused by the contract check."""
    from runtime import contract
    from runtime.errors import AcompileError

    torch.manual_seed(0)
    model = _Seq(nn.RNN, False)
    x = torch.randn(3, 5, 8)
    path = _export(model, x, tmp_path / "m.onnx", dynamo=True)
    mapped, report = _map(path, target="pcm")
    sharers = [ly for ly in report["layers"] if "shares_tiles_with" in ly]
    owners = {ly["name"]: ly for ly in report["layers"] if ly.get("shared_by")}
    assert len(owners) == 2 and len(sharers) == 2 * 3  # steps 2..5 read h through W_hh (step 1: h = 0)
    assert report["totals"]["tiles"] == 5 and all(ly["tiles"] == 0 and ly["devices"] == 0 for ly in sharers)
    for ly in owners.values():  # the owner's array does every step's MVM
        assert ly["mvms_per_inference"] == 4 and len(ly["shared_by"]) == 3
    w_inits = [t.name for t in mapped.graph.initializer if t.name.endswith(".W")]
    assert len(w_inits) == 5
    nodes = contract.check_mapped(mapped)
    assert sum(a.attrs.get("shares") is not None for a in nodes) == 6

    ex = _emulator(mapped, "pcm")
    tiles = {}
    for layer, a in zip(ex.analog_layers, contract.analog_nodes(mapped), strict=True):
        tiles.setdefault(a.w_name, set()).add(id(layer.tile))
    assert all(len(v) == 1 for v in tiles.values())  # one programmed array per weight
    ideal = _run(_emulator(_map(path)[0]), {"x": x.numpy()})[0]
    np.testing.assert_allclose(ideal, _ort(path, {"x": x.numpy()})[0], rtol=1e-4, atol=1e-5)

    bad = onnx.ModelProto()
    bad.CopyFrom(mapped)
    node = next(n for n in bad.graph.node if any(a.name == "shares" for a in n.attribute))
    tiles_attr = next(a for a in node.attribute if a.name == "tiles")
    blocks = json.loads(tiles_attr.s)
    blocks[0]["tile"] = 63
    blocks[0]["chip"] = 0
    tiles_attr.s = json.dumps(blocks).encode()
    with pytest.raises(AcompileError, match="shares the array of"):
        contract.check_mapped(bad)


def test_finetune_trains_recurrent_layers_digitally(tmp_path):
    """`acompile finetune` on an LSTM model: the Linear head trains hardware-aware; the LSTM's W, R and B
    train too, digitally (its array is [W^T; R^T] read per step, not the geometry of the HWA layers)."""
    from compiler.targets import load_target
    from hwtrain.finetune import prepare

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(28, 16, batch_first=True)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            return self.fc(self.lstm(x[:, 0])[0][:, -1])

    src = _export(Net(), torch.randn(2, 1, 28, 28), tmp_path / "l.onnx", dynamo=False)
    p = prepare(src, load_target("pcm"), mean=[0.0], std=[1.0])
    assert [ly.name for ly in p.layers] == ["/fc/Gemm"]
    params = dict(p.module.named_parameters())
    lstm = [n for n, v in params.items() if v.dim() == 3]
    assert len(lstm) == 2  # W and R
    p.module.train()
    p.module(torch.randn(4, 1, 28, 28)).square().sum().backward()
    for n in lstm:
        assert params[n].grad is not None and params[n].grad.abs().sum() > 0


# ---- biases as crossbar rows (target [mapping] bias = "row") -------------------------------------------


def _row_target(tmp_path, base: str = "ideal") -> Path:
    p = tmp_path / f"{base}-row.toml"
    p.write_text(f'base = "{base}"\n[mapping]\nbias = "row"\n')
    return p


@pytest.mark.parametrize("variant", ["lstm-bidirectional-peepholes", "gru-forward-lbr0",
                                     "gru-bidirectional-lbr1-seqlens", "rnn-bidirectional-states"])
def test_bias_rows_equal_onnxruntime(tmp_path, variant):
    """bias = "row": an LSTM / RNN direction gets one row Wb + Rb, a GRU two (Wb driven in the x read, Rb
    in the h reads); the node has no B input and the three execution paths still equal onnxruntime."""
    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime import contract
    from runtime.baseline import reconstruct
    from runtime.executor import Executor

    op, direction, layout, extras = VARIANTS[variant]
    model, feeds = _recurrent_model(op, direction, layout, extras)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    mapped, report = map_model(path, load_target(str(_row_target(tmp_path))))
    rows = 2 if op == "GRU" else 1
    for a in contract.analog_nodes(mapped):
        assert a.attrs["bias_rows"] == rows and a.bias_name is None
        assert a.w_shape == (I + H + rows, GATES[op] * H)
    assert any("bias = row" in n for n in report["notes"])
    want = _ort(model, feeds)
    for got in (_run(Executor(mapped), feeds), _run(_emulator(mapped), feeds),
                _ort(reconstruct(mapped), feeds)):
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_gemm_bias_row_and_the_dac_range(tmp_path):
    """A Gemm's bias becomes W's last row (beta * C / alpha) driven with 1; conv biases stay digital; on
    pcm the calibrated DAC range of a layer with a bias row is at least 1 (the constant passes unclipped);
    a fixed input range below 1 is refused."""
    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime import contract
    from runtime.errors import AcompileError

    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 26 * 26, 10)

        def forward(self, x):
            return self.fc(torch.relu(self.conv(x)).flatten(1) * 0.01)

    x = torch.randn(4, 1, 28, 28) * 0.1
    path = _export(Net(), x, tmp_path / "n.onnx", dynamo=False)
    mapped, _ = map_model(path, load_target(str(_row_target(tmp_path, "pcm"))))
    conv, fc = contract.analog_nodes(mapped)
    assert conv.attrs.get("bias_rows", 0) == 0 and conv.bias_name is not None
    assert fc.attrs["bias_rows"] == 1 and fc.bias_name is None and fc.w_shape == (4 * 26 * 26 + 1, 10)
    np.testing.assert_array_equal(fc.W[-1], _param(path, "fc.bias"))
    ex = _emulator(mapped, "pcm")
    for layer in ex.analog_layers:
        layer.start_calibration()
    _run(ex, {"x": x.numpy()})
    for layer in ex.analog_layers:
        layer.finish_calibration()
    r_conv, r_fc = (layer.input_range for layer in ex.analog_layers)
    assert r_conv < 0.5  # the conv's inputs (0.1 x gaussian) keep their own range: not floored
    assert r_fc == pytest.approx(1.0)  # its inputs are ~0.01 x ReLU: the constant 1 sets the range
    assert [layer.cal.floor for layer in ex.analog_layers] == [0.0, 1.0]
    cal = ex.analog_layers[1].cal  # a floored range holds even where the percentile misses the 1s
    cal.start_input()
    cal.observe(torch.full((4, 100), 0.01))
    cal.finish()
    assert cal.input_range == 1.0
    with pytest.raises(AcompileError, match="bias row is driven with 1"):
        _emulator(mapped, "pcm", input_range=0.5)


def _param(path: Path, name: str) -> np.ndarray:
    m = onnx.load(str(path))
    return next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == name)


def test_bias_rows_contract_checks():
    from runtime import contract
    from runtime.errors import AcompileError

    w = np.zeros((I + H + 1, 4 * H), np.float32)
    attrs = contract.recurrent_attrs(contract.ANALOG_LSTM, H, I, "forward", ["Sigmoid", "Tanh", "Tanh"],
                                     bias_rows=1)
    blocks = [contract.TileBlock(0, 0, 0, I + H + 1, 0, 4 * H)]
    contract.make_analog_node(contract.ANALOG_LSTM, "l", "X", w, np.ones(4 * H), ["Y"], attrs, blocks)
    with pytest.raises(AcompileError, match="and a B input too"):
        contract.make_analog_node(contract.ANALOG_LSTM, "l", "X", w, np.ones(4 * H), ["Y"], attrs, blocks,
                                  bias="B")
    with pytest.raises(AcompileError, match="bias_rows"):
        contract.make_analog_node(contract.ANALOG_LSTM, "l", "X", w, np.ones(4 * H), ["Y"],
                                  {**attrs, "bias_rows": 2}, blocks)
