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
    # all coincidences C and their signed sum S = up - down: two matmuls instead of four
    xb2, db2 = xb.reshape(-1, x.shape[1]), db.reshape(-1, d.shape[1])
    sx = torch.where(x >= 0, 1.0, -1.0).to(x.dtype)[:, None, :]
    sd = torch.where(d >= 0, 1.0, -1.0).to(d.dtype)[:, None, :]
    total = db2.T @ xb2
    signed = (db * sd).reshape(-1, d.shape[1]).T @ (xb * sx).reshape(-1, x.shape[1])
    n_up = (total + signed) * 0.5
    n_down = (total - signed) * 0.5
    return n_up.round_(), n_down.round_()
