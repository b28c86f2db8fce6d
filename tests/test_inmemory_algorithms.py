"""In-memory training rules: bookkeeping, pulse statistics, one short epoch each on real MNIST."""

from __future__ import annotations

import json
import math

import onnx
import pytest
import torch

from hwtrain.inmemory.algorithms.analog_sgd import AnalogSGDRule
from hwtrain.inmemory.algorithms.mixed_precision import MixedPrecisionRule
from hwtrain.inmemory.algorithms.tiki_taka import TikiTakaRule
from hwtrain.inmemory.params import parse_assignments, resolve
from hwtrain.inmemory.pulse_trains import coincidence_counts
from hwtrain.inmemory.run import train_inmemory
from runtime import contract
from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.rpu_devices import RPUConfig
from tests.test_inmemory_devices import assert_moments, set_pulse_stats, set_ramp_eps_us


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_chi_bookkeeping_conserves_the_update() -> None:
    gen = _gen()
    rule = MixedPrecisionRule(torch.zeros(20, 30), w_max=0.3, gen=gen)
    rule.track = True
    for _ in range(50):
        x = torch.randn(8, 30, generator=gen)
        g = torch.randn(8, 20, generator=gen)
        rule.step(x, g, lr=0.01)
    assert torch.allclose(rule.applied + rule.chi, rule.accumulated, atol=1e-5)
    assert float(rule.chi.abs().max()) < rule.eps  # the residual is always below one pulse
    # applied pulses are integer multiples of eps
    k = rule.applied / rule.eps
    assert torch.allclose(k, k.round(), atol=1e-3)
    assert rule.pulses >= int(k.round().abs().sum())  # per-step pulses; the net count can cancel


def test_mixed_precision_pulses_move_weights_by_eps_on_average() -> None:
    """An accumulated update of 1.5 eps (eps from constants.py, not from the rule) fires exactly one SET pulse
    on G+, leaves 0.5 eps in chi, and moves w by one SET increment (the J. Appl. Phys. 2018 fit at each
    device's state) in weight units w_max / PCM_TRAIN_G_MAX."""
    gen = _gen(1)
    w_max, shape = 1.0, (200, 200)
    rule = MixedPrecisionRule(torch.zeros(shape), w_max=w_max, gen=gen, read_noise=False)
    w_per_us = w_max / C.PCM_TRAIN_G_MAX
    eps = set_ramp_eps_us() * w_per_us
    g0, n0, w0 = rule.pair.g_pos.clone(), rule.pair.n_pos.clone(), rule.weights().clone()
    rule.step(torch.ones(1, shape[1]), -torch.ones(1, shape[0]), lr=1.5 * eps)
    assert rule.pulses == shape[0] * shape[1]
    assert torch.allclose(rule.chi, torch.full(shape, 0.5 * eps), rtol=1e-4)
    dg = (rule.weights() - w0) / w_per_us
    stats = [set_pulse_stats(float(g), float(n)) for g, n in zip(g0.flatten(), n0.flatten(), strict=True)]
    m_i = torch.tensor([m for m, _ in stats], dtype=torch.float64)
    s_i = torch.tensor([s for _, s in stats], dtype=torch.float64)
    # a mixture over the devices' states: total variance = mean of the variances + variance of the means
    std = math.sqrt(float((s_i**2).mean() + m_i.var(unbiased=False)))
    assert_moments(dg, float(m_i.mean()), std, "dG of one mixed-precision pulse")


