"""compile_model: the whole compiler as one function (frontend -> partition -> tiling -> artifact)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compiler import artifact, frontend
from compiler.conductance import g_scale
from compiler.graph import GraphInfo, remove_dead_nodes
from compiler.partition import digital_op_counts, partition
from compiler.report import build_report, to_markdown
from compiler.tiling import Block, place_packed, place_unpacked, split
from runtime import contract
from runtime.errors import AcompileError


@dataclass
class CompileResult:
    model: onnx.ModelProto
    report: dict[str, Any]
    paths: dict[str, Path]


def default_output(model_path: Path) -> Path:
    """``dir/MODEL.onnx`` -> ``dir/MODEL.pcm.onnx``."""
    stem = model_path.name[: -len(".onnx")] if model_path.name.endswith(".onnx") else model_path.stem
    return model_path.with_name(f"{stem}.pcm.onnx")


def map_model(model_path: str | Path, target: dict, digital: list[str] | None = None,
              pack: bool = False, progress: Callable[[str], None] | None = None
              ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Load, partition, tile and build the mapped model in memory. Raises AcompileError on bad input."""
    model_path = Path(model_path)
    say = progress or (lambda _msg: None)
    say("loading")
    model = frontend.load_and_normalize(model_path)
    original_meta = {p.key: p.value for p in model.metadata_props}
    remove_dead_nodes(model)
    info = GraphInfo(model)
    say("partitioning")
    layers = partition(info, target, digital)
    R, C = target["tile"]["rows"], target["tile"]["cols"]
    analog = [ly for ly in layers if ly.analog]
    blocks: list[Block] = []
    for i, ly in enumerate(analog):
        rows, cols = ly.lowering.W.shape
        blocks += split(i, rows, cols, R, C)
    say("tiling")
    n_unpacked = len(blocks)
    n_tiles = place_packed(blocks, R, C) if pack else place_unpacked(blocks)
    tpc = target["tile"]["tiles_per_chip"]
    tiles: dict[str, list[contract.TileBlock]] = {ly.name: [] for ly in analog}
    block_rows: list[dict[str, Any]] = []
    for b in blocks:
        entry = contract.TileBlock(tile=b.tile, chip=b.tile // tpc, row_start=b.row_start, row_end=b.row_end,
                                   col_start=b.col_start, col_end=b.col_end, tile_row=b.tile_row,
                                   tile_col=b.tile_col)
        tiles[analog[b.layer].name].append(entry)
        block_rows.append({"layer": analog[b.layer].name, **entry.to_json()})
    say("conductances")
    mode = target["mapping"]["weight_scale"]
    g_max = target["device"]["g_max"]
    scales = {ly.name: g_scale(ly.lowering.W, g_max, mode) for ly in analog}
    dpw = target["tile"]["devices_per_weight"]
    rows_out: list[dict[str, Any]] = []
    for ly in layers:
        node = info.nodes[ly.name]
        if ly.analog:
            rows, cols = ly.lowering.W.shape
            nb = len(tiles[ly.name])
            row = {"name": ly.name, "op": ly.op, "analog": True, "reason": ly.reason,
                   "matrix": [int(rows), int(cols)], "tiles": len({t.tile for t in tiles[ly.name]}),
                   "blocks": nb, "utilization": round(rows * cols / (nb * R * C), 6),
                   "devices": int(rows * cols * dpw), "mvms_per_inference": int(ly.lowering.mvms),
                   "weights": int(rows * cols)}
        else:
            w = info.const(node.input[1]) if len(node.input) > 1 else None
            matrix = None
            if w is not None and w.ndim >= 2:
                trans_b = any(a.name == "transB" and a.i for a in node.attribute)
                if ly.op == "Conv":  # rows = fan-in of one output channel (per group)
                    matrix = [int(np.prod(w.shape[1:])), int(w.shape[0])]
                elif w.ndim == 2:
                    matrix = [int(w.shape[1]), int(w.shape[0])] if trans_b else [int(d) for d in w.shape]
                else:
                    matrix = [int(d) for d in w.shape]
            row = {"name": ly.name, "op": ly.op, "analog": False, "reason": ly.reason, "matrix": matrix,
                   "tiles": 0, "blocks": 0, "utilization": 0.0, "devices": 0, "mvms_per_inference": 0,
                   "weights": int(w.size) if w is not None else 0}
        rows_out.append(row)
    report = build_report(model_path.name, target, rows_out, n_tiles, n_unpacked, pack,
                          digital_op_counts(model, layers), block_rows)
    say("building artifact")
    mapped = artifact.build_mapped_model(model, layers, scales, tiles, target, report, original_meta)
    contract.check_mapped(mapped)  # the schema (no tensor copies); onnx.checker runs on the bytes written
    return mapped, report


def compile_model(model_path: str | Path, target: dict, output: str | Path | None = None,
                  digital: list[str] | None = None, pack: bool = False,
                  progress: Callable[[str], None] | None = None) -> CompileResult:
    """Compile and write MODEL.pcm.onnx (or ``output``) plus .json/.md/.png reports, atomically."""
    model_path = Path(model_path)
    out = Path(output) if output is not None else default_output(model_path)
    if out.resolve() == model_path.resolve():
        raise AcompileError(f"output {str(out)!r} would overwrite the input model")
    mapped, report = map_model(model_path, target, digital, pack, progress)
    from compiler.report_plot import render_png

    paths = artifact.report_paths(out)
    data = artifact.serialize(mapped)
    artifact.check_mapped(data)  # on the bytes we write: one serialization, not two
    files = {
        out: data,
        paths["json"]: (json.dumps(report, indent=1) + "\n").encode(),
        paths["md"]: to_markdown(report).encode(),
        paths["png"]: render_png(report),
    }
    artifact.write_atomically(files)
    return CompileResult(mapped, report, {"model": out, **paths})


def read_mapped(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(report, target) from a mapped model's metadata; external data is not loaded (not needed)."""
    path = Path(path)
    if not path.is_file():
        raise AcompileError(f"{str(path)!r}: file not found")
    m = onnx.ModelProto()
    try:
        m.ParseFromString(path.read_bytes())
    except Exception:
        raise AcompileError(f"{str(path)!r}: not an ONNX model (protobuf does not parse)") from None
    meta = contract.read_mapped_metadata(m, repr(str(path)))
    return meta.mapping, meta.target
