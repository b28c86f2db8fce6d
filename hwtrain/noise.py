"""Hardware-aware training building blocks (Joshi et al. 2020), droppable into any torch model.

    cfg = HWAConfig(noise=0.038, clip=2.5)
    apply_hwa(model, cfg)            # every Conv2d / Linear gets forward-only weight noise (+ DAC/ADC)
    ... loss.backward(); opt.step(); clip_weights_(model, cfg.clip)
    strip_hwa(model)                 # back to a plain model (clean weights), e.g. before ONNX export

Why forward-only noise: the network learns weights whose function is flat under the perturbation that
PCM programming causes, while the optimizer keeps updating the clean weights (the noise is resampled
each forward pass, no gradient flows into it). Clipping to k * std(W) keeps the weight distribution
compact so that max|W| (which sets the conductance scale G = |W| g_max / max|W|) is not driven by outliers.

Which weights: every Conv2d / Linear `weight`, and (weight noise and clipping only) every ConvTranspose
`weight`, the recurrent matrices of nn.LSTM / GRU / RNN (all `weight_ih_l*`, `weight_hh_l*`, also the
`_reverse` and `weight_hr_l*` ones) and nn.MultiheadAttention's `in_proj_weight` (or q/k/v_proj_weight);
its `out_proj` is a Linear. Noise std and clip bound are per tensor (max|W| and std(W) of the whole
tensor: the 4 stacked LSTM gates, the stacked Q/K/V projections). The periphery (DAC/ADC/output noise in
training) stays Conv2d/Linear-only: the LSTM, attention and ConvTranspose layers see weight noise and
clipping but no DAC/ADC emulation (nor does an attention's out_proj, which torch applies functionally).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache

import torch
from torch import nn
from torch.nn.utils import parametrize

from runtime.errors import AcompileError
from runtime.physics import constants as C
from runtime.physics.devices import make_device, noisy_device_names

ANALOG_TYPES = (nn.Conv2d, nn.Linear)
#: weight noise + clipping, but no periphery hooks
WEIGHT_ONLY_TYPES = (
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.RNNBase,
    nn.MultiheadAttention,
)
#: "gaussian", or a noisy device of the registry (its programming-noise curve gives the shape).
NOISE_SHAPES = ("gaussian", *noisy_device_names())


@dataclass
class HWAConfig:
    """What the forward pass of a hardware-aware model sees.

    noise: eta; additive Gaussian weight noise with std = eta * max|W| per layer (0 = off; Joshi 0.038).
    noise_shape: "gaussian" (uniform std as above) or a device name ("pcm", "rram", ...): std per weight
        follows that device's programming-noise curve prog_noise_std(|W| / max|W| * g_max), in weight
        units, scaled by eta / 0.038 (so the Joshi eta gives exactly the device's programming noise).
    clip: k; after each optimizer step weights are clipped to [-k std(W), k std(W)] (0 = off).
    dac_bits / adc_bits: straight-through quantization of layer inputs / outputs (0 = off), by the
        periphery code the emulator and `acompile finetune` share (see Periphery): each layer's partial
        sums are quantized per block of tile_rows input rows (one tile each), convolutions included.
    out_noise: additive output noise std in normalized units (0 = off).
    Like the weight noise, the periphery acts in training mode only: eval mode is the digital fp32 model
    that export_onnx writes, so reported test accuracies are digital accuracies.
    """

    noise: float = C.HWA_ETA_TRAIN
    noise_shape: str = "gaussian"
    clip: float = C.HWA_CLIP_ALPHA
    dac_bits: int = 0
    adc_bits: int = 0
    out_bound: float = C.OUT_BOUND
    out_noise: float = 0.0
    tile_rows: int = 256  # rows of the pcm target's tile: Linear layers get one ADC per row block

    def __post_init__(self) -> None:
        if not (0.0 <= self.noise < 1.0):
            raise AcompileError(f"--noise must be in [0, 1) (fraction of max|W|), got {self.noise}")
        if self.clip < 0:
            raise AcompileError(f"--clip must be >= 0 (0 = off), got {self.clip}")
        if self.noise_shape not in NOISE_SHAPES:
            raise AcompileError(f"noise shape must be one of {NOISE_SHAPES}, got {self.noise_shape!r}")
        for key in ("dac_bits", "adc_bits"):
            bits = getattr(self, key)
            if bits != 0 and not 2 <= bits <= 16:
                raise AcompileError(f"{key} must be 0 (off) or 2..16, got {bits}")
        if self.tile_rows < 1:
            raise AcompileError(f"tile_rows must be >= 1, got {self.tile_rows}")
        if self.out_bound <= 0 or self.out_noise < 0:
            raise AcompileError("out_bound must be > 0 and out_noise >= 0")

    @classmethod
    def plain(cls) -> HWAConfig:
        """No hardware awareness at all: the digital baseline to compare against."""
        return cls(noise=0.0, clip=0.0)

    def to_dict(self) -> dict:
        return asdict(self)


@cache
def _shape_device(name: str):
    """The device whose programming-noise curve shapes the noise (built once, not every step)."""
    return make_device(name)


def weight_noise_std(w: torch.Tensor, cfg: HWAConfig) -> torch.Tensor:
    """Std of the injected noise for each weight (a scalar tensor for the gaussian shape)."""
    w_max = w.detach().abs().max().clamp(min=1e-12)
    if cfg.noise_shape == "gaussian":
        return cfg.noise * w_max
    dev = _shape_device(cfg.noise_shape)
    g = w.detach().abs() / w_max * dev.g_max
    return (cfg.noise / C.HWA_ETA_TRAIN) * dev.prog_noise_std(g) / dev.g_max * w_max


class WeightNoise(nn.Module):
    """Parametrization: W -> W + N(0, std(W)^2) in training mode, identity in eval mode.

    The noise is detached, so the gradient reaches the clean weight unchanged (forward-only noise).
    """

    def __init__(self, cfg: HWAConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cfg.noise <= 0:
            return w
        std = weight_noise_std(w, self.cfg)
        return w + (torch.randn_like(w) * std).detach()


class Periphery:
    """The tile periphery in training mode (DAC, output noise, ADC per tile row block), computed by the
    one implementation that `acompile finetune` and the emulator share (hwtrain.analog_hwa.HWALayer):
    the input range is calibrated like the emulator's (a high percentile of |x|, here as a running
    estimate), convolutions are split into row blocks like linear layers, and outputs are quantized in
    normalized units (x / input_range) @ (W / max|W|) over +-out_bound. A forward hook replaces the
    layer's output in training mode; eval mode is the digital model."""

    def __init__(self, cfg: HWAConfig) -> None:
        self.cfg = cfg

    def attach(self, name: str, module: nn.Module) -> list:
        from hwtrain.analog_hwa import HWAContext, HWAKnobs, HWALayer
        from runtime.analog_settings import AnalogSettings

        cfg = self.cfg
        settings = AnalogSettings(device=make_device("ideal"), dac_bits=cfg.dac_bits, input_range=None,
                                  adc_bits=cfg.adc_bits, out_bound=cfg.out_bound, out_noise=cfg.out_noise)
        ctx = HWAContext()  # weight noise stays with the WeightNoise parametrization
        module._hwa_layer = HWALayer.for_module(name, module, settings, HWAKnobs(noise=0.0, clip=0.0),
                                                (cfg.tile_rows, cfg.tile_rows), ctx)
        return [module.register_forward_hook(self.post)]

    @staticmethod
    def post(module: nn.Module, args: tuple, y: torch.Tensor) -> torch.Tensor:
        if not module.training:
            return y
        layer = module._hwa_layer
        layer.ctx.active = True
        try:  # (reading module.weight draws a fresh noise sample; the first forward's y is unused)
            return layer(args[0], module.weight, module.bias)
        finally:
            layer.ctx.active = False


