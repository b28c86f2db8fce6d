"""Analog tile layers: the ai.acompile nodes run under simulated device physics.

An `AnalogLayer` holds one mapped weight matrix, put together from parts each in its own module: where
it sits on the tiles (runtime/tile_geometry.py), its weights on the memory device (runtime/tile_state.py:
programmed once per chip, derived at each time point), its calibrated converter ranges
(runtime/tile_calibration.py), drift compensation factors (runtime/compensation.py) and an epilogue the
executor's fusion pass hands it (runtime/epilogue.py). Its forward folds all of these into kernels and
scales per row block, so a batch costs one conv (or matmul) per row block plus element-wise DAC / ADC /
noise, with the semantics of runtime/physics/periphery.py. Normalized units follow CONTRACTS §4:
x_n = x / r (DAC), w_n = (G+ - G-) / g_max, y_n = x_n @ w_n (ADC, output noise), then
y = y_n * r * g_max / G_SCALE * alpha + B. A converter with 0 bits is ideal: no quantization, no clamp.
"""

from __future__ import annotations

from typing import Any

import onnx
import torch

from runtime import native
from runtime.analog_settings import AnalogSettings
from runtime.epilogue import Epilogue
from runtime.errors import AcompileError
from runtime.ops import NodeInfo
from runtime.physics.devices import Programmed
from runtime.physics.periphery import adc_codes_, dac_codes, levels
from runtime.tile_calibration import RangeCalibration
from runtime.tile_geometry import TileGeometry, mapped_inputs
from runtime.tile_state import ProgrammedTile

__all__ = ["AnalogLayer", "ideal_analog"]


def ideal_analog(info: NodeInfo, node: onnx.NodeProto):
    """The exact semantics of an ai.acompile node (CONTRACTS §3), no physics."""
    w, _, b = mapped_inputs(info, node)
    geo = TileGeometry.from_node(info, node, w)
    kern = geo.kernel(w) if geo.is_conv else w
    if geo.is_conv:
        bias = None if b is None else b.reshape(1, -1, *([1] * len(geo.k)))
    else:
        bias = None if b is None else b * geo.beta

    def run(x, *_):
        y = geo.apply(geo.with_constant_inputs(x), kern.to(x.device))
        if not geo.is_conv and geo.alpha != 1.0:
            y = y * geo.alpha
        if bias is not None:
            y = y + bias.to(x.device)
        return y

    return run


