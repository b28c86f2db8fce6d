"""Partitioning: decide for every weight layer whether it runs on analog tiles or digitally, and why.

Rules (DESIGN §5): Conv / ConvTranspose (group=1), Gemm, MatMul with a constant weight and each
direction of an LSTM / GRU / RNN with constant W and R are analog when the target lists the op in
[mapping].analog_ops; grouped/depthwise conv (and conv transpose) is digital (target policy
grouped_conv); a MatMul of two activations (attention's QK^T and AV) is digital; layers named in
``--digital`` are digital; the target's first_layer/last_layer policy applies to the analog layers with
no analog ancestor/descendant. Weight ops without an analog lowering (DeformConv, quantized ops) are
digital weight layers whose reason says whether `acompile eval` can run them. NaN / Inf in a weight or
bias is refused, naming the node. Everything else is a digital op.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx

from compiler.graph import GraphInfo
from compiler.lowering import LOWERERS, Lowering, check_finite
from runtime import contract
from runtime.errors import AcompileError

REASON_ANALOG = "analog-eligible"

#: Weight-bearing ops without an analog lowering (yet): they are weight layers of the report, digital,
#: with a reason that says whether `acompile eval` can run them (contract.EMULATOR_OPS). Op -> the
#: inputs that hold its weights.
DIGITAL_WEIGHT_OPS: dict[str, tuple[int, ...]] = {
    "DeformConv": (1,),
    "ConvInteger": (1,), "MatMulInteger": (1,), "QLinearConv": (3,), "QLinearMatMul": (3,),
}
#: Inputs of the mapped ops checked for NaN / Inf (weights and biases).
_CHECKED_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "Gemm": (1, 2), "MatMul": (0, 1),
                   "LSTM": (1, 2, 3, 7), "GRU": (1, 2, 3), "RNN": (1, 2, 3)}
#: weight inputs of the ops in the report's `matrix` / `weights` of a digital layer
_WEIGHT_INPUTS = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}


def emulated(op: str) -> bool:
    """Can the runtime's executor (`acompile eval`) run a standard op of this type?"""
    return op in contract.EMULATOR_OPS


def no_lowering_reason(op: str) -> str:
    """Why a weight op without an analog lowering is digital, and whether eval can run it."""
    if emulated(op):
        return f"{op}: no analog lowering yet; runs digitally (acompile eval emulates it digitally)"
    return (f"{op}: no analog lowering yet; digital, and the emulator has no {op} (acompile eval cannot run "
            "this model)")


