"""PCM under SET-pulse updates, for in-memory training (Nandakumar et al., J. Appl. Phys. 124:152135, 2018).

A PCM device can only be made more conductive by partial-SET pulses; each pulse raises G by a random
amount whose mean shrinks as G grows (the device saturates near 10.5 uS) and which is largest right after
a RESET. Weights therefore live on a differential pair (G+ - G-) that must be refreshed when one side
saturates. Read noise and the program-and-verify writes of a refresh come from an inference device of the
registry (`runtime.physics.devices`, default `pcm`) at this pair's g_max, through the device interface.

Everything is vectorized torch on any device and takes an explicit `torch.Generator` so runs are seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.devices import DeviceModel, Programmed, make_device


@dataclass
class PCMPulseConfig:
    """Parameters of the SET-pulse model; defaults are the published ones (constants.py)."""

    g_min: float = C.PCM_TRAIN_G_MIN
    g_max: float = C.PCM_TRAIN_G_MAX
    refresh_fraction: float = C.PCM_REFRESH_FRACTION
    noise_scale: float = 1.0  # scales the std of each pulse's increment (0 = deterministic device)
    read_device: str = "pcm"  # the registered device whose read noise and programming noise the pair has

    def __post_init__(self) -> None:
        if not (self.g_min > 0 and self.g_max > self.g_min):
            raise AcompileError(f"pcm: need 0 < g_min < g_max, got g_min={self.g_min}, g_max={self.g_max}")
        if not 0 < self.refresh_fraction <= 1:
            raise AcompileError(f"pcm: refresh_fraction must be in (0, 1], got {self.refresh_fraction}")
        if self.noise_scale < 0:
            raise AcompileError(f"pcm: noise_scale must be >= 0, got {self.noise_scale}")


def set_increment_stats(g: torch.Tensor, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (uS) of the conductance change of the next SET pulse at conductance g after n pulses."""
    decay = torch.exp(-n.to(g.dtype) / C.PCM_SET_N_TAU)
    mean = C.PCM_SET_MEAN_G * g + C.PCM_SET_MEAN_0 + C.PCM_SET_MEAN_N * decay
    std = C.PCM_SET_STD_G * g + C.PCM_SET_STD_0 + C.PCM_SET_STD_N * decay
    return mean, std.clamp(min=0.0)


def reset_conductance(shape: tuple[int, ...], generator: torch.Generator | None, device=None) -> torch.Tensor:
    """Conductance right after a RESET: N(0.1, 0.01) uS, never below 0."""
    z = torch.randn(shape, generator=generator, device=device)
    return (C.PCM_RESET_MEAN + C.PCM_RESET_STD * z).clamp(min=0.0)


