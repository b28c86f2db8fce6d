"""The memory-device interface: what the compiler, the emulator and training ask of a device.

A device turns target conductances into programmed ones (programming noise), moves them over time
(drift, relaxation) and adds read noise. Its state after programming is sampled once per chip, so every
later time point derives from it (never cumulative) and a (seed, chip) pair reproduces bit for bit.
Conductances are in uS, times in seconds since programming; tensors may carry a leading chip dimension.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch
else:
    class _LazyTorch:
        """torch, imported on first use: checking a target's [device] keys (compile, `acompile
        targets`) must not pay for importing torch; device modules import `torch` from here."""

        def __getattr__(self, attr: str) -> Any:
            import torch as module

            return getattr(module, attr)

    torch = _LazyTorch()

Check = Callable[[Any], "str | None"]


# ---- key validators (also used by the target validator for the other sections) -------------------------
def pos_int(v: Any) -> str | None:
    return None if isinstance(v, int) and not isinstance(v, bool) and v > 0 else "a positive integer"


#: Converter resolution: 0 = ideal (no quantization, no clamp); a quantizer needs 2 bits (sign + one level,
#: runtime.physics.periphery.levels); 16 is the most any AIMC converter offers (and what finetune took).
MAX_BITS = 16


def bits(v: Any) -> str | None:
    ok = isinstance(v, int) and not isinstance(v, bool) and (v == 0 or 2 <= v <= MAX_BITS)
    return None if ok else f"0 (ideal) or an integer in 2..{MAX_BITS}"


def pos_float(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
    return None if ok else "a positive number"


def nonneg_float(v: Any) -> str | None:
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    return None if ok else "a non-negative number"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def string(v: Any) -> str | None:
    return None if isinstance(v, str) else "a string"


def one_of(*choices: Any) -> Check:
    def check(v: Any) -> str | None:
        ok = v in choices and not (isinstance(v, bool) and not any(isinstance(c, bool) for c in choices))
        return None if ok else "one of " + ", ".join(repr(c) for c in choices)

    return check


@dataclass(frozen=True)
class Key:
    """One `[device]` key of a target: its check, its default (a value, or a function of the other
    keys' values) and where the default comes from."""

    check: Check
    default: Any
    doc: str

    def default_for(self, params: dict[str, Any]) -> Any:
        return self.default(params) if callable(self.default) else self.default


class DeviceError(ValueError):
    """A bad device parameter; the message names the key."""


def _effect_keys(g_max: float, doc: str) -> dict[str, Key]:
    return {
        "g_max": Key(pos_float, g_max, doc),
        "g_min": Key(nonneg_float, 0.0, "uS, the unused device of a differential pair (Joshi 2020)"),
        "prog_noise": Key(boolean, True, "programming noise on"),
        "drift": Key(boolean, True, "drift / relaxation over time on"),
        "read_noise": Key(boolean, True, "read noise on"),
    }


@dataclass
class Programmed:
    """A device array right after programming: the conductances, and whatever the device samples once
    per chip to derive later times from (drift exponents, relaxation draws)."""

    g_prog: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


class DeviceModel:
    """Base of every memory device. A subclass sets `name`, `summary`, `source`, its `KEYS` (beyond the
    common g_max / g_min / prog_noise / drift / read_noise) and implements `prog_noise_std`; it overrides
    `_sample_state`, `drift` and `read_noise_std` for what it has. Register it with `@register`."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    source: ClassVar[str] = ""
    G_MAX: ClassVar[float] = 25.0
    G_MAX_DOC: ClassVar[str] = "uS, maximum conductance of one device"
    KEYS: ClassVar[dict[str, Key]] = {}
    #: Physical devices the model's fits treat as one programmed unit (HERMES programs two as one cell).
    devices_per_cell: int = 1

    def __init__(self, **params: Any) -> None:
        self.params = self.resolve(params)
        p = self.params
        self.g_max, self.g_min = float(p["g_max"]), float(p["g_min"])
        self.prog_noise, self.drift_on, self.read_noise = bool(p["prog_noise"]), bool(p["drift"]), \
            bool(p["read_noise"])
        self._configure()

    # ---- keys ---------------------------------------------------------------------------------------
    @classmethod
    def keys(cls) -> dict[str, Key]:
        """Every `[device]` key this device takes (besides `model`)."""
        return {**_effect_keys(cls.G_MAX, cls.G_MAX_DOC), **cls.KEYS}

    @classmethod
    def resolve(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Check the given keys, fill the others with their defaults; DeviceError names a bad key."""
        keys = cls.keys()
        for k, v in params.items():
            if k not in keys:
                raise DeviceError(f"unknown key [device].{k} for model {cls.name!r} (known: "
                                  f"{', '.join(keys)})")
            need = keys[k].check(v)
            if need is not None:
                raise DeviceError(f"[device].{k} must be {need}, got {v!r}")
        out = dict(params)
        for k, key in keys.items():
            if k not in out:
                out[k] = key.default_for(out)
        if out["g_min"] >= out["g_max"]:
            raise DeviceError("[device].g_min must be below [device].g_max")
        cls._check(out)
        return out

    @classmethod
    def _check(cls, params: dict[str, Any]) -> None:
        """Cross-key checks of a subclass (raise DeviceError)."""

    def _configure(self) -> None:
        """Derive a subclass's working constants from self.params."""

    def with_params(self, **changes: Any) -> DeviceModel:
        """A copy with some keys changed (e.g. effects switched off for training)."""
        return type(self)(**{**self.params, **changes})

    @property
    def noiseless(self) -> bool:
        """True when programming, time and reads leave the targets exact."""
        return not (self.prog_noise or self.drift_on or self.read_noise)

    # ---- physics ------------------------------------------------------------------------------------
    def prog_noise_std(self, g_target: torch.Tensor) -> torch.Tensor:
        """Std (uS) of the conductance right after programming to g_target."""
        raise NotImplementedError

    def program(self, g_target: torch.Tensor, generator: torch.Generator | None = None) -> Programmed:
        """Programming noise, then the per-device state later times derive from."""
        g = g_target.clone()
        if self.prog_noise:
            g = g + self.prog_noise_std(g_target) * gaussian(g_target, generator)
        state = Programmed(g_prog=g.clamp(min=0.0))
        if self.drift_on:
            state.aux = self._sample_state(g_target, state.g_prog, generator)
        return state

    def _sample_state(self, g_target: torch.Tensor, g_prog: torch.Tensor,
                      generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """Random per-device quantities of the time evolution, drawn once at programming."""
        return {}

    def drift(self, state: Programmed, t: float) -> torch.Tensor:
        """Conductance at t seconds (noise-free part of the time evolution)."""
        check_time(t)
        return state.g_prog.clone()

    def read_noise_std(self, state: Programmed, g_t: torch.Tensor, t: float) -> torch.Tensor:
        """Std (uS) of one read at t of devices whose noise-free conductance is g_t."""
        return torch.zeros_like(g_t)

    def add_read_noise(self, state: Programmed, g_t: torch.Tensor, t: float,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """One noisy read (call per MVM for per-read sampling)."""
        if not self.read_noise:
            return g_t
        std = self.read_noise_std(state, g_t, t)
        return (g_t + std * gaussian(g_t, generator)).clamp(min=0.0)

    def read(self, state: Programmed, t: float, generator: torch.Generator | None = None) -> torch.Tensor:
        """Conductance at t: the time evolution, then one read-noise sample (aihwkit style)."""
        return self.add_read_noise(state, self.drift(state, t), t, generator)

    def describe(self) -> str:
        return f"{self.name}: {self.summary}"


def gaussian(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def check_time(t: float) -> None:
    if not t >= 0:
        raise ValueError(f"time must be >= 0 s, got {t}")


def polynomial(x: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    """c0 + c1 x + c2 x^2 + ... (the form every published device fit here uses)."""
    out = torch.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x + c
    return out