def weight_matrix(node: onnx.NodeProto, info: GraphInfo) -> tuple[list[int] | None, int]:
    """([rows = fan-in, cols = fan-out] of the layer as one crossbar matrix, or None; weight count) for
    a weight layer that is not mapped (the report's `matrix` and `weights`)."""
    op = node.op_type
    idx = DIGITAL_WEIGHT_OPS.get(op) or _WEIGHT_INPUTS.get(op, (1,))
    ws = [info.const(node.input[i]) if len(node.input) > i and node.input[i] else None for i in idx]
    ws = [w for w in ws if w is not None]
    if not ws:
        return None, 0
    n = int(sum(w.size for w in ws))
    w = ws[0]
    if w.ndim < 2:
        return None, n
    if op == "Conv":  # rows = fan-in of one output channel (per group)
        return [int(np.prod(w.shape[1:])), int(w.shape[0])], n
    if op == "ConvTranspose":  # the equivalent conv (per group): fan-in C_in/g x kernel, C_out/g outputs
        group = next((int(a.i) for a in node.attribute if a.name == "group"), 1) or 1
        return [int(w.shape[0] // group * np.prod(w.shape[2:])), int(w.shape[1])], n
    if op in ("LSTM", "GRU", "RNN") and w.ndim == 3 and len(ws) == 2:  # W [D, G*H, I], R [D, G*H, H]
        return [int(w.shape[2] + ws[1].shape[2]), int(w.shape[0] * w.shape[1])], n
    if w.ndim == 2:
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        return ([int(w.shape[1]), int(w.shape[0])] if trans_b else [int(d) for d in w.shape]), n
    return [int(d) for d in w.shape], n


@dataclass
class Layer:
    """One weight-bearing node (Conv/Gemm/MatMul) and its analog/digital decision."""

    name: str
    op: str
    analog: bool
    reason: str
    lowering: Lowering | None = None
    aliases: set[str] = field(default_factory=set)
    shares: str | None = None  # an earlier analog layer of the same constant weight, whose array it reads


def _module_path(name: str, last_scope: bool = True) -> str | None:
    """``/layers/layers.0/conv1/Conv`` -> ``layers.0.conv1``: torch exporter scopes repeat their parent's
    name (``layers.0`` in ``layers``; ``downsample.0`` in ``downsample``, so
    ``/layers/layers.0/downsample/downsample.0/Conv`` -> ``layers.0.downsample.0``, the module's path in
    the network); None for a name that is not such a path. ``last_scope=False``: only a scope repeating
    the whole path so far is merged (the older spelling, still accepted)."""
    if not (name.startswith("/") and name.count("/") >= 2):
        return None
    parts: list[str] = []
    for seg in name.strip("/").split("/")[:-1]:
        if parts and seg.startswith(".".join(parts) + "."):
            parts = [seg]
        elif last_scope and parts and seg.startswith(parts[-1] + "."):
            parts[-1] = seg
        else:
            parts.append(seg)
    return ".".join(parts) or None


def aliases(node: onnx.NodeProto) -> set[str]:
    """Names a user may pass to ``--digital``: the node name, its module path, its weight's prefix.

    ``/layer1/conv1/Conv`` (legacy exporter) -> ``layer1.conv1``, ``/layers/layers.0/conv1/Conv`` ->
    ``layers.0.conv1``; weight ``fc.weight`` -> ``fc``.
    """
    out = {node.name}
    if node.op_type in _WEIGHT_INPUTS:  # a direction of a split recurrent node answers to the node's name
        for suffix in ("_forward", "_reverse"):
            if node.name.endswith(suffix):
                out.add(node.name[: -len(suffix)])
    if node.name.startswith("/") and node.name.count("/") >= 2:
        out.add(".".join(node.name.strip("/").split("/")[:-1]))
        out.add(_module_path(node.name) or node.name)
        out.add(_module_path(node.name, last_scope=False) or node.name)
    if len(node.input) > 1 and node.input[1] and node.op_type not in _WEIGHT_INPUTS:
        w = node.input[1]
        out.add(w)
        for suffix in (".weight", ".weight_T", "_weight"):
            if w.endswith(suffix):
                out.add(w[: -len(suffix)])
    return out


def short_name(layer: Layer) -> str:
    """The name a user would write for a layer (the report shows it beside the node name): its module
    path (``conv1``, ``layers.0.conv1``) when the exporter gave one, else its weight's prefix (``fc``),
    else the node name."""
    path = _module_path(layer.name)
    if path:
        return path
    prefixes = [a for a in layer.aliases if a != layer.name and "::" not in a
                and not a.endswith((".weight", ".weight_T", "_weight"))]
    return min(prefixes, key=lambda a: (len(a), a)) if prefixes else layer.name


def _norm(name: str) -> str:
    """Spelling-insensitive form of a layer name: case, surrounding blanks and slashes, / vs . ."""
    return name.strip().strip("/").replace("/", ".").lower()


def match_layers(want: str, layers: list[Layer], info: GraphInfo) -> list[str]:
    """The layers ``--digital want`` means: a node name as the report shows it (``/conv1/Conv``), its
    module path (``conv1``, ``layer1.0.conv1``), its weight (``fc.weight``) or weight prefix (``fc``), in
    any case and with / or . between scopes; or a glob pattern over those (``fc*``, ``layer4.*``). An
    unknown name is an AcompileError that lists the names that come closest."""
    key = _norm(want)
    if any(c in want for c in "*?["):
        hits = [ly.name for ly in layers
                if any(fnmatch.fnmatchcase(_norm(a), key) for a in ly.aliases)]
        if hits:
            return hits
    else:
        hits = [ly.name for ly in layers if want in ly.aliases]
        if not hits:
            hits = [ly.name for ly in layers if key in {_norm(a) for a in ly.aliases}]
        if hits:
            return hits
    node = info.nodes.get(want)
    if node is not None:
        raise AcompileError(f"--digital {want!r}: node is a {node.op_type}, not a weight layer (Conv, Gemm, "
                            "MatMul)")
    names = [short_name(ly) for ly in layers]
    close = [n for n in names if _norm(n).startswith(key)] if key else []
    close = close or difflib.get_close_matches(want, names, n=4, cutoff=0.5)
    hint = ""
    if close:
        hint = f"; did you mean {', '.join(close[:6])}{', ...' if len(close) > 6 else ''}"
        if len(close) > 1 and not any(c in want for c in "*?["):
            hint += f" (or the pattern {want + '*'!r} for all of them)"
    some = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    raise AcompileError(f"--digital {want!r}: no such layer{hint} (layers: {some or 'none'})")


def partition(info: GraphInfo, target: dict, digital: list[str] | None = None) -> list[Layer]:
    """Weight layers in topological order with their decision; raises on unknown ``--digital`` names."""
    order = info.topo_order()
    analog_ops = set(target["mapping"]["analog_ops"])
    layers: list[Layer] = []
    for name in order:
        node = info.nodes[name]
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in LOWERERS:
            layers.append(Layer(name, node.op_type, False, "", aliases=aliases(node)))
            for i in _CHECKED_INPUTS[node.op_type]:
                value = info.const(node.input[i]) if len(node.input) > i and node.input[i] else None
                if value is not None:
                    what = "weight" if i == 1 or (i == 2 and node.op_type in _WEIGHT_INPUTS) else "bias"
                    check_finite(node, node.input[i], value, what)
        elif node.op_type in DIGITAL_WEIGHT_OPS:
            layers.append(Layer(name, node.op_type, False, no_lowering_reason(node.op_type),
                                aliases=aliases(node)))

    forced: set[str] = set()
    for want in digital or []:
        forced.update(match_layers(want, layers, info))

    for ly in layers:
        node = info.nodes[ly.name]
        if ly.op not in LOWERERS:
            continue  # no lowering: digital with its reason
        if ly.name in forced:
            ly.reason = "forced digital (--digital)"
        elif ly.op not in analog_ops:
            ly.reason = f"{ly.op} not in target analog_ops"
        else:
            result = LOWERERS[ly.op](node, info, target)
            if isinstance(result, str):
                ly.reason = result
            else:
                ly.analog, ly.reason, ly.lowering = True, REASON_ANALOG, result

    analog = [ly for ly in layers if ly.analog]
    first, last = info.first_last(ly.name for ly in analog)
    for ly in analog:
        if ly.name in first and target["mapping"]["first_layer"] == "digital":
            ly.analog, ly.reason, ly.lowering = False, "first layer: target policy first_layer=digital", None
        elif ly.name in last and target["mapping"]["last_layer"] == "digital":
            ly.analog, ly.reason, ly.lowering = False, "last layer: target policy last_layer=digital", None
    share_arrays(layers)
    return layers


def share_arrays(layers: list[Layer]) -> None:
    """Analog layers of one constant weight (the per-step MatMuls of an RNN that an exporter unrolled,
    tied weights) read one array: each later one `shares` the first's tiles and programmed devices
    instead of holding a copy (same weight tensor, same analog op and attributes, equal matrix)."""
    first: dict[tuple, Layer] = {}
    for ly in layers:
        low = ly.lowering
        if not ly.analog or low is None or not low.weight_name:
            continue
        key = (low.weight_name, low.op_type, repr(sorted(low.attrs.items())), low.W.shape)
        owner = first.setdefault(key, ly)
        if owner is not ly and np.array_equal(owner.lowering.W, low.W):
            ly.shares = owner.name
            ly.reason = (f"analog: reads the array of {owner.name} (the same constant weight), no tiles of "
                         "its own")


def digital_op_counts(model: onnx.ModelProto, layers: list[Layer]) -> Counter:
    """Op type -> count of nodes that stay digital (all non-analog nodes, weight layers included)."""
    analog = {ly.name for ly in layers if ly.analog}
    return Counter(n.op_type for n in model.graph.node if n.name not in analog)
