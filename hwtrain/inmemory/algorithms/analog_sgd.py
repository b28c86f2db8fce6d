"""Plain analog SGD with stochastic pulse trains (Gokmen & Vlasov, Front. Neurosci. 10:333, 2016).

Every update is done in place on the array: device (i, j) gets one +-dw_min step per coincidence of
its row and column pulse trains (see pulse_trains.py), so E[dW] = lr * d (x) x with d = -dL/dy. The
rule is per sample; we concatenate the trains of a minibatch's samples and apply them at once.
"""

from __future__ import annotations

import torch

from hwtrain.inmemory.pulse_trains import coincidence_counts
from runtime.physics.rpu_devices import RPUArray, RPUConfig


class AnalogSGDRule:
    """One layer = one RPU array updated by coincidences."""

    def __init__(self, w_init: torch.Tensor, *, cfg: RPUConfig, bl: int, gen: torch.Generator | None) -> None:
        self.array = RPUArray(tuple(w_init.shape), cfg, gen, w_init.device)
        self.array.set_weights(w_init)
        self.bl = int(bl)
        self.gen = gen
        self.w_scale = cfg.w_bound

    @property
    def pulses(self) -> int:
        return self.array.pulses

    def read(self, noisy: bool = True) -> torch.Tensor:
        return self.array.w

    def weights(self) -> torch.Tensor:
        return self.array.w

    def step(self, x: torch.Tensor, grad_out: torch.Tensor, lr: float) -> None:
        n_up, n_down = coincidence_counts(x, -grad_out, lr, self.array.cfg.dw_min, self.bl, self.gen)
        self.array.apply_pulses(n_up, n_down)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.array.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.array.load_state_dict(state)
