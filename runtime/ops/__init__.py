"""ONNX op registry: one converter per op type, onnx2torch-style.

A converter is called once when the executor is built, with a `NodeInfo` (decoded attributes, constant
inputs, opset), and returns the callable that runs the node on torch tensors. Doing the attribute work
up front keeps the per-batch path to plain torch calls.
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
        from compiler.errors import AcompileError

        return AcompileError(f"node '{self.name}' ({self.op_type}): {msg}")


def supported_ops() -> list[str]:
    """Sorted list of the ONNX op types the executor can run."""
    _load()
    return sorted(OPS)


_LOADED = False


def _load() -> None:
    global _LOADED
    if not _LOADED:
        from runtime.ops import elementwise, nn, shape  # noqa: F401  (registration side effects)

        _LOADED = True
