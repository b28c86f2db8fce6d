"""The mapped artifact means what CONTRACTS §3 says: rebuilding standard ops from each analog node
(conv weight = W.T.reshape(C_out, C_in, kh, kw); Y = alpha * X @ W + beta * B) and running onnxruntime
gives the original model's outputs.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

from runtime import contract


def delower(mapped: onnx.ModelProto) -> onnx.ModelProto:
    """Standard ops from each analog node, as CONTRACTS §3 states them (the node read by the contract's
    reader, which also checks that its tile blocks cover W exactly)."""
    g = mapped.graph
    inits = {t.name: t for t in g.initializer}
    nodes, extra = [], []
    for n in g.node:
        if not contract.is_analog(n):
            nodes.append(n)
            continue
        a = contract.read_analog_node(n, inits)
        assert sum(b.height * b.width for b in a.tiles) == a.W.size
        if a.is_conv:
            # conv_weight = W.T.reshape(C_out, C_in, kh, kw)
            w = np.ascontiguousarray(a.W.T.reshape(a.cols, -1, *a.kernel_shape))
            extra.append(numpy_helper.from_array(w, a.name + ".conv_w"))
            ins = [a.x, a.name + ".conv_w"] + ([a.bias_name] if a.bias_name else [])
            nodes.append(helper.make_node("Conv", ins, a.outputs, name=a.name, kernel_shape=a.kernel_shape,
                                          strides=a.strides, pads=a.pads, dilations=a.dilations))
        else:
            # Y = alpha * (X @ W) + beta * B
            mm = a.name + ".mm"
            nodes.append(helper.make_node("MatMul", [a.x, a.w_name], [mm]))
            alpha = numpy_helper.from_array(np.array(a.alpha, np.float32), a.name + ".alpha")
            extra.append(alpha)
            if a.bias_name:
                beta = numpy_helper.from_array(np.array(a.beta, np.float32), a.name + ".beta")
                extra.append(beta)
                nodes.append(helper.make_node("Mul", [mm, alpha.name], [mm + "a"]))
                nodes.append(helper.make_node("Mul", [a.bias_name, beta.name], [mm + "b"]))
                nodes.append(helper.make_node("Add", [mm + "a", mm + "b"], a.outputs))
            else:
                nodes.append(helper.make_node("Mul", [mm, alpha.name], a.outputs))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(extra)
    out = helper.make_model(g, opset_imports=[o for o in mapped.opset_import if o.domain != contract.DOMAIN])
    onnx.checker.check_model(out)
    return out


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name, dynamo", [("resnet20", False), ("resnet20", True), ("mobilenet", False),
                                          ("mlp_matmul", False), ("vgg", False)])
def test_mapped_equals_original(run_cli, onnx_export, tmp_path, name, dynamo):
    from models.archs import ARCHS

    src = onnx_export(name, dynamo=dynamo)
    out = tmp_path / "m.onnx"
    code, _, err = run_cli(src, "-o", out, "--target", "ideal", "--pack", "--weight-scale", "column")
    assert code == 0, err
    _, x = ARCHS[name]()
    x = x.numpy()
    ref = run(onnx.load(str(src)), x)
    got = run(delower(onnx.load(str(out))), x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
