"""`ideal`: exact conductances — no programming noise, no drift, no read noise (equivalence tests)."""

from __future__ import annotations

from runtime.physics import constants as C
from runtime.physics.devices import register
from runtime.physics.devices.base import DeviceError, DeviceModel, Key, pos_float, torch


@register
class Ideal(DeviceModel):
    name = "ideal"
    summary = "exact conductances: no programming noise, drift or read noise"
    source = "-"
    G_MAX = C.PCM_G_MAX
    G_MAX_DOC = "uS, only scales the mapping"
    KEYS = {  # no effect; accepted so mapped models written before devices were plug-ins still load
        "t0": Key(pos_float, C.PCM_T0, "s, unused"),
        "t_read": Key(pos_float, C.PCM_T_READ, "s, unused"),
    }

    @classmethod
    def _check(cls, params: dict) -> None:
        on = [k for k in ("prog_noise", "drift", "read_noise") if params[k]]
        if on:
            raise DeviceError(f"[device].{on[0]} must be false for model 'ideal' (it has no noise)")

    @classmethod
    def keys(cls):
        keys = super().keys()
        for k in ("prog_noise", "drift", "read_noise"):
            keys[k] = type(keys[k])(keys[k].check, False, "always false for 'ideal'")
        return keys

    def prog_noise_std(self, g_target: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(g_target)
