"""AnalogConv2d: a convolution on a crossbar, the array seeing the unrolled patches (im2col).

The kernel W [out, in*kh*kw] (torch's conv weight flattened in F.unfold's (c, kh, kw) order) lives on one
array. Forward: patches = F.unfold(x) -> rows [N*L, in*kh*kw] -> analog MVM rows @ W^T -> [N, out, H', W'].
Backward: the error rows [N*L, out] @ W is the transposed MVM on the same array (RecordedArray), and
F.unfold's autograd (a fold) scatters it back onto the input. The update is UpdateRule.step with all
N*L patch rows of the minibatch: the sum of outer products = the conv weight gradient (for mixed
precision accumulated in chi and transferred as SET pulses). Bias digital (plain SGD).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hwtrain.inmemory.analog_layer import Periphery, RecordedArray, UpdateRule


class AnalogConv2d(RecordedArray):
    def __init__(self, rule: UpdateRule, bias: torch.Tensor, periphery: Periphery,
                 gen: torch.Generator | None,
                 *, in_channels: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(rule, bias, periphery, gen)
        self.in_channels, self.kernel_size = in_channels, kernel_size
        self.stride, self.padding = stride, padding
        n_out, n_in = rule.weights().shape
        if n_in != in_channels * kernel_size * kernel_size:
            raise ValueError(f"AnalogConv2d: array has {n_in} rows, need {in_channels}*{kernel_size}^2")
        self.out_channels = n_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        k, s, p = self.kernel_size, self.stride, self.padding
        ho, wo = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        cols = F.unfold(x, k, padding=p, stride=s)  # [N, C*k*k, L]
        rows = cols.transpose(1, 2).reshape(n * ho * wo, -1)
        y = self.mvm(rows)  # [N*L, out]
        y = y.reshape(n, ho * wo, self.out_channels).transpose(1, 2).reshape(n, self.out_channels, ho, wo)
        return y + self.bias.view(1, -1, 1, 1)

    def conv_weight(self) -> torch.Tensor:
        """The effective (noise-free) kernel as torch's [out, in, kh, kw]."""
        k = self.kernel_size
        return self.rule.weights().reshape(self.out_channels, self.in_channels, k, k)
