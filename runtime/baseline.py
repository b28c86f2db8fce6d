"""Digital baseline: rebuild the standard ONNX model from the mapped artifact and run onnxruntime.

The mapped artifact is the only input, so the baseline cannot drift from what was mapped:
AnalogConv -> Conv(X, W.T.reshape(C_out, C_in, *k)[, B]); AnalogConvTranspose -> ConvTranspose(X, the
conv weight with in / out swapped and the kernel flipped back[, B]); AnalogMatMul -> MatMul (+ Mul alpha)
(+ Add beta * B); AnalogLSTM / AnalogGRU / AnalogRNN -> the LSTM / GRU / RNN of one direction.
"""

from __future__ import annotations

import copy

import numpy as np
import onnx
from onnx import helper, numpy_helper

from runtime import contract
from runtime.errors import AcompileError


def reconstruct(mapped: onnx.ModelProto) -> onnx.ModelProto:
    """Standard-ONNX model equivalent to the mapped one (analog nodes back to Conv / MatMul)."""
    m = copy.deepcopy(mapped)
    g = m.graph
    inits = {t.name: t for t in g.initializer}
    new_nodes: list[onnx.NodeProto] = []
    replaced_w: set[str] = set()
    for node in g.node:
        if node.domain != contract.DOMAIN:
            new_nodes.append(node)
            continue
        a = contract.read_analog_node(node, inits)
        name, w_name = a.name, a.w_name
        if a.is_recurrent:
            new_nodes.append(_recurrent_node(a, g))
            continue
        if a.attrs.get("bias_rows"):
            new_nodes.extend(_bias_row_matmul(a, g))
            continue
        if a.is_conv or a.is_transposed:
            op, suffix, extra = (("ConvTranspose", "__convT", {"output_padding": a.output_padding})
                                 if a.is_transposed else ("Conv", "__conv", {}))
            wc_name = f"{w_name}{suffix}"
            if wc_name not in replaced_w:
                weight = a.conv_transpose_weight() if a.is_transposed else a.conv_weight()
                g.initializer.append(numpy_helper.from_array(weight, wc_name))
                replaced_w.add(wc_name)
            ins = [a.x, wc_name] + ([a.bias_name] if a.bias_name else [])
            new_nodes.append(helper.make_node(
                op, ins, a.outputs, name=name, kernel_shape=a.kernel_shape, strides=a.strides,
                pads=a.pads, dilations=a.dilations, group=a.group, **extra))
        else:
            alpha, beta, out = a.alpha, a.beta, a.outputs[0]
            cur = f"{name}__mm"
            last = alpha == 1.0 and not a.bias_name
            new_nodes.append(helper.make_node("MatMul", [a.x, w_name], [out if last else cur], name=name))
            if alpha != 1.0:
                an = f"{name}__alpha"
                g.initializer.append(numpy_helper.from_array(np.array(alpha, np.float32), an))
                nxt = out if not a.bias_name else f"{name}__scaled"
                new_nodes.append(helper.make_node("Mul", [cur, an], [nxt], name=f"{name}__mul"))
                cur = nxt
            if a.bias_name:
                bn = a.bias_name
                if beta != 1.0:
                    if a.bias is None:
                        raise AcompileError(f"{contract.node_label(node)}: B must be an initializer when "
                                            "beta != 1")
                    bn = f"{name}__bbeta"
                    scaled = (a.bias * np.float32(beta)).astype(np.float32)
                    g.initializer.append(numpy_helper.from_array(scaled, bn))
                new_nodes.append(helper.make_node("Add", [cur, bn], [out], name=f"{name}__add"))
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
    ops = [o for o in m.opset_import if o.domain != contract.DOMAIN]
    del m.opset_import[:]
    m.opset_import.extend(ops)
    return m


def _bias_row_matmul(a: contract.AnalogNode, g: onnx.GraphProto) -> list[onnx.NodeProto]:
    """AnalogMatMul with a bias row (the last row of W, driven with 1) -> alpha * (X @ W[:-1] + W[-1])."""
    assert a.W is not None
    w, row = f"{a.name}__W", f"{a.name}__row"
    g.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(a.W[:-1]), w),
                          numpy_helper.from_array(np.ascontiguousarray(a.W[-1]), row)])
    out = a.outputs[0]
    last = a.alpha == 1.0
    nodes = [helper.make_node("MatMul", [a.x, w], [f"{a.name}__mm"], name=a.name),
             helper.make_node("Add", [f"{a.name}__mm", row], [out if last else f"{a.name}__add"],
                              name=f"{a.name}__add")]
    if not last:
        an = f"{a.name}__alpha"
        g.initializer.append(numpy_helper.from_array(np.array(a.alpha, np.float32), an))
        nodes.append(helper.make_node("Mul", [f"{a.name}__add", an], [out], name=f"{a.name}__mul"))
    return nodes


def _recurrent_node(a: contract.AnalogNode, g: onnx.GraphProto) -> onnx.NodeProto:
    """AnalogLSTM / AnalogGRU / AnalogRNN -> the ONNX op of one direction: W [1, G H, I] and R
    [1, G H, H] from the rows of the array ([W^T; R^T]); the optional inputs and outputs as they are."""
    assert a.W is not None
    i, h, nb = int(a.attrs["input_size"]), int(a.attrs["hidden_size"]), int(a.attrs["bias_rows"])
    w = np.ascontiguousarray(a.W[:i].T[None])
    r = np.ascontiguousarray(a.W[i:i + h].T[None])
    g.initializer.extend([numpy_helper.from_array(w, f"{a.w_name}__W"),
                          numpy_helper.from_array(r, f"{a.w_name}__R")])
    rest = list(a.inputs[contract.IN_B:])
    if nb:  # bias rows -> the ONNX B [1, Wb; Rb] (LSTM / RNN: the row is Wb + Rb, Rb = 0 here)
        rows = a.W[i + h:]
        b = rows.reshape(1, -1) if nb == 2 else np.concatenate([rows[0], np.zeros_like(rows[0])])[None]
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(b, np.float32), f"{a.w_name}__B"))
        rest = [f"{a.w_name}__B", *rest[1:]] if rest else [f"{a.w_name}__B"]
    ins = [a.x, f"{a.w_name}__W", f"{a.w_name}__R", *rest]
    keep = ("hidden_size", "direction", "layout", "activations", "activation_alpha", "activation_beta",
            "clip", "input_forget", "linear_before_reset")
    attrs = {k: v for k, v in a.attrs.items() if k in keep}
    return helper.make_node(a.orig_op, ins, a.outputs, name=a.name, **attrs)


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
    return contract.read_target(mapped)
