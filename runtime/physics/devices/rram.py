"""`rram`: resistive RAM fitted to the NeuRRAM chip (Wan et al., Nature 608:504, 2022).

The published spread of the conductance around its target after write-verify (1 s), after 1 day and
after 2 days (aihwkit ReRamWan2022NoiseModel's fits) defines the device: programming leaves the 1 s
spread; relaxation then widens it, with no mean drift. Here relaxation is a per-device Gaussian direction
drawn at programming, whose amplitude grows so that the total spread at time t follows the fits,
interpolated linearly in ln t between the fitted times and held after 2 days (the data end there: an
assumption, stated in the target). Reads add a short-term noise of ~1 % of g_max (aihwkit's note).
"""

from __future__ import annotations

import math

from runtime.physics import constants as C
from runtime.physics.devices import register
from runtime.physics.devices.base import (
    DeviceModel,
    Key,
    Programmed,
    check_time,
    gaussian,
    nonneg_float,
    polynomial,
    torch,
)


def spread_std(g_target: torch.Tensor, g_max: float, which: int) -> torch.Tensor:
    """Std (uS) of the conductance around its target at the `which`-th fitted time."""
    x = g_target.abs() / g_max
    return polynomial(x, C.RRAM_SPREAD_COEFFS[which]).clamp(min=0.0) * (g_max / C.RRAM_G_MAX)


def spread_at(g_target: torch.Tensor, g_max: float, t: float) -> torch.Tensor:
    """Total spread at t seconds: the fits interpolated in ln t, constant before 1 s and after 2 days."""
    times = C.RRAM_SPREAD_TIMES
    t = min(max(t, times[0]), times[-1])
    for i in range(len(times) - 1):
        if t <= times[i + 1]:
            u = (math.log(t) - math.log(times[i])) / (math.log(times[i + 1]) - math.log(times[i]))
            lo, hi = spread_std(g_target, g_max, i), spread_std(g_target, g_max, i + 1)
            return lo + u * (hi - lo)
    return spread_std(g_target, g_max, len(times) - 1)


@register
class RRAM(DeviceModel):
    name = "rram"
    summary = "resistive RAM fitted to NeuRRAM (Wan 2022; aihwkit ReRamWan2022NoiseModel), relaxation"
    source = "Wan et al., Nature 608:504 (2022)"
    G_MAX = C.RRAM_G_MAX
    G_MAX_DOC = "uS, g_max of the fits (Wan 2022 data normalized to 40 uS)"
    KEYS = {
        "prog_noise_scale": Key(nonneg_float, 1.0, "factor on the programming spread"),
        "relaxation_scale": Key(nonneg_float, 1.0, "factor on the relaxation that follows programming"),
        "read_noise_frac": Key(nonneg_float, C.RRAM_READ_NOISE,
                               "read-noise std as a fraction of g_max (aihwkit: about 1 %)"),
    }

    def _configure(self) -> None:
        p = self.params
        self.prog_scale = float(p["prog_noise_scale"])
        self.relax_scale = float(p["relaxation_scale"])
        self.read_frac = float(p["read_noise_frac"])

    def prog_noise_std(self, g_target: torch.Tensor) -> torch.Tensor:
        return spread_std(g_target, self.g_max, 0) * self.prog_scale

    def _sample_state(self, g_target, g_prog, generator):
        return {"g_target": g_target.clone(), "z": gaussian(g_target, generator)}

    def relaxation_std(self, g_target: torch.Tensor, t: float) -> torch.Tensor:
        """Std (uS) relaxation has added by t: sqrt(spread(t)^2 - spread(1 s)^2), at least 0."""
        s_t, s_0 = spread_at(g_target, self.g_max, t), spread_std(g_target, self.g_max, 0)
        return (s_t * s_t - s_0 * s_0).clamp(min=0.0).sqrt() * self.relax_scale

    def drift(self, state: Programmed, t: float) -> torch.Tensor:
        check_time(t)
        if not self.drift_on or "z" not in state.aux or t <= C.RRAM_SPREAD_TIMES[0]:
            return state.g_prog.clone()
        extra = self.relaxation_std(state.aux["g_target"], t)
        return (state.g_prog + extra * state.aux["z"]).clamp(min=0.0)

    def read_noise_std(self, state: Programmed, g_t: torch.Tensor, t: float) -> torch.Tensor:
        return torch.full_like(g_t, self.read_frac * self.g_max)
