"""The tile mapping report: a JSON-able dict (schema ``acompile.report/1``, docs/report-schema.md) and
its Markdown / HTML renderings. The PNG lives in report_plot.py.

Cost model (compiler/cost.py; stated in every rendering): a layer needs ``mvms_per_inference`` MVMs
per block (conv: output spatial positions, batch 1; matmul: non-batch leading positions); each block MVM
costs the energy of the rows, columns and converters it uses (array + DAC + ADC + digital terms,
calibrated on the target's full-tile [cost] figures); latency = a layer's blocks run in parallel,
positions of a layer and layers run sequentially: sum over analog layers of mvms_per_inference x the
time of one MVM (PWM integration + ADC conversion, set by the converter bits).
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from typing import Any

from compiler import placement as plc
from compiler.cost import TERMS, CostModel

SCHEMA = "acompile.report/1"


def build_report(model_name: str, target: dict, layers: list[dict[str, Any]], n_tiles: int,
                 n_tiles_unpacked: int, packed: bool, digital_ops: Counter,
                 blocks: list[dict[str, Any]], warnings: list[str] | None = None,
                 fixed_batch: int | None = None,
                 eval_unsupported: dict[str, list[str]] | None = None,
                 duplicate: str | int = 1) -> dict[str, Any]:
    """Assemble the report dict from per-layer rows (already computed by the pipeline).

    ``warnings``: what limits the use of the mapped model (ops the emulator lacks, a batch fixed at
    export); the CLI prints them. ``fixed_batch``: the only batch size the graph works at (None: any);
    `acompile eval` runs such a model in batches of that size. ``eval_unsupported``: op type -> nodes the
    emulator cannot run (then `acompile eval` cannot run the model). ``duplicate``: 'auto' or the most
    copies of a layer's weights the placement may make (compiler/placement.py; 1: none)."""
    R, C = target["tile"]["rows"], target["tile"]["cols"]
    cost = CostModel.from_target(target)
    analog = [ly for ly in layers if ly["analog"]]
    block_mvms = sum(ly["mvms_per_inference"] * ly["blocks"] for ly in analog)
    energy, latency_us = _layer_costs(cost, layers, blocks)
    cells = sum(ly["weights"] * ly.get("replicas", 1) for ly in analog)
    totals = {
        "analog_layers": len(analog),
        "digital_layers": len(layers) - len(analog),
        "tiles": n_tiles,
        "chips": math.ceil(n_tiles / target["tile"]["tiles_per_chip"]) if n_tiles else 0,
        "devices": sum(ly["devices"] for ly in analog),
        "weights_analog": sum(ly["weights"] for ly in analog),
        "weights_digital": sum(ly["weights"] for ly in layers if not ly["analog"]),
        "utilization": round(cells / (n_tiles * R * C), 6) if n_tiles else 0.0,
        "digital_ops": int(sum(digital_ops.values())),
        "tiles_saved_by_packing": n_tiles_unpacked - n_tiles,
        "tile_mvms_per_inference": block_mvms,
        "energy_per_inference_uj": round(sum(sum(e.values()) for e in energy.values()) * 1e-6, 9),
        "energy_breakdown_uj": {t: round(sum(e[t] for e in energy.values()) * 1e-6, 9) for t in TERMS},
        "latency_per_inference_us": round(sum(latency_us.values()), 6),
    }
    report = {
        "schema": SCHEMA,
        "model": model_name,
        "target": target["name"],
        "tile": {"rows": R, "cols": C},
        "tiles_per_chip": target["tile"]["tiles_per_chip"],
        "devices_per_weight": target["tile"]["devices_per_weight"],
        "weight_scale": target["mapping"]["weight_scale"],
        "packed": packed,
        "cost_model": cost.describe(R, C),
        "layers": layers,
        "totals": totals,
        "digital_ops": dict(sorted(digital_ops.items())),
        "notes": _notes(analog, digital_ops, target),
        "warnings": list(warnings or []),
        "fixed_batch": fixed_batch,
        "eval_supported": not eval_unsupported,
        "eval_unsupported": dict(sorted((eval_unsupported or {}).items())),
        "blocks": blocks,
    }
    report["placement"] = plc.plan(layers, blocks, n_tiles, target["tile"]["tiles_per_chip"], cost, duplicate)
    report["performance"] = plc.performance(report, target, cost)
    return report


