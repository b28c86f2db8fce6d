"""Analog tiles, compensation, determinism and the eval command on small synthetic models."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.targets import builtin_target, with_device
from runtime import compensation, contract
from runtime.analog_settings import AnalogSettings
from runtime.errors import AcompileError
from runtime.evaluate import Emulator, parse_times
from runtime.executor import Executor
from runtime.physics.periphery import quantize
from tests.test_runtime_handmap import hand_map


def _gemm_model(k: int = 300, n: int = 20, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    b = (rng.standard_normal(n) * 0.1).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("Gemm", ["x", "W", "B"], ["y"], name="fc")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
        [numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _target(**changes) -> dict:
    t = copy.deepcopy(builtin_target("pcm"))
    for key, v in changes.items():
        sec, name = key.split("__")
        if (sec, name) == ("device", "model"):  # another device: its own keys and defaults
            t = with_device(t, v)
        else:
            t[sec][name] = v
    return t


def _x(n=64, k=300, seed=1):
    return torch.randn(n, k, generator=torch.Generator().manual_seed(seed))


def test_dac_adc_match_periphery_quantize():
    """The fused integer-unit DAC/ADC path equals quantize() applied as CONTRACTS §4 says."""
    model = _gemm_model(k=100)
    t = _target(device__model="ideal", periphery__out_noise=0.0, periphery__input_range=2.0)
    mapped = hand_map(model, t, tile=(256, 256))
    s = AnalogSettings.from_target(t)
    emu = Emulator(mapped, s)
    layer = emu.layers[0]
    layer.program(None)
    x = _x(k=100)
    y = emu.executor(x)
    inits = {i.name: numpy_helper.to_array(i) for i in mapped.graph.initializer}
    w, gs = inits[contract.w_name("fc")], inits[contract.g_scale_name("fc")]
    w_n = torch.from_numpy(w * gs / 25.0)
    xn = quantize(x, 8, 2.0) / 2.0
    yn = quantize(xn @ w_n, 8, 10.0)
    want = yn * 2.0 * torch.from_numpy(25.0 / gs) + torch.from_numpy(
        numpy_helper.to_array(next(i for i in mapped.graph.initializer if i.name == "B")).copy())
    torch.testing.assert_close(y, want, rtol=1e-5, atol=1e-5)


def test_calibrated_adc_range_covers_the_outputs():
    """out_bound = calibrated: each layer's ADC bound is the high percentile of its normalized row-block
    outputs x_n @ w_n on the calibration images (behind the calibrated DAC), set once after programming."""
    model = _gemm_model(k=300, n=20)
    t = _target(device__model="ideal", periphery__out_noise=0.0, periphery__out_bound="calibrated")
    mapped = hand_map(model, t, tile=(128, 256))  # three row blocks, one ADC range for the layer
    s = AnalogSettings.from_target(t)
    assert s.out_bound is None
    emu = Emulator(mapped, s)
    x = _x(512, 300).numpy()
    emu.program(0, 0, x, 128)
    layer = emu.layers[0]
    r = layer.input_range
    xn = torch.round(torch.from_numpy(x) / r * 127).clamp(-127, 127) / 127
    parts = torch.cat([(xn[:, a:b] @ layer.w_n[a:b]).abs().reshape(-1) for a, b in layer.geo.row_blocks])
    # the largest per-batch 99.99th percentile: at or above the pooled one, never above the maximum
    pooled = float(torch.quantile(parts.double(), 0.9999))
    assert pooled * 0.98 <= layer.out_bound <= float(parts.max()) + 1e-6
    assert float((parts > layer.out_bound).double().mean()) <= 1e-4
    assert layer.out_bound < 5.0  # far inside the fixed bound of 10: finer ADC steps
    with pytest.raises(AcompileError):
        AnalogSettings.from_target(_target(periphery__out_bound=-2.0))


def test_row_blocks_sum_digitally_and_ideal_is_exact():
    model = _gemm_model(k=300)
    mapped = hand_map(model, "ideal", tile=(128, 8))
    ex = Executor(mapped)
    emu = Emulator(mapped, AnalogSettings.from_target(builtin_target("ideal")))
    emu.layers[0].program(None)
    x = _x()
    torch.testing.assert_close(emu.executor(x), ex(x), rtol=1e-5, atol=1e-5)
    assert len(emu.layers[0].geo.row_blocks) == 3


def _conv_bn_model() -> onnx.ModelProto:
    from models.archs import export

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10))
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.2, 0.2)
        net[1].running_var.uniform_(0.5, 1.5)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = export(net.eval(), torch.randn(1, 3, 8, 8), Path(d) / "m.onnx", dynamic_batch=True)
        return onnx.load(p)


def test_conv_row_blocks_with_masked_channel_slices():
    """Row blocks cut inside a channel's kernel: masked weights over the touched channel slice."""
    m = _conv_bn_model()
    t = _target(device__model="ideal", periphery__out_noise=0.0, periphery__adc_bits=0,
                periphery__dac_bits=0)
    mapped = hand_map(m, t, tile=(10, 256))  # 27 rows -> blocks of 10 rows cut channels mid-kernel
    x = torch.randn(4, 3, 8, 8)
    ref = Executor(hand_map(m, "ideal"))(x)
    s = AnalogSettings.from_target(t, out_noise=1e-9)  # force the per-block path
    emu = Emulator(mapped, s)
    for ly in emu.layers:
        ly.program(None)
    assert len(emu.layers[0].blocks) == 3
    torch.testing.assert_close(emu.executor(x), ref, rtol=1e-4, atol=1e-4)


