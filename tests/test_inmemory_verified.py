"""Mixed-precision training on any registered device: transfers as program-and-verify writes
(runtime/physics/verified_pair.py) through the device interface."""

from __future__ import annotations

import json
import math

import pytest
import torch

from hwtrain.inmemory.algorithms.mixed_precision import MixedPrecisionRule
from hwtrain.inmemory.params import compatible_devices, resolve
from hwtrain.inmemory.rules import make_rule
from hwtrain.inmemory.run import train_inmemory
from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.devices import device_names, make_device
from runtime.physics.pcm_pulse import PCMDifferentialPair
from runtime.physics.verified_pair import VerifiedPair
from tests.test_inmemory_devices import assert_moments


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_every_registered_device_trains_with_mixed_precision() -> None:
    assert set(compatible_devices("mixed-precision")) == set(device_names())
    w = torch.full((4, 5), 0.1)
    for name in device_names():
        rule = make_rule("mixed-precision", name, resolve({}), w, _gen(), 8, w_max=0.4)
        assert isinstance(rule.pair, PCMDifferentialPair if name == "pcm" else VerifiedPair), name
    verified = make_rule("mixed-precision", "pcm", resolve({"verify": 1}), w, _gen(), 8, w_max=0.4)
    assert isinstance(verified.pair, VerifiedPair) and verified.pair.device.name == "pcm"


@pytest.mark.parametrize("name", ["pcm", "rram", "pcm-hermes"])
def test_eps_is_the_programming_spread_at_half_range(name: str) -> None:
    """eps (weight units) = eps_scale x the programming std at g_max / 2 x w_max / (g_max - g_min)."""
    dev = make_device(name)
    w_max, scale = 0.5, 1.5
    rule = MixedPrecisionRule(torch.zeros(3, 3), w_max=w_max, gen=_gen(), eps_scale=scale, device=dev)
    sigma = float(dev.prog_noise_std(torch.tensor([dev.g_max / 2]))[0])
    assert sigma > 0
    assert rule.eps == pytest.approx(scale * sigma * w_max / (dev.g_max - dev.g_min), rel=1e-6)


def test_noiseless_device_steps_in_g_max_over_128() -> None:
    dev = make_device("ideal")
    rule = MixedPrecisionRule(torch.zeros(3, 3), w_max=0.64, gen=_gen(), device=dev)
    assert rule.eps == pytest.approx(0.64 / C.VERIFY_NOISELESS_STEPS)


def test_ideal_device_is_sgd_quantized_to_eps() -> None:
    """Without device noise, what the array holds is exactly the initial weight plus the transferred whole
    eps, and chi keeps the rest: weights + chi == w0 + accumulated update (a dropped or doubled transfer,
    or a transfer on the wrong side, breaks it)."""
    gen = _gen(3)
    w0 = (torch.rand(20, 30, generator=gen) * 2 - 1) * 0.2
    rule = MixedPrecisionRule(w0, w_max=0.4, gen=gen, device=make_device("ideal"))
    assert torch.allclose(rule.weights(), w0, atol=1e-6)
    rule.track = True
    for _ in range(30):
        rule.step(torch.randn(8, 30, generator=gen), torch.randn(8, 20, generator=gen), lr=0.002)
    assert float(rule.weights().abs().max()) < 0.4  # no weight at w_max: nothing clipped
    assert torch.allclose(rule.weights() - w0, rule.applied, atol=1e-5)
    assert torch.allclose(rule.weights() + rule.chi, w0 + rule.accumulated, atol=1e-5)
    assert float(rule.chi.abs().max()) < rule.eps
    # each weight sits on the device of its sign, the partner at g_min
    pair = rule.pair
    w = rule.weights()
    assert torch.all(pair.g_neg[w > 0] == 0) and torch.all(pair.g_pos[w < 0] == 0)
    assert bool((w < 0).any()) and bool((w > 0).any())


