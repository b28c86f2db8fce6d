"""A minimal hand-written mapper following CONTRACTS §3, so runtime tests need not wait on the compiler.

`hand_map(model, target)` turns every Conv (group 1) / Gemm / MatMul with a constant weight into the
ai.acompile nodes, with tiles per the target's tile size. Not a compiler: no normalization passes.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import helper, numpy_helper

from compiler.targets import builtin_target


def _tiles(rows: int, cols: int, R: int, C: int, start: int) -> list[dict]:
    out, k = [], start
    for rs in range(0, rows, R):
        for cs in range(0, cols, C):
            out.append({"tile": k, "chip": 0, "row_start": rs, "row_end": min(rs + R, rows),
                        "col_start": cs, "col_end": min(cs + C, cols), "tile_row": 0, "tile_col": 0})
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
            kind = "AnalogConv"
            k = list(w.shape[2:])
            extra = dict(kernel_shape=k, strides=list(a.get("strides", [1, 1])),
                         pads=list(a.get("pads", [0, 0, 0, 0])), dilations=list(a.get("dilations", [1, 1])),
                         group=1, orig_op="Conv")
            b = node.input[2] if len(node.input) > 2 else None
        elif node.op_type in ("Gemm", "MatMul") and w is not None and w.ndim == 2 and not a.get("transA", 0):
            wm = (w.T if a.get("transB", 0) else w).astype(np.float32)
            kind = "AnalogMatMul"
            extra = dict(alpha=float(a.get("alpha", 1.0)), beta=float(a.get("beta", 1.0)),
                         orig_op=node.op_type)
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
        tiles = _tiles(rows, cols, R, C, ntile)
        ntile += len(tiles)
        wn, gn = f"{node.name}__W", f"{node.name}__G"
        g.initializer.extend([numpy_helper.from_array(wm, wn),
                              numpy_helper.from_array(gs.astype(np.float32), gn)])
        ins = [node.input[0], wn, gn] + ([b] if b else [])
        nodes.append(helper.make_node(kind, ins, list(node.output), name=node.name, domain="ai.acompile",
                                      layer=node.name, tiles=json.dumps(tiles), **extra))
    del g.node[:]
    g.node.extend(nodes)
    m.opset_import.append(helper.make_opsetid("ai.acompile", 1))
    meta = {p.key: p.value for p in m.metadata_props}
    meta.update({"acompile.format": "1", "acompile.target": json.dumps(t), "acompile.mapping": "{}"})
    del m.metadata_props[:]
    for k, v in meta.items():
        m.metadata_props.add(key=k, value=v)
    return m


def test_hand_map_is_valid_onnx(tmp_path):
    from tests.archs import export, mlp_matmul

    model, x = mlp_matmul()
    p = export(model, x, tmp_path / "m.onnx")
    mapped = hand_map(onnx.load(p))
    assert any(n.domain == "ai.acompile" for n in mapped.graph.node)
