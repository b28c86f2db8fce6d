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


def quantize_ste(x: torch.Tensor, bits: int, bound: float | torch.Tensor) -> torch.Tensor:
    """quantize() forward, identity gradient inside the bound (straight-through estimator) for training."""
    return x + (quantize(x, bits, bound) - x).detach()
