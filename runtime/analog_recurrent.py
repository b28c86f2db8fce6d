"""AnalogLSTM / AnalogGRU / AnalogRNN in the emulator: one direction of a recurrent layer on tiles.

The array holds [W^T; R^T]; every time step drives its rows with [x_t, h_{t-1}] and reads the gates'
columns through the same periphery as any analog layer (`AnalogLayer.__call__`: DAC, row blocks, output
noise, ADC, compensation), so noise is drawn per read and the programmed conductances are shared by all
steps. The recurrence itself (biases, peepholes, clip, nonlinearities, sequence lengths, reverse) is
runtime/ops/recurrent.py, the same code the digital LSTM / GRU / RNN ops run.
"""

from __future__ import annotations

import onnx
import torch

from runtime import contract
from runtime.analog_settings import AnalogSettings
from runtime.analog_tile import AnalogLayer
from runtime.ops import NodeInfo
from runtime.ops.recurrent import Cell, DigitalGates, Gates, activations, prepare_input, run_direction

_OP = {contract.ANALOG_LSTM: "LSTM", contract.ANALOG_GRU: "GRU", contract.ANALOG_RNN: "RNN"}


class Recurrence:
    """What a recurrent analog node computes around its MVMs (read from the node by the contract)."""

    def __init__(self, node: onnx.NodeProto, w_shape: tuple[int, int]) -> None:
        spec = contract.read_analog_node(node, w_shape=w_shape)
        a = spec.attrs
        op = _OP[node.op_type]
        self.input_size, self.hidden = int(a["input_size"]), int(a["hidden_size"])
        self.reverse = a["direction"] == "reverse"
        self.layout = int(a["layout"])
        acts = activations(op, a["activations"], a.get("activation_alpha"), a.get("activation_beta"), 1)[0]
        self.cell = Cell(op, self.hidden, acts, a.get("clip"), bool(a.get("input_forget", 0)),
                         bool(a.get("linear_before_reset", 0)))
        self.lstm = op == "LSTM"
        self.bias_rows = int(a["bias_rows"])  # LSTM / RNN: 1 (Wb + Rb); GRU: 2 (Wb; Rb)

    def row_bias(self, w: torch.Tensor) -> torch.Tensor | None:
        """The ONNX B [Wb; Rb] held by the array's bias rows (None without them): what the exact
        (ideal) semantics adds."""
        if not self.bias_rows:
            return None
        rows = w[self.input_size + self.hidden:]
        if self.bias_rows == 2:
            return rows.reshape(-1)
        return torch.cat([rows[0], torch.zeros_like(rows[0])])

    def __call__(self, x: torch.Tensor, make_gates, b=None, lens=None, h0=None, c0=None, p=None):
        """x [T, B, I] (layout 0) or [B, T, I]; make_gates(x_in_processing_order) -> Gates. Returns the
        ONNX outputs of one direction: Y [T, 1, B, H], Y_h [1, B, H][, Y_c] (batch first for layout 1)."""
        if self.layout:
            x = x.transpose(0, 1)
            h0 = None if h0 is None else h0.transpose(0, 1)
            c0 = None if c0 is None else c0.transpose(0, 1)
        xd = prepare_input(x, lens, self.reverse)
        y, h, c = run_direction(self.cell, xd, make_gates(xd), None if b is None else b.reshape(-1), lens,
                                None if h0 is None else h0[0], None if c0 is None else c0[0],
                                None if p is None else p.reshape(-1), self.reverse)
        y, h = y.unsqueeze(1), h.unsqueeze(0)
        c = None if c is None else c.unsqueeze(0)
        if self.layout:
            y, h = y.permute(2, 0, 1, 3), h.transpose(0, 1)
            c = None if c is None else c.transpose(0, 1)
        return (y, h, c) if self.lstm else (y, h)


class CrossbarGates(Gates):
    """Gate pre-activations read from the array: `mvm([x_t, h])` is one analog read of all rows; a part
    not driven is zero (the GRU reads x_t and h_{t-1} apart). Bias rows are driven with 1 in the reads
    they belong to: LSTM / RNN's one row in every read, a GRU's Wb row in the x read and its Rb row in
    the h reads."""

    def __init__(self, x: torch.Tensor, mvm, hidden: int, bias_rows: int = 0) -> None:
        self.x, self.mvm = x, mvm
        n = x.shape[1]
        self.zx = x.new_zeros(n, x.shape[2])
        self.zh = x.new_zeros(n, hidden)
        one, zero = x.new_ones(n, 1), x.new_zeros(n, 1)
        self.b_both = [one] * bias_rows
        self.b_x = [one, zero] if bias_rows == 2 else self.b_both
        self.b_h = [zero, one] if bias_rows == 2 else self.b_both

    def both(self, t: int, h: torch.Tensor) -> torch.Tensor:
        return self.mvm(torch.cat([self.x[t], h, *self.b_both], -1))

    def x_only(self, t: int) -> torch.Tensor:
        return self.mvm(torch.cat([self.x[t], self.zh, *self.b_x], -1))

    def h_only(self, v: torch.Tensor) -> torch.Tensor:
        return self.mvm(torch.cat([self.zx, v, *self.b_h], -1))


def ideal_recurrent(info: NodeInfo, node: onnx.NodeProto):
    """Exact semantics of a recurrent analog node (no physics): the ONNX op of one direction."""
    w = info.const(contract.IN_W)
    rec = Recurrence(node, tuple(w.shape))
    wf = w.float()
    i, h = rec.input_size, rec.hidden
    wx, wh = wf[:i].t().contiguous(), wf[i:i + h].t().contiguous()
    row_b = rec.row_bias(wf)

    def run(x, _w=None, _g=None, b=None, lens=None, h0=None, c0=None, p=None):
        b = row_b.to(x.device) if row_b is not None else b
        return rec(x, lambda xd: DigitalGates(xd, wx.to(xd.device), wh.to(xd.device)), b, lens, h0, c0, p)

    return run


class AnalogRecurrentLayer(AnalogLayer):
    """An AnalogLayer (programming, drift, calibration, compensation, periphery) whose forward runs the
    recurrence, one analog read of the array per step (per part, for a GRU)."""

    fuses_epilogue = False  # several outputs; the digital ops after it run as they are

    def __init__(self, info: NodeInfo, node: onnx.NodeProto, settings: AnalogSettings,
                 device: torch.device) -> None:
        super().__init__(info, node, settings, device)
        self.bias = None  # B is the recurrence's (Wb, Rb), added digitally by runtime/ops/recurrent.py
        self.recurrence = Recurrence(node, (self.geo.rows, self.geo.cols))

    def __call__(self, x: torch.Tensor, _w=None, _g=None, b=None, lens=None, h0=None, c0=None, p=None):
        read = super().__call__
        rec = self.recurrence
        return rec(x, lambda xd: CrossbarGates(xd, read, rec.hidden, rec.bias_rows), b, lens, h0, c0, p)