def test_global_compensation_restores_output_scale():
    model = _gemm_model(k=256, n=64)
    t = _target(device__prog_noise=False, device__read_noise=False, periphery__out_noise=0.0,
                periphery__adc_bits=0, periphery__dac_bits=0)
    mapped = hand_map(model, t, tile=(256, 256))
    emu = Emulator(mapped, AnalogSettings.from_target(t))
    ideal = Executor(hand_map(model, "ideal"))
    x = _x(256, 256)
    b_init = next(i for i in mapped.graph.initializer if i.name == "B")
    b = torch.from_numpy(numpy_helper.to_array(b_init).copy())
    ref = (ideal(x) - b).abs().mean()
    emu.program(0, 0, x.numpy(), 256)
    emu.set_time(3.15e7, 0, 0, 0)
    drifted = (emu.executor(x) - b).abs().mean()
    assert drifted / ref < 0.6  # a year of drift shrinks the outputs
    for method in ("global", "column"):
        compensation.apply(method, emu.layers, emu.bn_layers, emu.refs, lambda: None)
        comp = (emu.executor(x) - b).abs().mean()
        assert float(comp / ref) == pytest.approx(1.0, abs=0.03), method
    compensation.reset(emu.layers, emu.bn_layers)
    assert torch.equal((emu.executor(x) - b).abs().mean(), drifted)


def test_bn_compensation_re_estimates_statistics():
    m = _conv_bn_model()
    t = _target(device__prog_noise=False, device__read_noise=False, periphery__out_noise=0.0)
    mapped = hand_map(m, t)
    emu = Emulator(mapped, AnalogSettings.from_target(t))
    assert len(emu.bn_layers) == 1
    x = np.random.default_rng(0).standard_normal((256, 3, 8, 8)).astype(np.float32)
    emu.program(0, 0, x, 128)
    emu.set_time(3.15e7, 0, 0, 0)
    emu.compensate("bn", x, 128, torch.Generator().manual_seed(0))
    mean, var = emu.bn_layers[0].override
    assert mean.shape == (8,) and bool((var > 0).all())
    compensation.reset(emu.layers, emu.bn_layers)
    assert emu.bn_layers[0].override is None


def test_bn_without_bn_nodes_is_a_clear_error():
    with pytest.raises(AcompileError, match="BatchNormalization"):
        compensation.check_methods(["none", "bn"], 0)
    with pytest.raises(AcompileError, match="unknown compensation"):
        compensation.check_methods(["gdc"], 1)


def test_chips_are_reproducible_per_seed_and_independent():
    model = _gemm_model()
    t = _target()
    mapped = hand_map(model, t)
    x = _x()
    outs = []
    for seed, chip in ((0, 0), (0, 0), (0, 1), (1, 0)):
        emu = Emulator(mapped, AnalogSettings.from_target(t))
        emu.program(seed, chip, x.numpy(), 64)
        emu.set_time(86400.0, seed, chip, 0)
        emu._set_generator(torch.Generator().manual_seed(5))
        outs.append(emu.executor(x))
    assert torch.equal(outs[0], outs[1])
    assert not torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[3])


def test_per_read_noise_matches_per_time_statistics():
    """Per-MVM read noise (exact output std via x^2 @ sigma^2) has the spread of weight-level noise."""
    model = _gemm_model(k=256, n=32)
    t = _target(device__prog_noise=False, periphery__out_noise=0.0, periphery__adc_bits=0,
                periphery__dac_bits=0)
    mapped = hand_map(model, t)
    x = _x(1, 256).repeat(4000, 1)
    spreads = {}
    for mode in ("time", "read"):
        emu = Emulator(mapped, AnalogSettings.from_target(t, read_noise_mode=mode))
        emu.program(0, 0, x[:10].numpy(), 64)
        if mode == "time":
            ys = []
            for i in range(400):
                emu.set_time(3600.0, 0, 0, i)
                ys.append(emu.executor(x[:1]))
            spreads[mode] = torch.cat(ys).std(0)
        else:
            emu.set_time(3600.0, 0, 0, 0)
            emu._set_generator(torch.Generator().manual_seed(1))
            spreads[mode] = emu.executor(x).std(0)
    ratio = spreads["read"] / spreads["time"]
    assert float(ratio.mean()) == pytest.approx(1.0, abs=0.08)


def test_parse_times():
    assert parse_times("1s,1h,1d,30d,1y") == [1.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0]
    assert parse_times("25, 1e3") == [25.0, 1000.0]
    with pytest.raises(AcompileError):
        parse_times("1 fortnight")


