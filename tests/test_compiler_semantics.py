"""The mapped artifact means what CONTRACTS §3 says: rebuilding standard ops from each analog node
(conv weight = W.T.reshape(C_out, C_in, kh, kw); Y = alpha * X @ W + beta * B) and running onnxruntime
gives the original model's outputs.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper


def delower(mapped: onnx.ModelProto) -> onnx.ModelProto:
    g = mapped.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    nodes, extra = [], []
    for n in g.node:
        if n.domain != "ai.acompile":
            nodes.append(n)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        W = inits[n.input[1]]
        blocks = json.loads(a["tiles"])
        cells = sum((b["row_end"] - b["row_start"]) * (b["col_end"] - b["col_start"]) for b in blocks)
        assert cells == W.size
        if n.op_type == "AnalogConv":
            k = list(a["kernel_shape"])
            c_out = W.shape[1]
            w = np.ascontiguousarray(W.T.reshape(c_out, -1, *k))
            extra.append(numpy_helper.from_array(w, n.name + ".conv_w"))
            ins = [n.input[0], n.name + ".conv_w"] + ([n.input[3]] if len(n.input) > 3 else [])
            nodes.append(helper.make_node("Conv", ins, list(n.output), name=n.name, kernel_shape=k,
                                          strides=a["strides"], pads=a["pads"], dilations=a["dilations"]))
        else:
            mm = n.name + ".mm"
            nodes.append(helper.make_node("MatMul", [n.input[0], n.input[1]], [mm]))
            alpha = numpy_helper.from_array(np.array(a["alpha"], np.float32), n.name + ".alpha")
            extra.append(alpha)
            if len(n.input) > 3:
                beta = numpy_helper.from_array(np.array(a["beta"], np.float32), n.name + ".beta")
                extra.append(beta)
                nodes.append(helper.make_node("Mul", [mm, alpha.name], [mm + "a"]))
                nodes.append(helper.make_node("Mul", [n.input[3], beta.name], [mm + "b"]))
                nodes.append(helper.make_node("Add", [mm + "a", mm + "b"], list(n.output)))
            else:
                nodes.append(helper.make_node("Mul", [mm, alpha.name], list(n.output)))
    del g.node[:]
    g.node.extend(nodes)
    g.initializer.extend(extra)
    out = helper.make_model(g, opset_imports=[o for o in mapped.opset_import if o.domain != "ai.acompile"])
    onnx.checker.check_model(out)
    return out


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("name, dynamo", [("resnet20", False), ("resnet20", True), ("mobilenet", False),
                                          ("mlp_matmul", False), ("vgg", False)])
def test_mapped_equals_original(run_cli, onnx_export, tmp_path, name, dynamo):
    from tests.archs import ARCHS

    src = onnx_export(name, dynamo=dynamo)
    out = tmp_path / "m.onnx"
    code, _, err = run_cli(src, "-o", out, "--target", "ideal", "--pack", "--weight-scale", "column")
    assert code == 0, err
    _, x = ARCHS[name]()
    x = x.numpy()
    ref = run(onnx.load(str(src)), x)
    got = run(delower(onnx.load(str(out))), x)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
