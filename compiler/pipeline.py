"""compile_model: the whole compiler as one function (frontend -> partition -> tiling -> artifact)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from compiler import artifact, frontend
from compiler.conductance import g_scale
from compiler.graph import GraphInfo, remove_dead_nodes
from compiler.partition import digital_op_counts, emulated, partition, short_name, weight_matrix
from compiler.report import build_report, to_markdown
from compiler.tiling import Block, place_packed, place_unpacked, replicas_for, split
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


#: Most tiles (matrix blocks) a compile may produce: ~10 MB of report. ResNet-50 needs 422 tiles of
#: 256x256; `--tile 1x1` would make it 25.5 million (minutes of work, a report of hundreds of MB).
MAX_TILES = 50_000

_STAGES = ("loading", "partitioning", "tiling", "conductances", "building artifact", "writing")


def _reporter(progress: bool | Callable[[str], None] | None, stages: int = len(_STAGES)
              ) -> tuple[Callable[[str], None], Any]:
    """(say(stage), the Progress to close or None): a callback as given, or the shared progress report
    (a bar on a terminal, plain lines on stderr otherwise) over the compile stages."""
    if callable(progress):
        return progress, None
    from runtime.progress import Progress

    bar = Progress(total=stages, desc="compile", unit="steps", enabled=bool(progress))
    seen: list[str] = []

    def say(stage: str) -> None:
        if seen:
            bar.update(1)
        seen.append(stage)
        bar.set_postfix_str(stage)

    return say, bar


def estimate_tiles(layers: list, R: int, C: int) -> int:
    """Tiles without packing (= matrix blocks) the analog layers need: sum of ceil(rows/R)*ceil(cols/C)."""
    total = 0
    for ly in layers:
        if ly.analog and not ly.shares:
            rows, cols = ly.lowering.W.shape
            total += -(-rows // R) * -(-cols // C)
    return total


def _check_tile_bound(layers: list, R: int, C: int, max_tiles: int) -> None:
    n = estimate_tiles(layers, R, C)
    if n <= max_tiles:
        return
    standard = estimate_tiles(layers, 256, 256)
    raise AcompileError(f"{R}x{C} tiles: this model would need {n:,} tiles (one per {R}x{C} block of its "
                        f"weight matrices; --pack packs blocks, it does not reduce them), above the bound "
                        f"of {max_tiles:,}; use larger tiles (256x256 needs {standard:,})")


def _layer_row(ly, node, info: GraphInfo, tiles, R: int, C: int, dpw: int) -> dict[str, Any]:
    """The report's entry for one weight layer."""
    alias = short_name(ly)
    if ly.analog:
        rows, cols = ly.lowering.W.shape
        nb = len(tiles[ly.name])
        reps = int(ly.lowering.attrs.get("replicas", 1))
        return {"name": ly.name, "alias": alias, "op": ly.op, "analog": True, "reason": ly.reason,
                "emulated": True, "matrix": [int(rows), int(cols)],
                "tiles": len({t.tile for t in tiles[ly.name]}), "blocks": nb,
                "utilization": round(rows * cols * reps / (nb * R * C), 6) if nb else 0.0,
                "devices": int(rows * cols * dpw * reps), "mvms_per_inference": int(ly.lowering.mvms),
                "weights": int(rows * cols), "replicas": reps, **_recurrent_row(ly.lowering)}
    matrix, weights = weight_matrix(node, info)
    return {"name": ly.name, "alias": alias, "op": ly.op, "analog": False, "reason": ly.reason,
            "emulated": emulated(ly.op), "matrix": matrix, "tiles": 0, "blocks": 0, "utilization": 0.0,
            "devices": 0, "mvms_per_inference": 0, "weights": weights}


def _shared_rows(rows: list[dict[str, Any]], layers: list) -> list[dict[str, Any]]:
    """A layer that reads another's array (`shares`) has no tiles, blocks or devices of its own; its MVMs
    run on the owner's tiles, so the owner's row counts them (`shared_by` names the readers)."""
    by_name = {r["name"]: r for r in rows}
    for ly, row in zip(layers, rows, strict=True):
        if not getattr(ly, "shares", None):
            continue
        owner = by_name[ly.shares]
        owner["mvms_per_inference"] += row["mvms_per_inference"]
        owner.setdefault("shared_by", []).append(ly.name)
        row.update(tiles=0, blocks=0, devices=0, utilization=0.0, mvms_per_inference=0,
                   shares_tiles_with=ly.shares)
    return rows


def _recurrent_row(low) -> dict[str, Any]:
    """A recurrent layer's time steps and array reads per step (its MVMs per inference are their
    product per block; with a dynamic sequence length, steps is None and the count is per step)."""
    if "mvms_per_step" not in low.extra:
        return {}
    return {"steps": low.extra["steps"], "mvms_per_step": int(low.extra["mvms_per_step"])}


def unsupported_ops(model: onnx.ModelProto) -> dict[str, list[str]]:
    """Op type -> the nodes of a (normalized) model that the emulator cannot run."""
    missing: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.domain in frontend.STANDARD_DOMAINS and not emulated(n.op_type):
            missing.setdefault(n.op_type, []).append(n.name)
    return missing


