"""DAC / ADC quantization of the crossbar periphery, shared by runtime and hwtrain."""

from __future__ import annotations

import torch


def levels(bits: int) -> int:
    """Number of positive levels of a symmetric quantizer: 2^(bits-1) - 1 (so 0 is exact)."""
    if bits < 2:
        raise ValueError(f"quantizer needs at least 2 bits, got {bits}")
    return 2 ** (bits - 1) - 1


def quantize(x: torch.Tensor, bits: int, bound: float | torch.Tensor) -> torch.Tensor:
    """Clamp to [-bound, bound] and round to a symmetric uniform grid; bits = 0 means clamp only."""
    if isinstance(bound, torch.Tensor):
        x = torch.maximum(torch.minimum(x, bound), -bound)
    else:
        x = x.clamp(-bound, bound)
    if bits == 0:
        return x
    step = bound / levels(bits)
    return torch.round(x / step) * step


# --- the tile periphery as the emulator runs it (CONTRACTS §4), shared with hardware-aware training ------
# Units: a DAC code is round(x / r * L_in) in [-L_in, L_in]; an ADC code is round(y_n * L_out / bound) in
# [-L_out, L_out], where y_n = (x / r) @ w_n is the row block's output in normalized units.


def dac_codes(x: torch.Tensor, in_mult: float | torch.Tensor, lin: int) -> torch.Tensor:
    """DAC: inputs -> integer codes, in_mult = L_in / r (r: the calibrated input range)."""
    return torch.round(x * in_mult).clamp_(-lin, lin)


def adc_codes_(y: torch.Tensor, lout: int) -> torch.Tensor:
    """ADC, in place: an output already in ADC units -> integer codes in [-L_out, L_out]."""
    return y.round_().clamp_(-lout, lout)


def abs_percentile(x: torch.Tensor, percentile: float) -> float:
    """Nearest-rank high percentile of |x| via top-k (exact, and far cheaper than a full sort): the
    statistic behind the calibrated DAC input range and the calibrated ADC bound."""
    a = x.detach().abs().reshape(-1).float()
    k = max(1, int(round(a.numel() * (1 - percentile / 100))))
    return float(torch.topk(a, k, sorted=False).values.min())