def _layer_costs(cost: CostModel, layers: list[dict[str, Any]], blocks: list[dict[str, Any]]
                 ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """Per analog layer: energy per inference by term (pJ) and latency per inference (us); sets each
    layer's ``energy_per_inference_uj`` / ``latency_per_inference_us`` (0 for digital layers)."""
    per_mvm: dict[str, dict[str, float]] = {}
    reps = {ly["name"]: ly.get("replicas", 1) for ly in layers}
    for b in blocks:  # one MVM of every block: the rows and columns it uses (a replica's rows too)
        e = cost.block_energy_pj((b["row_end"] - b["row_start"]) * reps.get(b["layer"], 1),
                                 b["col_end"] - b["col_start"])
        acc = per_mvm.setdefault(b["layer"], dict.fromkeys(TERMS, 0.0))
        for t in TERMS:
            acc[t] += e[t]
    t_mvm_ns = cost.mvm_latency_ns()["mvm"]
    energy: dict[str, dict[str, float]] = {}
    latency_us: dict[str, float] = {}
    for ly in layers:
        if not ly["analog"]:
            ly["energy_per_inference_uj"] = ly["latency_per_inference_us"] = 0.0
            continue
        mvms = ly["mvms_per_inference"]
        per = per_mvm.get(ly["name"], dict.fromkeys(TERMS, 0.0))  # no blocks: reads another's array
        energy[ly["name"]] = {t: mvms * v for t, v in per.items()}
        latency_us[ly["name"]] = mvms * t_mvm_ns * 1e-3  # its blocks run in parallel
        ly["energy_per_inference_uj"] = round(sum(energy[ly["name"]].values()) * 1e-6, 9)
        ly["latency_per_inference_us"] = round(latency_us[ly["name"]], 6)
    return energy, latency_us


def _notes(analog: list[dict[str, Any]], digital_ops: Counter, target: dict | None = None) -> list[str]:
    """Things a deployment engineer should know that are not numbers."""
    notes = []
    if analog and not digital_ops.get("BatchNormalization"):
        notes.append("no BatchNormalization nodes (fused into Conv at export?): BN-based drift "
                     "compensation (AdaBS) is not available for this model; export with BN kept as nodes")
    if analog and (target or {}).get("mapping", {}).get("bias") == "row":
        notes.append("bias = row: Gemm and LSTM / GRU / RNN biases are crossbar rows driven with a constant "
                     "1 (in `matrix`; the DAC input range is then at least 1); Conv / ConvTranspose biases "
                     "stay digital")
    return notes


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=1) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _layer_name(ly: dict[str, Any]) -> str:
    """The node name, with the short name `--digital` also takes when it differs."""
    alias = ly.get("alias")
    return f"{ly['name']} ({alias})" if alias and alias != ly["name"] else ly["name"]


def _rows(report: dict[str, Any]) -> list[list[str]]:
    out = []
    for ly in report["layers"]:
        shape = "x".join(str(d) for d in ly["matrix"]) if ly.get("matrix") else "-"
        if ly.get("replicas", 1) > 1:
            shape += f" (x{ly['replicas']} replicas)"
        out.append([_layer_name(ly), ly["op"], shape,
                    str(ly["tiles"]) if ly["analog"] else "-",
                    _pct(ly["utilization"]) if ly["analog"] else "-",
                    str(ly["devices"]) if ly["analog"] else "-",
                    _mvms(ly) if ly["analog"] else "-",
                    f"{ly['energy_per_inference_uj']:.4f}" if ly["analog"] and
                    "energy_per_inference_uj" in ly else "-",
                    "analog" if ly["analog"] else "digital",
                    "yes" if ly.get("emulated", True) else "no", ly["reason"]])
    return out


