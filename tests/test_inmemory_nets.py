"""In-memory training beyond the MLP: AnalogConv2d, AnalogLSTM and the cnn / charlstm / gan networks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from hwtrain.inmemory.algorithms.fp32 import FP32Rule
from hwtrain.inmemory.algorithms.mixed_precision import MixedPrecisionRule
from hwtrain.inmemory.analog_conv import AnalogConv2d
from hwtrain.inmemory.analog_layer import Periphery
from hwtrain.inmemory.analog_lstm import AnalogLSTM
from hwtrain.inmemory.run import train_inmemory

torch.set_num_threads(1)
EXACT = Periphery(enabled=False)


def _gen(seed: int = 0) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class CountingRule(FP32Rule):
    """FP32Rule that remembers what each step got."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__(w)
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def step(self, x: torch.Tensor, grad_out: torch.Tensor, lr: float) -> None:
        self.calls.append((x.clone(), grad_out.clone()))
        super().step(x, grad_out, lr)


def test_conv_update_is_the_sum_of_patch_outer_products() -> None:
    """2x2 kernel on a 3x3 image: 4 patches; dL/dW = sum over output positions of G[i,j] * patch(i,j)."""
    x = torch.arange(1.0, 10.0).view(1, 1, 3, 3).requires_grad_(True)
    w0 = torch.tensor([[0.5, -1.0, 0.25, 2.0]])  # [out=1, in*kh*kw=4] in (kh, kw) order
    rule = CountingRule(w0)
    conv = AnalogConv2d(rule, torch.zeros(1), EXACT, None, in_channels=1, kernel_size=2)
    y = conv(x)
    assert y.shape == (1, 1, 2, 2)
    # forward by hand: patch (0,0) = [1, 2, 4, 5] -> 0.5 - 2 + 1 + 10 = 9.5
    assert float(y.detach()[0, 0, 0, 0]) == pytest.approx(9.5)
    upstream = torch.tensor([[[[1.0, -1.0], [2.0, 0.5]]]])
    (y * upstream).sum().backward()
    # patches (0,0) [1,2,4,5], (0,1) [2,3,5,6], (1,0) [4,5,7,8], (1,1) [5,6,8,9], weighted 1, -1, 2, 0.5:
    grad_w = torch.tensor([[1 - 2 + 8 + 2.5, 2 - 3 + 10 + 3, 4 - 5 + 14 + 4, 5 - 6 + 16 + 4.5]])
    # input gradient (the backward MVM, folded back): dL/dx[p, q] = sum over (i, j) of G[i, j] W[p-i, q-j]
    k = w0.view(2, 2)
    g = upstream[0, 0]
    gx = torch.zeros(3, 3)
    for i in range(2):
        for j in range(2):
            gx[i:i + 2, j:j + 2] += g[i, j] * k
    assert torch.allclose(x.grad[0, 0], gx)
    conv.update(lr=0.1)
    assert len(rule.calls) == 1 and rule.calls[0][0].shape == (4, 4)  # one step with all 4 patch rows
    assert torch.allclose(rule.w, w0 - 0.1 * grad_w)
    assert float(conv.bias.detach()) == pytest.approx(-0.1 * (1 - 1 + 2 + 0.5))  # digital bias: sum of G


