"""Retention results: the printed table, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from runtime.outputs import write_files

#: metric (JSON `metric`) -> (label, shown in %)
METRIC_LABELS = {"accuracy": ("accuracy", True), "balanced-accuracy": ("class-balanced accuracy", True),
                 "agreement": ("top-1 agreement with the digital model", True),
                 "rel-error": ("relative L2 error vs the digital model (lower is better)", False)}


def baseline_value(result: dict[str, Any]) -> float | None:
    """The digital baseline's score (accuracy; for agreement / rel-error the trivial 1.0 / 0.0)."""
    base = result.get("baseline")
    if not base:
        return None
    return base.get("accuracy", base.get("value"))


def _cell(metric: str, mean: float, std: float) -> str:
    if METRIC_LABELS.get(metric, ("", True))[1]:
        return f"{100 * mean:.2f} ± {100 * std:.2f}"
    return f"{mean:.4g} ± {std:.2g}"


def table(result: dict[str, Any]) -> str:
    """time x compensation table of mean +- std accuracy (%) over chips, with the digital baseline."""
    methods = result["compensation"]
    rows: dict[str, dict[str, dict]] = {}
    for r in result["results"]:
        rows.setdefault(r["time"], {})[r["compensation"]] = r
    metric = result.get("metric", "accuracy")
    head = ["time"] + [f"{m}" for m in methods]
    body = []
    for tl, per in rows.items():
        body.append([tl] + [_cell(metric, per[m]["mean"], per[m]["std"]) for m in methods])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=False)) for b in body]
    n = result["results"][0]["n"] if result["results"] else 0
    label, pct = METRIC_LABELS.get(metric, (metric, True))
    unit = " %" if pct else ""
    lines.append(f"{label}{unit} (mean ± std over {n} chip(s)), {result['n_images']} images of "
                 f"{result['data']}, "
                 f"target {result.get('target')}")
    if "baseline" in result and metric in ("agreement", "rel-error"):
        lines.append(f"digital model (onnxruntime): the reference itself ({metric} "
                     f"{_cell(metric, baseline_value(result), 0.0).split(' ±')[0]}{unit})")
    elif "baseline" in result:
        tag = " (class-balanced)" if result.get("metric") == "balanced-accuracy" else ""
        lines.append(f"digital baseline (onnxruntime){tag}: {100 * result['baseline']['accuracy']:.2f} %")
    return "\n".join(lines)


def json_text(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2) + "\n"


def csv_text(result: dict[str, Any]) -> str:
    """One row per (time, compensation); the baseline repeated on each row for easy plotting."""
    base = baseline_value(result)
    base = "" if base is None else base
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["t_seconds", "time", "compensation", "mean", "std", "n", "baseline", "accuracies", "metric"])
    metric = result.get("metric", "accuracy")
    for r in result["results"]:
        w.writerow([r["t"], r["time"], r["compensation"], f"{r['mean']:.6f}", f"{r['std']:.6f}", r["n"],
                    base, " ".join(f"{a:.6f}" for a in r["accuracies"]), metric])
    return buf.getvalue()


def write_json(result: dict[str, Any], path: str | Path) -> None:
    write_files({Path(path): json_text(result)})


def write_csv(result: dict[str, Any], path: str | Path) -> None:
    write_files({Path(path): csv_text(result)})
