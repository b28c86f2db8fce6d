"""The networks beyond the MLP (after Nandakumar et al., Front. Neurosci. 2020: CNN, LSTM and GAN trained
with mixed precision on PCM): every weight matrix is an analog array with its UpdateRule, every bias digital.

    cnn       CIFAR-10, VGG-style: conv 3->w->w, max-pool, conv w->2w->2w, max-pool, fc 2w*8*8 -> 10
              (3x3 kernels, padding 1; w = param `width`, default 16)
    charlstm  Tiny Shakespeare: one-hot chars -> AnalogLSTM(hidden) -> AnalogLinear(hidden -> vocab)
    gan       MNIST: G z(64) -> 256 ReLU -> 784 tanh;  D 784 -> 256 LeakyReLU(0.2) -> 1 (logit)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from hwtrain.inmemory.analog_conv import AnalogConv2d
from hwtrain.inmemory.analog_layer import AnalogLinear
from hwtrain.inmemory.analog_lstm import AnalogLSTM
from hwtrain.inmemory.rules import make_periphery, make_rule

VOCAB = 65  # Tiny Shakespeare's characters
Z_DIM = 64


class AnalogCNN(nn.Module):
    def __init__(self, convs: list[AnalogConv2d], fc: AnalogLinear) -> None:
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.fc = fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if i % 2 == 1:
                x = F.max_pool2d(x, 2)
        return self.fc(x.flatten(1))

    def analog_layers(self) -> list[nn.Module]:
        return [*self.convs, self.fc]


class AnalogCharLSTM(nn.Module):
    def __init__(self, lstm: AnalogLSTM, fc: AnalogLinear, vocab: int) -> None:
        super().__init__()
        self.lstm, self.fc, self.vocab = lstm, fc, vocab

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        """chars [B, T] int64 -> logits [B, T, vocab]."""
        x = F.one_hot(chars, self.vocab).to(torch.float32)
        h, _ = self.lstm(x)
        b, t, hs = h.shape
        return self.fc(h.reshape(b * t, hs)).reshape(b, t, -1)

    def analog_layers(self) -> list[nn.Module]:
        return [self.lstm, self.fc]


class AnalogGAN(nn.Module):
    def __init__(self, g1: AnalogLinear, g2: AnalogLinear, d1: AnalogLinear, d2: AnalogLinear) -> None:
        super().__init__()
        self.g1, self.g2, self.d1, self.d2 = g1, g2, d1, d2

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z_DIM] -> images [B, 784] in [-1, 1]."""
        return torch.tanh(self.g2(torch.relu(self.g1(z))))

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        """images [B, 784] in [-1, 1] -> real/fake logit [B]."""
        return self.d2(F.leaky_relu(self.d1(x), 0.2)).squeeze(1)

    def generator_layers(self) -> list[AnalogLinear]:
        return [self.g1, self.g2]

    def discriminator_layers(self) -> list[AnalogLinear]:
        return [self.d1, self.d2]

    def analog_layers(self) -> list[nn.Module]:
        return [self.g1, self.g2, self.d1, self.d2]


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, device=gen.device) * 2 - 1) * bound


def build_net(model: str, algorithm: str, device: str, p: dict[str, float], batch_size: int,
              gen: torch.Generator) -> nn.Module:
    """One of params.NETS with one UpdateRule per array (rules.make_rule); weights drawn from `gen`."""
    per = make_periphery(algorithm, p)

    def rule(w: torch.Tensor, bound: float, rel: float | None = None):
        return make_rule(algorithm, device, p, w, gen, batch_size, (rel or p["w_max_rel"]) * bound)

    def linear(n_in: int, n_out: int, gain: float = 1.0, rel: float | None = None) -> AnalogLinear:
        bound = gain / math.sqrt(n_in)
        w, b = _uniform((n_out, n_in), bound, gen), _uniform((n_out,), 1 / math.sqrt(n_in), gen)
        return AnalogLinear(rule(w, bound, rel), b, per, gen)

    out_rel = p["w_max_out_rel"] or None  # the classifier's weights outgrow their init bound the most

    if model == "cnn":
        width = int(p["width"])
        chans = [3, width, width, 2 * width, 2 * width]
        convs = []
        for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
            fan_in = c_in * 9
            bound = math.sqrt(6.0 / fan_in)  # He-uniform: plain SGD, no batch norm
            w = _uniform((c_out, fan_in), bound, gen)
            convs.append(AnalogConv2d(rule(w, bound), torch.zeros(c_out), per, gen, in_channels=c_in,
                                      kernel_size=3, padding=1))
        return AnalogCNN(convs, linear(chans[-1] * 8 * 8, 10, rel=out_rel))
    if model == "charlstm":
        hs = int(p["hidden"])
        bound = 1 / math.sqrt(hs)  # torch.nn.LSTM's init
        w = _uniform((4 * hs, VOCAB + hs), bound, gen)
        b = _uniform((4 * hs,), bound, gen)
        b[hs:2 * hs] += 1.0  # forget-gate bias 1
        lstm = AnalogLSTM(rule(w, bound), b, per, gen, input_size=VOCAB, hidden_size=hs)
        return AnalogCharLSTM(lstm, linear(hs, VOCAB, rel=out_rel), VOCAB)
    if model == "gan":
        return AnalogGAN(linear(Z_DIM, 256, math.sqrt(6)), linear(256, 784, math.sqrt(3)),
                         linear(784, 256, math.sqrt(6)), linear(256, 1, math.sqrt(3), rel=out_rel))
    raise ValueError(model)