def _sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_lstm_one_cell_update_accumulates_both_steps() -> None:
    """Hidden 1, input 1, two steps, L = h_2: BPTT by hand; one update with the rows of both steps."""
    w0 = torch.tensor([[0.3, -0.2], [0.5, 0.4], [-0.6, 0.7], [0.2, 0.1]])  # rows i, f, g, o; cols x, h
    b0 = torch.tensor([0.1, -0.1, 0.05, 0.2])
    rule = CountingRule(w0)
    lstm = AnalogLSTM(rule, b0, EXACT, None, input_size=1, hidden_size=1)
    xs = [0.8, -1.5]
    out, _ = lstm(torch.tensor(xs).view(1, 2, 1))
    out[0, 1, 0].backward()
    lstm.update(lr=0.5)

    W, b = w0.tolist(), b0.tolist()

    def cell(x: float, h: float, c: float):
        a = [W[k][0] * x + W[k][1] * h + b[k] for k in range(4)]
        i, f, g, o = _sig(a[0]), _sig(a[1]), math.tanh(a[2]), _sig(a[3])
        c2 = f * c + i * g
        return (i, f, g, o), c2, o * math.tanh(c2)

    (i1, f1, g1, o1), c1, h1 = cell(xs[0], 0.0, 0.0)
    (i2, f2, g2, o2), c2, h2 = cell(xs[1], h1, c1)
    assert float(out.detach()[0, 1, 0]) == pytest.approx(h2, abs=1e-6)
    # step 2 (dL/dh2 = 1)
    dc2 = o2 * (1 - math.tanh(c2) ** 2)
    da2 = [dc2 * g2 * i2 * (1 - i2), dc2 * c1 * f2 * (1 - f2), dc2 * i2 * (1 - g2 ** 2),
           math.tanh(c2) * o2 * (1 - o2)]
    # step 1: h1 feeds step 2 through the recurrent column, c1 through the forget gate
    dh1 = sum(da2[k] * W[k][1] for k in range(4))
    dc1 = dc2 * f2 + dh1 * o1 * (1 - math.tanh(c1) ** 2)
    da1 = [dc1 * g1 * i1 * (1 - i1), 0.0, dc1 * i1 * (1 - g1 ** 2), dh1 * math.tanh(c1) * o1 * (1 - o1)]
    grad_w = [[da1[k] * xs[0] + da2[k] * xs[1], da1[k] * 0.0 + da2[k] * h1] for k in range(4)]
    expect = torch.tensor(W) - 0.5 * torch.tensor(grad_w)
    assert len(rule.calls) == 1 and rule.calls[0][0].shape == (2, 2)  # one step, both time steps' rows
    assert torch.allclose(rule.w, expect, atol=1e-6)
    assert torch.allclose(lstm.bias.detach(), b0 - 0.5 * torch.tensor([da1[k] + da2[k] for k in range(4)]),
                          atol=1e-6)


def test_analog_forward_and_backward_match_torch_when_exact() -> None:
    """PCM arrays (mixed precision) read without noise, periphery off: F.conv2d and nn.LSTM, values and
    input gradients."""
    gen = _gen(3)
    w = torch.randn(8, 3 * 9, generator=gen) * 0.2
    rule = MixedPrecisionRule(w, w_max=1.0, gen=gen, read_noise=False)
    conv = AnalogConv2d(rule, torch.randn(8, generator=gen) * 0.1, EXACT, gen, in_channels=3, kernel_size=3,
                        padding=1)
    x = torch.randn(2, 3, 6, 5, generator=gen, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    y = conv(x)
    ref = F.conv2d(x_ref, conv.conv_weight(), conv.bias.detach(), padding=1)
    assert torch.allclose(y, ref, atol=1e-5)
    up = torch.randn(y.shape, generator=gen)
    (y * up).sum().backward()
    (ref * up).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)

    n_in, hs = 5, 4
    w = torch.randn(4 * hs, n_in + hs, generator=gen) * 0.3
    rule = MixedPrecisionRule(w, w_max=1.5, gen=gen, read_noise=False)
    lstm = AnalogLSTM(rule, torch.randn(4 * hs, generator=gen) * 0.1, EXACT, gen, input_size=n_in,
                      hidden_size=hs)
    ref = torch.nn.LSTM(n_in, hs, batch_first=True)
    with torch.no_grad():
        weff = rule.weights()
        ref.weight_ih_l0.copy_(weff[:, :n_in])
        ref.weight_hh_l0.copy_(weff[:, n_in:])
        ref.bias_ih_l0.copy_(lstm.bias)
        ref.bias_hh_l0.zero_()
    x = torch.randn(3, 6, n_in, generator=gen, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, (h, c) = lstm(x)
    out_ref, (h_ref, c_ref) = ref(x_ref)
    assert torch.allclose(out, out_ref, atol=1e-5)
    assert torch.allclose(c, c_ref[0], atol=1e-5)
    up = torch.randn(out.shape, generator=gen)
    (out * up).sum().backward()
    (out_ref * up).sum().backward()
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-5)


def _pulses_consistent(m: dict) -> None:
    total = sum(layer["pulses"] for layer in m["layers"])
    assert total > 0
    per_epoch = sum(h["set_pulses_per_weight"] for h in m["history"])
    assert per_epoch == pytest.approx(total / m["weights"])


