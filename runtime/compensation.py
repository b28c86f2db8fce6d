"""Drift compensation: none, global (GDC), column, bn (AdaBS, Joshi et al. 2020).

GDC: right after programming each tile is read with fixed known +-1 vectors (stored per layer) and the
mean |output| kept as reference; at time t the same read gives alpha = reference / now, applied
digitally to the tile's outputs. `column` does the same per output column. `bn` re-estimates the
BatchNormalization statistics on calibration images run through the drifted analog model;
`global+bn` does both (GDC for analog layers with no BN after them, e.g. a final classifier).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from functools import lru_cache

import torch

from runtime.errors import AcompileError

METHODS = ("none", "global", "column", "bn", "global+bn")


def check_methods(methods: Iterable[str], n_bn: int) -> list[str]:
    """Validate the requested methods against the model (bn needs BN nodes)."""
    out = []
    for m in methods:
        m = m.strip().lower()
        if m not in METHODS:
            raise AcompileError(f"unknown compensation '{m}': use {', '.join(METHODS)}")
        if m.endswith("bn") and n_bn == 0:
            raise AcompileError(
                "compensation 'bn' re-estimates BatchNormalization statistics, but this model has no "
                "BatchNormalization nodes (folded at export?); use 'global' or 'column', or export with "
                "BN kept as nodes")
        if m not in out:
            out.append(m)
    return out


@lru_cache(maxsize=1024)
def _reference_inputs(name: str, rows: int, n: int) -> torch.Tensor:
    """The fixed known +-1 read vectors of a layer, [n, rows]: the same on every chip and every run."""
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()) & 0x7FFFFFFF)  # stable across processes
    return torch.randint(0, 2, (n, rows), generator=g).float() * 2 - 1


def block_reads(name: str, geo, w: torch.Tensor) -> list[torch.Tensor]:
    """|output| of each row block of weights `w` [rows, cols] for the layer's known inputs: [n, cols]
    per block (ideal periphery: the compensation reads are averaged to beat its noise). Shared with the
    fine-tuning forward (hwtrain.analog_hwa), which compensates drift exactly as the emulator does."""
    x = _reference_inputs(name, geo.rows, 16).to(w.device)
    return [(x[:, rs:re] @ w[rs:re]).abs() for rs, re in geo.row_blocks]


def read_reference(layer) -> list[torch.Tensor]:
    """The known-input reads of a mapped layer with its current weights (see block_reads)."""
    return block_reads(layer.name, layer.geo, layer.w_eff)


def reference_reads(layers: list) -> list[list[torch.Tensor]]:
    """Per layer, per row block |output| of the known inputs (call right after programming)."""
    return [read_reference(layer) for layer in layers]


def block_alphas(geo, ref: list[torch.Tensor], now: list[torch.Tensor],
                 per_column: bool) -> list[torch.Tensor]:
    """Per row block, the [cols] factors that bring today's reads back to the reference: one per tile
    (row block x column block) for GDC, one per column for `column`."""
    out = []
    for r, n in zip(ref, now, strict=False):
        if per_column:
            rm, nm = r.mean(0), n.mean(0)
            a = torch.where(nm > 1e-12, rm / nm.clamp_min(1e-12), torch.ones_like(rm))
        else:
            a = torch.ones(r.shape[1], device=r.device)
            for cs, ce in geo.col_blocks:
                nm = float(n[:, cs:ce].mean())
                a[cs:ce] = float(r[:, cs:ce].mean()) / nm if nm > 1e-12 else 1.0
        out.append(a)
    return out


def apply(method: str, layers: list, bn_layers: list, refs: list[list[torch.Tensor]] | None,
          run_calibration: Callable[[], None]) -> None:
    """Set up `method` on the layers at the current time point (weights already set)."""
    reset(layers, bn_layers)
    if method in ("global", "column", "global+bn"):
        assert refs is not None
        for layer, ref in zip(layers, refs, strict=False):
            layer.set_alpha(block_alphas(layer.geo, ref, read_reference(layer), method == "column"))
    if method.endswith("bn"):
        for bn in bn_layers:
            bn.start_calibration()
        try:
            run_calibration()
        finally:
            for bn in bn_layers:
                bn.finish_calibration()


def reset(layers: list, bn_layers: list) -> None:
    """Back to uncompensated outputs and the model's own BN statistics."""
    for layer in layers:
        if layer.alpha is not None:
            layer.set_alpha(None)
    for bn in bn_layers:
        bn.reset()
