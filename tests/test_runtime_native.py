"""Native periphery kernels (runtime/native): the formulas they fuse, their Gaussian stream, and that the
emulator gives the same answers on them as on the eager-torch path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compiler.targets import builtin_target
from runtime import native
from runtime.analog_settings import AnalogSettings
from runtime.evaluate import Emulator
from tests.test_runtime_analog import _target
from tests.test_runtime_handmap import hand_map


@pytest.fixture(scope="module", autouse=True)
def _built():
    # CI machines have a C compiler: a build failure is a failure, not a skip
    assert native.available(), f"native kernels did not build: {native.error()}"


def _torch_tail(y, out, scale, bias, sd, z, lim, residual=None, relu=False):
    v = y + sd * z
    if lim > 0:
        v = torch.round(v).clamp(-lim, lim)
    base = out if out is not None else (bias if bias is not None else torch.zeros_like(scale))
    r = base + v * scale
    if residual is not None:
        r = r + residual
    return r.clamp_min(0) if relu else r


def test_normal_stream_statistics():
    n = 2_000_000
    z = native.normal(n, (12345, 678)).double()
    se = 1 / math.sqrt(n)
    assert abs(float(z.mean())) < 5 * se
    assert abs(float(z.std()) - 1) < 5 * se * math.sqrt(0.5) * 2
    kurt = float(((z - z.mean()) ** 4).mean() / z.var() ** 2)
    assert abs(kurt - 3) < 0.03
    zs, _ = torch.sort(z)
    ecdf = torch.arange(1, n + 1, dtype=torch.float64) / n
    ks = float((torch.special.ndtr(zs) - ecdf).abs().max())
    assert ks < 1.95 / math.sqrt(n)  # Kolmogorov-Smirnov at alpha = 0.001
    for lag in (1, 7, 8, 15, 16, 17):  # the Box-Muller pairs sit 8 apart
        c = float(torch.corrcoef(torch.stack([z[:-lag], z[lag:]]))[0, 1])
        assert abs(c) < 5 * se, lag
    # the tail clips at sqrt(-2 ln 2^-17) = 4.86 sigma and nowhere near the centre
    assert 4.0 < float(z.abs().max()) <= 4.87


def test_normal_keys_reproducible_and_independent():
    a = native.normal(100_000, (1, 2))
    assert torch.equal(a, native.normal(100_000, (1, 2)))
    for other in ((2, 2), (1, 3)):
        b = native.normal(100_000, other)
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 5 / math.sqrt(1e5)


def test_results_do_not_depend_on_thread_count():
    y = torch.randn(64, 16, 20, 20).contiguous(memory_format=torch.channels_last)
    yv = native.channels_last_view(y, 1)
    sc, b = torch.rand(16), torch.rand(16)
    old = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            outs.append((native.normal(300_001, (5, 9)), native.tail(yv, None, sc, b, 0.7, 127.0, (3, 4))))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])


@pytest.mark.parametrize("c", [1, 10, 16, 5000])
def test_tail_is_its_formula(c):
    g = torch.Generator().manual_seed(c)
    n = max(1, 40_000 // c)
    y = torch.randn(n, c, generator=g) * 60  # beyond the +-127 bound at times
    sc, b = torch.rand(c, generator=g), torch.randn(c, generator=g)
    res = torch.randn(n, c, generator=g)
    sd, key = 0.6, (11, 22)
    z = native.normal(n * c, key).reshape(n, c)
    out = native.tail(y, None, sc, b, sd, 127.0, key)
    want = _torch_tail(y, None, sc, b, sd, z, 127.0)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-5)
    # accumulate a second block, add a residual, ReLU
    y2 = torch.randn(n, c, generator=g) * 30
    out2 = native.tail(y2, out.clone(), sc, None, 0.0, 127.0, (0, 0), residual=res, relu=True)
    torch.testing.assert_close(out2, _torch_tail(y2, out, sc, None, 0.0, 0 * z, 127.0, res, True),
                               rtol=1e-6, atol=1e-5)
    # lim 0: no ADC, no bias
    out3 = native.tail(y, None, sc, None, 0.0, 0.0, (0, 0))
    torch.testing.assert_close(out3, y * sc, rtol=1e-6, atol=1e-6)


def test_tail_noise_is_the_normal_stream():
    y = torch.zeros(333, 7)
    out = native.tail(y, None, torch.ones(7), None, 2.5, 0.0, (42, 43))
    torch.testing.assert_close(out.reshape(-1), 2.5 * native.normal(333 * 7, (42, 43)))


def test_dac_and_dac_slices():
    x = (torch.randn(8, 40, 5, 5) * 3).contiguous(memory_format=torch.channels_last)
    q = native.dac(x, 12.7, 127.0)
    assert q.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(q, torch.round(x * 12.7).clamp(-127, 127))
    parts = native.dac_slices(x, 1, [(0, 29), (28, 40)], 12.7, 127.0)
    assert torch.equal(parts[0], q[:, 0:29]) and torch.equal(parts[1], q[:, 28:40])
    assert parts[1].is_contiguous(memory_format=torch.channels_last)
    x2 = torch.randn(6, 300)
    p2 = native.dac_slices(x2, 1, [(0, 256), (256, 300)], 5.0, 127.0)
    assert torch.equal(torch.cat(p2, 1), native.dac(x2, 5.0, 127.0))


def test_rejects_what_it_cannot_run():
    with pytest.raises(ValueError):
        native.dac(torch.randn(4, dtype=torch.float64), 1.0, 127.0)
    with pytest.raises(ValueError):
        native.tail(torch.randn(4, 3), None, torch.ones(4), None, 0.0, 0.0, (0, 0))
    with pytest.raises(ValueError):
        native.dac_slices(torch.randn(4, 3), 1, [(2, 5)], 1.0, 127.0)


def _resnet_block_model():
    import tempfile
    from pathlib import Path

    import onnx

    from models.archs import export

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.b1 = torch.nn.Conv2d(3, 40, 3, padding=1, bias=False), torch.nn.BatchNorm2d(40)
            self.c2, self.b2 = torch.nn.Conv2d(40, 40, 3, padding=1, bias=False), torch.nn.BatchNorm2d(40)
            self.fc = torch.nn.Linear(40 * 8 * 8, 10)

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            h = torch.relu(self.b2(self.c2(h)) + h)
            return self.fc(h.flatten(1))

    net = Block().eval()
    with torch.no_grad():
        for bn in (net.b1, net.b2):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 1.5)
    with tempfile.TemporaryDirectory() as d:
        return onnx.load(export(net, torch.randn(1, 3, 8, 8), Path(d) / "m.onnx", dynamic_batch=True))


def _run(mapped, t, kernels, x, **kw):
    emu = Emulator(mapped, AnalogSettings.from_target(t, kernels=kernels, **kw))
    emu.program(0, 0, x, 64)
    emu.set_time(86400.0, 0, 0, 0)
    emu._set_generator(torch.Generator().manual_seed(1))
    return emu, emu.executor(torch.from_numpy(x))


def test_native_and_torch_paths_agree():
    """Same programmed chip, noise off: both paths give the same outputs; noise on: the same noise level."""
    m = _resnet_block_model()
    t = _target()
    mapped = hand_map(m, t, tile=(256, 256))  # 360 rows: two row blocks cutting a channel
    x = np.random.default_rng(0).standard_normal((64, 3, 8, 8)).astype(np.float32)
    quiet = dict(out_noise=0.0, read_noise=False)
    emu_n, yn = _run(mapped, t, "native", x, **quiet)
    emu_t, yt = _run(mapped, t, "torch", x, **quiet)
    assert emu_n.layers[1].kernels_used() == "native" and len(emu_n.layers[1].blocks) == 2
    assert emu_n.layers[1].epilogue.residual and emu_n.layers[1].epilogue.relu  # BN + Add + Relu fused
    torch.testing.assert_close(yn, yt, rtol=1e-4, atol=1e-4)
    noisy_n = _run(mapped, t, "native", x)[1] - yn
    noisy_t = _run(mapped, t, "torch", x)[1] - yt
    ratio = float(noisy_n.std() / noisy_t.std())
    assert 0.85 < ratio < 1.15, ratio


def test_fused_epilogue_equals_the_nodes_it_replaces():
    """The executor's fusion pass (BN, residual Add, ReLU into the analog step) changes nothing on the
    ideal target, also with re-estimated BN statistics set."""
    from runtime.executor import Executor

    m = _resnet_block_model()
    mapped = hand_map(m, "ideal")
    x = torch.randn(16, 3, 8, 8)
    emu = Emulator(mapped, AnalogSettings.from_target(builtin_target("ideal")))
    for ly in emu.layers:
        ly.program(None)
    ops = emu.executor.step_ops
    assert "BatchNormalization" not in ops and "Relu" not in ops and "Add" not in ops
    ref = Executor(mapped)
    torch.testing.assert_close(emu.executor(x), ref(x), rtol=1e-5, atol=1e-5)
    bn = emu.bn_layers[1]
    bn.override = (torch.linspace(-0.3, 0.3, 40).double(), torch.linspace(0.5, 2.0, 40).double())
    ref.bn_layers[1].override = bn.override
    torch.testing.assert_close(emu.executor(x), ref(x), rtol=1e-5, atol=1e-5)


def test_broadcast_residual_is_added_after_the_kernel():
    """A fused residual Add whose other input broadcasts ([N, 1] onto [N, 20]) still adds correctly."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from runtime.executor import Executor

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((30, 20)) / 6).astype(np.float32)
    g = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="fc"),
         helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
         helper.make_node("Add", ["y", "m"], ["s"]), helper.make_node("Relu", ["s"], ["out"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 30])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 20])],
        [numpy_helper.from_array(w, "W")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    mapped = hand_map(model, "ideal")
    emu = Emulator(mapped, AnalogSettings.from_target(builtin_target("ideal"), out_noise=1e-9))
    for ly in emu.layers:
        ly.program(None)
    assert emu.layers[0].epilogue.residual and emu.layers[0].kernels_used() == "native"
    x = torch.randn(8, 30)
    torch.testing.assert_close(emu.executor(x), Executor(onnx.ModelProto.FromString(
        mapped.SerializeToString()))(x), rtol=1e-4, atol=1e-4)