@pytest.mark.parametrize("model,dataset,params,lr", [
    ("cnn", "cifar10", {"limit": 640, "test_limit": 200}, None),
    ("charlstm", "tinyshakespeare", {"limit": 64 * 32 * 20 + 1, "test_limit": 4000}, 3.0),
])
def test_short_real_data_run_loss_falls(model: str, dataset: str, params: dict, lr: float | None) -> None:
    m = train_inmemory(model, dataset, "mixed-precision", "pcm", 1, params=params, batch_size=None, lr=lr,
                       seed=0, progress=False)
    h = m["history"][0]
    assert h["updates"] == 20
    assert h["loss_last_fifth"] < h["loss_first_fifth"] - 0.2
    _pulses_consistent(m)
    if model == "cnn":
        assert h["test_accuracy"] > m["initial"]["test_accuracy"] and 0 <= h["exact_accuracy"] <= 1
    else:
        assert h["val_bpc"] < m["initial"]["val_bpc"] - 0.3


def test_short_gan_run_discriminator_loss_falls_and_scores(tmp_path) -> None:
    png = tmp_path / "grid.png"
    m = train_inmemory("gan", "mnist", "mixed-precision", "pcm", 1, params={"limit": 1280, "test_limit": 500},
                       batch_size=None, lr=0.2, seed=0, progress=False, samples_png=png)
    h = m["history"][0]
    assert h["updates"] == 20
    assert h["loss_last_fifth"] < h["loss_first_fifth"]  # D learns to tell real from generated
    assert 0 < h["lenet_confidence"] <= 1 and 0 <= h["class_entropy_bits"] <= math.log2(10) + 1e-9
    assert h["frechet_lenet"] > 0
    assert sum(h["class_histogram"]) == pytest.approx(1.0, abs=1e-3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _pulses_consistent(m)


def test_frechet_distance_of_shifted_gaussians() -> None:
    """FD of N(0, I) and N(mu, 4 I) in d dims = |mu|^2 + d (1 + 4 - 2 * 2) = |mu|^2 + d."""
    import numpy as np

    from hwtrain.inmemory.gan_scores import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.standard_normal((200_000, 3))
    b = 2 * rng.standard_normal((200_000, 3)) + np.array([1.0, 0.0, 2.0])
    assert frechet_distance(a, b) == pytest.approx(5 + 3, rel=0.02)


def test_output_array_takes_its_own_w_max() -> None:
    """--param w_max_out_rel=K: the output array's w_max (the classifier's; the GAN discriminator's) is K x
    its init bound, every other array keeps w_max_rel x its own (He-uniform for the convs, 1/sqrt(hidden)
    for the LSTM, gain/sqrt(fan-in) for the GAN's)."""
    from hwtrain.inmemory import params
    from hwtrain.inmemory.nets import build_net

    p = params.resolve({"w_max_out_rel": 8.0})
    cnn = build_net("cnn", "mixed-precision", "pcm", p, 4, _gen())
    assert cnn.fc.rule.w_scale == pytest.approx(8.0 / math.sqrt(32 * 8 * 8))
    fan_ins = [3 * 9, 16 * 9, 16 * 9, 32 * 9]
    assert [c.rule.w_scale for c in cnn.convs] == pytest.approx([2.0 * math.sqrt(6.0 / f) for f in fan_ins])
    lstm = build_net("charlstm", "mixed-precision", "pcm", p, 4, _gen())
    assert lstm.fc.rule.w_scale == pytest.approx(8.0 / math.sqrt(128))
    assert lstm.lstm.rule.w_scale == pytest.approx(2.0 / math.sqrt(128))
    gan = build_net("gan", "mixed-precision", "pcm", p, 4, _gen())
    assert gan.d2.rule.w_scale == pytest.approx(8.0 * math.sqrt(3) / math.sqrt(256))  # D's output
    assert gan.g2.rule.w_scale == pytest.approx(2.0 * math.sqrt(3) / math.sqrt(256))  # G's keeps 2x
    default = build_net("cnn", "mixed-precision", "pcm", params.resolve({}), 4, _gen())
    assert default.fc.rule.w_scale == pytest.approx(2.0 / math.sqrt(32 * 8 * 8))