def analog_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The layers that get the training periphery (DAC/ADC): every Conv2d and Linear."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ANALOG_TYPES)]


def hwa_weight_names(m: nn.Module) -> tuple[str, ...]:
    """The names of the crossbar weight tensors of one module (empty for modules without any)."""
    if isinstance(m, ANALOG_TYPES) or isinstance(m, WEIGHT_ONLY_TYPES[:3]):
        return ("weight",)
    if isinstance(m, nn.RNNBase):
        return tuple(n for n in m._flat_weights_names if n.startswith("weight_"))
    if isinstance(m, nn.MultiheadAttention):
        if m._qkv_same_embed_dim:
            return ("in_proj_weight",)
        return ("q_proj_weight", "k_proj_weight", "v_proj_weight")
    return ()


def hwa_weights(model: nn.Module) -> list[tuple[str, nn.Module, tuple[str, ...]]]:
    """(module name, module, weight names) of every module whose weights get noise and clipping:
    Conv2d/Linear (as analog_layers, same order) and the WEIGHT_ONLY_TYPES."""
    out = []
    for n, m in model.named_modules():
        names = hwa_weight_names(m)
        if names:
            out.append((n, m, names))
    return out


def _refresh_flat_weights(module: nn.RNNBase, args: tuple) -> None:
    """Forward pre-hook of a noisy RNN: its forward reads the cached `_flat_weights` list, not the
    attributes, so point that list at the (re-drawn, in training mode) parametrized weights first."""
    module._flat_weights = [getattr(module, wn) if hasattr(module, wn) else None
                            for wn in module._flat_weights_names]


