"""Tiki-Taka v2, chopped TTv2 and AGAD (Gokmen & Haensch 2020; Rasch et al., arXiv 2303.04721, 2023).

A fast array A receives the pulsed gradient (as analog SGD). Every update, n_cols columns k of A are
read with a one-hot input v_k (a noisy analog read) and the result is filtered digitally into H:
    TTv2:    z = (A - R) v_k                       R: reference array programmed to A's nominal SP
    c-TTv2:  gradient written to A with chopper c_k (input sign); z = c_k (A - R) v_k; c_k flips
             every `period` reads of column k (or with probability p_flip, `sync=0`), so A's offset
             from R cancels; with sync, W is written only at the end of a full chopper cycle
             (integrate-and-dump), where a constant offset has cancelled in H exactly — our choice:
             with random flips the offset's +-c terms crossed the threshold before cancelling
    AGAD:    no R; z = c_k (A v_k - mu_k), mu_k = mean read of column k over its previous chopper period
             (a dynamic reference that follows A's drifting symmetry point)
    H[:, k] += lr_h * z / dw_min(W);  where |H| >= 1 write trunc(H) pulses to W[:, k];  H -= trunc(H)
The network reads only W (the slow array). Rasch et al. read one column per sample; with minibatches
of B samples we read B columns per update so the transfer rate per sample is the same.
"""

from __future__ import annotations

import torch

from hwtrain.inmemory.pulse_trains import coincidence_counts
from runtime.errors import AcompileError
from runtime.physics.rpu_devices import RPUArray, RPUConfig

VARIANTS = ("ttv2", "cttv2", "agad")


