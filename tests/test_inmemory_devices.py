"""Pulse-update device models: increment statistics match their parameters; bad parameters are errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.pcm_pulse import (
    PCMDifferentialPair,
    PCMPulseConfig,
    apply_set_pulses,
    mean_pulse_increment,
    reset_conductance,
    set_increment_stats,
)
from runtime.physics.rpu_devices import KINDS, RPUArray, RPUConfig

N = 50_000


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# Statistical checks: seeded draws compared with the constants.py model, within Z standard errors of the
# sample size (a correct model misses by more with probability ~6e-7, a wrong step size by far more).
Z = 5.0


def _phi(z: float) -> float:
    return math.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2))


def clipped_normal_moments(m: float, s: float, lo: float, hi: float) -> tuple[float, float]:
    """Mean and std of clip(X, lo, hi) for X ~ N(m, s^2) (exact)."""
    a, b = (lo - m) / s, (hi - m) / s
    p_lo, p_hi = _cdf(a), 1 - _cdf(b)
    mid = 1 - p_lo - p_hi
    e1 = lo * p_lo + hi * p_hi + m * mid + s * (_phi(a) - _phi(b))
    e2 = (lo * lo * p_lo + hi * hi * p_hi + (m * m + s * s) * mid + 2 * m * s * (_phi(a) - _phi(b))
          + s * s * (a * _phi(a) - b * _phi(b)))
    return e1, math.sqrt(max(e2 - e1 * e1, 0.0))


def assert_moments(x: torch.Tensor, mean: float, std: float, what: str) -> None:
    """Sample mean and std of x equal (mean, std) within Z standard errors for this many samples.

    SE(mean) = std / sqrt(n); SE(std) = sqrt(m4 - s^4) / (2 s sqrt(n)) from the sample's own fourth
    moment (right for non-normal, e.g. clipped, samples). A 1e-4 relative floor covers float32 rounding
    (w + dw - w is not exactly dw) when std = 0."""
    x = x.double().flatten()
    n = x.numel()
    m_hat, s_hat = float(x.mean()), float(x.std())
    m4 = float(((x - m_hat) ** 4).mean())
    floor = 1e-4 * (abs(mean) + std) + 1e-12
    tol_mean = Z * std / math.sqrt(n) + floor
    tol_std = (Z * math.sqrt(max(m4 - s_hat**4, 0.0) / n) / (2 * s_hat) if s_hat > 0 else 0.0) + floor
    assert abs(m_hat - mean) <= tol_mean, f"{what}: mean {m_hat:.6g}, expected {mean:.6g} +- {tol_mean:.2g}"
    assert abs(s_hat - std) <= tol_std, f"{what}: std {s_hat:.6g}, expected {std:.6g} +- {tol_std:.2g}"


def set_pulse_stats(g: float, n: float) -> tuple[float, float]:
    """Mean and std (uS) of one SET increment at conductance g after n pulses (constants.py, J. Appl. Phys.
    2018 fit)."""
    decay = math.exp(-n / C.PCM_SET_N_TAU)
    return (C.PCM_SET_MEAN_G * g + C.PCM_SET_MEAN_0 + C.PCM_SET_MEAN_N * decay,
            C.PCM_SET_STD_G * g + C.PCM_SET_STD_0 + C.PCM_SET_STD_N * decay)


def set_ramp_eps_us() -> float:
    """Nandakumar's eps ("the average conductance change of one pulse") from constants.py: the mean
    increment averaged over the mean SET ramp from the RESET conductance up to the refresh level."""
    g, incs = C.PCM_RESET_MEAN, []
    stop = C.PCM_REFRESH_FRACTION * C.PCM_TRAIN_G_MAX
    for k in itertools.count():
        d, _ = set_pulse_stats(g, k)
        if g + d > stop:
            return sum(incs) / len(incs)
        g += d
        incs.append(d)
    raise AssertionError("unreachable")


@pytest.mark.parametrize("g0,n0", [(3.0, 20.0), (6.0, 20.0), (2.0, 3.0), (5.0, 0.0), (8.5, 5.0)])
def test_pcm_set_increment_matches_nandakumar_fit(g0: float, n0: float) -> None:
    """One SET pulse on N devices at (g0, n0): mean and std of dG against the constants.py fit, the result
    clipped to [PCM_TRAIN_G_MIN, PCM_TRAIN_G_MAX] (exact clipped-normal moments, so no state is exempt)."""
    g = torch.full((N,), g0)
    n = torch.full((N,), n0)
    apply_set_pulses(g, n, torch.ones(N, dtype=torch.int64), PCMPulseConfig(), _gen())
    m, s = set_pulse_stats(g0, n0)
    mean, std = clipped_normal_moments(g0 + m, s, C.PCM_TRAIN_G_MIN, C.PCM_TRAIN_G_MAX)
    assert_moments(g - g0, mean - g0, std, f"dG per SET pulse at G={g0}, n={n0}")
    assert torch.all(n == n0 + 1)


def test_pcm_set_increment_is_deterministic_without_noise() -> None:
    """noise_scale = 0: every device steps by exactly the fit's mean (what eps is built from)."""
    g = torch.full((1000,), 4.0, dtype=torch.float64)
    n = torch.full((1000,), 2.0, dtype=torch.float64)
    apply_set_pulses(g, n, torch.ones(1000, dtype=torch.int64), PCMPulseConfig(noise_scale=0.0), _gen())
    assert torch.allclose(g - 4.0, torch.full_like(g, set_pulse_stats(4.0, 2.0)[0]), rtol=1e-12, atol=0)


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


