"""ONNX op registry: one converter per op type, onnx2torch-style.

A converter is called once when the executor is built, with a `NodeInfo` (decoded attributes, constant
inputs, opset), and returns the callable that runs the node on torch tensors. Doing the attribute work
up front keeps the per-batch path to plain torch calls.
"""

from __future__ import annotations

from runtime.ops.registry import OPS, Converter, NodeInfo, register

__all__ = ["OPS", "Converter", "NodeInfo", "register", "supported_ops"]


def supported_ops() -> list[str]:
    """Sorted list of the ONNX op types the executor can run."""
    _load()
    return sorted(OPS)


_LOADED = False


def _load() -> None:
    global _LOADED
    if not _LOADED:
        from runtime.ops import elementwise, nn, recurrent, shape  # noqa: F401  (registration side effects)

        _LOADED = True
