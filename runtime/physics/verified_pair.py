"""A differential pair of any registered device, written by program-and-verify (mixed-precision training).

PCM has a published pulse response (pcm_pulse.py: partial-SET pulses). The other devices of the registry
(`runtime.physics.devices`) are known by what their inference fits describe: the spread of a conductance
after program-and-verify, its read noise. On those, a mixed-precision transfer is a verify write: the
controller reads the device (verify reads average read noise out: the noise-free programmed conductance),
and re-programs it to that value plus the transfer, through the device's own `program()` (its programming
noise, its clamp). So the write errors accumulate like a pulse device's (no digital copy of the target is
kept: that would make chi pointless). The weight sits on the device of its sign (G+ for w > 0, G- for
w < 0), the other device at g_min, as the compiler maps inference weights; a write re-programs only the
device of the weight's sign (aimed at its partner's conductance +- |w|), one that crosses zero both. No
refresh is needed: a verified write can lower a conductance, and it saturates at g_max.
"""

from __future__ import annotations

import torch

from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.devices import DeviceModel
from runtime.physics.pcm_pulse import DifferentialReads


def write_resolution(device: DeviceModel) -> float:
    """One eps in uS: the programming spread at VERIFY_RESOLUTION_AT x g_max, or g_max / 128 if noiseless."""
    mid = torch.tensor([C.VERIFY_RESOLUTION_AT * device.g_max])
    std = float(device.prog_noise_std(mid)[0]) if device.prog_noise else 0.0
    return std if std > 0 else device.g_max / C.VERIFY_NOISELESS_STEPS


class VerifiedPair(DifferentialReads):
    """W = (G+ - G-) * w_per_us on a registered device; writes are program-and-verify (see module doc)."""

    refreshes = 0  # verified writes never need one (kept for the rule's statistics)

    def __init__(self, shape: tuple[int, ...], w_per_us: float, device: DeviceModel,
                 generator: torch.Generator | None = None, compute: torch.device | str = "cpu") -> None:
        if w_per_us <= 0:
            raise AcompileError(f"{device.name}: weight per uS must be > 0, got {w_per_us}")
        self._init_reads(shape, w_per_us, device, generator, compute)
        self.step_us = write_resolution(device)
        self.g_pos = torch.full(shape, device.g_min, device=compute)
        self.g_neg = torch.full(shape, device.g_min, device=compute)
        self.writes = 0

    @property
    def device(self) -> DeviceModel:
        """The registered device the pair is made of (it programs the writes and gives the reads)."""
        return self.reads

    def program(self, w_target: torch.Tensor) -> None:
        """Program-and-verify every weight from scratch (both devices of every pair)."""
        idx = torch.arange(w_target.numel(), device=w_target.device)
        everything = torch.ones_like(idx, dtype=torch.bool)
        self._write(idx, w_target.reshape(-1), everything, everything)

    def transfer_at(self, idx: torch.Tensor, steps: torch.Tensor, eps_w: float) -> int:
        """Flat weights idx[k] re-programmed to their current value + steps[k] * eps_w: one verify write on
        the device that holds the weight, and on its partner only when the sign changes. Returns the
        weights written."""
        old = self.weights().reshape(-1)[idx]
        new = old + steps.to(old.dtype) * eps_w
        self._write(idx, new, (old > 0) | (new > 0), (old < 0) | (new < 0))
        return int(idx.numel())

    def refresh(self, touched: torch.Tensor | None = None) -> int:
        return 0

    def _write(self, idx: torch.Tensor, w_new: torch.Tensor, on_pos: torch.Tensor,
               on_neg: torch.Tensor) -> None:
        """Program the G+ devices of idx[on_pos] and the G- devices of idx[on_neg] so that G+ - G- encodes
        w_new: a device written alone is aimed at its partner's present conductance +- the weight (the
        partner's offset stays part of the difference); written together, the partner goes to g_min."""
        d = self.device
        g = (w_new / self.w_per_us).clamp(-(d.g_max - d.g_min), d.g_max - d.g_min)
        g_pos, g_neg = self.g_pos.view(-1), self.g_neg.view(-1)
        both = on_pos & on_neg
        base_pos = torch.where(both, torch.full_like(g, d.g_min), g_neg[idx])
        base_neg = torch.where(both, torch.full_like(g, d.g_min), g_pos[idx])
        for side, mask, target in ((g_pos, on_pos, base_pos + g.clamp(min=0)),
                                   (g_neg, on_neg, base_neg - g.clamp(max=0))):
            if bool(mask.any()):
                aim = target[mask].clamp(0.0, d.g_max)
                side[idx[mask]] = d.program(aim, self.gen).g_prog.clamp(max=d.g_max)
                self.writes += int(mask.sum())
        self._w = None
        self._read_std_age += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"g_pos": self.g_pos, "g_neg": self.g_neg}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k in ("g_pos", "g_neg"):
            setattr(self, k, state[k].to(getattr(self, k).device, getattr(self, k).dtype).clone())
        self._w = None
        self._read_std = None