def _mvms(ly: dict[str, Any]) -> str:
    """Tile MVMs per inference (batch 1): positions (or time steps x reads per step) x blocks."""
    blocks = ly.get("blocks", 0)
    total = f"{ly['mvms_per_inference'] * blocks:,}"
    if "mvms_per_step" in ly:
        steps = ly.get("steps")
        reads = ly["mvms_per_step"]
        if steps is None:
            return f"{reads * blocks:,} per step ({reads} read(s) x {blocks} block(s); dynamic length)"
        return f"{total} ({steps} steps x {reads} read(s) x {blocks} block(s))"
    return total


HEADER = ["layer (short name)", "op", "matrix (rows x cols)", "tiles", "utilization", "devices",
          "tile MVMs / inference", "energy / inference (uJ)", "mapped", "eval runs it", "why"]


def _summary(report: dict[str, Any]) -> list[tuple[str, str]]:
    t = report["totals"]
    return [
        ("target", f"{report['target']} ({report['tile']['rows']}x{report['tile']['cols']} tiles, "
                   f"{report['tiles_per_chip']} tiles/chip, {report['devices_per_weight']} devices/weight)"),
        ("weight scale", f"per {report['weight_scale']} (G_SCALE = g_max / max|W|"
                         f"{' per column' if report['weight_scale'] == 'column' else ''})"),
        ("packing", "on (shelf first-fit-decreasing)" if report["packed"] else "off (one block per tile)"),
        ("analog / digital layers", f"{t['analog_layers']} / {t['digital_layers']}"),
        ("batch size", "any" if report.get("fixed_batch") is None
         else f"{report['fixed_batch']} only (fixed at export)"),
        ("acompile eval", "can run this model" if report.get("eval_supported", True)
         else "cannot run this model (see the warnings)"),
        ("tiles", str(t["tiles"]) + (f" ({t['tiles_saved_by_packing']} saved by packing)"
                                     if report["packed"] else "")),
        ("chips", str(t["chips"])),
        ("devices", str(t["devices"])),
        ("utilization", _pct(t["utilization"])),
        ("digital ops left", f"{t['digital_ops']} ("
         + ", ".join(f"{k} {v}" for k, v in report["digital_ops"].items()) + ")"),
        ("tile MVMs per inference", str(t["tile_mvms_per_inference"])),
        ("energy per inference", energy_text(report)),
        ("latency per inference", latency_text(report)),
        *_placement_summary(report),
    ]


def _ips(x: float) -> str:
    return f"{x:,.0f} inferences/s"


