"""Resistive processing unit (RPU) devices updated by +-dw_min pulses (Gokmen & Vlasov 2016; Rasch 2023).

Two step models, both with device-to-device (d2d) variation of the step size and bounds, cycle-to-cycle
(c2c) noise on every step, up/down asymmetry, and a per-device symmetry point (SP) offset:

* ``linear``: every up pulse adds dw_up, every down pulse subtracts dw_down, clipped to the bounds.
* ``softbounds``: the step shrinks linearly towards the bound it moves to,
  up:   dw = dw_up   (w_max - w) / (w_max - s)
  down: dw = -dw_down (w - w_min) / (s - w_min)
  so with dw_up = dw_down random up/down pulses pull w to its symmetry point s (Rasch et al. 2023).

k pulses of one sign are applied in closed form (geometric series for soft bounds), with c2c noise of
std c2c * |step| * sqrt(k): exact in the mean, a Gaussian approximation of the per-pulse noise sum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from runtime.errors import AcompileError
from runtime.physics import constants as C

KINDS = ("softbounds", "linear")


@dataclass
class RPUConfig:
    """Step-device parameters; defaults follow Gokmen & Vlasov 2016 / Rasch 2023 (constants.py)."""

    kind: str = "softbounds"
    dw_min: float = C.TT_DW_MIN
    w_bound: float = C.TT_W_BOUND
    asymmetry: float = 0.0  # dw_up = dw_min (1 + a), dw_down = dw_min (1 - a)
    d2d: float = 0.0  # relative std of each device's dw_min (and of its bounds)
    c2c: float = 0.0  # relative std of every single step
    offset: float = 0.0  # std of the per-device symmetry point s, in weight units

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise AcompileError(f"device: unknown RPU device {self.kind!r}; "
                                f"choose one of {', '.join(KINDS)}")
        checks = {
            "dw_min": self.dw_min > 0,
            "w_bound": self.w_bound > 0,
            "d2d": self.d2d >= 0,
            "c2c": self.c2c >= 0,
            "offset": self.offset >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise AcompileError(f"device {self.kind}: parameter '{name}' must be "
                                    f"{'>= 0' if name in ('d2d', 'c2c', 'offset') else '> 0'}, "
                                    f"got {getattr(self, name)}")
        if not -1 < self.asymmetry < 1:
            raise AcompileError(f"device {self.kind}: parameter 'asymmetry' must be in (-1, 1), "
                                f"got {self.asymmetry}")
        if self.dw_min >= self.w_bound:
            raise AcompileError(f"device {self.kind}: parameter 'dw_min' ({self.dw_min}) must be smaller "
                                f"than the weight bound ({self.w_bound})")

    @classmethod
    def from_states(cls, states: float, **kw) -> RPUConfig:
        """dw_min from a number of states over [-w_bound, w_bound] (Gokmen's "~1000 states")."""
        if not states > 1:
            raise AcompileError(f"device: parameter 'states' must be > 1, got {states}")
        bound = kw.get("w_bound", C.TT_W_BOUND)
        return cls(dw_min=2.0 * bound / states, **kw)

    @property
    def states(self) -> float:
        return 2.0 * self.w_bound / self.dw_min


class RPUArray:
    """A [rows, cols] array of step devices with frozen per-device parameters (sampled once)."""

    def __init__(
        self,
        shape: tuple[int, ...],
        cfg: RPUConfig,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        self.cfg = cfg
        self.gen = generator

        def randn() -> torch.Tensor:
            return torch.randn(shape, generator=generator, device=device)

        base = (cfg.dw_min * (1 + cfg.d2d * randn())).clamp(min=0.0)
        self.dw_up = base * (1 + cfg.asymmetry)
        self.dw_down = base * (1 - cfg.asymmetry)
        self.sp_shift = cfg.offset * randn()
        span_up = (cfg.w_bound * (1 + cfg.d2d * randn())).clamp(min=0.1 * cfg.w_bound)
        span_down = (cfg.w_bound * (1 + cfg.d2d * randn())).clamp(min=0.1 * cfg.w_bound)
        self.w_max = self.sp_shift + span_up
        self.w_min = self.sp_shift - span_down
        # never let a step overshoot the whole span (keeps the geometric factor in (0, 1])
        self.dw_up = torch.minimum(self.dw_up, span_up)
        self.dw_down = torch.minimum(self.dw_down, span_down)
        self.w = torch.zeros(shape, device=device).clamp(self.w_min, self.w_max)
        self.pulses = 0  # up + down pulses applied since construction (device wear)

    def symmetry_point(self) -> torch.Tensor:
        """Where equal numbers of up and down pulses leave w (soft bounds); the shift alone for linear."""
        if self.cfg.kind == "linear":
            return self.sp_shift.clone()
        a = self.dw_up / (self.w_max - self.sp_shift)
        b = self.dw_down / (self.sp_shift - self.w_min)
        # dw_up (w_max - w) a' = dw_down (w - w_min) b'  ->  w* = (a w_max + b w_min) / (a + b)
        return (a * self.w_max + b * self.w_min) / (a + b).clamp(min=1e-12)

    def set_weights(self, w: torch.Tensor) -> None:
        """Initial write (closed-loop programming, exact up to the bounds)."""
        self.w = torch.maximum(torch.minimum(w.to(self.w), self.w_max), self.w_min)

    def apply_pulses(self, n_up: torch.Tensor, n_down: torch.Tensor) -> None:
        """In place: n_up up pulses then n_down down pulses on each device (counts >= 0, any dtype)."""
        n_up = n_up.to(self.w.dtype)
        n_down = n_down.to(self.w.dtype)
        self.pulses += int(n_up.sum() + n_down.sum())
        if bool((n_up > 0).any()):
            self.w = self._step(self.w, n_up, up=True)
        if bool((n_down > 0).any()):
            self.w = self._step(self.w, n_down, up=False)

    def _step(self, w: torch.Tensor, k: torch.Tensor, up: bool) -> torch.Tensor:
        """Pulse only the devices with k > 0 (coincidences are sparse), gathered to a flat subset."""
        cfg = self.cfg
        idx = torch.nonzero(k.reshape(-1) > 0).squeeze(1)
        if idx.numel() == 0:
            return w
        dense = idx.numel() > k.numel() // 4  # gathering only pays off for sparse updates

        def g(t: torch.Tensor) -> torch.Tensor:
            return t if dense else t.reshape(-1)[idx]

        ws, ks, w_max, w_min = g(w), g(k), g(self.w_max), g(self.w_min)
        dw = g(self.dw_up if up else self.dw_down)
        if cfg.kind == "linear":
            first = dw
            mean_new = ws + (ks * dw if up else -ks * dw)
        elif up:
            span = w_max - g(self.sp_shift)
            first = dw * (w_max - ws) / span
            mean_new = w_max - (w_max - ws) * torch.pow(1 - dw / span, ks)
        else:
            span = g(self.sp_shift) - w_min
            first = dw * (ws - w_min) / span
            mean_new = w_min + (ws - w_min) * torch.pow(1 - dw / span, ks)
        if cfg.c2c > 0:
            z = torch.randn(ws.shape, generator=self.gen, device=w.device, dtype=w.dtype)
            mean_new = mean_new + cfg.c2c * first.abs() * ks.sqrt() * z
        new = torch.maximum(torch.minimum(mean_new, w_max), w_min)
        if dense:
            return torch.where(k > 0, new, w)
        out = w.clone()
        out.view(-1)[idx] = new
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"w": self.w, "dw_up": self.dw_up, "dw_down": self.dw_down, "sp_shift": self.sp_shift,
                "w_max": self.w_max, "w_min": self.w_min}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            setattr(self, k, v.to(self.w.device, self.w.dtype).clone())
