"""The analog network for in-memory training: the zoo's MLP (784-250-10, ReLU) on emulated arrays."""

from __future__ import annotations

import math

import torch
from torch import nn

from hwtrain.inmemory.analog_layer import AnalogLinear
from hwtrain.inmemory.params import check_algorithm
from hwtrain.inmemory.rules import make_periphery, make_rule
from runtime.errors import AcompileError

MODEL_SHAPES = {"mlp": (784, 250, 10)}


class AnalogMLP(nn.Module):
    """Flatten -> fc1 -> ReLU -> fc2, the same topology as models.zoo.build('mlp')."""

    def __init__(self, fc1: AnalogLinear, fc2: AnalogLinear) -> None:
        super().__init__()
        self.fc1, self.fc2 = fc1, fc2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    def analog_layers(self) -> list[AnalogLinear]:
        return [self.fc1, self.fc2]


def _init_linear(n_out: int, n_in: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """nn.Linear's default init (Kaiming-uniform bound 1/sqrt(fan_in)), drawn from our generator."""
    bound = 1.0 / math.sqrt(n_in)
    w = (torch.rand((n_out, n_in), generator=gen, device=gen.device) * 2 - 1) * bound
    b = (torch.rand((n_out,), generator=gen, device=gen.device) * 2 - 1) * bound
    return w, b


def build_network(model: str, algorithm: str, device: str, p: dict[str, float], batch_size: int,
                  gen: torch.Generator, compute: str = "cpu") -> AnalogMLP:
    """The analog MLP with one update rule per layer; raises AcompileError for unsupported choices."""
    from hwtrain.inmemory.nets import build_net
    from hwtrain.inmemory.params import NETS

    if model in NETS:
        check_algorithm(algorithm, device)
        return build_net(model, algorithm, device, p, batch_size, gen)
    if model not in MODEL_SHAPES:
        raise AcompileError(f"in-memory training supports models {', '.join((*MODEL_SHAPES, *NETS))}, "
                            f"got {model!r}")
    check_algorithm(algorithm, device)
    sizes = MODEL_SHAPES[model]
    per = make_periphery(algorithm, p)
    layers = []
    n_layers = len(sizes) - 1
    for li, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w, b = _init_linear(n_out, n_in, gen)
        w_max = p["w_max_out"] if (li == n_layers - 1 and p["w_max_out"] > 0) else p["w_max"]
        rule = make_rule(algorithm, device, p, w, gen, batch_size, w_max)
        layers.append(AnalogLinear(rule, b, per, gen))
    return AnalogMLP(*layers)
