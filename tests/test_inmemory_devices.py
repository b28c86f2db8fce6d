"""Pulse-update device models: increment statistics match their parameters; bad parameters are errors."""

from __future__ import annotations

import math

import pytest
import torch

from compiler.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.pcm_pulse import (
    PCMDifferentialPair,
    PCMPulseConfig,
    apply_set_pulses,
    mean_pulse_increment,
    reset_conductance,
    set_increment_stats,
)
from runtime.physics.rpu_devices import RPUArray, RPUConfig

N = 50_000


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@pytest.mark.parametrize("g0,n0", [(3.0, 20.0), (6.0, 20.0), (2.0, 3.0)])
def test_pcm_set_increment_matches_nandakumar_fit(g0: float, n0: float) -> None:
    g = torch.full((N,), g0)
    n = torch.full((N,), n0)
    apply_set_pulses(g, n, torch.ones(N, dtype=torch.int64), PCMPulseConfig(), _gen())
    dg = g - g0
    mean = -0.084 * g0 + 0.880 + 1.40 * math.exp(-n0 / 2.6)
    std = 0.091 * g0 + 0.260 + 2.15 * math.exp(-n0 / 2.6)
    clipped = ((g <= C.PCM_TRAIN_G_MIN) | (g >= C.PCM_TRAIN_G_MAX)).float().mean()
    if clipped < 1e-3:  # away from the clip the increments are the fit itself
        assert abs(float(dg.mean()) - mean) < 0.02
        assert abs(float(dg.std()) - std) / std < 0.03
    assert torch.all(n == n0 + 1)


def test_pcm_mean_increment_falls_with_conductance_and_saturates() -> None:
    mean_lo, _ = set_increment_stats(torch.tensor([1.0]), torch.tensor([50.0]))
    mean_hi, _ = set_increment_stats(torch.tensor([9.0]), torch.tensor([50.0]))
    assert float(mean_lo) > 3 * float(mean_hi) > 0
    g = reset_conductance((5000,), _gen())
    n = torch.zeros(5000)
    apply_set_pulses(g, n, torch.full((5000,), 60), PCMPulseConfig(), _gen(1))
    assert float(g.max()) <= C.PCM_TRAIN_G_MAX
    assert 8.0 < float(g.mean()) <= C.PCM_TRAIN_G_MAX  # saturated near 10.5 uS, clipped at g_max


def test_pcm_reset_distribution() -> None:
    g = reset_conductance((N,), _gen())
    assert abs(float(g.mean()) - 0.1) < 1e-3 and abs(float(g.std()) - 0.01) < 5e-4


def test_pcm_pair_refresh_keeps_weight_and_frees_range() -> None:
    pair = PCMDifferentialPair((5000,), w_per_us=0.1, generator=_gen())
    pair.g_pos.fill_(9.5)
    pair.g_neg.fill_(6.5)  # w = 0.3, both sides high
    before = pair.weights().clone()
    assert pair.refresh() == 5000
    assert torch.all(pair.g_neg < 0.2)  # partner at RESET
    err = pair.weights() - before
    assert abs(float(err.mean())) < 0.01 and float(err.std()) < 0.05  # programming noise of a 3 uS write


def test_pcm_pair_pulses_go_to_the_sign_side() -> None:
    pair = PCMDifferentialPair((1000,), w_per_us=1.0, generator=_gen())
    w0 = pair.weights().clone()
    pair.apply_pulses(torch.cat([torch.full((500,), 2), torch.full((500,), -2)]))
    dw = pair.weights() - w0
    # one pulse can lower G (the fit's std exceeds its mean right after RESET); the mean follows the sign
    assert float(dw[:500].mean()) > 0 > float(dw[500:].mean())
    assert float((dw[:500] < 0).float().mean()) < 0.2
    assert float(dw[:500].mean()) > 2.0  # two early pulses after RESET are ~2 uS each


def test_pcm_eps_is_a_typical_increment() -> None:
    eps = mean_pulse_increment(PCMPulseConfig())
    assert 0.3 < eps < 2.5