class TikiTakaRule:
    """One layer = fast array A, slow array W, digital H (and chopper / reference state)."""

    def __init__(
        self,
        w_init: torch.Tensor,
        *,
        variant: str,
        cfg: RPUConfig,
        bl: int,
        gen: torch.Generator | None,
        lr_h: float,
        lr_a_scale: float = 1.0,
        p_flip: float,
        n_cols: int,
        read_noise: float,
        sync: bool = True,
        period: int = 1,
    ) -> None:
        if variant not in VARIANTS:
            raise AcompileError(f"unknown Tiki-Taka variant {variant!r}")
        if lr_h <= 0:
            raise AcompileError(f"{variant}: parameter 'lr_h' must be > 0, got {lr_h}")
        if not 0 <= p_flip <= 1:
            raise AcompileError(f"{variant}: parameter 'p_flip' must be in [0, 1], got {p_flip}")
        shape = tuple(w_init.shape)
        dev = w_init.device
        self.variant = variant
        self.gen = gen
        self.bl = int(bl)
        self.lr_h = lr_h
        self.lr_a_scale = lr_a_scale
        self.p_flip = p_flip if variant != "ttv2" else 0.0
        self.n_cols = max(int(n_cols), 1)
        self.read_noise = read_noise
        self.a = RPUArray(shape, cfg, gen, dev)
        self.w = RPUArray(shape, cfg, gen, dev)
        self.w.set_weights(w_init)
        # A starts at its true symmetry point (Rasch et al. initialize A there); R = the nominal SP 0,
        # so the device SP offset (cfg.offset) is exactly the reference offset TTv2 suffers from.
        self.a.set_weights(self.a.symmetry_point())
        self.r = torch.zeros(shape, device=dev)
        self.h = torch.zeros(shape, device=dev)
        self.c = torch.ones(shape[1], device=dev)
        self.mu_sum = torch.zeros(shape, device=dev)
        self.mu_cnt = torch.zeros(shape[1], device=dev)
        self.mu_prev = torch.zeros(shape, device=dev)
        self.has_prev = torch.zeros(shape[1], dtype=torch.bool, device=dev)
        self.k = 0
        # c-TTv2 with a periodic chopper (flip after every `period` reads of a column) and a cycle-
        # synchronous transfer; sync = False gives the random-flip variant (probability p_flip)
        self.sync = sync
        self.period = max(int(period), 1)
        self.reads = torch.zeros(shape[1], device=dev)
        self.w_scale = cfg.w_bound
        self.transfers = 0

    @property
    def pulses(self) -> int:
        """Pulses on both arrays: A's gradient updates and W's transfers."""
        return self.a.pulses + self.w.pulses

    def read(self, noisy: bool = True) -> torch.Tensor:
        return self.w.w

    def weights(self) -> torch.Tensor:
        return self.w.w

    def step(self, x: torch.Tensor, grad_out: torch.Tensor, lr: float) -> None:
        xc = x * self.c if self.variant != "ttv2" else x
        n_up, n_down = coincidence_counts(xc, -grad_out, lr * self.lr_a_scale, self.a.cfg.dw_min,
                                          self.bl, self.gen)
        self.a.apply_pulses(n_up, n_down)
        cols = (self.k + torch.arange(self.n_cols, device=x.device)) % x.shape[1]
        self.k = int((self.k + self.n_cols) % x.shape[1])
        self._transfer(cols)

    def _transfer(self, cols: torch.Tensor) -> None:
        a_cols = self.a.w[:, cols]
        z = a_cols + self.read_noise * self.w_scale * torch.randn(
            a_cols.shape, generator=self.gen, device=a_cols.device, dtype=a_cols.dtype)
        c = self.c[cols]
        if self.variant == "ttv2":
            signal = z - self.r[:, cols]
        elif self.variant == "cttv2":
            signal = c * (z - self.r[:, cols])
        else:  # agad
            self.mu_sum[:, cols] += z
            self.mu_cnt[cols] += 1
            signal = torch.where(self.has_prev[cols], c * (z - self.mu_prev[:, cols]), torch.zeros_like(z))
        h = self.h[:, cols] + self.lr_h * signal / self.w.cfg.dw_min
        n = torch.trunc(h)
        if self.variant == "cttv2" and self.sync:
            # integrate-and-dump: write W only at the end of a full chopper cycle, where a constant
            # offset's +c and -c contributions to H have cancelled exactly
            self.reads[cols] += 1
            done = (self.reads[cols] % (2 * self.period)) == 0
            n = n * done.to(n.dtype)
        self.h[:, cols] = h - n
        if bool((n != 0).any()):
            up = torch.zeros_like(self.w.w)
            down = torch.zeros_like(self.w.w)
            up[:, cols] = n.clamp(min=0)
            down[:, cols] = (-n).clamp(min=0)
            self.w.apply_pulses(up, down)
            self.transfers += int(n.abs().sum())
        if self.variant == "cttv2" and self.sync:
            flip = (self.reads[cols] % self.period) == 0
            if bool(flip.any()):
                self.c[cols[flip]] = -self.c[cols[flip]]
        elif self.p_flip > 0:
            flip = torch.rand(cols.shape, generator=self.gen, device=cols.device) < self.p_flip
            if bool(flip.any()):
                fc = cols[flip]
                self.c[fc] = -self.c[fc]
                if self.variant == "agad":
                    cnt = self.mu_cnt[fc].clamp(min=1)
                    self.mu_prev[:, fc] = self.mu_sum[:, fc] / cnt
                    self.has_prev[fc] = True
                    self.mu_sum[:, fc] = 0
                    self.mu_cnt[fc] = 0

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {f"a.{k}": v for k, v in self.a.state_dict().items()}
        out.update({f"w.{k}": v for k, v in self.w.state_dict().items()})
        out.update(h=self.h, c=self.c, mu_sum=self.mu_sum, mu_cnt=self.mu_cnt, mu_prev=self.mu_prev,
                   has_prev=self.has_prev.to(torch.float32), r=self.r, k=torch.tensor(float(self.k)),
                   reads=self.reads)
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.a.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("a.")})
        self.w.load_state_dict({k[2:]: v for k, v in state.items() if k.startswith("w.")})
        for name in ("h", "c", "mu_sum", "mu_cnt", "mu_prev", "r", "reads"):
            setattr(self, name, state[name].clone())
        self.has_prev = state["has_prev"] > 0.5
        self.k = int(state["k"])
