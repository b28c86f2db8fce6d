"""LSTM / GRU / RNN onto crossbars: a graph pass that gives every direction its own node, and the lowerer.

The lowerer itself is compiler/lowering.py::lower_recurrent. Hardware view (DESIGN §5): one direction's
input weights W and recurrent weights R sit in one array, x_t and h_{t-1} drive its rows ([W^T; R^T],
input_size + hidden_size rows) and the gates' columns sit side by side (gates * hidden_size columns); a
large one splits into row / column blocks like any matrix.
Every time step is one MVM of that array with the same programmed conductances (a GRU reads x_t and
h_{t-1} apart, because its reset gate multiplies only the recurrent part: 2 reads per step, 3 when
linear_before_reset=0). Biases, peepholes, nonlinearities and the cell update are digital.

A bidirectional node first becomes two single-direction nodes of standard ONNX (`split_directions`, a
frontend pass; the graph stays equivalent for onnxruntime), so each analog node holds one matrix.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime import contract

RECURRENT = ("LSTM", "GRU", "RNN")
ANALOG_OP = {"LSTM": contract.ANALOG_LSTM, "GRU": contract.ANALOG_GRU, "RNN": contract.ANALOG_RNN}
def node_attrs(node: onnx.NodeProto) -> dict:
    """The node's attributes, strings decoded."""
    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        out[a.name] = v
    return out


def resolved_activations(op: str, attrs: dict, directions: int) -> list[tuple[list[str], list[float],
                                                                              list[float]]]:
    """Per direction: (activations, alpha of each that takes one, beta of each that takes one), the ONNX
    defaults filled in (contract.resolve_activations)."""
    return contract.resolve_activations(op, attrs.get("activations"), attrs.get("activation_alpha"),
                                        attrs.get("activation_beta"), directions)


def _direction_attrs(node: onnx.NodeProto, attrs: dict, direction: str, acts: tuple) -> dict:
    names, alphas, betas = acts
    out = {k: v for k, v in attrs.items() if k not in ("direction", "activations", "activation_alpha",
                                                         "activation_beta")}
    out.update(direction=direction, activations=names)
    if alphas:
        out["activation_alpha"] = alphas
    if betas:
        out["activation_beta"] = betas
    return out


def split_directions(model: onnx.ModelProto) -> int:
    """Replace every bidirectional LSTM / GRU / RNN whose W and R are initializers by a forward and a
    reverse node (`{name}_forward`, `{name}_reverse`): constant inputs sliced per direction, run-time
    ones (initial states, ...) taken with Gather, outputs joined with Concat. Returns how many."""
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes: list[onnx.NodeProto] = []
    count = 0
    for node in g.node:
        attrs = node_attrs(node)
        if (node.domain not in ("", "ai.onnx") or node.op_type not in RECURRENT
                or attrs.get("direction") != "bidirectional"
                or not all(len(node.input) > i and node.input[i] in inits for i in (1, 2))):
            new_nodes.append(node)
            continue
        count += 1
        layout = int(attrs.get("layout", 0))
        ins = list(node.input) + [""] * (8 - len(node.input))
        acts = resolved_activations(node.op_type, attrs, 2)
        outs: list[list[str]] = [[], []]
        for d, direction in enumerate(("forward", "reverse")):
            tag = f"{node.name}_{direction}"
            d_ins = []
            for i, name in enumerate(ins):
                if not name or i in (0, 4):  # X and sequence_lens are shared
                    d_ins.append(name)
                elif name in inits:
                    arr = numpy_helper.to_array(inits[name])
                    part = arr[:, d:d + 1] if (layout and i in (5, 6)) else arr[d:d + 1]
                    new = f"{name}.{direction}"
                    if new not in inits:
                        inits[new] = numpy_helper.from_array(np.ascontiguousarray(part), new)
                        g.initializer.append(inits[new])
                    d_ins.append(new)
                else:
                    idx = f"{tag}.index"
                    if idx not in inits:
                        inits[idx] = numpy_helper.from_array(np.array([d], np.int64), idx)
                        g.initializer.append(inits[idx])
                    new = f"{name}.{direction}"
                    axis = 1 if (layout and i in (5, 6)) else 0
                    new_nodes.append(helper.make_node("Gather", [name, idx], [new], name=f"{tag}.take{i}",
                                                      axis=axis))
                    d_ins.append(new)
            while d_ins and not d_ins[-1]:
                d_ins.pop()
            d_outs = [f"{o}.{direction}" if o else "" for o in node.output]
            outs[d] = d_outs
            new_nodes.append(helper.make_node(node.op_type, d_ins, d_outs, name=tag,
                                              **_direction_attrs(node, attrs, direction, acts[d])))
        for k, o in enumerate(node.output):
            if not o:
                continue
            axis = (2 if layout else 1) if k == 0 else (1 if layout else 0)
            new_nodes.append(helper.make_node("Concat", [outs[0][k], outs[1][k]], [o],
                                              name=f"{node.name}.concat{k}", axis=axis))
    if count:
        del g.node[:]
        g.node.extend(new_nodes)
    return count


def reads_per_step(op: str, attrs: dict) -> int:
    """MVMs of the array per time step: 1 ([x_t; h_{t-1}] in one read), a GRU 2 (x_t and h_{t-1} apart)
    or 3 (linear_before_reset=0: r * h_{t-1} read again through the candidate's columns)."""
    if op != "GRU":
        return 1
    return 2 if int(attrs.get("linear_before_reset", 0)) else 3
