"""A layer's weights on the memory device: differential-pair target conductances, programmed once per
simulated chip through the device model, and the effective normalized weights at any time after that
(derived from the programmed state, never cumulative)."""

from __future__ import annotations

import torch

from runtime.analog_settings import AnalogSettings
from runtime.physics.devices import Programmed


def device_targets(g_target: torch.Tensor, pos: torch.Tensor, g_min: float, per: int) -> torch.Tensor:
    """[2 per, rows, cols] target conductances of the differential pairs (plus side first, then minus):
    |w| in uS on the `per` programmed cells of its sign (AnalogSettings.cells_per_sign), the others at
    g_min."""
    g = g_target / per
    plus = torch.where(pos, g, torch.full_like(g, g_min))
    minus = torch.where(pos, torch.full_like(g, g_min), g)
    return torch.stack([plus] * per + [minus] * per)


def pair_weights(g: torch.Tensor, g_max: float) -> torch.Tensor:
    """Normalized weights (G+ - G-) / g_max from the [2 per, rows, cols] conductances of device_targets."""
    per = g.shape[0] // 2
    return (g[:per].sum(0) - g[per:].sum(0)) / g_max


class ProgrammedTile:
    """Normalized weights w_n = W G_SCALE / g_max of one layer, and what the device makes of them."""

    def __init__(self, w: torch.Tensor, g_scale: torch.Tensor, settings: AnalogSettings,
                 device: torch.device) -> None:
        self.settings = settings
        self.model = settings.device
        g_max = self.model.g_max
        self.w_n = (w * g_scale / g_max).to(device)  # normalized target weights in [-1, 1]
        self.g_target = (w.abs() * g_scale).to(device)  # uS on the cells of its sign
        self.pos = (w > 0).to(device)
        self.state: Programmed | None = None
        self.w_eff: torch.Tensor = self.w_n  # what an MVM sees now
        self.w_var: torch.Tensor | None = None  # per-read weight variance ("read" noise mode)

    def targets(self) -> torch.Tensor:
        s = self.settings
        return device_targets(self.g_target, self.pos, s.device.g_min, s.cells_per_sign)

    def program(self, generator: torch.Generator | None) -> None:
        """Program the devices once for a new chip (programming noise, per-device time constants)."""
        self.state = self.model.program(self.targets(), generator)
        self.w_eff, self.w_var = pair_weights(self.state.g_prog, self.model.g_max), None

    def set_time(self, t: float, generator: torch.Generator | None) -> None:
        """Effective weights t seconds after programming: drift / relaxation, then read noise (one sample
        per chip and time, or, in "read" mode, a per-MVM variance)."""
        if self.state is None:
            self.w_eff, self.w_var = self.w_n, None
            return
        dev = self.model
        g = dev.drift(self.state, t)
        if self.settings.read_noise_mode == "read" and dev.read_noise:
            std = dev.read_noise_std(self.state, g, t)
            self.w_var = (std * std).sum(0) / dev.g_max**2
        else:
            self.w_var = None
            g = dev.add_read_noise(self.state, g, t, generator)
        self.w_eff = pair_weights(g, dev.g_max)
