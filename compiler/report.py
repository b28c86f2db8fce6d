"""The tile mapping report: a JSON-able dict (schema ``acompile.report/1``, docs/report-schema.md) and
its Markdown / HTML renderings. The PNG lives in report_plot.py.

Cost model (stated in every rendering): a layer needs ``mvms_per_inference`` tile MVMs per block
(conv: output spatial positions, batch 1; matmul: non-batch leading positions); energy = all block MVMs
x energy per tile MVM; latency = tiles of a layer run in parallel, positions of a layer and layers run
sequentially: sum over analog layers of mvms_per_inference x latency per tile MVM. Digital ops are not
costed.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from typing import Any

SCHEMA = "acompile.report/1"
LATENCY_ASSUMPTION = ("tiles of one layer run in parallel, layers and the output positions of a layer "
                      "run sequentially; digital ops are not costed")


def build_report(model_name: str, target: dict, layers: list[dict[str, Any]], n_tiles: int,
                 n_tiles_unpacked: int, packed: bool, digital_ops: Counter,
                 blocks: list[dict[str, Any]], warnings: list[str] | None = None,
                 fixed_batch: int | None = None,
                 eval_unsupported: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Assemble the report dict from per-layer rows (already computed by the pipeline).

    ``warnings``: what limits the use of the mapped model (ops the emulator lacks, a batch fixed at
    export); the CLI prints them. ``fixed_batch``: the only batch size the graph works at (None: any);
    `acompile eval` runs such a model in batches of that size. ``eval_unsupported``: op type -> nodes the
    emulator cannot run (then `acompile eval` cannot run the model)."""
    R, C = target["tile"]["rows"], target["tile"]["cols"]
    cost = target["cost"]
    analog = [ly for ly in layers if ly["analog"]]
    block_mvms = sum(ly["mvms_per_inference"] * ly["blocks"] for ly in analog)
    cells = sum(ly["weights"] for ly in analog)
    totals = {
        "analog_layers": len(analog),
        "digital_layers": len(layers) - len(analog),
        "tiles": n_tiles,
        "chips": math.ceil(n_tiles / target["tile"]["tiles_per_chip"]) if n_tiles else 0,
        "devices": sum(ly["devices"] for ly in analog),
        "weights_analog": cells,
        "weights_digital": sum(ly["weights"] for ly in layers if not ly["analog"]),
        "utilization": round(cells / (n_tiles * R * C), 6) if n_tiles else 0.0,
        "digital_ops": int(sum(digital_ops.values())),
        "tiles_saved_by_packing": n_tiles_unpacked - n_tiles,
        "tile_mvms_per_inference": block_mvms,
        "energy_per_inference_uj": round(block_mvms * cost["energy_per_mvm_pj"] * 1e-6, 6),
        "latency_per_inference_us": round(
            sum(ly["mvms_per_inference"] for ly in analog) * cost["latency_per_mvm_ns"] * 1e-3, 6),
    }
    return {
        "schema": SCHEMA,
        "model": model_name,
        "target": target["name"],
        "tile": {"rows": R, "cols": C},
        "tiles_per_chip": target["tile"]["tiles_per_chip"],
        "devices_per_weight": target["tile"]["devices_per_weight"],
        "weight_scale": target["mapping"]["weight_scale"],
        "packed": packed,
        "cost_model": {"energy_per_mvm_pj": cost["energy_per_mvm_pj"],
                       "latency_per_mvm_ns": cost["latency_per_mvm_ns"],
                       "assumption": LATENCY_ASSUMPTION},
        "layers": layers,
        "totals": totals,
        "digital_ops": dict(sorted(digital_ops.items())),
        "notes": _notes(analog, digital_ops),
        "warnings": list(warnings or []),
        "fixed_batch": fixed_batch,
        "eval_supported": not eval_unsupported,
        "eval_unsupported": dict(sorted((eval_unsupported or {}).items())),
        "blocks": blocks,
    }


def _notes(analog: list[dict[str, Any]], digital_ops: Counter) -> list[str]:
    """Things a deployment engineer should know that are not numbers."""
    notes = []
    if analog and not digital_ops.get("BatchNormalization"):
        notes.append("no BatchNormalization nodes (fused into Conv at export?): BN-based drift "
                     "compensation (AdaBS) is not available for this model; export with BN kept as nodes")
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
        out.append([_layer_name(ly), ly["op"], shape,
                    str(ly["tiles"]) if ly["analog"] else "-",
                    _pct(ly["utilization"]) if ly["analog"] else "-",
                    str(ly["devices"]) if ly["analog"] else "-",
                    "analog" if ly["analog"] else "digital",
                    "yes" if ly.get("emulated", True) else "no", ly["reason"]])
    return out


HEADER = ["layer (short name)", "op", "matrix (rows x cols)", "tiles", "utilization", "devices", "mapped",
          "eval runs it", "why"]


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
        ("energy per inference", f"{t['energy_per_inference_uj']:.3f} uJ "
         f"({report['cost_model']['energy_per_mvm_pj']} pJ per tile MVM)"),
        ("latency per inference", f"{t['latency_per_inference_us']:.3f} us "
         f"({report['cost_model']['latency_per_mvm_ns']} ns per tile MVM; "
         f"{report['cost_model']['assumption']})"),
    ]


def _md(cell: str) -> str:
    """Escape table-breaking characters of a Markdown table cell."""
    return cell.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Tile mapping report: {report['model']}", ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {_md(k)} | {_md(v)} |" for k, v in _summary(report)]
    lines += [f"\n> **warning:** {_md(w)}" for w in report.get("warnings", [])]
    lines += [f"\n> note: {n}" for n in report.get("notes", [])]
    lines += ["", "## Layers", "", "| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(_md(c) for c in r) + " |" for r in _rows(report)]
    lines += ["", "Utilization of a layer = its weights / (its blocks x tile cells); total utilization = "
              "analog weights / (tiles x tile cells). Devices = weights x devices per weight.", ""]
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
    parts.append("<h2>Layers</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER)
                 + "</tr>")
    parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in _rows(report)]
    parts.append("</table>")
    if png_data_uri:
        parts.append(f"<h2>Tile occupancy</h2><img src='{png_data_uri}' alt='tile occupancy'>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
