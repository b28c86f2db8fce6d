"""DAC / ADC quantization and output noise of the crossbar periphery, shared by runtime and hwtrain."""

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


def add_output_noise(y: torch.Tensor, std: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise on analog outputs, std in the same (normalized) units as y."""
    if std <= 0:
        return y
    return y + std * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