def test_pcm_eps_is_the_mean_increment_of_a_set_ramp() -> None:
    """eps (uS) = the average mean SET increment from RESET to the refresh level (constants.py), and that is
    also what the device does on that ramp (noise off); the rule's eps is it in weight units."""
    from hwtrain.inmemory.algorithms.mixed_precision import MixedPrecisionRule
    from hwtrain.inmemory.network import build_network
    from hwtrain.inmemory.params import resolve

    eps_us = set_ramp_eps_us()
    assert mean_pulse_increment(PCMPulseConfig()) == pytest.approx(eps_us, rel=1e-9)
    # the same ramp measured on the device model
    g = torch.full((1,), C.PCM_RESET_MEAN, dtype=torch.float64)
    n = torch.zeros(1, dtype=torch.float64)
    incs = []
    while True:
        before = float(g)
        apply_set_pulses(g, n, torch.ones(1, dtype=torch.int64), PCMPulseConfig(noise_scale=0.0))
        if float(g) > C.PCM_REFRESH_FRACTION * C.PCM_TRAIN_G_MAX:
            break
        incs.append(float(g) - before)
    assert sum(incs) / len(incs) == pytest.approx(eps_us, rel=1e-9)
    # in weight units: W = (G+ - G-) * w_max / g_max, with the 'eps' param scaling it
    for w_max, scale in ((0.3, 1.0), (0.05, 0.5)):
        rule = MixedPrecisionRule(torch.zeros(4, 4), w_max=w_max, gen=_gen(), eps_scale=scale)
        assert rule.eps == pytest.approx(scale * eps_us * w_max / C.PCM_TRAIN_G_MAX, rel=1e-9)
    p = resolve({})
    net = build_network("mlp", "mixed-precision", "pcm", p, batch_size=8, gen=_gen())
    for layer in net.analog_layers():
        assert layer.rule.eps == pytest.approx(p["eps"] * eps_us * p["w_max"] / C.PCM_TRAIN_G_MAX, rel=1e-9)


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


