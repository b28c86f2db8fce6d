"""What the analog tiles need from the target (device model, devices per weight, periphery), plus the
emulator's own switches; built from a resolved target and CLI overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runtime.errors import AcompileError
from runtime.physics.devices import DeviceError, DeviceModel, from_section, make_device

DEFAULT_OUT_BOUND = 10.0  # aihwkit StandardHWATrainingPreset out_bound (default: 12); until calibrated


@dataclass
class AnalogSettings:
    """Everything the tiles need from the target, plus the emulator's own switches."""

    device: DeviceModel = field(default_factory=lambda: make_device("pcm"))
    devices_per_weight: int = 2
    dac_bits: int = 8
    input_range: float | None = None  # None: calibrated per layer
    adc_bits: int = 8
    out_bound: float | None = 10.0  # None: calibrated per layer after programming
    out_noise: float = 0.04
    read_noise_mode: str = "time"  # "time": one sample per (chip, t) (aihwkit); "read": per MVM
    calib_percentile: float = 99.99
    r_wire: float = 0.0  # ohm per row / column wire segment of a tile; 0 = no IR drop (physics/ir_drop.py)
    kernels: str = "auto"  # element-wise DAC / ADC tail: "native" (runtime/native), "torch", "auto"

    @property
    def exact(self) -> bool:
        """True when the tile computes x @ W exactly (target ideal)."""
        return (self.device.noiseless and self.dac_bits == 0 and self.adc_bits == 0 and self.out_noise == 0
                and self.r_wire == 0)

    @property
    def cells_per_sign(self) -> int:
        """Programmed units (cells of `device.devices_per_cell` devices) on each side of a weight."""
        return self.devices_per_weight // (2 * self.device.devices_per_cell)

    @classmethod
    def from_target(cls, target: dict[str, Any], **overrides: Any) -> AnalogSettings:
        """Settings from the resolved target JSON (CONTRACTS §4) and CLI overrides (None = keep)."""
        dev, per, tile = target.get("device", {}), target.get("periphery", {}), target.get("tile", {})
        ir = per.get("input_range", "calibrated")
        kw: dict[str, Any] = dict(
            devices_per_weight=int(tile.get("devices_per_weight", 2)),
            dac_bits=int(per.get("dac_bits", 8)), input_range=None if ir == "calibrated" else float(ir),
            adc_bits=int(per.get("adc_bits", 8)), out_bound=per.get("out_bound", 10.0),
            out_noise=float(per.get("out_noise", 0.04)), r_wire=tile.get("r_wire", 0.0))
        dev = dict(dev)
        for k, v in overrides.items():
            if v is None:
                continue
            if k in ("prog_noise", "drift", "read_noise"):  # the effect switches every device has
                dev[k] = v
            else:
                kw[k] = v
        try:
            device = from_section(dev)
        except DeviceError as exc:
            raise AcompileError(str(exc)) from None
        ob = kw["out_bound"]
        kw["out_bound"] = None if ob in (None, "calibrated") else float(ob)
        if kw["out_bound"] is not None and kw["out_bound"] <= 0:
            raise AcompileError(f"out_bound must be > 0 or 'calibrated', got {ob}")
        dpw, cell = kw["devices_per_weight"], device.devices_per_cell
        if dpw not in (2, 4) or dpw % (2 * cell):
            raise AcompileError(f"devices_per_weight must be 2 or 4 and a multiple of 2 x the {cell} "
                                f"device(s) per cell of '{device.name}', got {dpw}")
        if kw.get("read_noise_mode", "time") not in ("time", "read"):
            raise AcompileError("read-noise mode must be 'time' or 'read'")
        rw = kw["r_wire"]
        if isinstance(rw, bool) or not isinstance(rw, (int, float)) or not 0 <= rw < float("inf"):
            raise AcompileError(f"r_wire must be a finite number >= 0 (ohm), got {rw!r}")
        kw["r_wire"] = float(rw)
        if kw.get("kernels", "auto") not in ("auto", "native", "torch"):
            raise AcompileError("kernels must be 'auto', 'native' or 'torch'")
        return cls(device=device, **kw)