def test_a_transfer_is_one_verify_write_with_the_device_spread() -> None:
    """p steps re-program the weight's device to its current conductance + p eps: the new conductance is
    N(target, prog_noise_std(target)) of the device (rram, Wan 2022 fit), the partner is not touched."""
    dev = make_device("rram")
    shape, w_max = (300, 300), 1.0
    rule = MixedPrecisionRule(torch.full(shape, 0.4), w_max=w_max, gen=_gen(5), device=dev, read_noise=False)
    pair = rule.pair
    w_per_us = w_max / dev.g_max
    g_before, neg_before = pair.g_pos.clone(), pair.g_neg.clone()
    rule.step(torch.ones(1, shape[1]), -torch.ones(1, shape[0]), lr=2.5 * rule.eps)  # 2 whole steps
    assert rule.pulses == shape[0] * shape[1]  # one write per weight
    assert torch.allclose(rule.chi, torch.full(shape, 0.5 * rule.eps), rtol=1e-4)
    assert torch.equal(pair.g_neg, neg_before)
    target = g_before + 2 * rule.eps / w_per_us  # the partner (its RESET-side offset included) untouched
    z = (pair.g_pos - target) / dev.prog_noise_std(target)
    assert_moments(z, 0.0, 1.0, "verify-write error / device programming std")


def test_a_write_across_zero_moves_the_weight_to_the_other_device() -> None:
    dev = make_device("ideal")
    rule = MixedPrecisionRule(torch.full((2, 2), 0.01), w_max=0.64, gen=_gen(), device=dev)
    eps = rule.eps
    rule.step(torch.ones(1, 2), torch.ones(1, 2), lr=3.2 * eps)  # -3 steps from +2 eps (0.01 = 2 eps)
    assert torch.allclose(rule.weights(), torch.full((2, 2), 0.01 - 3 * eps), atol=1e-7)
    assert torch.all(rule.pair.g_pos == 0)
    assert torch.allclose(rule.pair.g_neg, torch.full((2, 2), eps * dev.g_max / 0.64), atol=1e-5)


def test_read_noise_is_the_devices_in_quadrature() -> None:
    """rram reads: ~1 % of g_max per device (Wan 2022 / aihwkit), two devices per weight."""
    dev = make_device("rram")
    rule = MixedPrecisionRule(torch.full((400, 400), 0.3), w_max=1.0, gen=_gen(7), device=dev)
    noise = rule.read() - rule.weights()
    assert_moments(noise, 0.0, math.sqrt(2) * C.RRAM_READ_NOISE * dev.g_max / dev.g_max, "rram read noise")
    quiet = MixedPrecisionRule(torch.full((4, 4), 0.3), w_max=1.0, gen=_gen(7), device=dev, read_noise=False)
    assert torch.equal(quiet.read(), quiet.weights())


@pytest.mark.parametrize("device,params", [("rram", {}), ("pcm-hermes", {}), ("pcm", {"verify": 1})])
def test_one_epoch_on_real_mnist_beats_chance(device: str, params: dict, tmp_path) -> None:
    torch.set_num_threads(1)
    m = train_inmemory("mlp", "mnist", "mixed-precision", device, 1,
                       params={"limit": 4000, "test_limit": 1000, **params}, batch_size=25, lr=0.1, seed=0,
                       out=None, json_path=tmp_path / "m.json", resume=None, compute="cpu", progress=False)
    assert m["test_accuracy"] > 0.75, m
    rec = json.loads((tmp_path / "m.json").read_text())
    assert rec["device"] == device
    assert all(layer["writes_are"] == "verify writes" for layer in rec["layers"]), rec["layers"]


def test_resume_restores_the_verified_arrays(tmp_path) -> None:
    kw = dict(params={"limit": 500, "test_limit": 200}, batch_size=25, lr=0.1, seed=0, out=None,
              json_path=None, compute="cpu", progress=False)
    ck = tmp_path / "run.ckpt.npz"
    first = train_inmemory("mlp", "mnist", "mixed-precision", "rram", 1, resume=ck, **kw)
    second = train_inmemory("mlp", "mnist", "mixed-precision", "rram", 2, resume=ck, **kw)
    assert second["history"][0] == first["history"][0] and len(second["history"]) == 2


def test_rpu_algorithms_refuse_registered_devices() -> None:
    kw = dict(params={"limit": 100, "test_limit": 100}, batch_size=10, progress=False)
    with pytest.raises(AcompileError, match="runs on device"):
        train_inmemory("mlp", "mnist", "sgd", "rram", 1, **kw)
    with pytest.raises(AcompileError, match="unknown training device"):
        train_inmemory("mlp", "mnist", "mixed-precision", "flash", 1, **kw)
