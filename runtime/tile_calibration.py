"""Per-layer converter ranges set right after programming: the DAC input range and, where the target
asks for it, the ADC output bound, each the largest high percentile (`calib_percentile` of |x|) the
layer sees over the calibration batches."""

from __future__ import annotations

import torch

from runtime.analog_settings import DEFAULT_OUT_BOUND, AnalogSettings
from runtime.physics.periphery import abs_percentile


class RangeCalibration:
    """The two calibrated ranges of one layer and the phase of calibrating them ("input", "output")."""

    def __init__(self, settings: AnalogSettings) -> None:
        self.settings = settings
        self.input_range: float | None = settings.input_range  # None: not calibrated yet
        self.out_bound: float | None = settings.out_bound
        self.phase: str | None = None
        self._seen: list[float] = []
        self.floor = 0.0  # the least input range (1 for a layer with bias rows driven with 1)

    def reset(self) -> None:
        """A new chip: calibrated ranges are measured again; fixed ones stay."""
        if self.settings.input_range is None:
            self.input_range = None
        if self.settings.out_bound is None:
            self.out_bound = None

    def start_input(self) -> bool:
        """Observe clean inputs (no DAC); False when the range is fixed or there is no DAC."""
        if self.settings.input_range is not None or self.settings.dac_bits == 0:
            return False
        self.phase, self._seen = "input", []
        return True

    def start_output(self) -> bool:
        """Observe row-block outputs behind the calibrated DAC (no ADC); False when the bound is fixed."""
        if self.settings.out_bound is not None or self.settings.adc_bits == 0:
            return False
        self.phase, self._seen = "output", []
        return True

    def observe(self, x: torch.Tensor) -> None:
        self._seen.append(abs_percentile(x, self.settings.calib_percentile))

    def finish(self) -> None:
        seen = max(self._seen) if self._seen else 0.0
        if self.phase == "input":
            self.input_range = max(seen, self.floor) if seen > 0 else 1.0
        elif self.phase == "output":
            self.out_bound = seen if seen > 0 else DEFAULT_OUT_BOUND
        self.phase, self._seen = None, []

    @property
    def bound(self) -> float:
        """The ADC bound in use (the usual one until calibrated)."""
        return self.out_bound or DEFAULT_OUT_BOUND
