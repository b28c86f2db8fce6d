"""The mapped artifact (CONTRACTS §3, format 1): build it from a normalized model, write it atomically.

Every analog node is replaced in place (same inputs/outputs, same position) by an analog node of the
contract's domain (runtime.contract: AnalogConv / AnalogMatMul / AnalogConvTranspose / AnalogLSTM /
AnalogGRU / AnalogRNN, written by its writer) whose W
initializer holds the original weights exactly and whose G_SCALE holds the conductance scale. Outputs
are written through runtime.outputs.write_files: temporary files in the destination folder, moved into
place only when all of them exist (the model last), so a failed or interrupted compile leaves the old
set of files or the new one, never a mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.graph import drop_unused_initializers
from compiler.partition import Layer
from runtime import contract
from runtime.errors import AcompileError
from runtime.outputs import write_files

FORMAT_VERSION = contract.FORMAT_VERSION


def build_mapped_model(model: onnx.ModelProto, layers: list[Layer], scales: dict[str, np.ndarray],
                       tiles: dict[str, list[contract.TileBlock]], target: dict,
                       report: dict[str, Any], original_metadata: dict[str, str]) -> onnx.ModelProto:
    """Return a new ModelProto; ``model`` (normalized) is consumed (its graph is rebuilt in place)."""
    g = model.graph
    by_name = {ly.name: ly for ly in layers if ly.analog}
    new_nodes: list[onnx.NodeProto] = []
    new_inits: list[onnx.TensorProto] = []
    inits = {t.name: t for t in g.initializer}
    for node in g.node:
        ly = by_name.get(node.name)
        if ly is None:
            new_nodes.append(node)
            continue
        low = ly.lowering
        x = low.x
        if low.transpose_x:
            xt = f"{node.name}.XT"
            new_nodes.append(helper.make_node("Transpose", [x], [xt], name=f"{node.name}.transA",
                                              perm=[1, 0]))
            x = xt
        bias, outputs = low.bias, list(node.output)
        if low.dtype != onnx.TensorProto.FLOAT:
            # W is float32 (CONTRACTS section 3): a float16 / float64 / bfloat16 layer computes in float32
            # between two Casts, so the graph around it keeps its types
            x, bias, outputs = _float32_boundary(node.name, x, bias, outputs, low.dtype, inits, new_nodes,
                                                 new_inits)
        if low.op_type in contract.RECURRENT_OPS:  # Y, Y_h[, Y_c] and the op's optional inputs
            outputs = list(node.output)
        analog, inits_ = contract.make_analog_node(low.op_type, node.name, x, low.W, scales[node.name],
                                                   outputs, low.attrs, tiles[node.name], bias=bias,
                                                   extra_inputs=low.extra.get("extra_inputs"),
                                                   shares=ly.shares)
        new_inits.extend(inits_)
        new_nodes.append(analog)
        if outputs[0] != node.output[0]:
            new_nodes.append(helper.make_node("Cast", outputs, [node.output[0]], name=f"{node.name}.cast_y",
                                              to=low.dtype))
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    drop_unused_initializers(g)
    contract.add_domain(model)
    contract.set_metadata(model, contract.mapped_metadata(target, report, keep=original_metadata))
    model.producer_name = contract.PRODUCER
    return model


def _float32_boundary(name: str, x: str, bias: str | None, outputs: list[str], dtype: int,
                      inits: dict[str, onnx.TensorProto], new_nodes: list[onnx.NodeProto],
                      new_inits: list[onnx.TensorProto]) -> tuple[str, str | None, list[str]]:
    """Cast X (and a bias) to float32 in front of the analog node ``name``; its output gets a float32 name
    that the caller casts back to ``dtype``. Returns (x, bias, outputs) for the analog node."""
    x32 = f"{name}.X_f32"
    new_nodes.append(helper.make_node("Cast", [x], [x32], name=f"{name}.cast_x", to=onnx.TensorProto.FLOAT))
    if bias:
        b32 = f"{name}.B_f32"
        if bias in inits:
            new_inits.append(numpy_helper.from_array(
                numpy_helper.to_array(inits[bias]).astype(np.float32), b32))
        else:
            new_nodes.append(helper.make_node("Cast", [bias], [b32], name=f"{name}.cast_b",
                                              to=onnx.TensorProto.FLOAT))
        bias = b32
    return x32, bias, [f"{name}.Y_f32"]


def check_mapped(model: onnx.ModelProto | bytes) -> None:
    """onnx.checker on the artifact; a failure here is our bug, but still reported on one line."""
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AcompileError(f"internal: mapped model fails onnx.checker: {first}") from None


def report_paths(model_path: Path) -> dict[str, Path]:
    """``out/r32.onnx`` -> out/r32.json, out/r32.md, out/r32.png."""
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.name
    return {ext: model_path.with_name(f"{stem}.{ext}") for ext in ("json", "md", "png")}


def write_atomically(files: dict[Path, bytes]) -> None:
    """Write a result set all or nothing, the first file (the model) moved into place last: a model
    file on disk means its reports are there. runtime.outputs.write_files says what an interruption
    leaves (the complete old set or the complete new one)."""
    write_files(files, primary=next(iter(files), None))


def serialize(model: onnx.ModelProto) -> bytes:
    try:  # protobuf refuses > 2 GiB itself; no ByteSize() pass over 100s of MB of weights first
        return model.SerializeToString()
    except ValueError:
        raise AcompileError("mapped model is above the 2 GiB protobuf limit (external-data output is not "
                            "supported yet)") from None