@pytest.mark.parametrize("kind", KINDS)
def test_rpu_default_step_is_the_tiki_taka_dw_min(kind: str) -> None:
    """Defaults: one pulse moves w by TT_DW_MIN (at the symmetry point 0; soft bounds scale it by the
    distance to the bound it moves to, w_bound = TT_W_BOUND)."""
    arr = RPUArray((N,), RPUConfig(kind=kind), _gen())
    ones, zeros = torch.ones(N), torch.zeros(N)
    arr.apply_pulses(ones, zeros)
    assert_moments(arr.w, C.TT_DW_MIN, 0.0, f"{kind} up step at w=0")
    arr.set_weights(zeros)
    arr.apply_pulses(zeros, ones)
    assert_moments(arr.w, -C.TT_DW_MIN, 0.0, f"{kind} down step at w=0")
    w0 = 0.5 * C.TT_W_BOUND
    up = 1.0 if kind == "linear" else (C.TT_W_BOUND - w0) / C.TT_W_BOUND
    down = 1.0 if kind == "linear" else (w0 + C.TT_W_BOUND) / C.TT_W_BOUND
    arr.set_weights(torch.full((N,), w0))
    arr.apply_pulses(ones, zeros)
    assert_moments(arr.w - w0, C.TT_DW_MIN * up, 0.0, f"{kind} up step at w={w0}")
    arr.set_weights(torch.full((N,), w0))
    arr.apply_pulses(zeros, ones)
    assert_moments(arr.w - w0, -C.TT_DW_MIN * down, 0.0, f"{kind} down step at w={w0}")


@pytest.mark.parametrize("kind", KINDS)
def test_rpu_single_pulse_statistics_match_gokmen_spec(kind: str) -> None:
    """Gokmen & Vlasov's device (RPU_* constants), N devices at w = 0 (their symmetry point): one pulse is
    dw_min (1 +- asymmetry) (1 + d2d z1)(1 + c2c z2), so mean dw_min (1 +- a), relative std
    sqrt((1 + d2d^2)(1 + c2c^2) - 1)."""
    a = C.RPU_UP_DOWN_ASYMMETRY
    cfg = RPUConfig(kind=kind, dw_min=C.RPU_DW_MIN, w_bound=C.RPU_W_BOUND, asymmetry=a, d2d=C.RPU_D2D,
                    c2c=C.RPU_C2C)
    rel = math.sqrt((1 + C.RPU_D2D**2) * (1 + C.RPU_C2C**2) - 1)
    arr = RPUArray((N,), cfg, _gen(1))
    ones, zeros = torch.ones(N), torch.zeros(N)
    arr.apply_pulses(ones, zeros)
    assert_moments(arr.w, C.RPU_DW_MIN * (1 + a), C.RPU_DW_MIN * (1 + a) * rel, f"{kind} up pulse")
    arr.set_weights(zeros)
    arr.apply_pulses(zeros, ones)
    assert_moments(arr.w, -C.RPU_DW_MIN * (1 - a), C.RPU_DW_MIN * (1 - a) * rel, f"{kind} down pulse")


@pytest.mark.parametrize("algorithm,device", [("sgd", "softbounds"), ("sgd", "linear"),
                                              ("ttv2", "softbounds"), ("agad", "linear")])
def test_training_network_arrays_step_by_the_default_dw_min(algorithm: str, device: str) -> None:
    """The arrays `acompile train-inmemory` builds with default --param values step by TT_DW_MIN."""
    from hwtrain.inmemory.network import build_network
    from hwtrain.inmemory.params import resolve

    net = build_network("mlp", algorithm, device, resolve({}), batch_size=8, gen=_gen())
    for layer in net.analog_layers():
        rule = layer.rule
        for arr in ([rule.array] if algorithm == "sgd" else [rule.a, rule.w]):
            w0 = arr.w.clone()
            arr.apply_pulses(torch.ones_like(w0), torch.zeros_like(w0))
            factor = torch.ones_like(w0) if device == "linear" else (C.TT_W_BOUND - w0) / C.TT_W_BOUND
            step = (arr.w - w0) / factor
            assert torch.allclose(step, torch.full_like(step, C.TT_DW_MIN), rtol=1e-4, atol=1e-8), \
                f"{algorithm}/{device}: step {float(step.mean()):.6g}, not {C.TT_DW_MIN}"


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
