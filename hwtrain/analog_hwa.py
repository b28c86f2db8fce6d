"""Hardware-aware forward of one crossbar layer during fine-tuning, with the target's own physics.

The emulator (runtime/analog_tile.py) runs a mapped layer as: weights normalized by the conductance
scale, programmed with the device model's noise, inputs through the DAC over a calibrated range, one MVM
per tile row block, output noise and the ADC per block, then the digital rescale. Training sees the same
chain, built from the same functions (TileGeometry's row blocks and replicas, `replica_targets` /
`replicated_weights`, the device model's `program`, and on CPU the emulator's own native DAC and
noise+ADC kernels). The noise and
the converters are forward-only, straight-through: the gradient is that of the clean layer, taken at the
noisy weights and quantized inputs (Joshi et al. 2020), and the clean weights get it.

Out of training (`HWAContext.active` False) a layer is its exact digital op: the model that is scored
and exported is the clean network.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import onnx
import torch

from runtime import compensation as comp
from runtime import native
from runtime.analog_settings import AnalogSettings
from runtime.errors import AcompileError
from runtime.executor import decode_attrs
from runtime.ops import NodeInfo
from runtime.physics import constants as C
from runtime.physics.periphery import abs_percentile, adc_codes_, dac_codes, levels
from runtime.tile_geometry import TileGeometry
from runtime.tile_state import replica_targets, replicated_weights

NOISE_SHAPES = ("device", "gaussian")


@dataclass
class HWAKnobs:
    """What fine-tuning adds on top of the target (every value overridable from the CLI).

    noise: eta. shape "device": the target device model's programming noise (`program` of the shared
        PCM model, both devices of each pair), scaled by eta / 0.038, so Joshi's eta = 3.8 % of max|W|
        is the device's own magnitude; "gaussian": N(0, (eta max|W|)^2) per weight (Joshi 2020).
    clip: weights clipped to +-clip * std(W) after each step (0 = off; Joshi 2.0-2.5).
    periphery: DAC, output noise and ADC per tile row block as the target sets them.
    noise_times: (t_min, t_max) in seconds, or None. With the device shape, each forward also drifts the
        programmed devices to a time drawn log-uniformly in that range and adds the 1/f read noise
        (the device model's own `drift` / `add_read_noise`), then applies global drift compensation
        as the emulator's `global` does (the same known-input reads and factors, runtime.compensation,
        one per tile, digital after the ADC): the network learns the conductance-dependent drift and
        its device-to-device spread that GDC cannot undo, and output noise and ADC steps that grow
        relative to the shrinking signal, not only the programming noise.
    """

    noise: float = C.HWA_ETA_TRAIN
    noise_shape: str = "device"
    clip: float = C.HWA_CLIP_ALPHA
    periphery: bool = True
    range_momentum: float = 0.1  # EMA of the per-batch input-range statistic (the DAC calibration)
    noise_times: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.noise_times is not None:
            lo, hi = self.noise_times
            if not (0 < lo <= hi and math.isfinite(hi)):
                raise AcompileError(f"--noise-times must be 0 < T_MIN <= T_MAX, got {self.noise_times}")
            if self.noise_shape != "device":
                raise AcompileError("--noise-times needs --noise-shape device (it drifts the devices)")
        if not 0.0 <= self.noise < 1.0:
            raise AcompileError(f"--noise must be in [0, 1) (fraction of max|W|), got {self.noise}")
        if self.noise_shape not in NOISE_SHAPES:
            raise AcompileError(f"--noise-shape must be one of {', '.join(NOISE_SHAPES)}, got "
                                f"{self.noise_shape!r}")
        if not self.clip >= 0:
            raise AcompileError(f"--clip must be >= 0 (0 = off), got {self.clip}")

    def to_dict(self) -> dict:
        return asdict(self)


class HWAContext:
    """Shared switch: True while training steps run (noise and periphery on), False for scoring."""

    def __init__(self) -> None:
        self.active = False
        self.channels_last = False
        self.observe = True  # update the calibrated ranges (EMA) in this step


class HWALayer:
    """One Conv / Gemm / MatMul layer trained against its crossbar mapping.

    `op` and `attrs` are the ONNX op and attributes the weight comes with (a torch Linear is a Gemm with
    transB = 1), `geo` the tile geometry the compiler gives the layer."""

    def __init__(self, name: str, op: str, attrs: dict[str, Any], geo: TileGeometry, settings: AnalogSettings,
                 knobs: HWAKnobs, weight_scale: str, ctx: HWAContext) -> None:
        self.name, self.op, self.attrs, self.geo = name, op, attrs, geo
        self.settings, self.knobs, self.ctx = settings, knobs, ctx
        self.per_column = weight_scale == "column"
        dev = settings.device
        self.device_noise = knobs.noise > 0 and knobs.noise_shape == "device" and dev.prog_noise
        # programming only, unless --noise-times: then also the device's time evolution and read noise
        timed = knobs.noise_times is not None
        self.device_model = dev.with_params(drift=timed and dev.drift_on,
                                            read_noise=timed and dev.read_noise) \
            if self.device_noise else dev
        self.input_range: float | None = settings.input_range  # None: calibrated (EMA) in training
        self.out_bound: float | None = settings.out_bound
        self.generator: torch.Generator | None = None

    @classmethod
    def from_mapping(cls, node: onnx.NodeProto, mapped: onnx.NodeProto, shape: tuple[int, int],
                     settings: AnalogSettings, knobs: HWAKnobs, weight_scale: str,
                     ctx: HWAContext) -> HWALayer:
        """A node of the user's graph, with the geometry of its ai.acompile node in the mapped model."""
        name = node.name or node.output[0]
        minfo = NodeInfo(name=name, op_type=mapped.op_type, attrs=decode_attrs(mapped), consts=[],
                         n_inputs=len(mapped.input), n_outputs=1, opset=17)
        geo = TileGeometry.from_node(minfo, mapped, torch.empty(*shape))
        return cls(name, node.op_type, decode_attrs(node), geo, settings, knobs, weight_scale, ctx)

    @classmethod
    def for_module(cls, name: str, module: torch.nn.Module, settings: AnalogSettings, knobs: HWAKnobs,
                   tile: tuple[int, int], ctx: HWAContext) -> HWALayer:
        """A torch Conv2d / Linear split onto tiles of `tile` (rows, cols), as the compiler would."""
        from torch import nn

        w = module.weight
        if isinstance(module, nn.Conv2d):
            if module.groups != 1 or isinstance(module.padding, str):
                raise AcompileError(f"layer '{name}': grouped convs and string padding have no analog "
                                    "periphery here")
            k = list(module.kernel_size)
            pads = [int(p) for p in module.padding] * 2
            geo = TileGeometry.split(name, w.shape[1] * math.prod(k), w.shape[0], *tile, kernel=k,
                                     strides=list(module.stride), pads=pads, dilations=list(module.dilation))
            return cls(name, "Conv", {}, geo, settings, knobs, "layer", ctx)
        if isinstance(module, nn.Linear):
            geo = TileGeometry.split(name, w.shape[1], w.shape[0], *tile)
            return cls(name, "Gemm", {"transB": 1}, geo, settings, knobs, "layer", ctx)
        raise AcompileError(f"layer '{name}': {type(module).__name__} is not a crossbar layer")

    # ---- weight layout --------------------------------------------------------------------------
    def matrix(self, w: torch.Tensor) -> torch.Tensor:
        """The node's weight as the crossbar sees it: [rows = fan-in, cols = fan-out]."""
        if self.op == "Conv":
            return w.reshape(w.shape[0], -1).t()
        if self.op == "Gemm" and int(self.attrs.get("transB", 0)):
            return w.t()
        return w

    # ---- forward --------------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        if self.op == "Gemm" and int(self.attrs.get("transA", 0)):
            x = x.t()
        wm = self.matrix(w)
        if self.geo.rows != wm.shape[0] or self.geo.cols != wm.shape[1]:
            raise AcompileError(f"node '{self.name}': weight {list(wm.shape)} does not match its mapping "
                                f"{[self.geo.rows, self.geo.cols]}")
        if self.geo.is_conv and self.ctx.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        y = self._analog(x, wm) if self.ctx.active else self.geo.apply(x, self._kernel(wm))
        if not self.geo.is_conv and self.geo.alpha != 1.0:
            y = y * self.geo.alpha
        if b is not None:
            if self.geo.is_conv:
                y = y + b.reshape(1, -1, *([1] * len(self.geo.k)))
            else:
                y = y + (b * self.geo.beta if self.geo.beta != 1.0 else b)
        return y

    def _kernel(self, wm: torch.Tensor) -> torch.Tensor:
        return self.geo.kernel(wm) if self.geo.is_conv else wm

    def weight_scale(self, wm: torch.Tensor) -> torch.Tensor:
        """max|W| per layer (or per column): the weight that sits at g_max (compiler's G_SCALE)."""
        a = wm.detach().abs()
        m = a.amax(0) if self.per_column else a.max().expand(wm.shape[1])
        return torch.where(m > 0, m, torch.ones_like(m))

    def sample_weights(self, wm: torch.Tensor, w_max: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """W / w_max plus forward-only device noise (normalized units, the devices' own statistics) and,
        with --noise-times, the GDC factors as the emulator's `global` computes them, one per tile, laid
        out [rows, cols] (each row block's [cols] factors on its rows). The weights returned are the
        compensated ones; the forward divides the factors back out and applies them after the ADC, as
        the chip does."""
        wn = wm / w_max
        k = self.knobs
        alphas = None
        if k.noise <= 0:
            return wn, alphas
        with torch.no_grad():
            if k.noise_shape == "gaussian":
                delta = torch.randn(wn.shape, generator=self.generator, device=wn.device) * k.noise
            elif self.device_noise:
                s, g_max, reps = self.settings, self.settings.device.g_max, self.geo.replicas
                target = replica_targets(wn.detach().abs() * g_max, wn.detach() > 0, s.device.g_min,
                                         s.cells_per_sign, reps)
                state = self.device_model.program(target, self.generator)
                w_dev = replicated_weights(state.g_prog, g_max, reps)
                if k.noise_times is not None:
                    w_dev, alphas = self._drifted(state, w_dev)
                delta = (w_dev - replicated_weights(target, g_max, reps)) * (k.noise / C.HWA_ETA_TRAIN)
            else:
                return wn, alphas
        return wn + delta, alphas

    def noisy_normalized(self, wm: torch.Tensor, w_max: torch.Tensor) -> torch.Tensor:
        """The compensated noisy weights alone (see sample_weights)."""
        return self.sample_weights(wm, w_max)[0]

    def _drifted(self, state: Any, w_prog: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized weights at a random time after programming, globally drift-compensated, and the
        compensation factors [rows, cols]."""
        lo, hi = self.knobs.noise_times
        u = float(torch.rand((), generator=self.generator, device=w_prog.device))
        t = math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
        model = self.device_model
        g = model.add_read_noise(state, model.drift(state, t), t, self.generator)
        w_t = replicated_weights(g, self.settings.device.g_max, self.geo.replicas)
        per_block = comp.block_alphas(self.geo, comp.block_reads(self.name, self.geo, w_prog),
                                      comp.block_reads(self.name, self.geo, w_t), per_column=False)
        alphas = torch.ones_like(w_t)
        for (rs, re), a in zip(self.geo.row_blocks, per_block, strict=True):
            alphas[rs:re] = a
        return w_t * alphas, alphas

    def _observe(self, current: float | None, value: float) -> float:
        if current is None:
            return value
        m = self.knobs.range_momentum
        return (1 - m) * current + m * value

    def _use_native(self, x: torch.Tensor) -> bool:
        return x.device.type == "cpu" and self.settings.kernels != "torch" and native.available()

    def _dac(self, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Inputs in normalized units (x / r) through the DAC, straight-through; and r."""
        s = self.settings
        if not (self.knobs.periphery and s.dac_bits > 0):
            return x, 1.0
        if s.input_range is None and (self.ctx.observe or self.input_range is None):
            self.input_range = self._observe(self.input_range, abs_percentile(x, s.calib_percentile))
        r = max(self.input_range or 1.0, 1e-12)
        lin = levels(s.dac_bits)
        xs = x * (1.0 / r)
        with torch.no_grad():
            xd = x.detach()
            if self._use_native(xd) and xd.dtype == torch.float32:
                codes = native.dac(xd, lin / r, float(lin))
            else:
                codes = dac_codes(xd, lin / r, lin)
            q = codes.mul_(1.0 / lin)
        return xs + (q - xs).detach(), r

    def _adc_sum(self, ys: list[torch.Tensor], alphas: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Output noise and ADC of each row block's partial sum, then each times its drift compensation
        factors (digital, after the ADC) and their digital sum (normalized units); straight-through: the
        gradient is that of the plain compensated sum."""
        s, geo = self.settings, self.geo
        cdim = 1 if geo.is_conv else -1

        def comp_(b: int, y: torch.Tensor) -> torch.Tensor:
            if alphas is None:
                return y
            shape = [1] * y.dim()
            shape[cdim] = -1
            return y * alphas[b].reshape(shape)

        ys_c = [comp_(b, y) for b, y in enumerate(ys)]
        total = ys_c[0] if len(ys_c) == 1 else torch.stack(ys_c).sum(0)
        quant = self.knobs.periphery and s.adc_bits > 0
        noisy = self.knobs.periphery and s.out_noise > 0
        if not (quant or noisy):
            return total
        if quant and s.out_bound is None and (self.ctx.observe or self.out_bound is None):
            self.out_bound = self._observe(self.out_bound,
                                           max(abs_percentile(y, s.calib_percentile) for y in ys))
        bound = max(self.out_bound or 1.0, 1e-12) if quant else 1.0
        lout = levels(s.adc_bits) if quant else 0
        unit = bound / lout if quant else 1.0  # normalized units per ADC code
        with torch.no_grad():
            if self._use_native(total):
                out = None
                k0, k1 = native.new_key(self.generator)
                for b, y in enumerate(ys):
                    scale = torch.full((geo.cols,), unit) if alphas is None else alphas[b].float() * unit
                    yv = native.channels_last_view(y.detach().float() * (1.0 / unit), cdim % y.dim())
                    key = ((k0 + 0x9E3779B9 * b) & 0xFFFFFFFF, k1)
                    out = native.tail(yv, out, scale, None, s.out_noise / unit, float(lout), key)
                q = out.movedim(-1, cdim % total.dim()) if (cdim % total.dim()) != total.dim() - 1 else out
            else:
                q = torch.zeros_like(total, dtype=torch.float32)
                for b, y in enumerate(ys):
                    yu = y.detach().float() * (1.0 / unit)
                    if noisy:
                        yu = yu + (s.out_noise / unit) * torch.randn(yu.shape, generator=self.generator,
                                                                     device=yu.device)
                    if quant:
                        yu = adc_codes_(yu, lout)
                    q += comp_(b, yu * unit)
        return total + (q - total).detach()

    def _analog(self, x: torch.Tensor, wm: torch.Tensor) -> torch.Tensor:
        geo = self.geo
        w_max = self.weight_scale(wm)
        wn, alpha_rows = self.sample_weights(wm, w_max)
        alphas = None
        if alpha_rows is not None and self.knobs.periphery:
            wn = wn / alpha_rows  # the drifted devices: compensation comes after the ADC
            alphas = [alpha_rows[rs] for rs, _ in geo.row_blocks]
        xn, r = self._dac(x)
        blocks = geo.row_blocks if self.knobs.periphery else [(0, geo.rows)]
        ys = [geo.apply(geo.block_input(xn, geo.block_span(rs, re)[2]),
                        self._kernel(geo.block_matrix(wn, rs, re))).float() for rs, re in blocks]
        out = self._adc_sum(ys, alphas)
        shape = (1, -1) + (1,) * len(geo.k) if geo.is_conv else (-1,)
        return out * (w_max * r).reshape(shape)
