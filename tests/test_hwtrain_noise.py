"""HWA building blocks: forward-only weight noise of the configured std, clipping, strip/restore."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hwtrain.noise import (
    HWAConfig,
    apply_hwa,
    clean_state_dict,
    clean_weight,
    clip_weights_,
    load_clean_state_dict,
    strip_hwa,
    weight_noise_std,
)
from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.devices.pcm import prog_noise_std


def _linear(seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(200, 100)


def test_noise_has_configured_std_and_is_forward_only():
    layer = _linear()
    clean = layer.weight.detach().clone()
    apply_hwa(layer, HWAConfig(noise=0.04, clip=0.0))
    layer.train()
    deltas = torch.stack([layer.weight.detach() - clean for _ in range(20)])
    expected = 0.04 * clean.abs().max()
    assert deltas.mean().abs() < 0.02 * expected
    assert abs(float(deltas.std()) / float(expected) - 1.0) < 0.02  # 400k samples: ~0.1 % sampling error
    assert not torch.equal(deltas[0], deltas[1])  # resampled every forward
    # gradient reaches the clean weight unchanged: d(sum(W x))/dW = x, whatever the noise
    x = torch.randn(8, 200)
    layer(x).sum().backward()
    w = clean_weight(layer)
    assert torch.allclose(w.grad, x.sum(0).expand(100, 200), atol=1e-5)
    assert torch.equal(w.detach(), clean)  # the stored weight never sees the noise


def test_eval_mode_is_noise_free():
    layer = _linear()
    clean = layer.weight.detach().clone()
    apply_hwa(layer, HWAConfig(noise=0.1))
    layer.eval()
    assert torch.equal(layer.weight, clean)


def _prog_sigma_rel(x: torch.Tensor) -> torch.Tensor:
    """PCM programming-noise std relative to g_max at x = g / g_max (constants.py fit, made at PCM_G_MAX)."""
    c0, c1, c2 = C.PCM_PROG_NOISE_COEFFS
    return (c0 + c1 * x + c2 * x * x).clamp(min=0.0) / C.PCM_G_MAX


@pytest.mark.parametrize("w_max", [0.05, 7.0])
def test_pcm_shaped_noise_follows_programming_curve(w_max):
    """std(w) = (eta / HWA_ETA_TRAIN) * sigma_prog(|w| / max|W| * g_max) / g_max * max|W|: the programming
    noise of the conductance that encodes w, in weight units (max|W| far from 1, so its factor counts)."""
    w = torch.linspace(-w_max, w_max, 101)
    cfg = HWAConfig(noise=0.038, noise_shape="pcm")
    std = weight_noise_std(w, cfg)
    expected = (0.038 / C.HWA_ETA_TRAIN) * _prog_sigma_rel(w.abs() / w_max) * w_max
    assert torch.allclose(std, expected, rtol=1e-5)
    # the same curve as the shared PCM inference model's programming noise (its g_max is the fit's)
    g_max = C.PCM_G_MAX
    assert torch.allclose(std, prog_noise_std(w.abs() / w_max * g_max, g_max) / g_max * w_max)
    assert std[50] > 0  # zero weights still get the device's noise floor


@pytest.mark.parametrize("w_max", [0.05, 7.0])
@pytest.mark.parametrize("eta", [C.HWA_ETA_TRAIN, 0.02])
def test_pcm_shaped_noise_injected_std_is_measured(w_max, eta):
    """The noise a training-mode forward actually adds, measured per weight level over many draws, against
    (eta / HWA_ETA_TRAIN) * sigma_prog(x g_max) / g_max * max|W|, x = |w| / max|W|."""
    torch.manual_seed(0)
    levels = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    cols, draws = 2000, 10
    layer = nn.Linear(cols, len(levels), bias=False)
    sign = torch.where(torch.arange(cols) % 2 == 0, 1.0, -1.0)
    with torch.no_grad():
        layer.weight.copy_(levels[:, None] * w_max * sign)
    clean = layer.weight.detach().clone()
    apply_hwa(layer, HWAConfig(noise=eta, noise_shape="pcm", clip=0.0))
    layer.train()
    noise = torch.stack([layer.weight.detach() - clean for _ in range(draws)]).double()  # [draws, level, col]
    n = draws * cols
    for i, x in enumerate(levels):
        want = (eta / C.HWA_ETA_TRAIN) * float(_prog_sigma_rel(x)) * w_max
        got = noise[:, i].flatten()
        # Gaussian samples: SE(mean) = sigma / sqrt(n), SE(std) = sigma / sqrt(2 (n - 1)); 5 SE
        mean, std = float(got.mean()), float(got.std())
        tol_mean, tol_std = 5 * want / math.sqrt(n), 5 * want / math.sqrt(2 * (n - 1))
        assert abs(mean) < tol_mean, f"level {float(x)}: mean {mean:.4g}"
        assert abs(std - want) < tol_std, f"level {float(x)}: std {std:.4g}, expected {want:.4g}"


def test_clipping_bounds_hold():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(50, 50), nn.ReLU(), nn.Conv2d(3, 4, 3))
    with torch.no_grad():
        model[0].weight.mul_(10).add_(torch.randn(50, 50) ** 3)
    apply_hwa(model, HWAConfig(noise=0.05, clip=2.0))
    stds = [float(clean_weight(m).detach().std()) for m in (model[0], model[2])]
    clip_weights_(model, 2.0)
    for m, s in zip((model[0], model[2]), stds, strict=True):
        assert float(clean_weight(m).detach().abs().max()) <= 2.0 * s + 1e-6
    assert float(clean_weight(model[0]).detach().abs().max()) == pytest.approx(2.0 * stds[0], rel=1e-5)


def test_strip_restores_plain_module_and_state_dict_names():
    model = nn.Sequential(nn.Linear(4, 3))
    apply_hwa(model, HWAConfig(noise=0.05, dac_bits=8, adc_bits=8))
    state = clean_state_dict(model)
    assert set(state) == {"0.weight", "0.bias"}
    other = nn.Sequential(nn.Linear(4, 3))
    apply_hwa(other, HWAConfig(noise=0.05))
    load_clean_state_dict(other, state)
    strip_hwa(model)
    strip_hwa(other)
    assert set(model.state_dict()) == {"0.weight", "0.bias"}
    assert torch.equal(model[0].weight, other[0].weight)
    assert not model[0]._forward_pre_hooks and not model[0]._forward_hooks


def test_dac_adc_quantize_straight_through():
    torch.manual_seed(0)
    layer = nn.Linear(16, 8, bias=False)
    apply_hwa(layer, HWAConfig(noise=0.0, clip=0.0, dac_bits=3, adc_bits=4, out_bound=2.0))
    layer.train()
    x = torch.randn(32, 16, requires_grad=True)
    y = layer(x)
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # straight-through: gradient flows
    scale = layer._hwa_layer.input_range * layer.weight.abs().max()
    levels = (y.detach() / scale) * 7 / 2.0  # 4 bits: 7 positive levels over +-out_bound
    assert torch.allclose(levels, levels.round(), atol=1e-4)


@pytest.mark.parametrize("kw", [{"noise": -0.1}, {"clip": -1}, {"noise_shape": "uniform"}, {"dac_bits": 1}])
def test_bad_config_is_a_user_error(kw):
    with pytest.raises(AcompileError):
        HWAConfig(**kw)


def test_periphery_is_off_in_eval_mode():
    layer = _linear()
    ref = layer(torch.randn(3, 200))
    apply_hwa(layer, HWAConfig(noise=0.0, clip=0.0, dac_bits=4, adc_bits=4))
    layer.eval()
    x = torch.randn(3, 200)
    assert torch.equal(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    assert ref.shape == (3, 100)


def test_linear_adc_quantizes_each_tile_row_block():
    from runtime.physics.periphery import quantize

    torch.manual_seed(0)
    layer = nn.Linear(600, 5)
    cfg = HWAConfig(noise=0.0, clip=0.0, adc_bits=6, out_bound=3.0, tile_rows=256)
    apply_hwa(layer, cfg)
    x = torch.randn(4, 600)
    layer.train()  # noise 0: training mode is deterministic, and the periphery acts in it only
    y = layer(x).detach()
    scale = layer.weight.abs().max()  # no DAC: inputs are not normalized (the emulator's r = 1)
    w = layer.weight.detach()
    blocks = [quantize(x[:, i : i + 256] @ w[:, i : i + 256].T / scale, 6, 3.0) for i in (0, 256, 512)]
    assert torch.allclose(y, sum(blocks) * scale + layer.bias.detach(), atol=1e-5)


def test_conv_periphery_splits_row_blocks_like_the_tiles():
    """A conv with 64 input channels and 3x3 kernels has 576 rows: three 256-row tiles, each with its own
    ADC (the emulator's split; hwtrain used to quantize a conv as one block)."""
    from runtime.physics.periphery import quantize

    torch.manual_seed(0)
    layer = nn.Conv2d(64, 8, 3, padding=1, bias=False)
    apply_hwa(layer, HWAConfig(noise=0.0, clip=0.0, adc_bits=5, out_bound=1.0, tile_rows=256))
    assert layer._hwa_layer.geo.row_blocks == [(0, 256), (256, 512), (512, 576)]
    x = torch.randn(2, 64, 5, 5)
    layer.train()
    y = layer(x).detach()
    w = layer.weight.detach()
    w_max = w.abs().max()
    wm = w.reshape(8, -1).t()  # rows in (c, kh, kw) order
    blocks = []
    for rs, re in layer._hwa_layer.geo.row_blocks:
        mask = torch.zeros(576, 1)
        mask[rs:re] = 1
        wb = (wm * mask).t().reshape(8, 64, 3, 3) / w_max
        blocks.append(quantize(nn.functional.conv2d(x, wb, padding=1), 5, 1.0))
    assert torch.allclose(y, sum(blocks) * w_max, atol=1e-5)
    one_block = quantize(nn.functional.conv2d(x, w / w_max, padding=1), 5, 1.0) * w_max
    assert not torch.allclose(y, one_block, atol=1e-3)
