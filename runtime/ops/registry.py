"""The op registry itself: `register`, `OPS` and the `NodeInfo` a converter receives.

Kept apart from `runtime/ops/__init__.py` so that the op modules (elementwise, nn, shape) import the
registry without importing the package that loads them (no import cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

Converter = Callable[["NodeInfo"], Callable[..., Any]]
OPS: dict[str, Converter] = {}


def register(*op_types: str) -> Callable[[Converter], Converter]:
    """Register a converter for one or more ONNX op types (default domain)."""

    def deco(fn: Converter) -> Converter:
        for op in op_types:
            OPS[op] = fn
        return fn

    return deco


@dataclass
class NodeInfo:
    """What a converter may know about its node at build time."""

    name: str
    op_type: str
    attrs: dict[str, Any]
    consts: list[torch.Tensor | None]  # constant value of each input (None: computed at run time)
    n_inputs: int
    n_outputs: int
    opset: int
    extra: dict[str, Any] = field(default_factory=dict)

    def const(self, i: int) -> torch.Tensor | None:
        return self.consts[i] if i < len(self.consts) else None

    def const_list(self, i: int) -> list[int] | None:
        c = self.const(i)
        return None if c is None else [int(v) for v in c.reshape(-1).tolist()]

    def error(self, msg: str) -> Exception:
        from runtime.errors import AcompileError

        return AcompileError(f"node '{self.name}' ({self.op_type}): {msg}")
