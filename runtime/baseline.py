"""Digital baseline: rebuild the standard ONNX model from the mapped artifact and run onnxruntime.

The mapped artifact is the only input, so the baseline cannot drift from what was mapped:
AnalogConv -> Conv(X, W.T.reshape(C_out, C_in, *k)[, B]); AnalogMatMul -> MatMul (+ Mul alpha)
(+ Add beta * B).
"""

from __future__ import annotations

import copy
import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.errors import AcompileError

ANALOG_DOMAIN = "ai.acompile"


def reconstruct(mapped: onnx.ModelProto) -> onnx.ModelProto:
    """Standard-ONNX model equivalent to the mapped one (analog nodes back to Conv / MatMul)."""
    m = copy.deepcopy(mapped)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes: list[onnx.NodeProto] = []
    replaced_w: set[str] = set()
    for node in g.node:
        if node.domain != ANALOG_DOMAIN:
            new_nodes.append(node)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        name = node.name or node.output[0]
        w_name = node.input[1]
        if w_name not in inits:
            raise AcompileError(f"node '{name}' ({node.op_type}): W is not an initializer")
        w = numpy_helper.to_array(inits[w_name])
        has_b = len(node.input) > 3 and node.input[3]
        if node.op_type == "AnalogConv":
            k = [int(v) for v in a["kernel_shape"]]
            cout = w.shape[1]
            wc = np.ascontiguousarray(w.T.reshape(cout, w.shape[0] // int(np.prod(k)), *k))
            wc_name = f"{w_name}__conv"
            if wc_name not in replaced_w:
                g.initializer.append(numpy_helper.from_array(wc, wc_name))
                replaced_w.add(wc_name)
            ins = [node.input[0], wc_name] + ([node.input[3]] if has_b else [])
            new_nodes.append(helper.make_node(
                "Conv", ins, list(node.output), name=name, kernel_shape=k,
                strides=list(a.get("strides", [1] * len(k))), pads=list(a.get("pads", [0] * 2 * len(k))),
                dilations=list(a.get("dilations", [1] * len(k))), group=int(a.get("group", 1))))
        elif node.op_type == "AnalogMatMul":
            alpha, beta = float(a.get("alpha", 1.0)), float(a.get("beta", 1.0))
            cur = f"{name}__mm"
            last = alpha == 1.0 and not has_b
            new_nodes.append(helper.make_node("MatMul", [node.input[0], w_name],
                                              [node.output[0] if last else cur], name=name))
            if alpha != 1.0:
                an = f"{name}__alpha"
                g.initializer.append(numpy_helper.from_array(np.array(alpha, np.float32), an))
                nxt = node.output[0] if not has_b else f"{name}__scaled"
                new_nodes.append(helper.make_node("Mul", [cur, an], [nxt], name=f"{name}__mul"))
                cur = nxt
            if has_b:
                bn = node.input[3]
                if beta != 1.0:
                    b = numpy_helper.to_array(inits[bn]) * np.float32(beta)
                    bn = f"{name}__bbeta"
                    g.initializer.append(numpy_helper.from_array(b.astype(np.float32), bn))
                new_nodes.append(helper.make_node("Add", [cur, bn], [node.output[0]], name=f"{name}__add"))
        else:
            raise AcompileError(f"node '{name}' ({ANALOG_DOMAIN}::{node.op_type}): unknown analog op")
    del g.node[:]
    g.node.extend(new_nodes)
    # drop now-unused initializers (W, G_SCALE) so the model stays small
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    keep_in = [i for i in g.input if i.name in used or i.name not in inits]
    del g.input[:]
    g.input.extend(keep_in)
    ops = [o for o in m.opset_import if o.domain != ANALOG_DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(ops)
    return m


class OrtBaseline:
    """onnxruntime session on the reconstructed model; handles a fixed batch dimension."""

    def __init__(self, mapped: onnx.ModelProto, threads: int | None = None) -> None:
        import onnxruntime as ort

        model = reconstruct(mapped)
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between runs: the baseline shares the CPU with the emulator's torch threads
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(model.SerializeToString(), opts,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001
            raise AcompileError(f"onnxruntime cannot load the reconstructed model: {exc}") from exc
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        b = inp.shape[0] if inp.shape else None
        self.fixed_batch = b if isinstance(b, int) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch and len(x) != self.fixed_batch:
            outs = []
            fb = self.fixed_batch
            for i in range(0, len(x), fb):
                chunk = x[i:i + fb]
                if len(chunk) < fb:  # pad the last chunk to the fixed batch size
                    pad = np.repeat(chunk[-1:], fb - len(chunk), axis=0)
                    out = self.session.run(None, {self.input_name: np.concatenate([chunk, pad])})[0]
                    outs.append(out[: len(chunk)])
                else:
                    outs.append(self.session.run(None, {self.input_name: chunk})[0])
            return np.concatenate(outs)
        return self.session.run(None, {self.input_name: x})[0]


def target_of(mapped: onnx.ModelProto) -> dict:
    """The resolved target stored in the mapped model's metadata."""
    meta = {p.key: p.value for p in mapped.metadata_props}
    if "acompile.target" not in meta:
        raise AcompileError("the model has no acompile.target metadata: compile it first "
                            "(acompile MODEL.onnx --target pcm)")
    return json.loads(meta["acompile.target"])
