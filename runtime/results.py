"""Retention results: the printed table, JSON and CSV."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from runtime.outputs import write_files


def table(result: dict[str, Any]) -> str:
    """time x compensation table of mean +- std accuracy (%) over chips, with the digital baseline."""
    methods = result["compensation"]
    rows: dict[str, dict[str, dict]] = {}
    for r in result["results"]:
        rows.setdefault(r["time"], {})[r["compensation"]] = r
    head = ["time"] + [f"{m}" for m in methods]
    body = []
    for tl, per in rows.items():
        body.append([tl] + [f"{100 * per[m]['mean']:.2f} ± {100 * per[m]['std']:.2f}" for m in methods])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=False)) for b in body]
    n = result["results"][0]["n"] if result["results"] else 0
    metric = "class-balanced accuracy" if result.get("metric") == "balanced-accuracy" else "accuracy"
    lines.append(f"{metric} % (mean ± std over {n} chip(s)), {result['n_images']} images of "
                 f"{result['data']}, "
                 f"target {result.get('target')}")
    if "baseline" in result:
        tag = " (class-balanced)" if result.get("metric") == "balanced-accuracy" else ""
        lines.append(f"digital baseline (onnxruntime){tag}: {100 * result['baseline']['accuracy']:.2f} %")
    return "\n".join(lines)


def json_text(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2) + "\n"


def csv_text(result: dict[str, Any]) -> str:
    """One row per (time, compensation); the baseline repeated on each row for easy plotting."""
    base = result.get("baseline", {}).get("accuracy", "")
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
