"""A linear layer whose forward and backward MVMs run through an emulated crossbar.

Forward: y = ADC(DAC(x) @ W_read^T + noise) + b; backward: dx = ADC(DAC(g) @ W_read + noise), each
with a fresh noisy read of the array (read noise / output noise are per MVM), through the one periphery
of runtime/physics/periphery.py (`periphery_mvm`: row blocks of the tile with an ADC each, the same DAC
and ADC codes as the emulator). Its DAC range is each sample's max |x| (aihwkit's "abs-max noise
management"), the one choice that differs from inference (see periphery.py).
The weight gradient is NOT computed by autograd: the array (`RecordedArray`, also the base of
AnalogConv2d and AnalogLSTM) records the (input, error) rows of every MVM since the last update and
hands them all to the in-memory update rule at once (`UpdateRule.step`: every patch of every image for a
convolution, every time step for an LSTM). The bias is digital and updated by plain SGD.
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


class _RecordedMVMFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v: torch.Tensor, anchor: torch.Tensor, layer: RecordedArray) -> torch.Tensor:  # type: ignore[override]
        ctx.layer = layer
        ctx.v_needs_grad = v.requires_grad
        ctx.save_for_backward(v)
        return analog_mvm(v, layer.rule.read().T, layer.rule.w_scale, layer.periphery, layer.gen)

    @staticmethod
    def backward(ctx, g: torch.Tensor):  # type: ignore[override]
        layer: RecordedArray = ctx.layer
        (v,) = ctx.saved_tensors
        layer.rows.append((v.detach(), g.detach()))
        if not ctx.v_needs_grad:
            return None, None, None
        gv = analog_mvm(g, layer.rule.read(), layer.rule.w_scale, layer.periphery, layer.gen, transposed=True)
        return gv, None, None


class RecordedArray(nn.Module):
    """An analog array (UpdateRule) whose MVMs record their (input, error) rows for the in-memory update."""

    def __init__(self, rule: UpdateRule, bias: torch.Tensor, periphery: Periphery,
                 gen: torch.Generator | None) -> None:
        super().__init__()
        self.rule = rule
        self.bias = nn.Parameter(bias.clone())
        self._anchor = torch.zeros((), requires_grad=True)  # makes autograd call our backward
        self.periphery = periphery
        self.gen = gen
        self.rows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def mvm(self, v: torch.Tensor) -> torch.Tensor:
        """v [R, K] @ W^T on the array (no bias); recorded for the update when grad is enabled."""
        if torch.is_grad_enabled():
            return _RecordedMVMFn.apply(v, self._anchor, self)
        return analog_mvm(v, self.rule.read().T, self.rule.w_scale, self.periphery, self.gen)

    def update(self, lr: float) -> None:
        """One UpdateRule.step with every recorded row, then the digital bias step."""
        with torch.no_grad():
            if self.rows:
                x = torch.cat([r[0] for r in self.rows])
                g = torch.cat([r[1] for r in self.rows])
                self.rule.step(x, g, lr)
            if self.bias.grad is not None:
                self.bias -= lr * self.bias.grad
        self.discard()

    def discard(self) -> None:
        """Forget the recorded rows and the bias gradient without updating (e.g. D in a GAN's G step)."""
        self.rows = []
        self.bias.grad = None


class AnalogLinear(RecordedArray):
    """nn.Linear look-alike backed by an UpdateRule (the array + its pulse update)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mvm(x) + self.bias
