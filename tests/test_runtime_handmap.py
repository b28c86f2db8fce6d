"""A minimal hand-written mapper following CONTRACTS §3, so runtime tests need not wait on the compiler.

`hand_map(model, target)` turns every Conv (group 1) / Gemm / MatMul with a constant weight into the
analog nodes of runtime.contract (written by the contract's writer), with tiles per the target's tile
size. Not a compiler: no normalization passes, no packing.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from compiler.targets import builtin_target
from runtime import contract


def _tiles(rows: int, cols: int, R: int, C: int, start: int, per_chip: int) -> list[contract.TileBlock]:
    out, k = [], start
    for rs in range(0, rows, R):
        for cs in range(0, cols, C):
            out.append(contract.TileBlock(tile=k, chip=k // per_chip, row_start=rs, row_end=min(rs + R, rows),
                                          col_start=cs, col_end=min(cs + C, cols)))
            k += 1
    return out


def hand_map(model: onnx.ModelProto, target: str | dict = "ideal", tile: tuple[int, int] | None = None,
             weight_scale: str = "layer") -> onnx.ModelProto:
    t = builtin_target(target) if isinstance(target, str) else target
    t = json.loads(json.dumps(t))
    if tile:
        t["tile"]["rows"], t["tile"]["cols"] = tile
    R, C, g_max = t["tile"]["rows"], t["tile"]["cols"], t["device"]["g_max"]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes, ntile = [], 0
    for node in g.node:
        a = {x.name: helper.get_attribute_value(x) for x in node.attribute}
        w = inits.get(node.input[1]) if len(node.input) > 1 else None
        if node.op_type == "Conv" and w is not None and a.get("group", 1) == 1 and w.ndim == 4:
            cout = w.shape[0]
            wm = w.reshape(cout, -1).T.astype(np.float32)
            kind = contract.ANALOG_CONV
            attrs = contract.conv_attrs(list(w.shape[2:]), a.get("strides"), a.get("pads"),
                                        a.get("dilations"))
            b = node.input[2] if len(node.input) > 2 else None
        elif node.op_type in ("Gemm", "MatMul") and w is not None and w.ndim == 2 and not a.get("transA", 0):
            wm = (w.T if a.get("transB", 0) else w).astype(np.float32)
            kind = contract.ANALOG_MATMUL
            attrs = contract.matmul_attrs(a.get("alpha", 1.0), a.get("beta", 1.0), orig_op=node.op_type)
            b = node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else None
        else:
            nodes.append(node)
            continue
        rows, cols = wm.shape
        if weight_scale == "column":
            mx = np.abs(wm).max(0)
            gs = np.where(mx > 0, g_max / np.where(mx > 0, mx, 1), 1.0)
        else:
            gs = np.full(cols, g_max / max(float(np.abs(wm).max()), 1e-30))
        tiles = _tiles(rows, cols, R, C, ntile, t["tile"]["tiles_per_chip"])
        ntile += len(tiles)
        analog, weights = contract.make_analog_node(kind, node.name, node.input[0], wm, gs, list(node.output),
                                                    attrs, tiles, bias=b)
        g.initializer.extend(weights)
        nodes.append(analog)
    del g.node[:]
    g.node.extend(nodes)
    contract.add_domain(m)
    contract.set_metadata(m, contract.mapped_metadata(t, {}, keep=contract.read_metadata(m)))
    return m


@pytest.mark.parametrize("arch,kw", [("mlp_matmul", {}),
                                     ("resnet20", {"tile": (64, 32), "weight_scale": "column"})])
def test_hand_map_is_valid_onnx(onnx_export, arch, kw):
    """CONTRACTS §3: the mapped artifact passes onnx.checker (full check: with shape/type inference)
    and runtime.contract.check_mapped (the schema)."""
    src = onnx.load(onnx_export(arch))
    onnx.checker.check_model(src, full_check=True)  # the input is valid, so any error is hand_map's
    mapped = hand_map(src, **kw)
    onnx.checker.check_model(mapped, full_check=True)
    analog = contract.check_mapped(mapped)  # attributes, tensors, tile blocks, metadata
    assert {o.domain: o.version for o in mapped.opset_import}.get(contract.DOMAIN) == contract.DOMAIN_VERSION
    assert {n.op_type for n in analog} == ({contract.ANALOG_MATMUL} if arch == "mlp_matmul"
                                           else {contract.ANALOG_CONV, contract.ANALOG_MATMUL})
    inits = {i.name: i for i in mapped.graph.initializer}
    for n in analog:
        w, gs = inits[n.w_name], inits[n.g_scale_name]
        assert w.data_type == gs.data_type == onnx.TensorProto.FLOAT
        assert len(w.dims) == 2 and list(gs.dims) == [w.dims[1]]
