"""Per-op lowerers (a registry, onnx2torch style): how an ONNX node becomes an analog crossbar layer.

A lowerer looks at one node and either returns a Lowering (the weight matrix W [rows=fan-in,
cols=fan-out], MVMs per inference, attributes of the ai.acompile node) or a string: the reason the node
stays digital. Problems the user must fix (a Conv whose weight is not constant, unresolvable spatial
shapes) raise AcompileError naming the node.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from compiler.graph import GraphInfo
from compiler.recurrent import ANALOG_OP, node_attrs, reads_per_step, resolved_activations
from runtime import contract
from runtime.errors import AcompileError


@dataclass
class Lowering:
    """What the artifact writer needs to replace one node by an ai.acompile node."""

    op_type: str  # one of contract.ANALOG_OPS
    W: np.ndarray  # [rows, cols] float32, the original weights exactly
    x: str  # input activation tensor name
    bias: str | None  # bias tensor name (kept as is; digital)
    attrs: dict[str, Any]  # the analog node's attributes but layer / tiles (contract.conv_attrs, ...)
    mvms: int  # tile MVMs per inference per block (output positions, batch 1)
    transpose_x: bool = False  # Gemm transA=1: a digital Transpose in front
    weight_name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # ONNX type of the weight (so of X and Y); the artifact puts Casts to/from float32 around the analog
    # node when it is not FLOAT (a float16 / float64 / bfloat16 model)
    dtype: int = onnx.TensorProto.FLOAT


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _where(node: onnx.NodeProto) -> str:
    return f"node {node.name!r} ({node.op_type})"


def _need_const(node: onnx.NodeProto, info: GraphInfo, idx: int) -> np.ndarray:
    name = node.input[idx] if len(node.input) > idx else ""
    value = info.const(name) if name else None
    if value is None:
        raise AcompileError(f"{_where(node)}: weight input {name!r} is not a constant; analog layers need "
                            f"constant weights (use --digital {node.name} to keep it digital)")
    return value


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE,
                onnx.TensorProto.BFLOAT16)


def _weight_type(node: onnx.NodeProto, info: GraphInfo) -> int | str:
    """The weight's ONNX element type, or the reason an integer layer stays digital."""
    t = info.initializers.get(node.input[1])
    dtype = t.data_type if t is not None else onnx.TensorProto.FLOAT
    if dtype not in _FLOAT_TYPES:
        return (f"{onnx.TensorProto.DataType.Name(dtype).lower()} weights (integer arithmetic): digital, "
                "analog tiles compute in floating point")
    return dtype


def _empty(node: onnx.NodeProto, w: np.ndarray) -> str | None:
    """The reason a layer whose weight has a zero-sized dim stays digital (nothing to put on tiles)."""
    if w.size == 0:
        return (f"empty weight {node.input[1]!r} (shape {list(w.shape)}): nothing to map, kept digital")
    return None


def check_finite(node: onnx.NodeProto, name: str, value: np.ndarray, what: str = "weight") -> None:
    """NaN / Inf in a weight (or bias) is refused, naming the node: conductances cannot hold them
    (G_SCALE would silently become 1.0 or 0.0 and the layer compute noise), and the digital model is
    broken as well, so keeping the layer digital would not help."""
    if value.dtype.kind != "f" and value.dtype.name not in ("bfloat16",):
        return
    v = value.astype(np.float32, copy=False) if value.dtype.name == "bfloat16" else value
    finite = np.isfinite(v)
    if finite.all():
        return
    n_nan = int(np.isnan(v).sum())
    n_inf = int(v.size - finite.sum()) - n_nan
    raise AcompileError(f"{_where(node)}: {what} {name!r} holds {n_nan} NaN and {n_inf} infinite value(s) "
                        f"of {v.size}; fix the model (weights must be finite numbers)")


def _positions(node: onnx.NodeProto, dims: list | None, what: str) -> int:
    if dims is None or any(not isinstance(d, int) or d <= 0 for d in dims):
        raise AcompileError(f"{_where(node)}: cannot resolve the {what} shape {dims} (dynamic shapes); "
                            "analog layers need static spatial/sequence dims (a symbolic batch is fine)")
    return int(math.prod(dims))


