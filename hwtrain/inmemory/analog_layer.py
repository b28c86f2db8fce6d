"""A linear layer whose forward and backward MVMs run through an emulated crossbar.

Forward: y = ADC(DAC(x) @ W_read^T + noise) + b; backward: dx = ADC(DAC(g) @ W_read + noise), each
with a fresh noisy read of the array (read noise / output noise are per MVM), through the one periphery
of runtime/physics/periphery.py (`periphery_mvm`: row blocks of the tile with an ADC each, the same DAC
and ADC codes as the emulator). Its DAC range is each sample's max |x| (aihwkit's "abs-max noise
management"), the one choice that differs from inference (see periphery.py).
The weight gradient is NOT computed by autograd: the layer keeps (x, g) of the last step for the
in-memory update rule (`UpdateRule.step`). The bias is digital and updated by plain SGD.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from runtime.physics import constants as C
from runtime.physics.periphery import periphery_mvm, row_blocks


@dataclass
class Periphery:
    """DAC/ADC bits, ADC bound and output noise in normalized units (w / w_scale, x / max|x|), and the
    tile size whose row blocks each get an ADC (forward: tile rows; backward, driven from the columns:
    tile cols)."""

    dac_bits: int = C.DAC_BITS
    adc_bits: int = C.ADC_BITS
    out_bound: float = C.OUT_BOUND
    out_noise: float = C.OUT_NOISE
    enabled: bool = True
    tile_rows: int = 256
    tile_cols: int = 256


class UpdateRule(Protocol):
    """What an in-memory algorithm provides per layer."""

    w_scale: float

    def read(self, noisy: bool = True) -> torch.Tensor: ...  # effective W [out, in]

    def weights(self) -> torch.Tensor: ...  # noise-free W [out, in]

    def step(self, x: torch.Tensor, grad_out: torch.Tensor, lr: float) -> None: ...


def analog_mvm(v: torch.Tensor, w: torch.Tensor, w_scale: float, per: Periphery, gen: torch.Generator | None,
               transposed: bool = False) -> torch.Tensor:
    """v [B, K] @ w [K, N] through DAC, array and ADC; returns the rescaled digital result. `transposed`:
    the backward MVM, whose K inputs drive the array's columns (blocks of tile_cols)."""
    if not per.enabled:
        return v @ w
    r = v.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)  # per-sample abs-max DAC range
    blocks = row_blocks(w.shape[0], per.tile_cols if transposed else per.tile_rows)
    y = periphery_mvm(v, w, r, dac_bits=per.dac_bits, adc_bits=per.adc_bits, out_bound=per.out_bound,
                      out_noise=per.out_noise, blocks=blocks, w_scale=w_scale, generator=gen)
    return y * w_scale


class _AnalogLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, anchor: torch.Tensor, layer: AnalogLinear) -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        ctx.x_needs_grad = x.requires_grad
        ctx.save_for_backward(x)
        return analog_mvm(x, layer.rule.read().T, layer.rule.w_scale, layer.periphery, layer.gen)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        layer: AnalogLinear = ctx.layer
        (x,) = ctx.saved_tensors
        layer.last_x, layer.last_grad = x, g
        if not ctx.x_needs_grad:  # first layer: no error to propagate further
            return None, None, None
        gx = analog_mvm(g, layer.rule.read(), layer.rule.w_scale, layer.periphery, layer.gen, transposed=True)
        return gx, None, None


class AnalogLinear(nn.Module):
    """nn.Linear look-alike backed by an UpdateRule (the array + its pulse update)."""

    def __init__(self, rule: UpdateRule, bias: torch.Tensor, periphery: Periphery,
                 gen: torch.Generator | None) -> None:
        super().__init__()
        self.rule = rule
        self.bias = nn.Parameter(bias.clone())
        # a grad-requiring input so autograd calls our backward even when x itself needs no gradient
        self._anchor = torch.zeros((), requires_grad=True)
        self.periphery = periphery
        self.gen = gen
        self.last_x: torch.Tensor | None = None
        self.last_grad: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return _AnalogLinearFn.apply(x, self._anchor, self) + self.bias
        return analog_mvm(x, self.rule.read().T, self.rule.w_scale, self.periphery, self.gen) + self.bias

    def update(self, lr: float) -> None:
        """Apply the in-memory weight update for the last backward pass, and the digital bias step."""
        if self.last_x is None or self.last_grad is None:
            return
        self.rule.step(self.last_x, self.last_grad, lr)
        with torch.no_grad():
            if self.bias.grad is not None:
                self.bias -= lr * self.bias.grad
                self.bias.grad = None
        self.last_x = self.last_grad = None
