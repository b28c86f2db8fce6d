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


# --- the reference semantics of one crossbar layer's periphery ---------------------------------------
# One implementation of what the DAC, the row-block MVMs, the output noise and the ADCs do (CONTRACTS §4).
# The emulator's fused kernels (runtime/analog_tile.py) and hardware-aware training (hwtrain/analog_hwa.py)
# are tested against it on the same tensors; in-memory training (hwtrain/inmemory) runs it directly.
# Decided once, for all three:
#   * the layer is split into row blocks of the tile's rows, each with its own ADC, summed digitally;
#   * a converter with 0 bits is ideal: no quantization and no clamp;
#   * the DAC range r is the only choice that differs, by purpose: inference (emulator, HWA training)
#     uses a static range calibrated per layer after programming (a 99.99th percentile of |x|: hardware
#     has one input scale per layer), in-memory training uses each sample's max|x| (aihwkit's abs-max
#     noise management, Gokmen & Vlasov 2016), because its inputs (errors in the backward pass) change
#     by orders of magnitude during training.


def row_blocks(n: int, tile_rows: int) -> list[tuple[int, int]]:
    """[start, end) of the row blocks a matrix of n rows is split into (one tile each)."""
    if tile_rows < 1:
        raise ValueError(f"tile rows must be >= 1, got {tile_rows}")
    return [(r, min(r + tile_rows, n)) for r in range(0, n, tile_rows)] or [(0, 0)]


def periphery_mvm(x: torch.Tensor, w: torch.Tensor, r: float | torch.Tensor, *, dac_bits: int,
                  adc_bits: int, out_bound: float, out_noise: float, blocks: list[tuple[int, int]],
                  w_scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """x [B, K] @ (w / w_scale) [K, N] as the tile computes it, in the units of x @ (w / w_scale).

    r: the DAC input range (a float, or a [B, 1] tensor for a per-sample range). Each row block b gives
    y_b = ADC(DAC(x / r)[:, b] @ w[b] / w_scale + N(0, out_noise^2)), and the result is r * sum_b y_b."""
    if dac_bits > 0:
        lin = levels(dac_bits)
        xn = dac_codes(x, lin / r, lin) * (1.0 / lin)
    else:
        xn = x / r
    out = None
    for rs, re in blocks:
        y = (xn[:, rs:re] @ w[rs:re]) * (1.0 / w_scale)
        if out_noise > 0:
            y = y + out_noise * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype)
        if adc_bits > 0:
            lout = levels(adc_bits)
            y = adc_codes_(y * (lout / out_bound), lout) * (out_bound / lout)
        out = y if out is None else out + y
    return out * r