def test_analog_sgd_update_has_the_sgd_expectation() -> None:
    """Gokmen's RPU (RPU_DW_MIN, BL = RPU_BL): E[dW] = lr * sum_b d_b x_b^T. The pulse probability and the
    step size must agree: a wrong dw_min in either (pulse trains or device) scales the update."""
    gen = _gen(4)
    shape, batch, lr, x_val, d_val = (100, 100), 20, 1e-3, 0.5, 0.5
    cfg = RPUConfig(kind="linear", dw_min=C.RPU_DW_MIN, w_bound=C.RPU_W_BOUND)
    rule = AnalogSGDRule(torch.zeros(shape), cfg=cfg, bl=C.RPU_BL, gen=gen)
    rule.step(torch.full((batch, shape[1]), x_val), torch.full((batch, shape[0]), -d_val), lr=lr)
    expected = lr * batch * x_val * d_val
    # coincidences per device ~ Binomial(B * BL, p q) with p = q = sqrt(lr / (dw_min BL) * |x| |d|)
    slots, pq = batch * C.RPU_BL, lr / (C.RPU_DW_MIN * C.RPU_BL) * x_val * d_val
    std = C.RPU_DW_MIN * math.sqrt(slots * pq * (1 - pq))
    assert_moments(rule.weights(), expected, std, "analog SGD dW")


def test_rpu_rules_count_every_pulse() -> None:
    """Device wear of the pulse-SGD family: on a noise-free linear device an all-positive update moves each
    weight by dw_min per pulse, so the counted pulses = sum(dW) / dw_min; Tiki-Taka counts A's and W's."""
    gen = _gen(6)
    cfg = RPUConfig(kind="linear", dw_min=C.RPU_DW_MIN, w_bound=C.RPU_W_BOUND)
    rule = AnalogSGDRule(torch.zeros(30, 40), cfg=cfg, bl=C.RPU_BL, gen=gen)
    rule.step(torch.rand(8, 40, generator=gen), -torch.rand(8, 30, generator=gen), lr=0.01)
    assert rule.pulses > 0
    assert rule.pulses == round(float(rule.weights().sum()) / C.RPU_DW_MIN)
    up, w_up = rule.pulses, float(rule.weights().sum())
    rule.step(torch.rand(8, 40, generator=gen), torch.rand(8, 30, generator=gen), lr=0.01)  # all down
    assert rule.pulses - up == round((w_up - float(rule.weights().sum())) / C.RPU_DW_MIN) > 0
    tt = TikiTakaRule(torch.zeros(30, 40), variant="ttv2", cfg=cfg, bl=C.RPU_BL, gen=gen, lr_h=1.0,
                      lr_a_scale=1.0, p_flip=0.0, n_cols=40, read_noise=0.0, sync=False, period=1)
    for _ in range(5):
        tt.step(torch.rand(8, 40, generator=gen), -torch.rand(8, 30, generator=gen), lr=0.01)
    a_moved = round(float((tt.a.w - tt.a.symmetry_point()).sum()) / C.RPU_DW_MIN)
    assert tt.transfers > 0 and tt.pulses == a_moved + tt.transfers
    assert tt.w.pulses == tt.transfers


def test_coincidence_counts_expectation_is_the_sgd_update() -> None:
    gen = _gen(2)
    x = torch.tensor([[0.5, -1.0, 0.2]])
    d = torch.tensor([[0.3, -0.6]])
    lr, dw, bl = 0.01, 0.001, 31
    reps = 20_000  # one call with the sample repeated: the trains of all samples are concatenated
    up, down = coincidence_counts(x.repeat(reps, 1), d.repeat(reps, 1), lr, dw, bl, gen)
    expected = lr * d.T @ x / dw
    assert torch.allclose((up - down) / reps, expected, rtol=0.05, atol=0.02)
    assert torch.all(up[expected < 0] == 0) and torch.all(down[expected > 0] == 0)


def test_params_validation_names_the_parameter() -> None:
    with pytest.raises(AcompileError, match="states"):
        resolve({"states": -3})
    with pytest.raises(AcompileError, match="eps"):
        resolve({"eps": 0})
    with pytest.raises(AcompileError, match="unknown"):
        resolve({"nonsense": 1})
    assert parse_assignments("offset=0.3,states=100") == {"offset": 0.3, "states": 100.0}
    with pytest.raises(AcompileError, match="NAME=VALUE"):
        parse_assignments("offset")


