"""A layer's weights on the memory device: differential-pair target conductances, programmed once per
simulated chip through the device model, and the effective normalized weights at any time after that
(derived from the programmed state, never cumulative)."""

from __future__ import annotations

import torch

from runtime.analog_settings import AnalogSettings
from runtime.errors import AcompileError
from runtime.physics.devices import Programmed
from runtime.physics.ir_drop import tile_effective


def device_targets(g_target: torch.Tensor, pos: torch.Tensor, g_min: float, per: int) -> torch.Tensor:
    """[2 per, rows, cols] target conductances of the differential pairs (plus side first, then minus):
    |w| in uS on the `per` programmed cells of its sign (AnalogSettings.cells_per_sign), the others at
    g_min."""
    g = g_target / per
    plus = torch.where(pos, g, torch.full_like(g, g_min))
    minus = torch.where(pos, torch.full_like(g, g_min), g)
    return torch.stack([plus] * per + [minus] * per)


def pair_weights(g: torch.Tensor, g_max: float, r_wire: float = 0.0,
                 blocks: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None = None) -> torch.Tensor:
    """Normalized weights (G+ - G-) / g_max from the [2 per, rows, cols] conductances of device_targets.

    r_wire > 0 (ohm per wire segment): each sign's conductance (the sum of its cells) on each tile
    (`blocks` = (row blocks, column blocks)) is replaced by its effective conductance under IR drop
    (runtime/physics/ir_drop.py, first-order approximation); the plus and the minus devices are taken as
    two arrays of the tile's geometry that share the input drivers."""
    per = g.shape[0] // 2
    gp, gm = g[:per].sum(0), g[per:].sum(0)
    if r_wire > 0:
        rb, cb = blocks if blocks is not None else ([(0, g.shape[-2])], [(0, g.shape[-1])])
        gp, gm = tile_effective(gp, r_wire, rb, cb), tile_effective(gm, r_wire, rb, cb)
    return (gp - gm) / g_max


def replica_targets(g_target: torch.Tensor, pos: torch.Tensor, g_min: float, per: int,
                    replicas: int) -> torch.Tensor:
    """device_targets of `replicas` copies of each weight: [2 per replicas, rows, cols], every copy's
    cells at the conductances of one copy. pair_weights of them, divided by `replicas`, is the mean
    weight of the copies (what replicated_weights returns)."""
    return device_targets(g_target * replicas, pos, g_min, per * replicas)


def replicated_weights(g: torch.Tensor, g_max: float, replicas: int, r_wire: float = 0.0,
                       blocks: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None = None
                       ) -> torch.Tensor:
    """The mean normalized weight of a layer's copies (pair_weights / replicas): the copies' column
    currents add, and the periphery, re-ranged by their number, reads their mean (AnalogLayer,
    HWALayer)."""
    w = pair_weights(g, g_max, r_wire, blocks)
    return w / replicas if replicas > 1 else w


class ProgrammedTile:
    """Normalized weights w_n = W G_SCALE / g_max of one layer, and what the device makes of them. With
    `replicas` > 1 the devices hold that many copies of W and w_eff is their mean."""

    def __init__(self, w: torch.Tensor, g_scale: torch.Tensor, settings: AnalogSettings,
                 device: torch.device,
                 blocks: tuple[list[tuple[int, int]], list[tuple[int, int]]] | None = None,
                 replicas: int = 1) -> None:
        if replicas > 1 and settings.r_wire > 0:
            raise AcompileError(f"{replicas} replicas of a layer with r_wire > 0: IR drop of replicated rows "
                                "is not modelled")
        self.replicas = int(replicas)
        self.settings = settings
        self.blocks = blocks  # (row blocks, column blocks): the tiles IR drop is computed on
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
        return replica_targets(self.g_target, self.pos, s.device.g_min, s.cells_per_sign, self.replicas)

    def program(self, generator: torch.Generator | None) -> None:
        """Program the devices once for a new chip (programming noise, per-device time constants)."""
        self.state = self.model.program(self.targets(), generator)
        self.w_eff, self.w_var = self._weights(self.state.g_prog), None

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
            self.w_var = (std * std).sum(0) / (dev.g_max * self.replicas) ** 2
        else:
            self.w_var = None
            g = dev.add_read_noise(self.state, g, t, generator)
        self.w_eff = self._weights(g)

    def _weights(self, g: torch.Tensor) -> torch.Tensor:
        """Normalized effective weights of conductances g, with IR drop when the target has r_wire > 0."""
        return replicated_weights(g, self.model.g_max, self.replicas, self.settings.r_wire, self.blocks)