def _warnings(missing: dict[str, list[str]], fixed_batch: int | None, culprit: str | None) -> list[str]:
    """What the user must know before running the mapped model (printed by `acompile` on stderr)."""
    out = []
    if missing:
        ops = "; ".join(f"{op} ({', '.join(repr(x) for x in names[:3])}{', ...' if len(names) > 3 else ''})"
                        for op, names in sorted(missing.items()))
        out.append(f"acompile eval cannot run this model: the emulator has no {ops}; the mapped model is "
                   "written, but it cannot be evaluated on simulated chips yet")
    if fixed_batch is not None:
        why = f" ({culprit})" if culprit else ""
        out.append(f"the model works only at batch size {fixed_batch}, fixed at export{why}; acompile eval "
                   f"runs it in batches of {fixed_batch} (the last one padded). Export with a dynamic batch "
                   "axis (torch.onnx.export(..., dynamic_axes={'input': {0: 'batch'}, ...})) to run any "
                   "batch")
    return out


def map_model(model_path: str | Path, target: dict, digital: list[str] | None = None,
              pack: bool = False, progress: bool | Callable[[str], None] | None = None,
              max_tiles: int = MAX_TILES, duplicate: str | int = 1) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """Load, partition, tile and build the mapped model in memory. Raises AcompileError on bad input.

    ``progress``: a callback receiving each stage's name, True for the shared progress report (a bar on
    a terminal, lines on stderr otherwise), None/False for silence. More than ``max_tiles`` tiles (an
    estimate made before any block is placed) is refused. ``duplicate``: 'auto' or the most copies of a
    layer the report's placement may make (compiler/placement.py; 1: none)."""
    say, bar = _reporter(progress, len(_STAGES) - 1)  # no "writing"
    try:
        result = _map_model(Path(model_path), target, digital, pack, say, max_tiles, duplicate)
        if bar is not None:
            bar.update(1)
        return result
    finally:
        if bar is not None:
            bar.close()


def _map_model(model_path: Path, target: dict, digital: list[str] | None, pack: bool,
               say: Callable[[str], None], max_tiles: int, duplicate: str | int = 1
               ) -> tuple[onnx.ModelProto, dict[str, Any]]:
    say("loading")
    loaded: dict[str, Any] = {}
    model = frontend.load_and_normalize(model_path, loaded)
    fixed_batch = loaded.get("fixed_batch")
    original_meta = {p.key: p.value for p in model.metadata_props}
    remove_dead_nodes(model)
    info = GraphInfo(model)
    say("partitioning")
    layers = partition(info, target, digital)
    R, C = target["tile"]["rows"], target["tile"]["cols"]
    _check_tile_bound(layers, R, C, max_tiles)
    analog = [ly for ly in layers if ly.analog]
    blocks: list[Block] = []
    policy = target["mapping"].get("replicate", "none")
    for i, ly in enumerate(analog):
        if ly.shares:  # reads an earlier layer's array
            continue
        rows, cols = ly.lowering.W.shape
        n = 1 if ly.lowering.op_type in contract.RECURRENT_OPS else replicas_for(rows, R, policy)
        if n > 1:
            ly.lowering.attrs["replicas"] = n
        blocks += split(i, rows, cols, R, C, replicas=n)
    owners = {ly.name: ly for ly in analog}
    for ly in analog:  # a reader of a replicated array reads all its copies
        n = owners[ly.shares].lowering.attrs.get("replicas", 1) if ly.shares else 1
        if n > 1:
            ly.lowering.attrs["replicas"] = n
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
    for ly in analog:
        if ly.shares:
            tiles[ly.name] = tiles[ly.shares]
    say("conductances")
    mode = target["mapping"]["weight_scale"]
    g_max = target["device"]["g_max"]
    scales = {ly.name: g_scale(ly.lowering.W, g_max, mode) for ly in analog}
    dpw = target["tile"]["devices_per_weight"]
    rows_out = _shared_rows([_layer_row(ly, info.nodes[ly.name], info, tiles, R, C, dpw) for ly in layers],
                            layers)
    culprit = frontend.batch_culprit(model, fixed_batch) if fixed_batch is not None else None
    missing = unsupported_ops(model)
    report = build_report(model_path.name, target, rows_out, n_tiles, n_unpacked, pack,
                          digital_op_counts(model, layers), block_rows,
                          warnings=_warnings(missing, fixed_batch, culprit), fixed_batch=fixed_batch,
                          eval_unsupported=missing, duplicate=duplicate)
    say("building artifact")
    mapped = artifact.build_mapped_model(model, layers, scales, tiles, target, report, original_meta)
    contract.check_mapped(mapped)  # the schema (no tensor copies); onnx.checker runs on the bytes written
    return mapped, report


def compile_model(model_path: str | Path, target: dict, output: str | Path | None = None,
                  digital: list[str] | None = None, pack: bool = False,
                  progress: bool | Callable[[str], None] | None = None,
                  max_tiles: int = MAX_TILES, duplicate: str | int = 1) -> CompileResult:
    """Compile and write MODEL.pcm.onnx (or ``output``) plus .json/.md/.png reports, atomically.

    ``progress`` as in `map_model` (the CLI passes True unless --quiet)."""
    model_path = Path(model_path)
    out = Path(output) if output is not None else default_output(model_path)
    if out.resolve() == model_path.resolve():
        raise AcompileError(f"output {str(out)!r} would overwrite the input model")
    say, bar = _reporter(progress)
    try:
        mapped, report = _map_model(model_path, target, digital, pack, say, max_tiles, duplicate)
        say("writing")
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
        if bar is not None:
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
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
    contract.check_mapped(m, repr(str(path)))  # a report of a broken artifact would mislead
    return meta.mapping, meta.target