def test_bad_algorithm_device_pairs() -> None:
    kw = dict(params={"limit": 100, "test_limit": 100}, batch_size=10, lr=None, seed=0, out=None,
              json_path=None, resume=None, compute="cpu", progress=False)
    with pytest.raises(AcompileError, match="device"):
        train_inmemory("mlp", "mnist", "mixed-precision", "softbounds", 1, **kw)
    with pytest.raises(AcompileError, match="algorithm"):
        train_inmemory("mlp", "mnist", "backprop-magic", "pcm", 1, **kw)


@pytest.mark.parametrize(
    "algorithm,device,params",
    [
        ("mixed-precision", "pcm", {}),
        ("sgd", "softbounds", {"states": 1000}),
        ("ttv2", "softbounds", {}),
        ("cttv2", "softbounds", {"offset": 0.3}),
        ("agad", "softbounds", {"offset": 0.3}),
    ],
)
def test_one_epoch_on_mnist_subset_beats_chance(algorithm: str, device: str, params: dict, tmp_path) -> None:
    torch.set_num_threads(1)
    params = {"limit": 4000, "test_limit": 1000, **params}
    m = train_inmemory("mlp", "mnist", algorithm, device, 1, params=params,
                       batch_size=25, lr=0.1, seed=0, out=None, json_path=tmp_path / "m.json", resume=None,
                       compute="cpu", progress=False)
    assert m["test_accuracy"] > 0.45, m  # chance is 0.10; c-TTv2 learns slowest in one short epoch
    assert json.loads((tmp_path / "m.json").read_text())["algorithm"] == algorithm


def test_resume_from_checkpoint_continues(tmp_path) -> None:
    kw = dict(params={"limit": 500, "test_limit": 200}, batch_size=25, lr=0.1, seed=0, out=None,
              json_path=None, compute="cpu", progress=False)
    ck = tmp_path / "run.ckpt.npz"
    first = train_inmemory("mlp", "mnist", "mixed-precision", "pcm", 1, resume=ck, **kw)
    assert ck.exists() and ck.with_suffix(".json").exists()
    second = train_inmemory("mlp", "mnist", "mixed-precision", "pcm", 2, resume=ck, **kw)
    assert [h["epoch"] for h in second["history"]] == [1, 2]
    assert second["history"][0] == first["history"][0]
    with pytest.raises(AcompileError, match="algorithm"):
        train_inmemory("mlp", "mnist", "fp32", "ideal", 3, resume=ck, **kw)


def test_trained_in_memory_model_exports_to_onnx(tmp_path) -> None:
    out = tmp_path / "mp.onnx"
    m = train_inmemory("mlp", "mnist", "mixed-precision", "pcm", 1, params={"limit": 300, "test_limit": 100},
                       batch_size=25, lr=0.1, seed=0, out=out, json_path=None, resume=None, compute="cpu",
                       progress=False)
    assert m["onnx"] == str(out) and out.exists()
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "mixed-precision" in meta.get(contract.META_RECIPE, "")


@pytest.mark.parametrize("variant,moves", [("ttv2", True), ("cttv2", False), ("agad", False)])
def test_reference_offset_leaks_into_w_only_for_ttv2(variant: str, moves: bool) -> None:
    """No gradient at all, A sits at its symmetry point 0.3 away from R: only TTv2 transfers that offset."""
    from hwtrain.inmemory.algorithms.tiki_taka import TikiTakaRule
    from runtime.physics.rpu_devices import RPUConfig

    gen = _gen(3)
    cfg = RPUConfig(kind="softbounds", dw_min=0.002, offset=0.3)
    rule = TikiTakaRule(torch.zeros(6, 8), variant=variant, cfg=cfg, bl=10, gen=gen, lr_h=0.05, p_flip=0.5,
                        n_cols=8, read_noise=0.0, period=1)
    for _ in range(40):
        rule.step(torch.zeros(4, 8), torch.zeros(4, 6), lr=0.1)
    moved = float(rule.weights().abs().max())
    assert (moved > 0.05) == moves, moved