def apply_set_pulses(
    g: torch.Tensor,
    n: torch.Tensor,
    pulses: torch.Tensor,
    cfg: PCMPulseConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """In place: give device k `pulses[k]` (>= 0) SET pulses, one at a time, and count them in n.

    Only the touched devices are gathered, so a sparse update (the usual case) costs little. Returns the
    flat indices of the touched devices.
    """
    idx = torch.nonzero(pulses.reshape(-1) > 0).squeeze(1)
    if idx.numel() == 0:
        return idx
    apply_set_pulses_at(g, n, idx, pulses.reshape(-1)[idx], cfg, generator)
    return idx


def apply_set_pulses_at(
    g: torch.Tensor,
    n: torch.Tensor,
    idx: torch.Tensor,
    counts: torch.Tensor,
    cfg: PCMPulseConfig,
    generator: torch.Generator | None = None,
) -> None:
    """Sparse form of apply_set_pulses: counts[k] (> 0) pulses on flat device idx[k]."""
    gf, nf = g.view(-1), n.view(-1)
    gs, ns = gf[idx], nf[idx]
    left = counts.to(torch.int64)
    while True:
        active = left > 0
        if not bool(active.any()):
            break
        mean, std = set_increment_stats(gs, ns)
        z = torch.randn(gs.shape, generator=generator, device=gs.device, dtype=gs.dtype)
        dg = mean + cfg.noise_scale * std * z
        gs = torch.where(active, (gs + dg).clamp(cfg.g_min, cfg.g_max), gs)
        ns = ns + active.to(ns.dtype)
        left = left - active.to(left.dtype)
    gf[idx] = gs
    nf[idx] = ns


class NoiseBank:
    """Standard-normal samples for per-read noise at a fraction of torch.randn's CPU cost.

    Holds `factor` x numel pre-drawn samples and hands out a contiguous window at a random offset on each
    call; it is redrawn every `refresh` calls. Windows overlap across calls, so consecutive reads are not
    strictly independent — a deliberate trade for speed (reads of a training step dominate its cost).
    """

    def __init__(self, shape: tuple[int, ...], generator: torch.Generator | None, device=None,
                 factor: int = 4, refresh: int = 200) -> None:
        self.shape, self.gen, self.numel = shape, generator, int(math.prod(shape))
        self.size, self.refresh, self.calls = factor * self.numel, refresh, 0
        self.device = device
        self.buf = torch.randn(self.size, generator=generator, device=device)

    def sample(self) -> torch.Tensor:
        self.calls += 1
        if self.calls % self.refresh == 0:
            self.buf = torch.randn(self.size, generator=self.gen, device=self.device)
        off = int(torch.randint(0, self.size - self.numel + 1, (1,), generator=self.gen, device=self.device))
        return self.buf[off:off + self.numel].view(self.shape)


def mean_pulse_increment(cfg: PCMPulseConfig, max_pulses: int = 200) -> float:
    """eps of mixed precision: the average mean increment (uS) over a SET ramp from RESET to saturation.

    Nandakumar 2018 define eps as "the average conductance change of one pulse"; we average the model's
    mean increment along its own mean trajectory from 0.1 uS up to the refresh level.
    """
    g, total, steps = C.PCM_RESET_MEAN, 0.0, 0
    stop = cfg.refresh_fraction * cfg.g_max
    for k in range(max_pulses):
        d = C.PCM_SET_MEAN_G * g + C.PCM_SET_MEAN_0 + C.PCM_SET_MEAN_N * math.exp(-k / C.PCM_SET_N_TAU)
        if g + d > stop or d <= 0:
            break
        g, total, steps = g + d, total + d, steps + 1
    return total / max(steps, 1)


class DifferentialReads:
    """What every differential pair of in-memory training shares: W = (G+ - G-) * w_per_us, cached until
    the next write, read with the read noise of a registered device (`self.reads`) on both devices."""

    def _init_reads(self, shape: tuple[int, ...], w_per_us: float, reads: DeviceModel,
                    generator: torch.Generator | None, compute: torch.device | str) -> None:
        self.reads = reads
        self.w_per_us = float(w_per_us)
        self.gen = generator
        self._noise = NoiseBank(tuple(shape), generator, compute)
        self._w: torch.Tensor | None = None
        self._read_std: torch.Tensor | None = None
        self._read_std_age = 0
        self.read_std_every = 10  # writes between recomputations of the (slowly changing) read-noise std

    def weights(self) -> torch.Tensor:
        """Noise-free effective weight (what the conductances encode); cached until the next write."""
        if self._w is None:
            self._w = (self.g_pos - self.g_neg) * self.w_per_us
        return self._w

    def read(self, read_noise: bool = True, t: float = 0.0) -> torch.Tensor:
        """One noisy read of the effective weights: the device's read noise on each device.

        Training reads happen right after writes, so no drift is applied (for pcm, t = 0 gives the 1/f
        noise accumulated over t0 = 20 s, the inference model's first read).
        """
        if not (read_noise and self.reads.read_noise):
            return self.weights()
        return torch.addcmul(self.weights(), self.read_noise_std(t), self._noise.sample())

    def read_noise_std(self, t: float = 0.0) -> torch.Tensor:
        """Std of one read of G+ - G- in weight units: the two devices' read noise in quadrature.

        Cached and recomputed every `read_std_every` writes (and after a refresh), since it follows G slowly.
        """
        if self._read_std is None or self._read_std_age >= self.read_std_every:
            sp = self.reads.read_noise_std(Programmed(self.g_pos), self.g_pos, t)
            sn = self.reads.read_noise_std(Programmed(self.g_neg), self.g_neg, t)
            self._read_std = torch.sqrt(sp * sp + sn * sn) * self.w_per_us
            self._read_std_age = 0
        return self._read_std


class PCMDifferentialPair(DifferentialReads):
    """W = (G+ - G-) * w_per_us for a weight matrix; both sides only ever go up by SET pulses.

    `refresh()` implements Nandakumar's saturation handling: when either device of a pair passes
    refresh_fraction * g_max, RESET both and re-program the difference onto one of them (program-and-
    verify, modelled with the inference programming-noise fit of DESIGN §6 at this device's g_max).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        w_per_us: float,
        cfg: PCMPulseConfig | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if w_per_us <= 0:
            raise AcompileError(f"pcm: weight per uS must be > 0, got {w_per_us}")
        self.cfg = cfg or PCMPulseConfig()
        self.g_pos = reset_conductance(shape, generator, device)
        self.g_neg = reset_conductance(shape, generator, device)
        self.n_pos = torch.zeros(shape, device=device)
        self.n_neg = torch.zeros(shape, device=device)
        self.refreshes = 0
        # after the RESET draws, as before: a seeded run draws the same numbers
        self._init_reads(shape, w_per_us, make_device(self.cfg.read_device, g_max=self.cfg.g_max), generator,
                         device)

    def apply_pulses(self, signed_pulses: torch.Tensor) -> None:
        """p > 0: p SET pulses on G+; p < 0: |p| SET pulses on G-. Returns the touched flat indices."""
        self._read_std_age += 1
        self._w = None
        i_pos = apply_set_pulses(self.g_pos, self.n_pos, signed_pulses.clamp(min=0), self.cfg, self.gen)
        i_neg = apply_set_pulses(self.g_neg, self.n_neg, (-signed_pulses).clamp(min=0), self.cfg, self.gen)
        return torch.cat([i_pos, i_neg])

    def apply_pulses_at(self, idx: torch.Tensor, signed_counts: torch.Tensor) -> None:
        """Sparse apply_pulses: signed_counts[k] (non-zero) pulses for flat weight idx[k]."""
        self._read_std_age += 1
        self._w = None
        pos = signed_counts > 0
        if bool(pos.any()):
            apply_set_pulses_at(self.g_pos, self.n_pos, idx[pos], signed_counts[pos], self.cfg, self.gen)
        neg = ~pos
        if bool(neg.any()):
            apply_set_pulses_at(self.g_neg, self.n_neg, idx[neg], -signed_counts[neg], self.cfg, self.gen)

    @property
    def step_us(self) -> float:
        """One device increment in uS (mixed precision's eps): the mean SET increment."""
        return mean_pulse_increment(self.cfg)

    def transfer_at(self, idx: torch.Tensor, steps: torch.Tensor, eps_w: float) -> int:
        """Mixed-precision transfer: |steps[k]| SET pulses on the side of its sign (eps_w is what the
        controller meant each to be worth; the device gives what its increment is). Returns the pulses."""
        self.apply_pulses_at(idx, steps)
        return int(steps.abs().sum())

    def program(self, w_target: torch.Tensor) -> None:
        """Program-and-verify a weight from scratch: RESET both, the difference goes on one device."""
        mask = torch.ones_like(w_target, dtype=torch.bool)
        self._rewrite(mask, w_target)
        self._read_std = None
        self._w = None

    def refresh(self, touched: torch.Tensor | None = None) -> int:
        """RESET saturated pairs and rewrite their difference on one device; returns how many.

        touched: flat indices to check (those just pulsed); None checks every pair.
        """
        limit = self.cfg.refresh_fraction * self.cfg.g_max
        if touched is None:
            mask = (self.g_pos > limit) | (self.g_neg > limit)
            if not bool(mask.any()):
                return 0
            touched = torch.nonzero(mask.reshape(-1)).squeeze(1)
        else:
            gp, gn = self.g_pos.reshape(-1)[touched], self.g_neg.reshape(-1)[touched]
            touched = touched[(gp > limit) | (gn > limit)].unique()
        count = int(touched.numel())
        if count:
            self._rewrite_idx(touched)
            self.refreshes += count
            self._read_std = None
            self._w = None
        return count

    def _rewrite_idx(self, idx: torch.Tensor) -> None:
        sub = PCMDifferentialPair.__new__(PCMDifferentialPair)
        sub.cfg, sub.reads, sub.w_per_us, sub.gen = self.cfg, self.reads, self.w_per_us, self.gen
        sub._w = None
        flat = {k: getattr(self, k).reshape(-1) for k in ("g_pos", "g_neg", "n_pos", "n_neg")}
        for k, v in flat.items():
            setattr(sub, k, v[idx].clone())
        sub._rewrite(torch.ones(idx.shape, dtype=torch.bool, device=idx.device), sub.weights())
        for k, v in flat.items():
            v[idx] = getattr(sub, k)

    def _rewrite(self, mask: torch.Tensor, w_target: torch.Tensor) -> None:
        cfg = self.cfg
        g_target = (w_target / self.w_per_us).clamp(-cfg.g_max, cfg.g_max)
        mag = g_target.abs()
        sigma = self.reads.prog_noise_std(mag)
        z = torch.randn(mag.shape, generator=self.gen, device=mag.device, dtype=mag.dtype)
        g_prog = (mag + cfg.noise_scale * sigma * z).clamp(cfg.g_min, cfg.g_max)
        g_reset = reset_conductance(tuple(mag.shape), self.gen, mag.device)
        # The written device gets g_prog; its partner stays at its RESET value. Pulse counters restart
        # (the SET model's n counts pulses since RESET; a program-and-verify write ends far from RESET,
        # so the written side's counter is set past the early-pulse transient).
        pos_side = g_target >= 0
        new_pos = torch.where(pos_side, torch.maximum(g_prog, g_reset), g_reset)
        new_neg = torch.where(pos_side, g_reset, torch.maximum(g_prog, g_reset))
        self.g_pos = torch.where(mask, new_pos, self.g_pos)
        self.g_neg = torch.where(mask, new_neg, self.g_neg)
        late = torch.full_like(mag, 10.0)
        self.n_pos = torch.where(mask, torch.where(pos_side, late, torch.zeros_like(mag)), self.n_pos)
        self.n_neg = torch.where(mask, torch.where(pos_side, torch.zeros_like(mag), late), self.n_neg)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"g_pos": self.g_pos, "g_neg": self.g_neg, "n_pos": self.n_pos, "n_neg": self.n_neg}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in ("g_pos", "g_neg", "n_pos", "n_neg"):
            setattr(self, k, state[k].to(getattr(self, k).device, getattr(self, k).dtype).clone())
        self._w = None
        self._read_std = None
