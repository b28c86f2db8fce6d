"""The PCM inference device model (DESIGN §6): programming noise, drift, 1/f read noise.

One implementation shared by the runtime emulator and hwtrain. Works on torch tensors of any shape, so a
leading chip dimension batches independent simulated chips; randomness comes only from the generator
passed in, so a (seed, chip) pair reproduces bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from runtime.physics import constants as C


@dataclass(frozen=True)
class PCMConfig:
    """Which effects are on, and the device's scale. Defaults are the Joshi 2020 / aihwkit PCM model."""

    g_max: float = C.PCM_G_MAX
    g_min: float = 0.0
    t0: float = C.PCM_T0
    t_read: float = C.PCM_T_READ
    prog_noise: bool = True
    drift: bool = True
    read_noise: bool = True
    prog_noise_scale: float = 1.0
    drift_scale: float = 1.0
    read_noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.g_max > 0:
            raise ValueError(f"g_max must be > 0 uS, got {self.g_max}")
        if not 0 <= self.g_min < self.g_max:
            raise ValueError(f"g_min must be in [0, g_max), got {self.g_min}")
        if not self.t0 > 0 or not self.t_read > 0:
            raise ValueError("t0 and t_read must be > 0 s")


@dataclass
class ProgrammedPCM:
    """The state of a device array right after programming: what every later time point derives from."""

    g_prog: torch.Tensor  # uS
    nu: torch.Tensor  # drift exponent per device


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


class PCMInferenceModel:
    """Program once, then derive the conductance at any time t from that programmed state."""

    def __init__(self, config: PCMConfig | None = None) -> None:
        self.config = config or PCMConfig()

    def program(self, g_target: torch.Tensor, generator: torch.Generator | None = None) -> ProgrammedPCM:
        """Programming noise and the per-device drift exponent, both sampled once per chip."""
        cfg = self.config
        g_prog = g_target.clone()
        if cfg.prog_noise:
            noise = torch.randn(
                g_target.shape, generator=generator, device=g_target.device, dtype=g_target.dtype
            )
            g_prog = g_prog + cfg.prog_noise_scale * prog_noise_std(g_target, cfg.g_max) * noise
        g_prog = g_prog.clamp(min=0.0)
        if cfg.drift:
            mu_nu, sigma_nu = drift_nu_stats(g_target, cfg.g_max)
            z = torch.randn(g_target.shape, generator=generator, device=g_target.device, dtype=g_target.dtype)
            nu = (mu_nu + sigma_nu * z).abs() * cfg.drift_scale
        else:
            nu = torch.zeros_like(g_target)
        return ProgrammedPCM(g_prog=g_prog, nu=nu)

    def drift(self, state: ProgrammedPCM, t: float) -> torch.Tensor:
        """Deterministic drift G(t) = G_prog ((t + t0) / t0)^-nu, t in seconds since programming."""
        if t < 0:
            raise ValueError(f"time must be >= 0 s, got {t}")
        if not self.config.drift or t == 0:
            return state.g_prog.clone()
        ratio = (t + self.config.t0) / self.config.t0
        return state.g_prog * torch.exp(-state.nu * math.log(ratio))

    def read_noise_std(self, state: ProgrammedPCM, g_drift: torch.Tensor, t: float) -> torch.Tensor:
        """sigma_read = |G(t)| Q_s(G_prog) sqrt(ln((t + t0 + t_read) / (2 t_read)))."""
        cfg = self.config
        factor = read_noise_time_factor(t, cfg.t0, cfg.t_read)
        return g_drift.abs() * read_noise_q(state.g_prog, cfg.g_max) * (cfg.read_noise_scale * factor)

    def add_read_noise(
        self, state: ProgrammedPCM, g_drift: torch.Tensor, t: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """One noisy read of drifted conductances (call per MVM for per-read sampling)."""
        if not self.config.read_noise:
            return g_drift
        std = self.read_noise_std(state, g_drift, t)
        noise = torch.randn(g_drift.shape, generator=generator, device=g_drift.device, dtype=g_drift.dtype)
        return (g_drift + std * noise).clamp(min=0.0)

    def read(self, state: ProgrammedPCM, t: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Conductance at time t: drift, then one sample of the accumulated 1/f noise (aihwkit-style)."""
        return self.add_read_noise(state, self.drift(state, t), t, generator)
