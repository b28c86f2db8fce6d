"""Partitioning: decide for every weight layer whether it runs on analog tiles or digitally, and why.

Rules (DESIGN §5): Conv (group=1), Gemm, MatMul with a constant weight are analog when the target lists
the op in [mapping].analog_ops; grouped/depthwise conv is digital (target policy grouped_conv); layers
named in ``--digital`` are digital; the target's first_layer/last_layer policy applies to the analog
layers with no analog ancestor/descendant. Everything else is a digital op.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import onnx

from compiler.graph import GraphInfo
from compiler.lowering import LOWERERS, Lowering
from runtime.errors import AcompileError

REASON_ANALOG = "analog-eligible"


@dataclass
class Layer:
    """One weight-bearing node (Conv/Gemm/MatMul) and its analog/digital decision."""

    name: str
    op: str
    analog: bool
    reason: str
    lowering: Lowering | None = None
    aliases: set[str] = field(default_factory=set)


def aliases(node: onnx.NodeProto) -> set[str]:
    """Names a user may pass to ``--digital``: the node name, its module path, its weight's prefix.

    ``/layer1/conv1/Conv`` (legacy exporter) -> ``layer1.conv1``, ``/layers/layers.0/conv1/Conv`` ->
    ``layers.0.conv1``; weight ``fc.weight`` -> ``fc``.
    """
    out = {node.name}
    if node.name.startswith("/") and node.name.count("/") >= 2:
        segments = node.name.strip("/").split("/")[:-1]
        out.add(".".join(segments))
        # scopes repeat their parent's prefix: /layers/layers.0/conv1 -> layers.0.conv1
        parts: list[str] = []
        for seg in segments:
            if parts and seg.startswith(".".join(parts) + "."):
                parts = [seg]
            else:
                parts.append(seg)
        out.add(".".join(parts))
    if len(node.input) > 1 and node.input[1]:
        w = node.input[1]
        out.add(w)
        for suffix in (".weight", ".weight_T", "_weight"):
            if w.endswith(suffix):
                out.add(w[: -len(suffix)])
    return out


def partition(info: GraphInfo, target: dict, digital: list[str] | None = None) -> list[Layer]:
    """Weight layers in topological order with their decision; raises on unknown ``--digital`` names."""
    order = info.topo_order()
    analog_ops = set(target["mapping"]["analog_ops"])
    layers: list[Layer] = []
    for name in order:
        node = info.nodes[name]
        if node.domain not in ("", "ai.onnx") or node.op_type not in LOWERERS:
            continue
        layers.append(Layer(name, node.op_type, False, "", aliases=aliases(node)))

    forced: set[str] = set()
    for want in digital or []:
        hits = [ly.name for ly in layers if want in ly.aliases]
        if not hits:
            if want in info.nodes:
                raise AcompileError(f"--digital {want!r}: node is a {info.nodes[want].op_type}, not a "
                                    "weight layer (Conv, Gemm, MatMul)")
            some = ", ".join(sorted(min(ly.aliases, key=len) for ly in layers)[:8])
            raise AcompileError(f"--digital {want!r}: no such layer (layers: {some}"
                                f"{', ...' if len(layers) > 8 else ''})")
        forced.update(hits)

    for ly in layers:
        node = info.nodes[ly.name]
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
    return layers


def digital_op_counts(model: onnx.ModelProto, layers: list[Layer]) -> Counter:
    """Op type -> count of nodes that stay digital (all non-analog nodes, weight layers included)."""
    analog = {ly.name for ly in layers if ly.analog}
    return Counter(n.op_type for n in model.graph.node if n.name not in analog)
