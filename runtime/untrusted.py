"""Reading ONNX files nobody vouches for: external data must stay in the model's folder (checked before
any external byte is read) and fit the file it names. Used by the compiler's frontend and by the
emulator's loader alike."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from runtime.errors import AcompileError


def external_tensors(model: onnx.ModelProto):
    """Every TensorProto in the main graph that may carry external data (initializers, Constants)."""
    yield from model.graph.initializer
    for node in model.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> None:
    """Reject external-data locations that are absolute or escape the model's folder, or are missing."""
    root = os.path.realpath(base_dir)
    for tensor in external_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        loc = info.get("location", "")
        if not loc:
            raise AcompileError(f"tensor {tensor.name!r}: external data without a location")
        if "\0" in loc:  # os.path functions raise ValueError on it
            raise AcompileError(f"tensor {tensor.name!r}: external data location {loc!r} is not a file name")
        if os.path.isabs(loc) or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
            raise AcompileError(f"tensor {tensor.name!r}: external data location {loc!r} is an absolute "
                                "path; it must be relative to the model's folder")
        full = os.path.realpath(os.path.join(root, loc))
        if os.path.commonpath([root, full]) != root:
            raise AcompileError(f"tensor {tensor.name!r}: external data location {loc!r} leaves the "
                                "model's folder")
        if not os.path.isfile(full):
            raise AcompileError(f"tensor {tensor.name!r}: external data file {loc!r} not found")
        span = {}
        for key in ("offset", "length"):
            text = info.get(key, "0") or "0"
            try:
                span[key] = int(text)
            except ValueError:
                span[key] = -1
            if span[key] < 0:
                raise AcompileError(f"tensor {tensor.name!r}: external data {key} {text!r} is not a "
                                    "non-negative integer")
        offset, length = span["offset"], span["length"]
        if offset + length > os.path.getsize(full):
            raise AcompileError(f"tensor {tensor.name!r}: external data {loc!r} is shorter than "
                                "offset + length")


def load_checked(path: Path) -> onnx.ModelProto:
    """The model at `path` with its external data, after check_external_data."""
    model = onnx.load(str(path), load_external_data=False)
    check_external_data(model, path.parent)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in external_tensors(model)):
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(path.parent))
    return model
