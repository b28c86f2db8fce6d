"""The analog network for in-memory training: the zoo's MLP (784-250-10, ReLU) on emulated arrays."""

from __future__ import annotations

import math

import torch
from torch import nn

from hwtrain.inmemory.algorithms.analog_sgd import AnalogSGDRule
from hwtrain.inmemory.algorithms.fp32 import FP32Rule
from hwtrain.inmemory.algorithms.mixed_precision import MixedPrecisionRule
from hwtrain.inmemory.algorithms.tiki_taka import TikiTakaRule
from hwtrain.inmemory.analog_layer import AnalogLinear, Periphery
from runtime.errors import AcompileError
from runtime.physics.pcm_pulse import PCMPulseConfig
from runtime.physics.rpu_devices import RPUConfig

MODEL_SHAPES = {"mlp": (784, 250, 10)}
COMPATIBLE = {
    "mixed-precision": ("pcm",),
    "sgd": ("softbounds", "linear"),
    "ttv2": ("softbounds", "linear"),
    "cttv2": ("softbounds", "linear"),
    "agad": ("softbounds", "linear"),
    "fp32": ("ideal", "pcm", "softbounds", "linear"),
}


class AnalogMLP(nn.Module):
    """Flatten -> fc1 -> ReLU -> fc2, the same topology as models.zoo.build('mlp')."""

    def __init__(self, fc1: AnalogLinear, fc2: AnalogLinear) -> None:
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    def analog_layers(self) -> list[AnalogLinear]:
        return [self.fc1, self.fc2]


def rpu_config(device: str, p: dict[str, float]) -> RPUConfig:
    kw = dict(kind=device, w_bound=p["w_bound"], asymmetry=p["asymmetry"], d2d=p["d2d"], c2c=p["c2c"],
              offset=p["offset"])
    if p["states"] is not None:
        return RPUConfig.from_states(p["states"], **kw)
    return RPUConfig(dw_min=p["dw_min"], **kw)


def _init_linear(n_out: int, n_in: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init (Kaiming-uniform bound 1/sqrt(fan_in)), drawn from our generator."""
    bound = 1.0 / math.sqrt(n_in)
    w = (torch.rand((n_out, n_in), generator=gen, device=gen.device) * 2 - 1) * bound
    b = (torch.rand((n_out,), generator=gen, device=gen.device) * 2 - 1) * bound
    return w, b


def build_network(model: str, algorithm: str, device: str, p: dict[str, float], batch_size: int,
                  gen: torch.Generator, compute: str = "cpu") -> AnalogMLP:
    """The analog MLP with one update rule per layer; raises AcompileError for unsupported choices."""
    if model not in MODEL_SHAPES:
        raise AcompileError(f"in-memory training supports models {', '.join(MODEL_SHAPES)}, got {model!r}")
    if device not in COMPATIBLE.get(algorithm, ()):
        raise AcompileError(f"algorithm {algorithm!r} runs on device(s) {', '.join(COMPATIBLE[algorithm])}, "
                            f"not {device!r}")
    sizes = MODEL_SHAPES[model]
    per = Periphery(dac_bits=int(p["dac_bits"]), adc_bits=int(p["adc_bits"]), out_noise=p["out_noise"],
                    enabled=p["periphery"] > 0 and algorithm != "fp32")
    layers = []
    n_layers = len(sizes) - 1
    for li, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w, b = _init_linear(n_out, n_in, gen)
        if algorithm == "fp32":
            rule = FP32Rule(w)
        elif algorithm == "mixed-precision":
            cfg = PCMPulseConfig(noise_scale=p["pcm_noise"])
            w_max = p["w_max_out"] if (li == n_layers - 1 and p["w_max_out"] > 0) else p["w_max"]
            rule = MixedPrecisionRule(w, w_max=w_max, gen=gen, cfg=cfg, eps_scale=p["eps"],
                                      read_noise=p["read_noise"] > 0, refresh_every=int(p["refresh_every"]))
        elif algorithm == "sgd":
            rule = AnalogSGDRule(w, cfg=rpu_config(device, p), bl=int(p["bl"]), gen=gen)
        else:
            rule = TikiTakaRule(w, variant=algorithm, cfg=rpu_config(device, p), bl=int(p["bl"]), gen=gen,
                                lr_h=p["lr_h"], lr_a_scale=p["lr_a"], p_flip=p["p_flip"],
                                n_cols=int(p["n_cols"]) or batch_size, read_noise=p["out_noise"],
                                sync=p["sync"] > 0, period=int(p["period"]))
        layers.append(AnalogLinear(rule, b, per, gen))
    return AnalogMLP(*layers)