def test_pcm_read_noise_uses_inference_model_and_is_small() -> None:
    pair = PCMDifferentialPair((50_000,), w_per_us=0.1, generator=_gen())
    pair.program(torch.full((50_000,), 0.5))
    reads = torch.stack([pair.read() for _ in range(3)])
    rel = float((reads - pair.weights()).std() / 0.5)
    assert 0.005 < rel < 0.1


def test_linear_device_steps_and_asymmetry() -> None:
    cfg = RPUConfig(kind="linear", dw_min=0.01, asymmetry=0.2)
    arr = RPUArray((N,), cfg, _gen())
    arr.apply_pulses(torch.full((N,), 3.0), torch.zeros(N))
    assert torch.allclose(arr.w, torch.full((N,), 0.036), atol=1e-6)
    arr.apply_pulses(torch.zeros(N), torch.full((N,), 3.0))
    assert torch.allclose(arr.w, torch.full((N,), 0.036 - 0.024), atol=1e-6)
    arr.apply_pulses(torch.full((N,), 1000.0), torch.zeros(N))
    assert float(arr.w.max()) <= 1.0 + 1e-6  # bound


def test_rpu_d2d_and_c2c_spread() -> None:
    cfg = RPUConfig(kind="linear", dw_min=0.001, d2d=0.3, c2c=0.3)
    arr = RPUArray((N,), cfg, _gen())
    rel = arr.dw_up / 0.001
    assert abs(float(rel.std()) - 0.3) < 0.01 and abs(float(rel.mean()) - 1) < 0.01
    w0 = arr.w.clone()
    arr.apply_pulses(torch.ones(N), torch.zeros(N))
    ok = arr.dw_up > 0
    step = (arr.w - w0)[ok] / arr.dw_up[ok]
    assert abs(float(step.mean()) - 1) < 0.01 and abs(float(step.std()) - 0.3) < 0.01


def test_softbounds_symmetry_point_and_offset() -> None:
    cfg = RPUConfig(kind="softbounds", dw_min=0.02, asymmetry=0.1, offset=0.2)
    arr = RPUArray((20_000,), cfg, _gen())
    sp = arr.symmetry_point()
    # alternating up/down pulses drive every device to its own symmetry point
    for _ in range(600):
        arr.apply_pulses(torch.ones(20_000), torch.ones(20_000))
    assert float((arr.w - sp).abs().max()) < 0.03
    assert abs(float(arr.sp_shift.std()) - 0.2) < 0.01
    # asymmetric up > down moves the SP up: w* = (a w_max + b w_min)/(a + b) > 0 for a shift of 0
    assert float((sp - arr.sp_shift).mean()) > 0.05


def test_softbounds_step_shrinks_towards_bound() -> None:
    arr = RPUArray((1000,), RPUConfig(kind="softbounds", dw_min=0.01), _gen())
    arr.set_weights(torch.full((1000,), 0.5))
    arr.apply_pulses(torch.ones(1000), torch.zeros(1000))
    assert torch.allclose(arr.w, torch.full((1000,), 0.5 + 0.01 * 0.5), atol=1e-6)


@pytest.mark.parametrize(
    "kw,name",
    [({"dw_min": -0.1}, "dw_min"), ({"d2d": -1.0}, "d2d"), ({"c2c": -0.5}, "c2c"),
     ({"asymmetry": 1.5}, "asymmetry"), ({"offset": -0.1}, "offset"), ({"kind": "memristor"}, "memristor")],
)
def test_bad_rpu_parameters_are_clear_errors(kw: dict, name: str) -> None:
    with pytest.raises(AcompileError, match=name):
        RPUConfig(**kw)


def test_bad_states_and_pcm_parameters() -> None:
    with pytest.raises(AcompileError, match="states"):
        RPUConfig.from_states(-100)
    with pytest.raises(AcompileError, match="g_max"):
        PCMPulseConfig(g_max=0.05)
    with pytest.raises(AcompileError, match="noise_scale"):
        PCMPulseConfig(noise_scale=-1)
