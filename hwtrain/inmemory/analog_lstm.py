"""AnalogLSTM: one batch-first LSTM layer whose input and recurrent weights share ONE crossbar.

The array holds [W | R] of shape [4H, I+H] (torch's weight_ih_l0 | weight_hh_l0, gate order i, f, g, o),
so every time step is one analog MVM of z_t = [x_t, h_{t-1}] -> 4H gate pre-activations; the gate math
(sigmoid / tanh, c_t = f c + i g, h_t = o tanh(c_t)) is digital torch around it, and so is the bias
(b_ih + b_hh as one vector, plain SGD). Backward runs through autograd, every step's error on the gate
columns going back through the array as a transposed MVM; each step's (z_t, dgates_t) rows are recorded
and the update is ONE UpdateRule.step with the rows of all time steps (the weight gradient accumulated
over the whole sequence, BPTT).
"""

from __future__ import annotations

import torch

from hwtrain.inmemory.analog_layer import Periphery, RecordedArray, UpdateRule


class AnalogLSTM(RecordedArray):
    def __init__(self, rule: UpdateRule, bias: torch.Tensor, periphery: Periphery,
                 gen: torch.Generator | None,
                 *, input_size: int, hidden_size: int) -> None:
        super().__init__(rule, bias, periphery, gen)
        if tuple(rule.weights().shape) != (4 * hidden_size, input_size + hidden_size):
            raise ValueError(f"AnalogLSTM: array must be [4H, I+H] = [{4 * hidden_size}, "
                             f"{input_size + hidden_size}], got {tuple(rule.weights().shape)}")
        self.input_size, self.hidden_size = input_size, hidden_size

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """x [B, T, I] -> (outputs [B, T, H], (h_T, c_T)), like nn.LSTM(batch_first=True) with 1 layer."""
        b, t, _ = x.shape
        hs = self.hidden_size
        if state is None:
            h = x.new_zeros(b, hs)
            c = x.new_zeros(b, hs)
        else:
            h, c = state
        outs = []
        for step in range(t):
            gates = self.mvm(torch.cat([x[:, step], h], dim=1)) + self.bias
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs, dim=1), (h, c)
