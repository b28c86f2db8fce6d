"""The device interface: registry, each device's statistics against its published fit, and a new device
added as one class that the targets, the emulator and training then use without other changes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runtime.physics.devices import DeviceError, device_class, device_names, make_device
from runtime.physics.devices import base as devbase

N = 200_000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _folded(mu: float, sd: float) -> tuple[float, float]:
    """Mean and std of |N(mu, sd^2)| (the drift exponent is |mu + sd z|)."""
    phi = math.exp(-mu * mu / (2 * sd * sd))
    m = sd * math.sqrt(2 / math.pi) * phi + mu * math.erf(mu / (sd * math.sqrt(2)))
    return m, math.sqrt(mu * mu + sd * sd - m * m)


def test_registry_lists_the_builtin_devices_with_documented_keys():
    assert {"pcm", "pcm-hermes", "rram", "ideal"} <= set(device_names())
    for name in device_names():
        cls = device_class(name)
        assert cls.name == name and cls.summary
        for key in cls.keys().values():
            assert key.doc and key.check(key.default_for({})) is None  # defaults pass their own check
    with pytest.raises(DeviceError, match="must be one of 'ideal', 'pcm', 'pcm-hermes', 'rram'"):
        make_device("flash")
    with pytest.raises(DeviceError, match=r"\[device\].g_max must be a positive number"):
        make_device("pcm", g_max=-1.0)
    assert make_device("ideal").noiseless and not make_device("rram").noiseless


# ---- pcm-hermes: the HERMES fits (aihwkit HermesNoiseModel, 2 devices per cell) -----------------------
def _hermes_prog_sd(x: float) -> float:  # uS at g_max 20.7
    return 0.16603222 + 4.71806468 * x - 8.48101252 * x**2 + 4.68961419 * x**3


def _hermes_nu(x: float) -> tuple[float, float]:
    mu = min(max(-0.0387 * math.log(x) - 0.0182, 0.072), 0.13) if x < 0.0945 else \
        -0.0436 * x * x - 0.0126 * x + 0.0736
    sd = min(max(-0.0117 * math.log(x) - 0.0057, 0.0091), 0.04) if x < 0.3055 else \
        -0.0118 * x * x + 0.0093 * x + 0.0073
    return mu, sd


def _hermes_q(x: float) -> float:
    if x < 0.16:
        return min(max(-0.0117 * math.log(x) - 0.0069, 0.015), 0.04)
    return 0.0069 * x**3 - 0.0280 * x**2 + 0.0211 * x + 0.0123


@pytest.mark.parametrize("x", [0.05, 0.2, 0.5, 0.9])
def test_hermes_programming_noise_and_drift_exponents(x):
    dev = make_device("pcm-hermes", read_noise=False)
    g = torch.full((N,), x * 20.7)
    st = dev.program(g, _gen(1))
    assert float((st.g_prog - g).std()) == pytest.approx(_hermes_prog_sd(x), rel=0.02)
    m, s = _folded(*_hermes_nu(x))
    assert float(st.aux["nu"].mean()) == pytest.approx(m, rel=0.01)
    assert float(st.aux["nu"].std()) == pytest.approx(s, rel=0.03)
    # power-law drift from t0 = 300 s: G(t) = G_prog ((t + t0) / t0)^-nu
    t = 86400.0
    torch.testing.assert_close(dev.drift(st, t), st.g_prog * ((t + 300.0) / 300.0) ** (-st.aux["nu"]))


@pytest.mark.parametrize("x", [0.05, 0.3, 0.8])
def test_hermes_read_noise_follows_q_s(x):
    dev = make_device("pcm-hermes", prog_noise=False, drift=False)
    g = torch.full((N,), x * 20.7)
    st = dev.program(g, _gen(2))
    t = 3600.0
    rel = (dev.read(st, t, _gen(3)) - g) / g
    want = _hermes_q(x) * math.sqrt(math.log((t + 300.0 + 512e-9) / (2 * 512e-9)))
    assert float(rel.std()) == pytest.approx(want, rel=0.02)


def test_hermes_one_device_cell_has_its_own_range_and_fits():
    one = make_device("pcm-hermes", num_devices=1)
    assert (one.g_max, one.t0, one.devices_per_cell) == (10.35, 200.0, 1)
    assert make_device("pcm-hermes").devices_per_cell == 2
    g = torch.full((N,), 0.5 * 10.35)
    sd = float((one.with_params(drift=False, read_noise=False).program(g, _gen(4)).g_prog - g).std())
    want = 0.15781817 + 2.32443916 * 0.5 - 2.16310839 * 0.25 + 0.68841818 * 0.125
    assert sd == pytest.approx(want, rel=0.02)


# ---- rram: the NeuRRAM spreads (Wan 2022, aihwkit ReRamWan2022NoiseModel) ---------------------------------
_WAN = {1.0: [0.348, 16.030, -43.853, 45.393, -16.815],
        86400.0: [0.701, 22.086, -50.773, 47.095, -16.458],
        172800.0: [0.782, 20.274, -43.507, 37.062, -11.934]}


def _wan(x: float, t: float) -> float:
    return sum(c * x**i for i, c in enumerate(_WAN[t]))


@pytest.mark.parametrize("x", [0.5, 0.7, 0.9])  # > 5 std above 0: the clamp at 0 S does not bias
def test_rram_spread_follows_the_fits_over_time(x):
    dev = make_device("rram", read_noise=False)
    g = torch.full((N,), x * 40.0)
    st = dev.program(g, _gen(5))
    for t in (1.0, 86400.0, 172800.0):
        dg = dev.drift(st, t) - g
        assert abs(float(dg.mean())) < 4 * _wan(x, t) / math.sqrt(N) + 1e-3  # no mean drift
        assert float(dg.std()) == pytest.approx(_wan(x, t), rel=0.02), t
    # between fitted times: linear in ln t; after the data end (2 days): held
    mid = math.sqrt(86400.0)
    want = 0.5 * (_wan(x, 1.0) + _wan(x, 86400.0))
    assert float((dev.drift(st, mid) - g).std()) == pytest.approx(want, rel=0.02)
    assert torch.equal(dev.drift(st, 365 * 86400.0), dev.drift(st, 172800.0))
    # one chip: later times derive from the same programmed state (strongly correlated, not redrawn)
    a, b = dev.drift(st, 86400.0) - g, dev.drift(st, 172800.0) - g
    assert float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.95


def test_rram_read_noise_is_one_percent_of_g_max_and_scales_with_g_max():
    dev = make_device("rram", prog_noise=False, drift=False)
    g = torch.full((N,), 20.0)
    st = dev.program(g, _gen(6))
    assert float((dev.read(st, 10.0, _gen(7)) - g).std()) == pytest.approx(0.01 * 40.0, rel=0.02)
    small = make_device("rram", g_max=20.0, drift=False, read_noise=False)
    g2 = torch.full((N,), 10.0)  # x = 0.5 at g_max 20: the 40 uS fit scaled by 20 / 40
    sd = float((small.program(g2, _gen(8)).g_prog - g2).std())
    assert sd == pytest.approx(_wan(0.5, 1.0) * 0.5, rel=0.02)


# ---- a new device is one class: targets, compiler, emulator and training use it ------------------------
@pytest.fixture
def halving_device():
    """A device that programs exactly and whose conductance halves after 1 s (no noise at all)."""

    from runtime.physics import devices

    class Halving(devbase.DeviceModel):
        name = "test-halving"
        summary = "halves after 1 s"
        KEYS = {"factor": devbase.Key(devbase.pos_float, 0.5, "conductance ratio after 1 s")}

        def prog_noise_std(self, g_target):
            return torch.zeros_like(g_target)

        def drift(self, state, t):
            return state.g_prog * (self.params["factor"] if t >= 1.0 and self.drift_on else 1.0)

    devices.register(Halving)
    yield Halving
    del devices._REGISTRY["test-halving"]


def test_new_device_works_end_to_end(tmp_path, halving_device):
    from onnx import TensorProto, helper, numpy_helper

    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime.analog_settings import AnalogSettings
    from runtime.evaluate import Emulator

    rng = np.random.default_rng(0)
    w = (rng.standard_normal((20, 6)) / 4).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])],
                          [numpy_helper.from_array(w, "W")])
    src = tmp_path / "m.onnx"
    import onnx

    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), src)
    f = tmp_path / "halving.toml"
    f.write_text('base = "ideal"\n[device]\nmodel = "test-halving"\nfactor = 0.25\n'
                 '[periphery]\nout_noise = 0.0\n')
    target = load_target(str(f))
    assert target["device"] == {"model": "test-halving", "g_max": 25.0, "g_min": 0.0, "prog_noise": True,
                                "drift": True, "read_noise": True, "factor": 0.25}
    mapped, _ = map_model(src, target)
    emu = Emulator(mapped, AnalogSettings.from_target(target))
    x = torch.from_numpy(rng.standard_normal((5, 20)).astype(np.float32))
    emu.program(0, 0, x.numpy(), 8)
    exact = x.numpy() @ w
    emu.set_time(0.5, 0, 0, 0)
    np.testing.assert_allclose(emu.executor(x).numpy(), exact, rtol=1e-4, atol=1e-5)
    emu.set_time(10.0, 0, 0, 1)
    np.testing.assert_allclose(emu.executor(x).numpy(), 0.25 * exact, rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="unknown key"):
        f.write_text('[device]\nmodel = "test-halving"\nt0 = 3.0\n')
        load_target(str(f))
