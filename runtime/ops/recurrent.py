"""ONNX LSTM, GRU and RNN: the recurrence of one direction, written once for digital and analog weights.

The gate pre-activations come from a `Gates` provider: `DigitalGates` computes X W^T + H R^T exactly,
the emulator's analog recurrent layer (runtime/analog_recurrent.py) reads them from the crossbar where x_t
and h_{t-1} drive the rows of one array. Everything else -- biases, peepholes, clip, the gate
nonlinearities, the cell update, sequence lengths, reverse direction -- is digital and lives here, so the
digital op and the analog op cannot drift apart. Semantics follow the ONNX operator specs (opset 14):
gate order LSTM i,o,f,c (P = i,o,f), GRU z,r,h, RNN i; `layout` 1 puts the batch first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from runtime import contract
from runtime.ops.registry import NodeInfo, register

#: gates per cell type (columns of one direction's matrix = gates * hidden_size)
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
_PLAIN = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
          "softsign": lambda x: x / (1 + x.abs()), "softplus": torch.nn.functional.softplus}

Act = Callable[[torch.Tensor], torch.Tensor]


def _activation(name: str, alpha: float, beta: float) -> Act:
    n = name.lower()
    if n in _PLAIN:
        return _PLAIN[n]
    if n == "affine":
        return lambda x: alpha * x + beta
    if n == "leakyrelu":
        return lambda x: torch.where(x >= 0, x, alpha * x)
    if n == "thresholdedrelu":
        return lambda x: torch.where(x > alpha, x, torch.zeros_like(x))
    if n == "scaledtanh":
        return lambda x: alpha * torch.tanh(beta * x)
    if n == "hardsigmoid":
        return lambda x: (alpha * x + beta).clamp(0, 1)
    if n == "elu":
        return lambda x: torch.where(x >= 0, x, alpha * torch.expm1(x))
    raise ValueError(f"unknown activation {name!r}")


def activations(op: str, names: list[str] | None, alphas: list[float] | None, betas: list[float] | None,
                directions: int) -> list[list[Act]]:
    """Per direction, the cell's activation functions (f, g[, h]) with their alpha / beta
    (contract.resolve_activations: defaults, the order alpha / beta are consumed in)."""
    out = []
    for acts, al, be in contract.resolve_activations(op, names, alphas, betas, directions):
        a_it, b_it = iter(al), iter(be)
        out.append([_activation(n, next(a_it) if n.lower() in contract.ACTIVATION_ALPHA else 0.0,
                                next(b_it) if n.lower() in contract.ACTIVATION_BETA else 0.0) for n in acts])
    return out


@dataclass
class Cell:
    """One direction's cell: its type, hidden size, activations and options."""

    op: str
    hidden: int
    acts: list[Act]
    clip: float | None = None
    input_forget: bool = False
    linear_before_reset: bool = False

    def _clip(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.clip is None else x.clamp(-self.clip, self.clip)


class Gates:
    """Gate pre-activations of one direction (no biases), as MVMs of the weight matrices.

    both(t, h): x_t W^T + h R^T; x_only(t): x_t W^T; h_only(v): v R^T. `x` is the (already reversed)
    input sequence [T, B, I]."""

    def both(self, t: int, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def x_only(self, t: int) -> torch.Tensor:
        raise NotImplementedError

    def h_only(self, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class DigitalGates(Gates):
    """Exact gates; X W^T of every step in one matmul."""

    def __init__(self, x: torch.Tensor, w: torch.Tensor, r: torch.Tensor) -> None:
        self.xw = x @ w.t()
        self.rt = r.t()

    def both(self, t: int, h: torch.Tensor) -> torch.Tensor:
        return self.xw[t] + h @ self.rt

    def x_only(self, t: int) -> torch.Tensor:
        return self.xw[t]

    def h_only(self, v: torch.Tensor) -> torch.Tensor:
        return v @ self.rt


def _reverse_index(lens: torch.Tensor | None, steps: int, device: torch.device) -> torch.Tensor | None:
    """[T, B] time index that reverses every sequence within its length (padding stays in place)."""
    if lens is None:
        return None
    t = torch.arange(steps, device=device).unsqueeze(1)
    lens = lens.to(device=device, dtype=torch.long).unsqueeze(0)
    return torch.where(t < lens, lens - 1 - t, t)


def _take(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x [T, B, F] with x[idx[t, b], b] at [t, b]."""
    return torch.gather(x, 0, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def prepare_input(x: torch.Tensor, lens: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """The sequence in processing order: reversed (within each sequence's length) for `reverse`."""
    if not reverse:
        return x
    idx = _reverse_index(lens, x.shape[0], x.device)
    return x.flip(0) if idx is None else _take(x, idx)


def run_direction(cell: Cell, x: torch.Tensor, gates: Gates, bias: torch.Tensor | None,
                  lens: torch.Tensor | None, h0: torch.Tensor | None, c0: torch.Tensor | None,
                  p: torch.Tensor | None, reverse: bool
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One direction over a sequence. x [T, B, I] in processing order (prepare_input), bias [2 G H]
    (Wb, Rb), lens [B], h0 / c0 [B, H], p [3 H]. Returns Y [T, B, H] (in time order, zero past each
    sequence's length), the last hidden state [B, H] and (LSTM) the last cell state."""
    T, B = x.shape[0], x.shape[1]
    H = cell.hidden
    G = GATES[cell.op]
    zeros = x.new_zeros(B, H)
    h = zeros if h0 is None else h0
    c = (zeros if c0 is None else c0) if cell.op == "LSTM" else None
    wb = rb = None
    if bias is not None:
        wb, rb = bias[:G * H], bias[G * H:]
    mask = None
    if lens is not None:
        mask = torch.arange(T, device=x.device).unsqueeze(1) < lens.to(x.device).unsqueeze(0)  # [T, B]
    ys = []
    for t in range(T):
        if cell.op == "LSTM":
            h_new, c_new = _lstm_step(cell, gates.both(t, h), wb, rb, c, p)
        elif cell.op == "GRU":
            h_new, c_new = _gru_step(cell, gates, t, h, wb, rb), None
        else:
            g = gates.both(t, h)
            if wb is not None:
                g = g + wb + rb
            h_new, c_new = cell.acts[0](cell._clip(g)), None
        if mask is not None:
            m = mask[t].unsqueeze(1)
            h = torch.where(m, h_new, h)
            c = torch.where(m, c_new, c) if c is not None else None
            ys.append(torch.where(m, h_new, torch.zeros_like(h_new)))
        else:
            h, c = h_new, c_new
            ys.append(h_new)
    y = torch.stack(ys) if ys else x.new_zeros(0, B, H)
    if reverse:
        idx = _reverse_index(lens, T, x.device)
        y = y.flip(0) if idx is None else _take(y, idx)
    return y, h, c


def _lstm_step(cell: Cell, g: torch.Tensor, wb, rb, c: torch.Tensor, p: torch.Tensor | None):
    H = cell.hidden
    f_act, g_act, h_act = cell.acts
    if wb is not None:
        g = g + wb + rb
    i, o, f, cc = g[:, :H], g[:, H:2 * H], g[:, 2 * H:3 * H], g[:, 3 * H:]
    if p is not None:
        i = i + p[:H] * c
        f = f + p[2 * H:] * c
    i = f_act(cell._clip(i))
    f = 1 - i if cell.input_forget else f_act(cell._clip(f))
    c_new = f * c + i * g_act(cell._clip(cc))
    if p is not None:
        o = o + p[H:2 * H] * c_new
    o = f_act(cell._clip(o))
    return o * h_act(c_new), c_new


def _gru_step(cell: Cell, gates: Gates, t: int, h: torch.Tensor, wb, rb) -> torch.Tensor:
    H = cell.hidden
    f_act, g_act = cell.acts
    gx = gates.x_only(t)
    gh = gates.h_only(h)
    if wb is not None:
        gx = gx + wb
        gh = gh + rb
    zr = gx[:, :2 * H] + gh[:, :2 * H]
    z = f_act(cell._clip(zr[:, :H]))
    r = f_act(cell._clip(zr[:, H:]))
    if cell.linear_before_reset:
        hh = gx[:, 2 * H:] + r * gh[:, 2 * H:]
    else:
        rh = gates.h_only(r * h)[:, 2 * H:]
        hh = gx[:, 2 * H:] + rh + (0 if rb is None else rb[2 * H:])
    hh = g_act(cell._clip(hh))
    return (1 - z) * hh + z * h


# --- the digital ONNX ops ------------------------------------------------------------------------------


def cells(node: NodeInfo) -> list[Cell]:
    """One Cell per direction of an ONNX LSTM / GRU / RNN node (attributes checked)."""
    a = node.attrs
    direction = a.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise node.error(f"direction must be forward, reverse or bidirectional, got {direction!r}")
    nd = 2 if direction == "bidirectional" else 1
    hidden = a.get("hidden_size")
    try:
        acts = activations(node.op_type, a.get("activations"), a.get("activation_alpha"),
                           a.get("activation_beta"), nd)
    except ValueError as exc:
        raise node.error(str(exc)) from None
    clip = a.get("clip")
    return [Cell(node.op_type, int(hidden) if hidden else 0, acts[d], None if clip is None else float(clip),
                 bool(a.get("input_forget", 0)), bool(a.get("linear_before_reset", 0))) for d in range(nd)]


@register("LSTM", "GRU", "RNN")
def recurrent(node: NodeInfo):
    cs = cells(node)
    a = node.attrs
    reverse = [a.get("direction", "forward") == "reverse"] if len(cs) == 1 else [False, True]
    layout = int(a.get("layout", 0))
    lstm = node.op_type == "LSTM"

    def run(x, w, r, b=None, lens=None, h0=None, c0=None, p=None):
        if layout:
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        ys, hs, cs_ = [], [], []
        for d, cell in enumerate(cs):
            if not cell.hidden:
                cell.hidden = int(r.shape[-1])
            xd = prepare_input(x, lens, reverse[d])
            gates = DigitalGates(xd, w[d], r[d])
            y, h, c = run_direction(cell, xd, gates, None if b is None else b[d], lens,
                                    None if h0 is None else h0[d], None if c0 is None else c0[d],
                                    None if p is None else p[d], reverse[d])
            ys.append(y)
            hs.append(h)
            cs_.append(c)
        y = torch.stack(ys, 1)  # [T, D, B, H]
        yh = torch.stack(hs)  # [D, B, H]
        yc = torch.stack(cs_) if lstm else None
        if layout:
            y = y.permute(2, 0, 1, 3)
            yh = yh.transpose(0, 1)
            yc = None if yc is None else yc.transpose(0, 1)
        return (y, yh, yc) if lstm else (y, yh)

    return run
