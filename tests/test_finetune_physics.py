"""Fine-tuning sees the target's physics: the same periphery as the emulator and the device's noise.

The training forward (hwtrain.analog_hwa) and the emulator (runtime.analog_tile) must compute the same
analog layer: same row blocks, same DAC codes, same ADC steps. The injected weight noise must have the
statistics of the target's programming-noise model, measured here on sampled weights against the
formula of DESIGN §6 (not read back from the code under test).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.targets import load_target
from hwtrain.analog_hwa import HWAKnobs
from hwtrain.finetune import prepare
from runtime import contract
from runtime.analog_settings import AnalogSettings
from runtime.evaluate import Emulator

PREP = '{"layout": "NCHW", "scale": 1.0, "mean": [0.0], "std": [1.0], "input_shape": [64, 6, 6]}'


def _conv_model(path, c_in=64, c_out=40, seed=0) -> None:
    """One 3x3 conv with 64 input channels: 576 rows -> three 256-row blocks, one of them partial."""
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (c_out, c_in, 3, 3)).astype(np.float32)
    b = rng.normal(0, 0.1, c_out).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])
    g = helper.make_graph([node], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", c_in, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", c_out, 6, 6])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key=contract.META_PREPROCESSING, value=PREP)
    onnx.save(m, str(path))


def _gemm_model(path, k=600, n=30, seed=1) -> None:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.05, (n, k)).astype(np.float32)
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="fc", transB=1)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.metadata_props.add(key=contract.META_PREPROCESSING,
                         value='{"layout": "flat", "scale": 1.0, "mean": [0.0], "std": [1.0], '
                               '"input_shape": [1, 1, 600]}')
    onnx.save(m, str(path))


@pytest.mark.parametrize("kind", ["conv", "gemm"])
@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_training_periphery_equals_emulator(tmp_path, kind, kernels):
    """Noise off, DAC/ADC on: the fine-tuning forward of a layer is the emulator's, element for element
    (up to a rare flip of one ADC code where float rounding lands on a level boundary)."""
    from compiler.pipeline import compile_model
    from runtime import native

    if kernels == "native" and not native.available():
        pytest.skip(f"native kernels unavailable here: {native.error()}")
    src = tmp_path / "m.onnx"
    (_conv_model if kind == "conv" else _gemm_model)(src)
    target = load_target("pcm")
    res = compile_model(src, target, tmp_path / "m.pcm.onnx")
    over = dict(prog_noise=False, drift=False, read_noise=False, out_noise=0.0, kernels=kernels)
    settings = AnalogSettings.from_target(target, **over)
    emu = Emulator(res.model, settings)
    torch.manual_seed(0)
    shape = (16, 64, 6, 6) if kind == "conv" else (16, 600)
    x = torch.randn(*shape)
    emu.program(0, 0, x.numpy(), 16)
    layer = emu.layers[0]
    assert len(layer.geo.row_blocks) == 3
    want = emu.executor(x)

    prepared = prepare(src, target, knobs=HWAKnobs(noise=0.0, clip=0.0),
                       settings_overrides=dict(out_noise=0.0, kernels=kernels))
    hwa = prepared.layers[0]
    hwa.input_range = layer.input_range  # the range the emulator calibrated
    prepared.ctx.active = True
    prepared.ctx.observe = False
    got = prepared.module(x).detach()
    step = layer.r * 10.0 / 127 * float(prepared.module.params[0].detach().abs().max())  # one ADC code
    diff = (got - want).abs()
    assert float(diff.max()) <= 1.01 * step
    assert float((diff > 1e-4 * step).float().mean()) < 2e-3
    # and the periphery matters: the same layer without it differs by many ADC steps somewhere
    hwa.knobs.periphery = False
    plain = prepared.module(x).detach()
    assert float((plain - want).abs().max()) > 0.3 * step


def _measured_noise(tmp_path, shape: str, eta: float, levels: np.ndarray, reps: int = 400):
    src = tmp_path / "g.onnx"
    _gemm_model(src)
    prepared = prepare(src, load_target("pcm"), knobs=HWAKnobs(noise=eta, noise_shape=shape, clip=0.0))
    layer = prepared.layers[0]
    layer.generator = torch.Generator().manual_seed(3)
    wm = torch.tensor(np.tile(levels, (600, 1))[:, :30], dtype=torch.float32)  # columns at fixed levels
    wm[0, 0] = 1.0  # max|W| = 1: normalized weight = the level
    w_max = layer.weight_scale(wm)
    deltas = torch.stack([layer.noisy_normalized(wm, w_max) - wm for _ in range(reps)])
    return deltas[:, 1:, :]  # drop the row holding the max


def test_device_noise_std_is_the_pcm_programming_noise(tmp_path):
    """Device-shaped noise at eta = 0.038: per weight, the difference of the two programmed devices of
    its pair, sigma_prog(x) = max(-1.1731 x^2 + 1.9650 x + 0.26348, 0) uS on the used device and a
    half-normal (clamped at 0) on the unused one (Nandakumar 2019 / DESIGN §6)."""
    levels = np.linspace(0.05, 1.0, 30)
    d = _measured_noise(tmp_path, "device", 0.038, levels)
    g_max = 25.0

    def sigma(x):  # uS, DESIGN §6
        return max(-1.1731 * x * x + 1.9650 * x + 0.26348, 0.0)

    s0 = sigma(0.0)
    rect_var = s0 * s0 * (0.5 - 1 / (2 * math.pi))  # variance of max(0, s0 Z)
    rect_mean = s0 / math.sqrt(2 * math.pi)
    for j, x in enumerate(levels):
        col = d[:, :, j].reshape(-1)
        want_std = math.sqrt(sigma(x) ** 2 + rect_var) / g_max
        assert float(col.std()) == pytest.approx(want_std, rel=0.03), x
        tol = 4 * want_std / math.sqrt(col.numel())
        assert float(col.mean()) == pytest.approx(-rect_mean / g_max, abs=tol)


def test_device_noise_scales_with_eta_and_gaussian_shape(tmp_path):
    levels = np.full(30, 0.5)
    d1 = _measured_noise(tmp_path, "device", 0.038, levels, reps=100)
    d2 = _measured_noise(tmp_path, "device", 0.076, levels, reps=100)
    assert float(d2.std() / d1.std()) == pytest.approx(2.0, rel=0.03)
    dg = _measured_noise(tmp_path, "gaussian", 0.05, levels, reps=100)
    assert float(dg.std()) == pytest.approx(0.05, rel=0.02)  # eta of max|W| = 1
    assert abs(float(dg.mean())) < 0.002


def test_noise_times_adds_the_drift_that_compensation_cannot_undo(tmp_path):
    """--noise-times T,T: the weights a forward sees are the programmed devices drifted to T with the
    device model's exponents, globally compensated. Small conductances drift faster (mu_nu grows as
    -0.0155 ln x), so after compensation a weight at x = 0.1 keeps less of its value than one at x = 1,
    by exp(-(mu(0.1) - mu(1)) L + (s(0.1)^2 - s(1)^2) L^2 / 2), L = ln((T + t0) / t0) (DESIGN §6)."""
    year = 365 * 86400.0
    levels = np.array([0.1] * 15 + [1.0] * 15)
    src = tmp_path / "g.onnx"
    _gemm_model(src)
    knobs = HWAKnobs(noise=0.038, clip=0.0, noise_times=(year, year))
    layer = prepare(src, load_target("pcm"), knobs=knobs).layers[0]
    layer.generator = torch.Generator().manual_seed(5)
    wm = torch.tensor(np.tile(levels, (600, 1)), dtype=torch.float32)
    w_max = layer.weight_scale(wm)
    seen = torch.stack([layer.noisy_normalized(wm, w_max) for _ in range(60)])
    small, large = float(seen[..., :15].mean()) / 0.1, float(seen[..., 15:].mean()) / 1.0

    def mu(x):
        return min(max(-0.0155 * math.log(x) + 0.0244, 0.049), 0.1)

    def sd(x):
        return min(max(-0.0125 * math.log(x) - 0.0059, 0.008), 0.045)

    L = math.log((year + 20.0) / 20.0)
    want = math.exp(-(mu(0.1) - mu(1.0)) * L + (sd(0.1) ** 2 - sd(1.0) ** 2) * L * L / 2)
    assert small / large == pytest.approx(want, rel=0.03)
    assert want < 0.9  # the effect is large at one year
    # and the spread is wider than programming noise alone
    plain = _measured_noise(tmp_path, "device", 0.038, np.full(30, 1.0), reps=60)
    assert float(seen[..., 15:].std()) > 1.5 * float(plain.std())


@pytest.mark.parametrize("kernels", ["native", "torch"])
def test_noise_times_output_noise_grows_as_the_devices_drift(tmp_path, kernels):
    """With --noise-times the fine-tuning forward runs the drifted (smaller) devices through the
    periphery and applies the GDC factor alpha digitally after it, as the chip and the emulator do: the
    output noise of each row block is multiplied by that block's alpha. At one year a weight at g_max
    has drifted by E[(t/t0)^-nu] = exp(-mu L + s^2 L^2 / 2) (mu = 0.049, s = 0.008 at x = 1, DESIGN §6),
    so the output noise is sigma * sqrt(sum_b alpha_b^2) with alpha = 1 / that (about 2), not sigma *
    sqrt(blocks) as when the factor is folded into the weights before the periphery."""
    from runtime import native

    if kernels == "native" and not native.available():
        pytest.skip(f"native kernels unavailable here: {native.error()}")
    year, sigma = 365 * 86400.0, 0.04
    src = tmp_path / "g.onnx"
    _gemm_model(src)  # 600 rows: 3 row blocks
    knobs = HWAKnobs(noise=0.038, clip=0.0, noise_times=(year, year))
    over = dict(dac_bits=0, adc_bits=0, out_noise=sigma, kernels=kernels)
    prepared = prepare(src, load_target("pcm"), knobs=knobs, settings_overrides=over)
    prepared.ctx.active = True
    layer = prepared.layers[0]
    w = torch.ones(30, 600)  # transB = 1: [n, k], every weight at max|W| = 1 -> x = 1 on its device
    x = torch.randn(64, 600)
    devs = []
    for rep in range(8):
        layer.generator = torch.Generator().manual_seed(100 + rep)
        wn = layer.noisy_normalized(layer.matrix(w), layer.weight_scale(layer.matrix(w)))
        layer.generator = torch.Generator().manual_seed(100 + rep)  # the same devices again
        y = layer(x, w).detach()
        devs.append(y - x @ wn)  # what the periphery added, in weight units (w_max = 1, no DAC)
    noise_std = float(torch.cat(devs).std())
    L = math.log((year + 20.0) / 20.0)
    alpha = 1.0 / math.exp(-0.049 * L + 0.008 ** 2 * L * L / 2)
    assert alpha > 1.9
    assert noise_std == pytest.approx(sigma * math.sqrt(3) * alpha, rel=0.05)
