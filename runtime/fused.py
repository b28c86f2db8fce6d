"""Optional fused element-wise kernels (torch.compile) for the analog tile's DAC and ADC tail.

Eager PyTorch runs each element-wise step (round, clamp, noise add, rescale, accumulate) as its own
memory pass; compiled, the tail is one pass (~8x faster on CPU for that part in isolation). Opt-in
and experimental (`--fuse`): each new shape / constant pays a compile and it needs a C++ compiler on
CPU; end to end on ResNet-32 it was measured slower than eager (bench/RESULTS-runtime.md).
"""

from __future__ import annotations

import torch


def _dac(x: torch.Tensor, mult: float, lim: float) -> torch.Tensor:
    return torch.round(x * mult).clamp(-lim, lim)


def _tail(y: torch.Tensor, noise: torch.Tensor | None, scale: torch.Tensor, acc: torch.Tensor | None,
          lim: float, nu: float, quant: bool) -> torch.Tensor:
    if quant:
        y = torch.round(y).clamp(-lim, lim)
    if noise is not None:
        y = y + noise * nu
    return y * scale if acc is None else acc + y * scale


_COMPILED: dict[str, object] = {}


def get(name: str):
    """The compiled kernel `name` ('dac' or 'tail'), compiled on first use."""
    if name not in _COMPILED:
        fn = {"dac": _dac, "tail": _tail}[name]
        _COMPILED[name] = torch.compile(fn, dynamic=None)
    return _COMPILED[name]