def test_unsupported_op_names_op_and_node():
    g = helper.make_graph([helper.make_node("NonMaxSuppression", ["x", "x"], ["y"], name="nms1")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, [1])])
    with pytest.raises(AcompileError, match="nms1.*NonMaxSuppression"):
        Executor(helper.make_model(g))


def test_eval_command_end_to_end(tmp_path):
    """`acompile eval` on a tiny CIFAR-shaped conv+BN model: table, JSON, CSV, PNG; bit-reproducible."""
    from click.testing import CliRunner

    from compiler.cli import cli

    m = _conv_bn_model()
    # 8x8 RGB images in a user .npz
    rng = np.random.default_rng(0)
    npz = tmp_path / "imgs.npz"
    np.savez(npz, x=rng.integers(0, 256, (120, 8, 8, 3), dtype=np.uint8), y=rng.integers(0, 10, 120))
    path = tmp_path / "m.pcm.onnx"
    onnx.save(hand_map(m, "pcm"), path)
    args = ["eval", str(path), "--data", str(npz), "--times", "1s,1d", "--chips", "2", "--compensation",
            "none,global,bn", "--calib", "64", "--batch-size", "50", "--quiet", "--mean", "0.5,0.5,0.5",
            "--std", "0.25,0.25,0.25"]
    r1 = CliRunner().invoke(cli, args + ["--json", str(tmp_path / "a.json"), "--csv", str(tmp_path / "a.csv"),
                                         "--plot", str(tmp_path / "a.png")])
    assert r1.exit_code == 0, r1.output
    assert "digital baseline" in r1.output and "global" in r1.output
    res = json.loads((tmp_path / "a.json").read_text())
    assert res["baseline"]["engine"] == "onnxruntime"
    row = next(r for r in res["results"] if r["t"] == 86400 and r["compensation"] == "bn")
    assert row["n"] == 2 and len(row["accuracies"]) == 2
    assert (tmp_path / "a.png").stat().st_size > 1000
    assert len((tmp_path / "a.csv").read_text().splitlines()) == 1 + 2 * 3
    r2 = CliRunner().invoke(cli, args + ["--json", str(tmp_path / "b.json")])
    assert r2.exit_code == 0
    res2 = json.loads((tmp_path / "b.json").read_text())
    assert [r["accuracies"] for r in res["results"]] == [r["accuracies"] for r in res2["results"]]
    assert res["kernels"] == "native"
    dev = res["settings"]["device"]  # the device's parameters, readable back (not an object's repr)
    assert dev["model"] == "pcm" and dev["g_max"] == 25.0 and dev["t0"] == 20.0
    r3 = CliRunner().invoke(cli, args + ["--out-bound", "calibrated", "--json", str(tmp_path / "c.json")])
    assert r3.exit_code == 0, r3.output
    assert json.loads((tmp_path / "c.json").read_text())["settings"]["out_bound"] is None
    r4 = CliRunner().invoke(cli, args + ["--out-bound", "wide"])
    assert isinstance(r4.exception, AcompileError) and "--out-bound" in str(r4.exception)


def test_eval_shape_mismatch_is_clear(tmp_path):
    from runtime.cli import run_eval

    m = _conv_bn_model()
    npz = tmp_path / "imgs.npz"
    np.savez(npz, x=np.zeros((10, 28, 28), np.uint8), y=np.zeros(10, np.int64))
    path = tmp_path / "m.pcm.onnx"
    onnx.save(hand_map(m, "pcm"), path)
    with pytest.raises(AcompileError, match="expects|channel"):
        run_eval(path, data=str(npz), chips=1, times="1s", compensation="none", quiet=True)


def test_four_devices_per_weight_split_each_sign():
    model = _gemm_model(k=64, n=8)
    t = _target(tile__devices_per_weight=4, device__prog_noise=False, device__drift=False,
                device__read_noise=False)
    emu = Emulator(hand_map(model, t), AnalogSettings.from_target(t))
    layer = emu.layers[0]
    layer.program(torch.Generator().manual_seed(0))
    assert layer.state.g_prog.shape == (4, 64, 8)
    torch.testing.assert_close(layer.w_eff, layer.w_n)  # two devices per sign, each half the target
    assert float(layer.state.g_prog.max()) <= 25.0 / 2 + 1e-5


def test_global_plus_bn_applies_both():
    m = _conv_bn_model()
    t = _target(device__prog_noise=False, device__read_noise=False, periphery__out_noise=0.0)
    emu = Emulator(hand_map(m, t), AnalogSettings.from_target(t))
    x = np.random.default_rng(0).standard_normal((128, 3, 8, 8)).astype(np.float32)
    emu.program(0, 0, x, 128)
    emu.set_time(3.15e7, 0, 0, 0)
    emu.compensate("global+bn", x, 128, torch.Generator().manual_seed(0))
    assert emu.bn_layers[0].override is not None
    assert all(ly.alpha is not None for ly in emu.layers)
    assert float(emu.layers[0].alpha[0].mean()) > 1.0  # drift shrank the outputs, GDC scales them up
