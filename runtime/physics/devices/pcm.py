"""`pcm`: the PCM inference statistical model (DESIGN §6) — programming noise, drift, 1/f read noise.

Nandakumar et al., ICECS 2019 and Joshi et al., Nat. Commun. 11:2473 (2020), as in IBM aihwkit's
PCMLikeNoiseModel; constants in runtime/physics/constants.py. The functions are also used by the
in-memory training PCM model (runtime/physics/pcm_pulse.py) for its reads.
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
    pos_float,
    torch,
)


def _relative(g: torch.Tensor, g_max: float) -> torch.Tensor:
    return (g.abs() / g_max).clamp(min=C.PCM_X_FLOOR)


def prog_noise_std(g_target: torch.Tensor, g_max: float = C.PCM_G_MAX) -> torch.Tensor:
    """sigma_prog(x) in uS; the fit was made at 25 uS, so it scales with g_max / 25."""
    c0, c1, c2 = C.PCM_PROG_NOISE_COEFFS
    x = g_target.abs() / g_max
    return (c0 + c1 * x + c2 * x * x).clamp(min=0.0) * (g_max / C.PCM_G_MAX)


def drift_nu_stats(g_target: torch.Tensor, g_max: float = C.PCM_G_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu_nu, sigma_nu) of the drift exponent for each target conductance."""
    lx = torch.log(_relative(g_target, g_max))
    mu, sg = C.PCM_DRIFT_MU, C.PCM_DRIFT_SIGMA
    mu_nu = (mu["a"] * lx + mu["b"]).clamp(mu["lo"], mu["hi"])
    sigma_nu = (sg["a"] * lx + sg["b"]).clamp(sg["lo"], sg["hi"])
    return mu_nu, sigma_nu


def read_noise_q(g_prog: torch.Tensor, g_max: float = C.PCM_G_MAX) -> torch.Tensor:
    """Q_s, the relative 1/f noise amplitude of a device programmed to g_prog."""
    p = C.PCM_READ_NOISE
    x = g_prog.abs() / g_max
    return (p["c"] / x.pow(p["exp"]).clamp(min=p["floor"])).clamp(max=p["cap"])


def read_noise_time_factor(t: float, t0: float = C.PCM_T0, t_read: float = C.PCM_T_READ) -> float:
    """sqrt(ln((t + t0 + t_read) / (2 t_read))): how much 1/f noise has accumulated by time t."""
    return math.sqrt(math.log((t + t0 + t_read) / (2.0 * t_read)))


def power_law_drift(g_prog: torch.Tensor, nu: torch.Tensor, t: float, t0: float) -> torch.Tensor:
    """G(t) = G_prog ((t + t0) / t0)^-nu, t in seconds since programming."""
    check_time(t)
    if t == 0:
        return g_prog.clone()
    return g_prog * torch.exp(-nu * math.log((t + t0) / t0))


SCALE_KEYS = {
    "prog_noise_scale": Key(nonneg_float, 1.0, "factor on the programming-noise std (aihwkit)"),
    "drift_scale": Key(nonneg_float, 1.0, "factor on the drift exponents (aihwkit drift_scale)"),
    "read_noise_scale": Key(nonneg_float, 1.0, "factor on the 1/f read-noise std (aihwkit read_noise_scale)"),
}


class PowerLawPCM(DeviceModel):
    """PCM with power-law drift G_prog ((t + t0)/t0)^-nu and accumulated 1/f read noise; a subclass gives
    the fits: prog_noise_std, nu_stats (mean, std of nu) and q_s (relative 1/f amplitude)."""

    def _configure(self) -> None:
        p = self.params
        self.t0, self.t_read = float(p["t0"]), float(p["t_read"])
        self.prog_scale, self.drift_scale, self.read_scale = (float(p["prog_noise_scale"]),
                                                              float(p["drift_scale"]),
                                                              float(p["read_noise_scale"]))

    def nu_stats(self, g_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _sample_state(self, g_target, g_prog, generator):
        mu_nu, sigma_nu = self.nu_stats(g_target)
        nu = (mu_nu + sigma_nu * gaussian(g_target, generator)).abs() * self.drift_scale
        return {"nu": nu}

    def drift(self, state: Programmed, t: float) -> torch.Tensor:
        check_time(t)
        if not self.drift_on or "nu" not in state.aux:
            return state.g_prog.clone()
        return power_law_drift(state.g_prog, state.aux["nu"], t, self.t0)

    def read_noise_std(self, state: Programmed, g_t: torch.Tensor, t: float) -> torch.Tensor:
        """sigma_read = |G(t)| Q_s(G_prog) sqrt(ln((t + t0 + t_read) / (2 t_read)))."""
        factor = read_noise_time_factor(t, self.t0, self.t_read)
        return g_t.abs() * self.q_s(state.g_prog) * (self.read_scale * factor)


@register
class PCM(PowerLawPCM):
    name = "pcm"
    summary = "PCM statistical model (Nandakumar 2019 / Joshi 2020; aihwkit PCMLikeNoiseModel)"
    source = "Joshi et al., Nat. Commun. 11:2473 (2020); Nandakumar et al., ICECS 2019"
    G_MAX = C.PCM_G_MAX
    G_MAX_DOC = "uS, g_max of the fit (Nandakumar 2019)"
    KEYS = {
        "t0": Key(pos_float, C.PCM_T0, "s, drift reference time (Joshi 2020: first read at 20 s)"),
        "t_read": Key(pos_float, C.PCM_T_READ, "s, read duration of the 1/f model (Nandakumar 2019)"),
        **SCALE_KEYS,
    }

    def prog_noise_std(self, g_target: torch.Tensor) -> torch.Tensor:
        return prog_noise_std(g_target, self.g_max) * self.prog_scale

    def nu_stats(self, g_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return drift_nu_stats(g_target, self.g_max)

    def q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        return read_noise_q(g_prog, self.g_max)


__all__ = ["PCM", "PowerLawPCM", "drift_nu_stats", "prog_noise_std", "read_noise_q",
           "read_noise_time_factor"]
