"""Analog tile layers: the ai.acompile nodes run under simulated PCM physics.

An `AnalogLayer` holds one mapped weight matrix. Per simulated chip it is programmed once
(`program`), then for each time point `set_time` derives normalized effective weights from that
programmed state and folds them into conv kernels / matrices per row block, so a batch costs one
conv (or matmul) per row block plus element-wise DAC / ADC / noise. Normalized units follow
CONTRACTS §4: x_n = x / r (DAC), w_n = (G+ - G-) / g_max, y_n = x_n @ w_n (ADC, output noise), then
y = y_n * r * g_max / G_SCALE * alpha + B. A converter with 0 bits is ideal: no quantization, no clamp.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import onnx
import torch
import torch.nn.functional as F

from runtime import contract, native
from runtime.errors import AcompileError
from runtime.ops import NodeInfo
from runtime.ops.nn import torch_pad
from runtime.physics.devices import DeviceError, DeviceModel, Programmed, from_section, make_device
from runtime.physics.periphery import abs_percentile, adc_codes_, dac_codes, levels

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DEFAULT_OUT_BOUND = 10.0  # aihwkit StandardHWATrainingPreset out_bound (default: 12); until calibrated


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
    kernels: str = "auto"  # element-wise DAC / ADC tail: "native" (runtime/native), "torch", "auto"

    @property
    def exact(self) -> bool:
        """True when the tile computes x @ W exactly (target ideal)."""
        return self.device.noiseless and self.dac_bits == 0 and self.adc_bits == 0 and self.out_noise == 0

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
            out_noise=float(per.get("out_noise", 0.04)))
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
        if kw.get("kernels", "auto") not in ("auto", "native", "torch"):
            raise AcompileError("kernels must be 'auto', 'native' or 'torch'")
        return cls(device=device, **kw)


def device_targets(g_target: torch.Tensor, pos: torch.Tensor, g_min: float, per: int) -> torch.Tensor:
    """[2 per, rows, cols] target conductances of the differential pairs (plus side first, then minus):
    |w| in uS on the `per` programmed cells of its sign (AnalogSettings.cells_per_sign), the others at
    g_min."""
    g = g_target / per
    plus = torch.where(pos, g, torch.full_like(g, g_min))
    minus = torch.where(pos, torch.full_like(g, g_min), g)
    return torch.stack([plus] * per + [minus] * per)


def pair_weights(g: torch.Tensor, g_max: float) -> torch.Tensor:
    """Normalized weights (G+ - G-) / g_max from the [2 per, rows, cols] conductances of device_targets."""
    per = g.shape[0] // 2
    return (g[:per].sum(0) - g[per:].sum(0)) / g_max


@dataclass
class Epilogue:
    """Digital nodes right after an analog layer that it applies in its own output pass:
    inference BatchNormalization (folded into the rescale), a residual Add, then ReLU."""

    bn: Any = None  # runtime.ops.nn.BatchNorm
    bn_args: list[torch.Tensor] = field(default_factory=list)  # its constant scale, bias, mean, var
    residual: bool = False  # the layer's call gets the tensor to add as its last argument
    relu: bool = False


def _mapped_inputs(info: NodeInfo, node: onnx.NodeProto
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """W, G_SCALE and B of an analog node (input layout, shapes and types per runtime.contract)."""
    w, gs = info.const(contract.IN_W), info.const(contract.IN_G_SCALE)
    if w is None or gs is None:
        raise AcompileError(f"node '{info.name}' ({node.op_type}): W and G_SCALE must be initializers")
    b = info.const(contract.IN_B) if info.n_inputs > contract.IN_B else None
    contract.check_tensors(node, w, gs, b)
    return w.float(), gs.float(), None if b is None else b.float()


class TileGeometry:
    """Conv / matmul attributes of a crossbar layer, and its row / column blocks (one per tile)."""

    def __init__(self, name: str, rows: int, cols: int, row_blocks: list[tuple[int, int]],
                 col_blocks: list[tuple[int, int]], *, kernel: list[int] | None = None,
                 strides: list[int] | None = None, pads: list[int] | None = None,
                 dilations: list[int] | None = None, alpha: float = 1.0, beta: float = 1.0) -> None:
        self.name, self.rows, self.cols = name, int(rows), int(cols)
        self.row_blocks, self.col_blocks = row_blocks or [(0, self.rows)], col_blocks or [(0, self.cols)]
        self.tiles: list[dict] = []
        self.is_conv = kernel is not None
        self.alpha, self.beta = float(alpha), float(beta)
        if kernel is not None:
            self.k = [int(v) for v in kernel]
            n = len(self.k)
            self.kk = math.prod(self.k)
            if self.rows % self.kk:
                raise AcompileError(f"layer '{name}' (conv): W rows {self.rows} not a multiple of kernel "
                                    f"size {self.kk}")
            self.c_in = self.rows // self.kk
            self.strides = [int(v) for v in (strides or [1] * n)]
            self.dil = [int(v) for v in (dilations or [1] * n)]
            pads = [int(v) for v in (pads or [0] * 2 * n)]
            self.fpad = None if pads[:n] == pads[n:] else torch_pad(pads)
            self.pad = pads[:n] if self.fpad is None else [0] * n
            self.conv = _CONV[n]

    @classmethod
    def from_node(cls, info: NodeInfo, node: onnx.NodeProto, w: torch.Tensor) -> TileGeometry:
        """The geometry of a mapped analog node, read (and checked) by runtime.contract; its blocks
        from the `tiles` attribute."""
        rows, cols = w.shape
        spec = contract.read_analog_node(node, w_shape=(rows, cols))
        rb, cb = contract.row_blocks(spec.tiles), contract.col_blocks(spec.tiles)
        if spec.is_conv:
            geo = cls(spec.layer, rows, cols, rb, cb, kernel=spec.kernel_shape, strides=spec.strides,
                      pads=spec.pads, dilations=spec.dilations)
        else:
            geo = cls(spec.layer, rows, cols, rb, cb, alpha=spec.alpha, beta=spec.beta)
        geo.tiles = [b.to_json() for b in spec.tiles]
        return geo

    @classmethod
    def split(cls, name: str, rows: int, cols: int, tile_rows: int, tile_cols: int,
              **conv: Any) -> TileGeometry:
        """A layer split onto tiles of tile_rows x tile_cols the way the compiler splits it (DESIGN §5)."""
        rb = [(r, min(r + tile_rows, rows)) for r in range(0, rows, tile_rows)]
        cb = [(c, min(c + tile_cols, cols)) for c in range(0, cols, tile_cols)]
        return cls(name, rows, cols, rb, cb, **conv)

    def kernel(self, wm: torch.Tensor) -> torch.Tensor:
        """[rows', cols] matrix in (c, kh, kw) row order -> conv weight [cols, rows'/kk, *k]."""
        return wm.t().reshape(wm.shape[1], wm.shape[0] // self.kk, *self.k)

    def block_span(self, rs: int, re: int) -> tuple[int, int, tuple[int, int] | None]:
        """Rows [lo, hi) of the matrix a row block's MVM sees, and the input slice it reads (None:
        the whole input). A conv block reads whole input channels; rows of a channel outside
        [rs, re) belong to the neighbouring block and are zero in this block's kernel."""
        if (rs, re) == (0, self.rows):
            return 0, self.rows, None
        if self.is_conv:
            c0, c1, off = self.block_slice(rs, re)
            return off, c1 * self.kk, (c0, c1)
        return rs, re, (rs, re)

    def block_matrix(self, w: torch.Tensor, rs: int, re: int) -> torch.Tensor:
        """Rows [lo, hi) of w with the rows outside [rs, re) zeroed (differentiable: also used by
        hardware-aware training)."""
        lo, hi, _ = self.block_span(rs, re)
        if (lo, hi) == (rs, re):
            return w[rs:re]
        mask = torch.zeros(hi - lo, 1, device=w.device, dtype=w.dtype)
        mask[rs - lo: re - lo] = 1
        return w[lo:hi] * mask

    def block_input(self, x: torch.Tensor, sl: tuple[int, int] | None) -> torch.Tensor:
        """The part of the input a row block reads."""
        if sl is None:
            return x
        return x[:, sl[0]:sl[1]] if self.is_conv else x[..., sl[0]:sl[1]]

    def block_slice(self, rs: int, re: int) -> tuple[int, int, int]:
        """Input-channel range a conv row block touches, and the row offset of that range."""
        c0, c1 = rs // self.kk, -(-re // self.kk)
        return c0, c1, c0 * self.kk

    def apply(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.is_conv:
            if self.fpad is not None:
                x = F.pad(x, self.fpad)
            return self.conv(x, w, None, self.strides, self.pad, self.dil)
        return torch.matmul(x, w)


def ideal_analog(info: NodeInfo, node: onnx.NodeProto):
    """The exact semantics of an ai.acompile node (CONTRACTS §3), no physics."""
    w, _, b = _mapped_inputs(info, node)
    geo = TileGeometry.from_node(info, node, w)
    kern = geo.kernel(w) if geo.is_conv else w
    if geo.is_conv:
        bias = None if b is None else b.reshape(1, -1, *([1] * len(geo.k)))
    else:
        bias = None if b is None else b * geo.beta

    def run(x, *_):
        y = geo.apply(x, kern.to(x.device))
        if not geo.is_conv and geo.alpha != 1.0:
            y = y * geo.alpha
        if bias is not None:
            y = y + bias.to(x.device)
        return y

    return run


class AnalogLayer:
    """One mapped weight matrix on simulated PCM tiles (program / set_time / forward)."""

    def __init__(self, info: NodeInfo, node: onnx.NodeProto, settings: AnalogSettings,
                 device: torch.device) -> None:
        self.settings = s = settings
        w, gs, b = _mapped_inputs(info, node)
        self.geo = geo = TileGeometry.from_node(info, node, w)
        self.name = geo.name
        self.device = device
        g_max = s.device.g_max
        self.w_n = (w * gs / g_max).to(device)  # normalized target weights in [-1, 1]
        self.g_target = (w.abs() * gs).to(device)  # uS on the device of its sign
        self.pos = (w > 0).to(device)
        self.col_scale = (g_max / gs).to(device)  # digital undo of the conductance scale
        if not geo.is_conv:
            self.col_scale = self.col_scale * geo.alpha
        self.bias = None
        if b is not None:
            self.bias = (b * (1.0 if geo.is_conv else geo.beta)).to(device)
            if geo.is_conv:
                self.bias = self.bias.reshape(1, -1, *([1] * len(geo.k)))
        self.model = s.device
        self.state: Programmed | None = None
        self.input_range: float | None = s.input_range
        self.out_bound: float | None = s.out_bound
        self.observing_out = False
        self.calibrating = False
        self._calib: list[float] = []
        self.alpha: list[torch.Tensor] | None = None  # per row block, [cols]
        self.generator: torch.Generator | None = None  # noise of each inference pass
        self.w_eff: torch.Tensor = self.w_n
        self.w_var: torch.Tensor | None = None
        self._ref_inputs: torch.Tensor | None = None
        self.epilogue: Epilogue | None = None
        self._prepare()

    # ---- programming and time -------------------------------------------------------------------
    def _device_targets(self) -> torch.Tensor:
        s = self.settings
        return device_targets(self.g_target, self.pos, s.device.g_min, s.cells_per_sign)

    def program(self, generator: torch.Generator | None) -> None:
        """Program this layer's devices once for a new chip (programming noise, nu)."""
        self.alpha, self.w_var = None, None
        self.state = self.model.program(self._device_targets(), generator)
        self.w_eff = self._weights(self.state.g_prog)
        if self.settings.input_range is None:
            self.input_range = None
        if self.settings.out_bound is None:
            self.out_bound = None
        self._prepare()

    def _weights(self, g: torch.Tensor) -> torch.Tensor:
        return pair_weights(g, self.settings.device.g_max)

    def set_time(self, t: float, generator: torch.Generator | None) -> None:
        """Effective weights at t seconds after programming (drift + read noise), derived from the
        programmed state — never cumulative."""
        if self.state is None:
            self.w_eff, self.w_var = self.w_n, None
        else:
            g = self.model.drift(self.state, t)
            dev = self.model
            if self.settings.read_noise_mode == "read" and dev.read_noise:
                std = dev.read_noise_std(self.state, g, t)
                self.w_var = (std * std).sum(0) / dev.g_max**2
            else:
                self.w_var = None
                g = self.model.add_read_noise(self.state, g, t, generator)
            self.w_eff = self._weights(g)
        self._prepare()

    # ---- compensation hooks ---------------------------------------------------------------------
    def reference_inputs(self, n: int = 16) -> torch.Tensor:
        """Fixed known +-1 read vectors of this layer (same on every chip), [n, rows]."""
        if self._ref_inputs is None or self._ref_inputs.shape[0] != n:
            g = torch.Generator().manual_seed(zlib_hash(self.name))
            self._ref_inputs = (torch.randint(0, 2, (n, self.geo.rows), generator=g).float() * 2 - 1).to(
                self.device)
        return self._ref_inputs

    def read_reference(self) -> list[torch.Tensor]:
        """|output| of each row block for the reference inputs with the current weights: [n, cols] each."""
        x = self.reference_inputs()
        return [(x[:, rs:re] @ self.w_eff[rs:re]).abs() for rs, re in self.geo.row_blocks]

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
        if adc == "quant":
            lout = levels(s.adc_bits)
            self.lout = lout
            bound = self.out_bound or _DEFAULT_OUT_BOUND  # not yet calibrated: the usual bound
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
    def _calibrate_observe(self, x: torch.Tensor) -> None:
        self._calib.append(abs_percentile(x, self.settings.calib_percentile))

    def start_calibration(self) -> None:
        """Observe inputs (no DAC) to set the static input range right after programming."""
        if self.settings.input_range is None and self.settings.dac_bits > 0:
            self.calibrating, self._calib = True, []
            self._prepare()

    def finish_calibration(self) -> None:
        if self.calibrating:
            r = max(self._calib) if self._calib else 1.0
            self.input_range = r if r > 0 else 1.0
            self.calibrating = False
            self._prepare()

    def start_out_calibration(self) -> bool:
        """Observe row-block outputs (DAC on, ADC off) to set this layer's ADC range; False if fixed."""
        if self.settings.out_bound is not None or self.settings.adc_bits == 0:
            return False
        self.observing_out, self._calib = True, []
        self._prepare()
        return True

    def finish_out_calibration(self) -> None:
        if self.observing_out:
            b = max(self._calib) if self._calib else 0.0
            self.out_bound = b if b > 0 else _DEFAULT_OUT_BOUND
            self.observing_out = False
            self._prepare()

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
        if self.calibrating:
            self._calibrate_observe(x)
        geo = self.geo
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
                self._calibrate_observe(y)
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


def zlib_hash(text: str) -> int:
    """Stable (process-independent) 31-bit hash of a string, for per-layer fixed seeds."""
    import zlib

    return zlib.crc32(text.encode()) & 0x7FFFFFFF


def analog_factory(settings: AnalogSettings, device: torch.device):
    """Executor factory building `AnalogLayer`s with the given settings."""

    def make(info: NodeInfo, node: onnx.NodeProto) -> AnalogLayer:
        return AnalogLayer(info, node, settings, device)

    return make