def apply_hwa(model: nn.Module, cfg: HWAConfig) -> nn.Module:
    """Make `model` hardware-aware in place (idempotent: re-applying replaces): weight noise on every
    weight of hwa_weights, the periphery on Conv2d/Linear only (analog_layers)."""
    strip_hwa(model)
    for name, m, names in hwa_weights(model):
        if cfg.noise > 0:
            for wn in names:
                parametrize.register_parametrization(m, wn, WeightNoise(cfg))
            if isinstance(m, nn.RNNBase):
                m._hwa_rnn_hook = m.register_forward_pre_hook(_refresh_flat_weights)
        if isinstance(m, ANALOG_TYPES) and (cfg.dac_bits or cfg.adc_bits or cfg.out_noise > 0):
            m._hwa_hooks = Periphery(cfg).attach(name, m)
    model._hwa_config = cfg
    return model


def strip_hwa(model: nn.Module) -> nn.Module:
    """Remove what apply_hwa added, keeping the clean weights: a plain model again (in place)."""
    for _, m, names in hwa_weights(model):
        if any(parametrize.is_parametrized(m, wn) for wn in names):
            _unparametrize(m, names)
        for h in getattr(m, "_hwa_hooks", []):
            h.remove()
        if hasattr(m, "_hwa_hooks"):
            del m._hwa_hooks
            del m._hwa_layer
        if hasattr(m, "_hwa_rnn_hook"):
            m._hwa_rnn_hook.remove()
            del m._hwa_rnn_hook
        if isinstance(m, nn.RNNBase):
            m._init_flat_weights()  # the clean Parameters again, not the last noisy sample
    if hasattr(model, "_hwa_config"):
        del model._hwa_config
    return model


def _unparametrize(m: nn.Module, names: tuple[str, ...]) -> None:
    """Like parametrize.remove_parametrizations(leave_parametrized=False) for our parametrizations,
    but without `delattr` on the generated class: a deepcopy shares that class with the original, and
    torch's version would break the other copy. The clean weight Parameter objects are kept (optimizers
    holding them stay valid)."""
    plist = m.parametrizations
    if set(plist.keys()) - set(names) or any(len(plist[k]) != 1 for k in plist.keys()):
        raise RuntimeError("strip_hwa: layer has parametrizations other than HWA noise")
    originals = {k: plist[k].original for k in plist.keys()}
    del m._modules["parametrizations"]
    m.__class__ = m.__class__.__bases__[0]
    for k, original in originals.items():
        m.register_parameter(k, original)


def clean_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The trainable (noise-free) weight parameter `name` of a possibly parametrized layer."""
    if parametrize.is_parametrized(module, name):
        return getattr(module.parametrizations, name).original
    return getattr(module, name)


@torch.no_grad()
def clip_weights_(model: nn.Module, k: float) -> None:
    """Clip every crossbar weight tensor (hwa_weights) to [-k std(W), k std(W)] in place (k <= 0: no-op)."""
    if k <= 0:
        return
    for _, m, names in hwa_weights(model):
        for wn in names:
            w = clean_weight(m, wn)
            bound = k * w.std()
            w.clamp_(-bound, bound)


PARAMETRIZED_NAME = re.compile(r"parametrizations\.([A-Za-z0-9_]+)\.original")


def clean_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """state_dict with parametrized names mapped back to plain ones (`fc1.weight`), for checkpoints."""
    out = {}
    for key, value in model.state_dict().items():
        out[PARAMETRIZED_NAME.sub(r"\1", key)] = value
    return out


def load_clean_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Inverse of clean_state_dict: load plain names into a model that may carry HWA parametrizations."""
    own = model.state_dict()
    mapped = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        alt = (head + "." if head else "") + f"parametrizations.{leaf}.original"
        mapped[alt if alt in own and key not in own else key] = value
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise AcompileError(
            f"checkpoint does not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