def _conv_weight(node: onnx.NodeProto, info: GraphInfo, target: dict, what: str
                 ) -> tuple[np.ndarray, dict, int] | str:
    """Weight, attributes and weight type of a Conv / ConvTranspose, or why the layer stays digital
    (weight type, empty weight, grouped by target policy)."""
    w = _need_const(node, info, 1)
    dtype = _weight_type(node, info)
    if isinstance(dtype, str):
        return dtype
    if _empty(node, w):
        return _empty(node, w)
    a = _attrs(node)
    group = int(a.get("group", 1))
    if group != 1:
        kind = "depthwise" if group == w.shape[0] and w.shape[1] == 1 else "grouped"
        return (f"{kind} {what} (group={group}): digital by target policy grouped_conv="
                f"{target['mapping']['grouped_conv']} (block-diagonal tiles would waste most cells)")
    if w.ndim < 3:
        raise AcompileError(f"{_where(node)}: weight has rank {w.ndim}, expected >= 3")
    return w, a, dtype


def lower_conv(node: onnx.NodeProto, info: GraphInfo, target: dict) -> Lowering | str:
    got = _conv_weight(node, info, target, "conv")
    if isinstance(got, str):
        return got
    w, a, dtype = got
    c_out = w.shape[0]
    kernel = list(w.shape[2:])
    nsp = len(kernel)
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    x_shape = info.shape(node.input[0])
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        in_sp = x_shape[2:] if x_shape else None
        _positions(node, in_sp, "input spatial")
        begins, ends = [], []
        for i in range(nsp):
            out = -(-in_sp[i] // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dil[i] + 1 - in_sp[i], 0)
            small = total // 2
            big = total - small
            begins.append(small if auto_pad == "SAME_UPPER" else big)
            ends.append(big if auto_pad == "SAME_UPPER" else small)
        pads = begins + ends
    elif auto_pad == "VALID":
        pads = [0] * (2 * nsp)
    else:
        pads = list(a.get("pads", [0] * (2 * nsp)))
    y_shape = info.shape(node.output[0])
    out_sp = y_shape[2:] if y_shape and len(y_shape) == nsp + 2 else None
    if out_sp is None or any(not isinstance(d, int) or d <= 0 for d in out_sp):
        in_sp = x_shape[2:] if x_shape else None
        _positions(node, in_sp, "input spatial")
        out_sp = [(in_sp[i] + pads[i] + pads[i + nsp] - dil[i] * (kernel[i] - 1) - 1) // strides[i] + 1
                  for i in range(nsp)]
    mvms = _positions(node, out_sp, "output spatial")
    W = np.ascontiguousarray(w.reshape(c_out, -1).T.astype(np.float32, copy=False))
    attrs = contract.conv_attrs(kernel, strides, pads, dil, orig_op="Conv")
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and info.const(bias) is None:
        return "bias computed at run time (not a constant): kept digital"
    return Lowering(contract.ANALOG_CONV, W, node.input[0], bias, attrs, mvms, weight_name=node.input[1],
                    dtype=dtype)


def lower_conv_transpose(node: onnx.NodeProto, info: GraphInfo, target: dict) -> Lowering | str:
    """ConvTranspose as the equivalent conv over the zero-upsampled input with the flipped kernel:
    W [C_in * prod(k), C_out] (contract.conv_transpose_kernel), one MVM per output position."""
    got = _conv_weight(node, info, target, "conv transpose")
    if isinstance(got, str):
        return got
    w, a, dtype = got
    kernel = list(w.shape[2:])
    nsp = len(kernel)
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad not in ("NOTSET", "VALID") or "output_shape" in a:
        what = f"auto_pad={auto_pad}" if auto_pad not in ("NOTSET", "VALID") else "output_shape"
        return f"ConvTranspose with {what}: kept digital (only explicit pads map onto tiles)"
    if "kernel_shape" in a and list(a["kernel_shape"]) != kernel:
        return f"ConvTranspose kernel_shape {list(a['kernel_shape'])} differs from its weight's: kept digital"
    strides = list(a.get("strides", [1] * nsp))
    dil = list(a.get("dilations", [1] * nsp))
    pads = [0] * (2 * nsp) if auto_pad == "VALID" else list(a.get("pads", [0] * (2 * nsp)))
    out_pad = list(a.get("output_padding", [0] * nsp))
    if any(out_pad[i] >= max(strides[i], dil[i]) for i in range(nsp)):
        raise AcompileError(f"{_where(node)}: output_padding {out_pad} must be smaller than the stride or "
                            "the dilation on each axis")
    y_shape = info.shape(node.output[0])
    out_sp = y_shape[2:] if y_shape and len(y_shape) == nsp + 2 else None
    if out_sp is None or any(not isinstance(d, int) or d <= 0 for d in out_sp):
        x_shape = info.shape(node.input[0])
        in_sp = x_shape[2:] if x_shape else None
        _positions(node, in_sp, "input spatial")
        out_sp = [(in_sp[i] - 1) * strides[i] - pads[i] - pads[i + nsp] + dil[i] * (kernel[i] - 1)
                  + out_pad[i] + 1 for i in range(nsp)]
    mvms = _positions(node, out_sp, "output spatial")
    W = contract.conv_transpose_kernel(w.astype(np.float32, copy=False))
    attrs = contract.conv_transpose_attrs(kernel, strides, pads, dil, out_pad)
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and info.const(bias) is None:
        return "bias computed at run time (not a constant): kept digital"
    return Lowering(contract.ANALOG_CONV_TRANSPOSE, W, node.input[0], bias, attrs, mvms,
                    weight_name=node.input[1], dtype=dtype)


def _row_positions(node: onnx.NodeProto, info: GraphInfo, x: str) -> int:
    """MVMs per inference of X @ W: the rows of X ([..., K]) of one batch element.

    The batch may sit at any leading position (attention reshapes [N, T, E] to [T, N, E]): a dim named
    by a graph input's batch symbol counts 1; without one (a batch fixed at export) the first dim is the
    batch, or the product of the leading dims is divided by that fixed batch when it folds in elsewhere.
    """
    shape = info.shape(x)
    if shape is None or len(shape) <= 1:
        return 1  # [K]: one MVM
    lead = list(shape[:-1])
    if any(isinstance(d, str) and d in info.batch_symbols for d in lead):
        rest = [d for d in lead if not (isinstance(d, str) and d in info.batch_symbols)]
        return _positions(node, rest, "input leading (non-batch)") if rest else 1
    if len(lead) == 1:
        return 1  # [batch, K]
    unknown = [d for d in lead if not (isinstance(d, int) and d > 0)]
    if len(unknown) == 1 and info.batch_symbols:
        # one dim shape inference could not name (a fresh symbol after a Reshape of the batch) in a model
        # whose batch is dynamic and whose other dims are static: that dim is the batch
        return math.prod(d for d in lead if isinstance(d, int) and d > 0)
    if info.static_batch and all(isinstance(d, int) and d > 0 for d in lead):
        total = math.prod(lead)
        if total % info.static_batch == 0:
            return total // info.static_batch
    return _positions(node, lead[1:], "input leading (non-batch)")


def lower_gemm(node: onnx.NodeProto, info: GraphInfo, target: dict) -> Lowering | str:
    b = _need_const(node, info, 1)
    dtype = _weight_type(node, info)
    if isinstance(dtype, str):
        return dtype
    a = _attrs(node)
    if b.ndim != 2:
        raise AcompileError(f"{_where(node)}: weight has rank {b.ndim}, expected 2")
    if _empty(node, b):
        return _empty(node, b)
    W = b.T if a.get("transB", 0) else b
    W = np.ascontiguousarray(W.astype(np.float32, copy=False))
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if bias is not None and info.const(bias) is None:
        return "bias computed at run time (not a constant): kept digital"
    alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
    rows = 0
    if bias is not None and bias_as_row(target):
        row = _bias_row(info.const(bias), W.shape[1], alpha, beta)
        if row is not None:  # W gets the row beta * C / alpha, X a constant 1 (CONTRACTS §3)
            W, bias, rows = np.ascontiguousarray(np.vstack([W, row])), None, 1
    attrs = contract.matmul_attrs(alpha, beta, orig_op="Gemm", bias_rows=rows)
    return Lowering(contract.ANALOG_MATMUL, W, node.input[0], bias, attrs, 1,
                    transpose_x=bool(a.get("transA", 0)), weight_name=node.input[1], dtype=dtype)


def bias_as_row(target: dict) -> bool:
    """Target [mapping] bias = "row": biases of Gemm and recurrent layers as a crossbar row."""
    return target.get("mapping", {}).get("bias", "digital") == "row"


def _bias_row(c: np.ndarray, cols: int, alpha: float, beta: float) -> np.ndarray | None:
    """The crossbar row holding a Gemm's bias (a vector over the columns), or None when C is not one
    (a per-sample [N, cols] C) or alpha is 0."""
    c = np.asarray(c, dtype=np.float32)
    if alpha == 0 or c.size not in (1, cols) or (c.ndim == 2 and c.shape[0] != 1) or c.ndim > 2:
        return None
    return (np.broadcast_to(c.reshape(-1), (cols,)) * np.float32(beta / alpha)).astype(np.float32)


def lower_matmul(node: onnx.NodeProto, info: GraphInfo, target: dict) -> Lowering | str:
    a_const = info.const(node.input[0])
    b = info.const(node.input[1])
    if b is None:
        if a_const is not None:
            return "constant on the left of MatMul (W @ x): kept digital"
        return ("MatMul of two activations (no constant weight, e.g. attention's QK^T or AV): digital, both "
                "operands change with every input while a crossbar holds programmed weights")
    if b.ndim != 2:
        return f"MatMul with a rank-{b.ndim} constant (batched weights): digital"
    dtype = _weight_type(node, info)
    if isinstance(dtype, str):
        return dtype
    if _empty(node, b):
        return _empty(node, b)
    W = np.ascontiguousarray(b.astype(np.float32, copy=False))
    mvms = _row_positions(node, info, node.input[0])
    attrs = contract.matmul_attrs(orig_op="MatMul")
    return Lowering(contract.ANALOG_MATMUL, W, node.input[0], None, attrs, mvms, weight_name=node.input[1],
                    dtype=dtype)


def lower_recurrent(node: onnx.NodeProto, info: GraphInfo, target: dict) -> Lowering | str:
    """An LSTM / GRU / RNN of one direction -> AnalogLSTM / AnalogGRU / AnalogRNN (or why it stays
    digital)."""
    attrs = node_attrs(node)
    op = node.op_type
    direction = attrs.get("direction", "forward")
    if direction == "bidirectional":
        return "bidirectional with weights computed at run time: digital (W and R must be constants)"
    w = info.const(node.input[1]) if len(node.input) > 1 else None
    r = info.const(node.input[2]) if len(node.input) > 2 else None
    if w is None or r is None:
        return f"{op} weights W / R computed at run time (not constants): digital"
    dtype = _weight_type(node, info)
    if isinstance(dtype, str):
        return dtype
    if dtype != onnx.TensorProto.FLOAT:
        return f"{op} with {onnx.TensorProto.DataType.Name(dtype).lower()} weights: digital (float32 only)"
    if _empty(node, w) or r.size == 0:
        return _empty(node, w) or f"empty recurrent weight {node.input[2]!r}: nothing to map, kept digital"
    gates = contract.RECURRENT_GATES[ANALOG_OP[op]]
    hidden = int(r.shape[-1])
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != 1 or w.shape[1] != gates * hidden \
            or r.shape[:2] != (1, gates * hidden):
        return (f"{op} weights W {list(w.shape)} / R {list(r.shape)} do not have the ONNX layout "
                f"[1, {gates} * hidden, input] / [1, {gates} * hidden, hidden]: digital")
    for i, what in ((3, "B"), (7, "P")):
        name = node.input[i] if len(node.input) > i else ""
        if name and info.const(name) is None:
            return f"{op} {what} computed at run time (not a constant): kept digital"
    act = resolved_activations(op, attrs, 1)[0]
    W = np.concatenate([w[0].T, r[0].T], axis=0).astype(np.float32)
    bias = node.input[3] if len(node.input) > 3 and node.input[3] else None
    rows = 0
    if bias is not None and bias_as_row(target):  # B [1, 2 G H] = Wb, Rb
        wb, rb = np.split(info.const(bias).reshape(2, -1).astype(np.float32), 2)
        W = np.vstack([W, wb, rb] if op == "GRU" else [W, wb + rb])  # GRU: Rb only in the h reads
        bias, rows = None, (2 if op == "GRU" else 1)
    W = np.ascontiguousarray(W)
    a = contract.recurrent_attrs(
        ANALOG_OP[op], hidden, int(w.shape[2]), direction, act[0], layout=int(attrs.get("layout", 0)),
        activation_alpha=act[1], activation_beta=act[2], clip=attrs.get("clip"),
        input_forget=int(attrs.get("input_forget", 0)),
        linear_before_reset=int(attrs.get("linear_before_reset", 0)), bias_rows=rows)
    x_shape = info.shape(node.input[0])
    steps = x_shape[1 if a["layout"] else 0] if x_shape and len(x_shape) == 3 else None
    steps = steps if isinstance(steps, int) and steps > 0 else None
    per_step = reads_per_step(op, attrs)
    extra_inputs = [node.input[i] if len(node.input) > i else "" for i in range(4, 8)]
    return Lowering(ANALOG_OP[op], W, node.input[0], bias, a, per_step * (steps or 1),
                    weight_name=node.input[1], dtype=dtype,
                    extra={"extra_inputs": extra_inputs, "outputs": list(node.output), "steps": steps,
                           "mvms_per_step": per_step})


LOWERERS: dict[str, Callable[[onnx.NodeProto, GraphInfo, dict], Lowering | str]] = {
    "Conv": lower_conv,
    "ConvTranspose": lower_conv_transpose,
    "Gemm": lower_gemm,
    "MatMul": lower_matmul,
    "LSTM": lower_recurrent,
    "GRU": lower_recurrent,
    "RNN": lower_recurrent,
}