class AnalogLayer:
    """One mapped weight matrix on simulated tiles: its geometry (`geo`), its weights on the device
    (`tile`: program / set_time), its calibrated converter ranges (`cal`), the drift-compensation factors
    (`alpha`), an optional fused epilogue, and the forward pass that folds all of these into one conv or
    matmul per row block plus the element-wise periphery."""

    fuses_epilogue = True  # the executor's epilogue pass may hand it BN / residual / ReLU (set_epilogue)
    owns_tile = True  # False: it reads another layer's array (contract `shares`), which programs it

    def __init__(self, info: NodeInfo, node: onnx.NodeProto, settings: AnalogSettings,
                 device: torch.device) -> None:
        self.settings = s = settings
        w, gs, b = mapped_inputs(info, node)
        self.geo = geo = TileGeometry.from_node(info, node, w)
        self.name = geo.name
        self.device = device
        self.tile = ProgrammedTile(w, gs, s, device, blocks=(geo.row_blocks, geo.col_blocks),
                                   replicas=geo.replicas)
        self.cal = RangeCalibration(s)
        if geo.bias_rows:  # the DAC range must pass the bias rows' constant 1 unclipped
            if s.input_range is not None and s.dac_bits and s.input_range < 1.0:
                raise AcompileError(f"layer '{geo.name}': its bias row is driven with 1, above the fixed "
                                    f"input range {s.input_range}; use an input range >= 1 or bias = "
                                    "'digital'")
            self.cal.floor = 1.0
        self.col_scale = (s.device.g_max / gs).to(device)  # digital undo of the conductance scale
        if not geo.is_conv:
            self.col_scale = self.col_scale * geo.alpha
        self.bias = None
        if b is not None:
            self.bias = (b * (1.0 if geo.is_conv else geo.beta)).to(device)
            if geo.is_conv:
                self.bias = self.bias.reshape(1, -1, *([1] * len(geo.k)))
        self.alpha: list[torch.Tensor] | None = None  # per row block, [cols]
        self.generator: torch.Generator | None = None  # noise of each inference pass
        self.epilogue: Epilogue | None = None
        self._prepare()

    # ---- the parts, as the rest of the runtime sees them ---------------------------------------------
    @property
    def state(self) -> Programmed | None:
        return self.tile.state

    @property
    def w_n(self) -> torch.Tensor:
        return self.tile.w_n

    @property
    def w_eff(self) -> torch.Tensor:
        return self.tile.w_eff

    @property
    def w_var(self) -> torch.Tensor | None:
        return self.tile.w_var

    @property
    def input_range(self) -> float | None:
        return self.cal.input_range

    @property
    def out_bound(self) -> float | None:
        return self.cal.out_bound

    @property
    def calibrating(self) -> bool:
        return self.cal.phase == "input"

    @property
    def observing_out(self) -> bool:
        return self.cal.phase == "output"

    # ---- programming, time, calibration, compensation ------------------------------------------------
    def program(self, generator: torch.Generator | None) -> None:
        """Program this layer's devices once for a new chip; calibrated ranges are measured again."""
        self.alpha = None
        if self.owns_tile:
            self.tile.program(generator)
        self.cal.reset()
        self._prepare()

    def set_time(self, t: float, generator: torch.Generator | None) -> None:
        """Effective weights t seconds after programming (ProgrammedTile.set_time)."""
        if self.owns_tile:
            self.tile.set_time(t, generator)
        self._prepare()

    def read_array_of(self, owner: AnalogLayer) -> None:
        """Read `owner`'s programmed array (the same weight, contract `shares`): programming and time are
        the owner's, done before this layer's in the executor's order; this layer keeps its own converter
        ranges and compensation factors."""
        self.tile, self.owns_tile = owner.tile, False
        self._prepare()

    def start_calibration(self) -> None:
        """Observe inputs (no DAC) to set the static input range right after programming."""
        if self.cal.start_input():
            self._prepare()

    def finish_calibration(self) -> None:
        if self.calibrating:
            self.cal.finish()
            self._prepare()

    def start_out_calibration(self) -> bool:
        """Observe row-block outputs (DAC on, ADC off) to set this layer's ADC range; False if fixed."""
        if not self.cal.start_output():
            return False
        self._prepare()
        return True

    def finish_out_calibration(self) -> None:
        if self.observing_out:
            self.cal.finish()
            self._prepare()

    def set_alpha(self, alpha: list[torch.Tensor] | None) -> None:
        """Digital per-(row block, column) output factors (drift compensation)."""
        self.alpha = alpha
        self._prepare()

    # ---- kernels --------------------------------------------------------------------------------
    def _mode(self) -> tuple[str, str]:
        s = self.settings
        if s.exact and self.state is None:
            return "none", "none"
        dac = "quant" if s.dac_bits > 0 else "none"
        adc = "quant" if s.adc_bits > 0 else "none"
        return dac, adc

    def _prepare(self) -> None:
        """Fold normalization, DAC/ADC step sizes and compensation into per-block kernels and scales."""
        s, geo = self.settings, self.geo
        dac, adc = self._mode()
        if self.calibrating:  # observe clean inputs: programmed weights, no converters, no noise
            dac, adc = "none", "none"
        elif self.observing_out:  # observe clean normalized outputs behind the calibrated DAC
            adc = "none"
        r = self.input_range if (dac != "none" and self.input_range) else 1.0
        self.r = r
        if dac == "quant":
            lin = levels(s.dac_bits)
            self.in_mult, in_n = lin / r, float(lin)
        else:
            self.in_mult, in_n = 1.0 / r, 1.0
        self.dac = dac
        self.adc = adc
        # a replicated layer (geo.replicas): w_eff is the mean of its copies and the periphery reads their
        # summed current re-ranged by the number of copies, so bound and output noise (a fraction of the
        # output range, DESIGN §6) are those of one copy (CONTRACTS §3 `replicas`)
        if adc == "quant":
            lout = levels(s.adc_bits)
            self.lout = lout
            bound = self.cal.bound  # not yet calibrated: the usual bound
            k_mult = lout / (bound * in_n)
            out_unit = bound / lout
        else:
            k_mult, out_unit = 1.0 / in_n, 1.0
        self.noise_units = 0.0 if (self.calibrating or self.observing_out) else s.out_noise / out_unit
        blocks = []
        nb = len(geo.row_blocks)
        fast = (adc == "none" and s.out_noise == 0 and self.w_var is None and self.alpha is None
                and not self.observing_out)  # each row block has its own ADC: observe them apart
        spans = [(0, geo.rows)] if (fast or nb == 1) else geo.row_blocks
        for b, (rs, re) in enumerate(spans):
            sc = self.col_scale * (out_unit * r)
            if self.alpha is not None:
                sc = sc * self.alpha[b]
            blocks.append(self._block(rs, re, k_mult, sc))
        self.blocks = blocks

    def _block(self, rs, re, k_mult, scale):
        sl = self.geo.block_span(rs, re)[2] if (rs, re) != (0, self.geo.rows) else None
        wm = self.geo.block_matrix(self.w_eff, rs, re) * k_mult
        var = None
        if self.w_var is not None:
            vm = self.geo.block_matrix(self.w_var, rs, re) * (k_mult * k_mult)
            var = self.geo.kernel(vm) if self.geo.is_conv else vm
        kern = self.geo.kernel(wm) if self.geo.is_conv else wm
        if kern.dim() == 4:  # channels-last kernels: the fastest CPU conv path (oneDNN)
            kern = kern.contiguous(memory_format=torch.channels_last)
        return dict(sl=sl, kern=kern, var=var, scale_vec=scale.reshape(-1).float().contiguous())

    # ---- forward --------------------------------------------------------------------------------
    def _use_native(self, x: torch.Tensor) -> bool:
        k = self.settings.kernels
        if k == "torch" or self.calibrating or self.observing_out:
            return False
        if x.device.type != "cpu" or x.dtype != torch.float32:
            return False
        if k == "native":
            if not native.available():
                raise AcompileError(f"native kernels unavailable: {native.error()}")
            return True
        return native.available()

    def set_epilogue(self, epilogue: Epilogue | None) -> None:
        """Digital nodes after this layer that it applies itself (the executor then skips them)."""
        self.epilogue = epilogue

    def _digital(self) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """Per-block output scales [cols] and bias [cols], with an epilogue BN folded in."""
        scales = [blk["scale_vec"] for blk in self.blocks]
        bias = None if self.bias is None else self.bias.reshape(-1)
        ep = self.epilogue
        if ep is None or ep.bn is None:
            return scales, bias
        inv, shift = ep.bn.affine(*ep.bn_args)
        scales = [sc * inv for sc in scales]
        bias = shift if bias is None else torch.addcmul(shift, bias, inv)
        return scales, bias.contiguous()

    def kernels_used(self) -> str:
        """'native' or 'torch': what a float32 batch on this layer's device runs on."""
        return "native" if self._use_native(torch.empty(0, device=self.device)) else "torch"

    def __call__(self, x: torch.Tensor, *args: Any) -> torch.Tensor:
        ep = self.epilogue
        residual = args[-1] if ep is not None and ep.residual else None
        if ep is not None and ep.bn is not None and ep.bn.calibrating:
            return self._unfused(x, residual)  # BN re-estimation must see this layer's raw outputs
        geo = self.geo
        x = geo.with_constant_inputs(x)
        if self.calibrating:
            self.cal.observe(x)
        if x.dim() == 4 and geo.is_conv:
            x = x.contiguous(memory_format=torch.channels_last)
        scales, bias = self._digital()
        relu = ep is not None and ep.relu
        if self._use_native(x):
            return self._forward_native(x, scales, bias, residual, relu)
        if self.dac == "quant":
            xs = dac_codes(x, self.in_mult, levels(self.settings.dac_bits))
        elif self.in_mult != 1.0:
            xs = x * self.in_mult
        else:
            xs = x
        shape = (1, -1) + (1,) * len(geo.k) if geo.is_conv else (-1,)
        out = None
        for blk, sc in zip(self.blocks, scales, strict=True):
            y = self._block_mvm(xs, blk)
            if self.observing_out:  # y is x_n @ w_n here: the range the ADC must cover
                self.cal.observe(y)
            if self.noise_units > 0:  # analog output noise, then the ADC digitizes
                y = y.add_(torch.randn(y.shape, generator=self.generator, device=y.device),
                           alpha=self.noise_units)
            if self.adc == "quant":
                y = adc_codes_(y, self.lout)
            sc = sc.reshape(shape)
            if out is None:  # rescale (and bias) fused into one pass; later blocks accumulate in place
                out = y.mul_(sc) if bias is None else torch.addcmul(bias.reshape(shape), y, sc)
            else:
                out.addcmul_(y, sc)
        if residual is not None:
            out = out.add_(residual)
        return out.clamp_min_(0) if relu else out

    def _unfused(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """This layer, then its epilogue's nodes one by one (as the executor would run them)."""
        ep = self.epilogue
        self.epilogue = None
        try:
            y = self(x)
        finally:
            self.epilogue = ep
        if ep.bn is not None:
            y = ep.bn(y, *ep.bn_args)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if ep.relu else y

    def _block_mvm(self, xs: torch.Tensor, blk: dict, sliced: bool = False) -> torch.Tensor:
        """One row block's analog MVM (in ADC units), with per-read 1/f noise when that mode is on.
        `sliced`: xs is already this block's input slice."""
        geo = self.geo
        xb = xs if sliced else geo.block_input(xs, blk["sl"])
        y = geo.apply(xb, blk["kern"])
        if blk["var"] is not None:  # per-read 1/f noise: exact output std for independent devices
            std = geo.apply(xb * xb, blk["var"]).clamp_(min=0).sqrt_()
            y = y.addcmul_(std, torch.randn(y.shape, generator=self.generator, device=y.device))
        return y

    def _forward_native(self, x: torch.Tensor, scales: list[torch.Tensor], bias: torch.Tensor | None,
                        residual: torch.Tensor | None, relu: bool) -> torch.Tensor:
        """Same semantics as the torch path, with one fused pass for the DAC and one per block tail."""
        s, geo = self.settings, self.geo
        cdim = (1 if geo.is_conv else -1) % x.dim()
        slices = [blk["sl"] for blk in self.blocks]
        per_block = self.dac == "quant" and None not in slices and (x.dim() == 2 or x.dim() == 4)
        if per_block:  # each row block gets its own quantized input slice in one pass
            xs_list = native.dac_slices(x, cdim, slices, self.in_mult, float(levels(s.dac_bits)))
        elif self.dac == "quant":
            xs_list = [native.dac(x, self.in_mult, float(levels(s.dac_bits)))] * len(self.blocks)
        else:
            xs_list = [x * self.in_mult if self.in_mult != 1.0 else x] * len(self.blocks)
        lim = float(self.lout) if self.adc == "quant" else 0.0
        out = None
        last = len(self.blocks) - 1
        k0, k1 = native.new_key(self.generator) if self.noise_units > 0 else (0, 0)
        late = False  # a residual the kernel cannot take (broadcast, other dtype) is added afterwards
        for b, (blk, sc) in enumerate(zip(self.blocks, scales, strict=True)):
            yb = self._block_mvm(xs_list[b], blk, sliced=per_block)
            key = ((k0 + 0x9E3779B9 * b) & 0xFFFFFFFF, k1)  # one draw per call, a stream per block
            res = None
            if b == last and residual is not None:
                late = residual.shape != yb.shape or residual.dtype != torch.float32 \
                    or residual.device.type != "cpu"
                res = None if late else native.channels_last_view(residual, cdim)
            out = native.tail(native.channels_last_view(yb, cdim), out, sc, bias, float(self.noise_units),
                              lim, key, residual=res, relu=relu and b == last and not late)
        out = out.movedim(-1, cdim) if cdim != out.dim() - 1 else out
        if late:
            out = out + residual
            out = out.clamp_min_(0) if relu else out
        return out