def _placement_summary(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Summary rows of the placement and performance (nothing for reports written before them)."""
    pl, pf = report.get("placement"), report.get("performance")
    if not pl or not pf:
        return []
    rows = [("throughput", throughput_text(report)),
            ("duplication", duplication_text(report)),
            ("energy per inference with data movement", movement_text(report)),
            ("peak (one chip)", peak_text(report))]
    return rows


def throughput_text(report: dict[str, Any]) -> str:
    """Pipelined and layer-by-layer throughput and latency, the bottleneck, and the gain of the copies."""
    pl = report["placement"]
    base = pl["without_duplication"]
    text = (f"pipelined {_ips(pl['pipelined']['throughput_ips'])} (latency "
            f"{pl['pipelined']['latency_us']:,.2f} us, bottleneck {pl['bottleneck']['layer']} "
            f"{pl['bottleneck']['stage_time_us']:,.2f} us per inference); layer by layer "
            f"{_ips(pl['layer_by_layer']['throughput_ips'])} (latency "
            f"{pl['layer_by_layer']['latency_us']:,.2f} us)")
    if pl["copies_added"]:
        text += (f"; without duplication: pipelined {_ips(base['pipelined']['throughput_ips'])}, bottleneck "
                 f"{base['bottleneck']['layer']} (x{pl['speedup_pipelined']:.2f} with the copies)")
    return text


def duplication_text(report: dict[str, Any]) -> str:
    pl = report["placement"]
    n = pl["copies_added"]
    head = (f"--duplicate {pl['duplicate']}: {n} cop{'y' if n == 1 else 'ies'} added; {pl['cores_used']} of "
            f"{pl['cores_total']} cores used ({pl['chips']} chip"
            f"{'s' if pl['chips'] != 1 else ''} of {pl['cores_per_chip']}), {pl['cores_free']} free")
    if pl["duplicated_layers"]:
        head += "; copies per layer: " + ", ".join(f"{name} x{c}"
                                                   for name, c in pl["duplicated_layers"].items())
    if pl.get("duplication_stopped"):
        head += f"; stopped: {pl['duplication_stopped']}"
    return head


def movement_text(report: dict[str, Any]) -> str:
    pf = report["performance"]
    mv = pf["movement"]
    split = ", ".join(f"{k} {v:.3f}" for k, v in pf["energy_breakdown_uj"].items())
    return (f"{pf['energy_per_inference_uj']:.3f} uJ ({split} uJ; {mv['bytes_per_inference']:,} "
            f"activation bytes moved between cores at {mv['pj_per_byte']:g} pJ/byte); "
            f"{pf['ops_per_inference']:,} ops per inference: {pf['effective_tops_per_w']:.2f} TOPS/W, "
            f"{pf['effective_tops_pipelined']:.3f} TOPS pipelined")


def peak_text(report: dict[str, Any]) -> str:
    pf = report["performance"]
    vs = pf.get("vs_published_hermes", {})
    parts = []
    for mode, f in pf["peak"].items():
        t = f"{mode} read {f['tops']:.2f} TOPS at {f['tops_per_w']:.2f} TOPS/W"
        if mode in vs:
            c = vs[mode]
            t += (f" (HERMES published {c['tops']['published']:g} TOPS, {c['tops_per_w']['published']:g} "
                  f"TOPS/W: error {100 * c['tops']['error']:+.2f} %, "
                  f"{100 * c['tops_per_w']['error']:+.2f} %)")
        parts.append(t)
    return "; ".join(parts) + " (all cores busy with full tile MVMs)"


def placement_markdown(report: dict[str, Any]) -> list[str]:
    """The Markdown section on placement, pipelining and performance (empty for older reports)."""
    pl = report.get("placement")
    if not pl or "performance" not in report:
        return []
    lines = ["", "## Placement, duplication and pipelining", "", pl["assumption"], "",
             f"- {throughput_text(report)}", f"- {duplication_text(report)}",
             f"- energy per inference with data movement: {movement_text(report)}",
             f"- peak of one chip: {peak_text(report)}", "",
             "| stage | layer | blocks | copies | cores | MVMs per copy | stage time (us) | |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    b = pl["bottleneck"]["layer"]
    for st in pl["stages"]:
        mark = "bottleneck" if st["layer"] == b else ""
        lines.append(f"| {st['stage']} | {_md(st['layer'])} | {st['blocks']} | {st['copies']} | "
                     f"{st['cores']} | {st['mvms_per_copy']} | {st['stage_time_us']:.3f} | {mark} |")
    lines += ["", "Core map (core in chip: layer's stage; 'k = its weights' copy k):", ""]
    stage = {st["layer"]: st["stage"] for st in pl["stages"]}
    per_chip: dict[int, list[str]] = {}
    for c in pl["cores"]:
        per_chip.setdefault(c["chip"], []).append(
            f"{c['core_in_chip']}:L{stage.get(c['layer'], '?')}" + (f"'{c['copy']}" if c["copy"] else ""))
    lines += [f"- chip {chip}: " + " ".join(items) for chip, items in sorted(per_chip.items())]
    return lines


def energy_text(report: dict[str, Any]) -> str:
    """Energy per inference with its split and the full-tile figure it scales from (older reports: the
    flat per-MVM figure they used)."""
    t, cm = report["totals"], report["cost_model"]
    text = f"{t['energy_per_inference_uj']:.3f} uJ"
    split = t.get("energy_breakdown_uj")
    if not split or "full_tile_mvm_pj" not in cm:
        return text + f" ({cm['energy_per_mvm_pj']} pJ per tile MVM)"
    bits = cm["costed_bits"]
    ref = cm["reference"]
    return (text + " (" + ", ".join(f"{k} {v:.3f}" for k, v in split.items()) + " uJ; a full "
            f"{report['tile']['rows']}x{report['tile']['cols']} MVM at {bits['dac']}-bit DAC / "
            f"{bits['adc']}-bit ADC = {cm['full_tile_mvm_pj']:.0f} pJ, from the target's "
            f"{cm['energy_per_mvm_pj']:g} pJ for {ref['rows']}x{ref['cols']} at "
            f"{ref['dac_bits']}/{ref['adc_bits']} bits; partial blocks cost only what they use)")


def latency_text(report: dict[str, Any]) -> str:
    """Latency per inference with the time of one tile MVM."""
    t, cm = report["totals"], report["cost_model"]
    text = f"{t['latency_per_inference_us']:.3f} us"
    lat = cm.get("mvm_latency_ns")
    if not lat:
        return text + f" ({cm['latency_per_mvm_ns']} ns per tile MVM; {cm.get('assumption', '')})"
    return (text + f" ({lat['mvm']:.1f} ns per tile MVM = PWM integration {lat['integration']:.1f} ns "
            f"+ ADC conversion {lat['adc_conversion']:.1f} ns; a layer's tiles in parallel, layers "
            "one after another)")


def _md(cell: str) -> str:
    """Escape table-breaking characters of a Markdown table cell."""
    return cell.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Tile mapping report: {report['model']}", ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in _summary(report)]
    lines += [f"\n> **warning:** {_md(w)}" for w in report.get("warnings", [])]
    lines += [f"\n> note: {n}" for n in report.get("notes", [])]
    lines += ["", "## Cost model", "", report["cost_model"].get("assumption", "")]
    lines += ["", "## Layers", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in _rows(report)]
    lines += ["", "Utilization of a layer = its weights (times its replicas) / (its blocks x tile cells); "
              "total utilization = the cells holding analog weights / (tiles x tile cells). Devices = "
              "weights x devices per weight (x replicas: copies of a small layer in the rows its tile "
              "leaves free, read together; target [mapping] replicate)."]
    lines += placement_markdown(report) + [""]
    return "\n".join(lines)


def to_html(report: dict[str, Any], png_data_uri: str | None = None) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>acompile report: {e(report['model'])}</title>",
             "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 6px}</style></head><body>",
             f"<h1>Tile mapping report: {e(report['model'])}</h1><table>"]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary(report)]
    parts.append("</table>")
    parts += [f"<p><b>warning:</b> {e(w)}</p>" for w in report.get("warnings", [])]
    parts += [f"<p><b>note:</b> {e(n)}</p>" for n in report.get("notes", [])]
    parts.append(f"<h2>Cost model</h2><p>{e(report['cost_model'].get('assumption', ''))}</p>")
    parts.append("<h2>Layers</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER)
                 + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _rows(report)]
    parts.append("</table>")
    section = placement_markdown(report)
    if section:
        body = e("\n".join(section[3:]))
        parts.append(f"<h2>Placement, duplication and pipelining</h2><pre>{body}</pre>")
    if png_data_uri:
        parts.append(f"<h2>Tile occupancy</h2><img src='{png_data_uri}' alt='tile occupancy'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
