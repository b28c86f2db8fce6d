"""`pcm-hermes`: PCM fitted to the devices of IBM's HERMES chip (Le Gallo et al., Nat. Electron. 2023).

The same power-law drift and accumulated 1/f noise as `pcm`, with HERMES's own fits (aihwkit
HermesNoiseModel): a cubic programming-noise curve, branch fits of the drift exponent and of Q_s. With
two devices per cell (the chip's multi-device programming, Vasilopoulos et al. 2023) the fits treat the
cell as one unit of up to 20.7 uS, so a weight on `devices_per_weight = 4` is one cell per sign.
"""

from __future__ import annotations

from runtime.physics import constants as C
from runtime.physics.devices import register
from runtime.physics.devices.base import DeviceError, Key, one_of, polynomial, pos_float, torch
from runtime.physics.devices.pcm import SCALE_KEYS, PowerLawPCM


def branch_fit(x: torch.Tensor, fit: dict) -> torch.Tensor:
    """x < split: clip(a ln x + b, lo, hi); else the polynomial `high` in x (HERMES's fit form)."""
    low = (fit["a"] * torch.log(x.clamp(min=C.PCM_X_FLOOR)) + fit["b"]).clamp(fit["lo"], fit["hi"])
    return torch.where(x < fit["split"], low, polynomial(x, fit["high"]))


@register
class HermesPCM(PowerLawPCM):
    name = "pcm-hermes"
    summary = "PCM fitted to the IBM HERMES chip (Le Gallo 2023; aihwkit HermesNoiseModel)"
    source = "Le Gallo et al., Nat. Electron. 6:680 (2023); Khaddam-Aljameh et al., JSSC 2022"
    G_MAX = C.HERMES_G_MAX_2_PER_SIGN
    G_MAX_DOC = "uS, the characterized maximum of a cell: 20.7 (2 devices) / 10.35 (1 device)"
    KEYS = {
        "num_devices": Key(one_of(1, 2), 2, "PCM devices programmed as one cell (HERMES: 1 or 2)"),
        "t0": Key(pos_float, lambda p: C.HERMES_T0[p.get("num_devices", 2)],
                  "s, first read after programming: 300 (2 devices) / 200 (1 device)"),
        "t_read": Key(pos_float, C.HERMES_T_READ, "s, read duration of the 1/f fit"),
        **SCALE_KEYS,
    }

    @classmethod
    def keys(cls) -> dict[str, Key]:
        keys = super().keys()
        keys["g_max"] = Key(pos_float, lambda p: C.HERMES_G_MAX[p.get("num_devices", 2)], cls.G_MAX_DOC)
        return keys

    @classmethod
    def _check(cls, params: dict) -> None:
        top = C.HERMES_G_MAX[params["num_devices"]]
        if params["g_max"] > top:
            raise DeviceError(f"[device].g_max must be <= {top} uS (characterized maximum with "
                              f"num_devices = {params['num_devices']}), got {params['g_max']}")

    def _configure(self) -> None:
        super()._configure()
        self.cell = int(self.params["num_devices"])
        self.devices_per_cell = self.cell
        self.ref = C.HERMES_G_MAX[self.cell]  # the g_max the fits were made at

    def prog_noise_std(self, g_target: torch.Tensor) -> torch.Tensor:
        x = g_target.abs() / self.g_max
        sd = polynomial(x, C.HERMES_PROG_NOISE_COEFFS[self.cell]).clamp(min=0.0)
        return sd * (self.g_max / self.ref) * self.prog_scale

    def nu_stats(self, g_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = g_target.abs() / self.g_max
        return branch_fit(x, C.HERMES_DRIFT_MU), branch_fit(x, C.HERMES_DRIFT_SIGMA[self.cell])

    def q_s(self, g_prog: torch.Tensor) -> torch.Tensor:
        return branch_fit(g_prog.abs() / self.g_max, C.HERMES_READ_NOISE_Q[self.cell])
