"""Mixed-precision in-memory training (Nandakumar et al., ISCAS 2018; Front. Neurosci. 2020).

The gradient is accumulated digitally in high precision, only its coarse part goes to the PCM:
    chi += lr * d (x) x              (d = -dL/dy; summed over the minibatch)
    p    = trunc(chi / eps)           (eps = mean conductance change of one SET pulse, in weight units)
    p > 0: p SET pulses on G+;  p < 0: |p| SET pulses on G-;   chi -= p * eps
    refresh a pair when a device saturates (RESET both, re-write the difference on one).
On a registered device without a pulse model (`device=`), a transfer is one program-and-verify write of
p * eps (runtime/physics/verified_pair.py), eps is that device's write resolution, and nothing saturates.
The papers update per sample; we accumulate chi per minibatch (same rule with the summed gradient) and
apply pulses once per minibatch, which is what makes an epoch take seconds.
"""

from __future__ import annotations

import torch

from runtime.errors import AcompileError
from runtime.physics.devices import DeviceModel
from runtime.physics.pcm_pulse import PCMDifferentialPair, PCMPulseConfig
from runtime.physics.verified_pair import VerifiedPair


class MixedPrecisionRule:
    """One layer: a differential pair per weight (PCM under SET pulses, or any registered device under
    verify writes) + the digital chi accumulator."""

    def __init__(
        self,
        w_init: torch.Tensor,
        *,
        w_max: float,
        gen: torch.Generator | None,
        cfg: PCMPulseConfig | None = None,
        eps_scale: float = 1.0,
        read_noise: bool = True,
        refresh_every: int = 1,
        device: DeviceModel | None = None,
    ) -> None:
        if w_max <= 0:
            raise AcompileError(f"mixed-precision: parameter 'w_max' must be > 0, got {w_max}")
        if eps_scale <= 0:
            raise AcompileError(f"mixed-precision: parameter 'eps' must be > 0, got {eps_scale}")
        self.cfg = cfg or PCMPulseConfig()
        self.w_scale = float(w_max)
        shape = tuple(w_init.shape)
        if device is None:
            self.pair: PCMDifferentialPair | VerifiedPair = PCMDifferentialPair(
                shape, w_max / self.cfg.g_max, self.cfg, gen, w_init.device)
        else:
            self.pair = VerifiedPair(shape, w_max / (device.g_max - device.g_min), device, gen, w_init.device)
        self.pair.program(w_init)
        self.eps = eps_scale * self.pair.step_us * self.pair.w_per_us
        self.chi = torch.zeros_like(w_init)
        self.read_noise = read_noise
        self.refresh_every = max(int(refresh_every), 1)
        self.steps = 0
        self.pulses = 0  # SET pulses (PCM pair) or weights written by verify (VerifiedPair)
        # optional bookkeeping for the conservation check: accumulated == applied + chi
        self.track = False
        self.accumulated = torch.zeros_like(w_init)
        self.applied = torch.zeros_like(w_init)

    def read(self, noisy: bool = True) -> torch.Tensor:
        return self.pair.read(read_noise=noisy and self.read_noise)

    def weights(self) -> torch.Tensor:
        return self.pair.weights()

    def step(self, x: torch.Tensor, grad_out: torch.Tensor, lr: float) -> None:
        update = grad_out.T @ x
        update *= -lr
        self.chi += update
        p = torch.trunc(self.chi / self.eps)
        idx = torch.nonzero(p.view(-1)).squeeze(1)  # pulses are sparse: work on the touched weights only
        pv = p.view(-1)[idx]
        self.chi.view(-1)[idx] -= pv * self.eps
        if self.track:
            self.accumulated += update
            self.applied.view(-1)[idx] += pv * self.eps
        if idx.numel():
            self.pulses += self.pair.transfer_at(idx, pv, self.eps)
        touched = idx
        self.steps += 1
        if self.steps % self.refresh_every == 0:
            self.pair.refresh(touched if self.refresh_every == 1 else None)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.pair.state_dict(), "chi": self.chi}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.pair.load_state_dict(state)
        self.chi = state["chi"].clone()
