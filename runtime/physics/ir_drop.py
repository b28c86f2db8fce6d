"""IR drop: the resistance of the row and column wires of a crossbar tile.

Geometry of one tile (one row block x column block of a layer, CONTRACTS §3), M rows x N columns:

* row i is driven at its left end (before column 0) with the input voltage V_i; between the driver and
  cell (i, 0) and between neighbouring cells (i, j) - (i, j+1) the row wire has one segment of resistance r;
* column j is read at its bottom end (after row M-1) by a virtual-ground ADC (held at 0 V); between
  neighbouring cells (i, j) - (i+1, j) and between cell (M-1, j) and the ADC, one segment of r;
* cell (i, j) is a conductance G[i, j] from row node U[i, j] to column node D[i, j]; the ADC of column j
  reads I_j = D[M-1, j] / r, the sum of that column's cell currents.

So cell (0, N-1) is the farthest from both its driver and its ADC. Ohmic cells and amplitude-coded inputs
make the network linear: the output is I = V @ G_eff with an effective conductance matrix G_eff(G, r)
that does not depend on V (only on the conductances, the wire resistance and the position of each cell).
Hence the emulator applies IR drop as a change of the effective weights of each tile (computed once per
time point from the conductances at that time), and no read-voltage constant is needed: the relative
change of the currents is the same at any read voltage. (Pulse-width-coded inputs, as on HERMES, switch
rows off at different times and make the drop input-dependent; that is not modelled.)

Two solutions:

* `solve_exact(g, r)`: the nodal analysis of the full resistive grid (2 M N node voltages, Kirchhoff's
  current law at every node), solved densely in float64 -- for validation and small tiles (2 M N up to
  a few thousand unknowns).
* `effective_conductance(g, r)`: the first-order approximation used by the emulator, O(M N) with cumulative
  sums. To first order in r, with the zero-order cell currents G[i, j] V_i,
      row node:    U[i, j] = V_i (1 - r P[i, j]),  P[i, j] = sum_j' G[i, j'] (min(j, j') + 1)
      column node: D[i, j] = r sum_i' G[i', j] V_i' (M - max(i, i')),
  and the output sum_i G[i, j] (U - D)[i, j] = sum_i V_i G[i, j] (1 - r (P + Q)[i, j]) with
  Q[i, j] = sum_i' G[i', j] (M - max(i, i')). acompile uses the resummed (series-resistance) form
      G_eff = G / (1 + r (P + Q)),
  equal to the linearization to first order in r and exact for a cell alone in its tile (a conductance
  in series with the (j + 1) r of its row and (M - i) r of its column); it stays positive where the
  linearization would turn negative. Its error against `solve_exact` is measured in
  tests/test_ir_drop.py (the bounds there).

Units: G in uS and r in ohm (r G 1e-6 is the dimensionless product); G_eff in uS.
"""

from __future__ import annotations

import torch

__all__ = ["drop_factor", "effective_conductance", "nodal_system", "solve_exact", "tile_effective"]

#: uS -> S
_US = 1e-6


def _cum_terms(g: torch.Tensor) -> torch.Tensor:
    """P + Q of the first-order solution for conductances g [..., M, N] (any unit; O(M N))."""
    # P[i, j] = sum_{k <= j} S_row[i, k], S_row[i, k] = sum_{j' >= k} g[i, j'] (the current in row segment k)
    s_row = g.flip(-1).cumsum(-1).flip(-1)
    p = s_row.cumsum(-1)
    # Q[i, j] = sum_{k >= i} S_col[k, j], S_col[k, j] = sum_{i' <= k} g[i', j] (the current in column
    # segment k, below cell k)
    s_col = g.cumsum(-2)
    q = s_col.flip(-2).cumsum(-2).flip(-2)
    return p + q


def drop_factor(g: torch.Tensor, r: float) -> torch.Tensor:
    """G_eff / G of the first-order approximation, 1 / (1 + r (P + Q)); g in uS, r in ohm."""
    return 1.0 / (1.0 + (r * _US) * _cum_terms(g))


def effective_conductance(g: torch.Tensor, r: float) -> torch.Tensor:
    """First-order effective conductances [..., M, N] (uS) of one tile whose cells hold g (uS)."""
    if r == 0:
        return g
    return g * drop_factor(g, r)


def tile_effective(g: torch.Tensor, r: float, row_blocks: list[tuple[int, int]],
                   col_blocks: list[tuple[int, int]]) -> torch.Tensor:
    """`effective_conductance` of each tile (row block x column block) of a layer's conductances
    [..., rows, cols]; each block is taken to sit next to its drivers and ADCs."""
    if r == 0:
        return g
    out = torch.empty_like(g)
    for rs, re in row_blocks:
        for cs, ce in col_blocks:
            out[..., rs:re, cs:ce] = effective_conductance(g[..., rs:re, cs:ce], r)
    return out


# ---- the exact nodal solution (validation, small tiles) -------------------------------------------------

def nodal_system(g: torch.Tensor, r: float) -> torch.Tensor:
    """The nodal conductance matrix Y [2 M N, 2 M N] (in units of 1/r: every entry times r) of the grid.

    Unknowns: row nodes U[i, j] at index i N + j, column nodes D[i, j] at M N + i N + j. Row j of Y is
    Kirchhoff's current law at that node, r x (sum of the currents leaving it) = 0, the driver and the
    ADC's virtual ground moved to the right-hand side (`solve_exact`)."""
    m, n = g.shape
    gr = (r * _US) * g.double().reshape(-1)
    size = 2 * m * n
    y = torch.zeros(size, size, dtype=torch.float64)
    idx = torch.arange(m * n)
    i, j = idx // n, idx % n
    u, d = idx, m * n + idx
    # row node U[i, j]: to U[i, j-1] (or the driver) and to U[i, j+1] (if any) through r, to D through G
    y[u, u] = 1.0 + (j < n - 1).double() + gr
    left = j > 0
    y[u[left], u[left] - 1] = -1.0
    right = j < n - 1
    y[u[right], u[right] + 1] = -1.0
    y[u, d] = -gr
    # column node D[i, j]: to D[i-1, j] (if any) and to D[i+1, j] (or the ADC) through r, to U through G
    y[d, d] = (i > 0).double() + 1.0 + gr
    up = i > 0
    y[d[up], d[up] - n] = -1.0
    down = i < m - 1
    y[d[down], d[down] + n] = -1.0
    y[d, u] = -gr
    return y


def solve_exact(g: torch.Tensor, r: float, v: torch.Tensor | None = None) -> torch.Tensor:
    """Exact effective conductances [M, N] (uS) of the grid with conductances g [M, N] (uS) and wire
    resistance r (ohm) per segment, float64; with v [B, M] (volts) the column currents [B, N] (uS x V = uA)
    instead."""
    m, n = g.shape
    if r == 0:
        return g.double() if v is None else v.double() @ g.double()
    y = nodal_system(g, r)
    # right-hand side: the driver V_i enters row node U[i, 0] through one segment (r x V_i / r = V_i)
    inputs = torch.eye(m, dtype=torch.float64) if v is None else v.double()
    rhs = torch.zeros(2 * m * n, inputs.shape[0], dtype=torch.float64)
    rhs[torch.arange(m) * n] = inputs.t()
    x = torch.linalg.solve(y, rhs)
    d_last = x[m * n + (m - 1) * n: m * n + m * n]  # D[M-1, :] per input: [N, B]
    return d_last.t() / (r * _US)
