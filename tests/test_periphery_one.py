"""One periphery: the emulator's fused kernels and in-memory training compute the reference semantics
of runtime/physics/periphery.py (`periphery_mvm`) on the same tensors. (Hardware-aware training against
the emulator: tests/test_finetune_physics.py.)"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compiler.pipeline import compile_model
from compiler.targets import load_target, with_device
from hwtrain.inmemory.analog_layer import Periphery, analog_mvm
from runtime.analog_settings import AnalogSettings
from runtime.evaluate import Emulator
from runtime.physics.periphery import levels, periphery_mvm, row_blocks

K, N, R = 600, 24, 2.0  # 600 rows: three 256-row blocks, the last one partial


def _gemm(path, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.06, (K, N)).astype(np.float32)
    b = rng.normal(0, 0.1, N).astype(np.float32)
    g = helper.make_graph([helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", N])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return torch.from_numpy(w), torch.from_numpy(b)


def _emulator(tmp_path, kernels: str):
    w, b = _gemm(tmp_path / "m.onnx")
    target = with_device(load_target("pcm"), "ideal")
    target["periphery"].update(input_range=R, out_noise=0.0)
    res = compile_model(tmp_path / "m.onnx", target, tmp_path / "m.pcm.onnx")
    emu = Emulator(res.model, AnalogSettings.from_target(target, kernels=kernels))
    emu.program(0, 0, np.zeros((4, K), np.float32), 4)
    g_max = target["device"]["g_max"]
    gs = float(g_max / w.abs().max())  # per-layer scale
    return emu, w * gs / g_max, g_max / gs, b


def _x(seed=1, n=32):
    return torch.randn(n, K, generator=torch.Generator().manual_seed(seed)) * 0.7


@pytest.mark.parametrize("kernels", ["torch", "native"])
def test_emulator_computes_the_reference_periphery(tmp_path, kernels):
    from runtime import native

    if kernels == "native" and not native.available():
        pytest.skip(f"native kernels unavailable here: {native.error()}")
    emu, w_n, undo, b = _emulator(tmp_path, kernels)
    assert emu.layers[0].geo.row_blocks == row_blocks(K, 256)
    x = _x()
    got = emu.executor(x)
    want = periphery_mvm(x, w_n, R, dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.0,
                         blocks=row_blocks(K, 256)) * undo + b
    step = R * 10.0 / levels(8) * undo  # one ADC code in output units
    diff = (got - want).abs()
    assert float(diff.max()) <= 1.01 * step  # a rare code flip where rounding lands on a level boundary
    assert float((diff > 1e-4 * step).float().mean()) < 2e-3
    # the reference is not trivially close: one block (a single ADC) gives another answer
    one = periphery_mvm(x, w_n, R, dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.0,
                        blocks=[(0, K)]) * undo + b
    assert float((one - want).abs().max()) > 0.3 * step


def test_inmemory_training_equals_the_emulator_when_ranges_agree(tmp_path):
    """In-memory training's DAC range is each sample's max|x|; give every sample max|x| = R (the emulator's
    static range) and the two implementations must produce the same outputs on the same tensor."""
    emu, w_n, undo, b = _emulator(tmp_path, "torch")
    x = _x().clamp(-R, R)
    x[:, 0] = R  # every sample's abs-max is R
    want = emu.executor(x) - b
    per = Periphery(dac_bits=8, adc_bits=8, out_bound=10.0, out_noise=0.0, tile_rows=256)
    w_scale = 0.37  # any weight unit: the in-memory layer keeps weights in its own scale
    got = analog_mvm(x, w_n * w_scale, w_scale, per, None) / w_scale * undo
    step = R * 10.0 / levels(8) * undo
    diff = (got - want).abs()
    assert float(diff.max()) <= 1.01 * step
    assert float((diff > 1e-4 * step).float().mean()) < 2e-3


def test_zero_bits_mean_ideal_converters_without_clamp():
    x = torch.tensor([[3.0, -5.0]])
    w = torch.tensor([[4.0], [1.0]])
    y = periphery_mvm(x, w, 1.0, dac_bits=0, adc_bits=0, out_bound=1.0, out_noise=0.0, blocks=[(0, 2)])
    assert float(y) == pytest.approx(7.0)  # x @ w, nothing clamped at the bound of 1
