"""Stochastic pulse-train coincidences of the RPU update (Gokmen & Vlasov, Front. Neurosci. 2016).

Row i gets a train of BL bits, each 1 with probability p_i = min(A |x_i|, 1); column j gets q_j =
min(B |d_j|, 1); device (i, j) steps by sign(x_i d_j) dw_min wherever both bits are 1. With
A = B = sqrt(lr / (dw_min BL)), E[step] = lr x_i d_j. We draw the actual bits (no binomial
approximation): the coincidence counts are matmuls of the bit matrices, split by sign so up and down
pulses stay separate (they do not cancel on an asymmetric device). For a minibatch the trains of all
samples are concatenated (B*BL time slots) — the per-sample rule, applied once per minibatch.
"""

from __future__ import annotations

import math

import torch


def coincidence_counts(
    x: torch.Tensor,
    d: torch.Tensor,
    lr: float,
    dw_min: float,
    bl: int,
    generator: torch.Generator | None = None,
    update_management: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n_up, n_down) pulse counts [out, in] for the desired update lr * d^T x (x: [B, in], d: [B, out]).

    update_management (Gokmen 2017): rescale A, B so that the largest p and q are equal; the product,
    hence the expected update, is unchanged.
    """
    ab = math.sqrt(lr / (dw_min * bl))
    a = b = torch.full((x.shape[0], 1), ab, device=x.device, dtype=x.dtype)
    if update_management:
        xm = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        dm = d.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        s = torch.sqrt(dm / xm)
        a, b = a * s, b / s
    p = (a * x.abs()).clamp(max=1.0)
    q = (b * d.abs()).clamp(max=1.0)
    nb = x.shape[0]
    xb = (torch.rand((nb, bl, x.shape[1]), generator=generator, device=x.device) < p[:, None, :]).to(x.dtype)
    db = (torch.rand((nb, bl, d.shape[1]), generator=generator, device=d.device) < q[:, None, :]).to(d.dtype)
    xs = (x > 0).to(x.dtype)[:, None, :]
    ds = (d > 0).to(d.dtype)[:, None, :]
    xp, xn = (xb * xs).reshape(-1, x.shape[1]), (xb * (1 - xs)).reshape(-1, x.shape[1])
    dp, dn = (db * ds).reshape(-1, d.shape[1]), (db * (1 - ds)).reshape(-1, d.shape[1])
    n_up = dp.T @ xp + dn.T @ xn
    n_down = dp.T @ xn + dn.T @ xp
    return n_up, n_down
