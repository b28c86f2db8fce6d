"""Design-space exploration: the retention experiment over a grid of target variants (`acompile explore`).

A unit of work is (variant, chip): the variant's mapped model on one simulated chip, scored at every time
point and compensation method (runtime.evaluate.run_chip, so its numbers are those of `acompile eval` on
that variant, chip for chip: a chip's noise depends only on (seed, chip)). Units run here one after the
other or as Ray tasks (runtime/parallel.py); each finished unit is appended to DIR/results.jsonl at once
(one write + flush + fsync), so an interrupted run keeps every finished unit and `--resume` skips them.
At the end: DIR/summary.json, DIR/summary.csv (mean / std over chips) and DIR/summary.png.

The compiler stays out of this module: the CLI (runtime/explore_cli.py) hands in a `compile` callable.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import AcompileError
from runtime.options import format_time
from runtime.outputs import deferred_interrupts, write_files

RESULTS = "results.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
SUMMARY_PLOT = "summary.png"
SCHEMA = "acompile.explore/1"
#: Test hook: seconds to sleep after each unit of a serial run (a window for the interruption tests,
#: tests/test_explore.py). Unset in normal use.
PAUSE_ENV = "ACOMPILE_TEST_UNIT_PAUSE"
#: config keys a resumed run must share with the run that wrote the file (more chips may be asked)
_SAME_ON_RESUME = ("model", "target", "knobs", "times", "compensation", "seed", "data", "limit", "calib",
                   "batch_size", "metric")


@dataclass
class Variant:
    key: str                 # "adc_bits=4 tile=128x128"
    knobs: dict[str, Any]    # {"adc_bits": 4, "tile": "128x128"}


def output_paths(out_dir: Path) -> dict[str, Path]:
    return {"results": out_dir / RESULTS, "json": out_dir / SUMMARY_JSON, "csv": out_dir / SUMMARY_CSV,
            "plot": out_dir / SUMMARY_PLOT}


# ---- the results file --------------------------------------------------------------------------------
class ResultsFile:
    """DIR/results.jsonl: a header line (the run's config), then one line per variant x time x
    compensation x chip; a unit's lines are written with one write, flushed and fsynced."""

    def __init__(self, path: Path, config: dict[str, Any], resume: bool) -> None:
        self.path = path
        self.done: dict[tuple[str, int], list[float]] = {}
        self.labels = [(format_time(t), m) for t in config["times"] for m in config["compensation"]]
        if path.exists() and path.stat().st_size > 0:
            if not resume:
                raise AcompileError(f"--out: {path} exists (a run there already): add --resume to continue "
                                    "it, or give another --out")
            self._load(config)
        else:
            write_files({path: json.dumps({"schema": SCHEMA, "config": config}) + "\n"})

    def _load(self, config: dict[str, Any]) -> None:
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        complete = lines[:-1]  # what follows the last newline is a line a hard kill cut short: ignored
        try:
            head = json.loads(complete[0]) if complete else None
        except ValueError:
            head = None
        if not isinstance(head, dict) or head.get("schema") != SCHEMA:
            raise AcompileError(f"--resume: {self.path} is not an `acompile explore` results file")
        old = head.get("config", {})
        for k in _SAME_ON_RESUME:
            if old.get(k) != config.get(k):
                raise AcompileError(f"--resume: {self.path} was written with another {k} ({old.get(k)!r}, "
                                    f"now {config.get(k)!r}); give another --out")
        rows: dict[tuple[str, int], dict[tuple[str, str], float]] = {}
        kept: dict[tuple[str, int], list[str]] = {}
        for line in complete[1:]:
            try:
                r = json.loads(line)
                unit = (str(r["variant"]), int(r["chip"]))
                rows.setdefault(unit, {})[(r["time"], r["compensation"])] = float(r["accuracy"])
                kept.setdefault(unit, []).append(line)
            except (ValueError, KeyError, TypeError):
                continue
        clean = [complete[0]]
        for unit, got in rows.items():
            if all(lab in got for lab in self.labels):
                self.done[unit] = [got[lab] for lab in self.labels]
                clean += kept[unit]
        if len(clean) != len(complete) or lines[-1]:
            # a cut line or a unit without all its rows: rewrite the file without them (atomically)
            write_files({self.path: "\n".join(clean) + "\n"})

    def append(self, variant: Variant, chip: int, accuracies: list[float], extra: dict[str, Any]) -> None:
        text = "".join(json.dumps({"variant": variant.key, "knobs": variant.knobs, "chip": chip,
                                   "time": tl, "compensation": m, "accuracy": a, **extra}) + "\n"
                       for (tl, m), a in zip(self.labels, accuracies, strict=True))
        data = text.encode()
        with deferred_interrupts():  # a unit's lines go to disk whole or not at all (short of SIGKILL)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
        self.done[(variant.key, chip)] = list(accuracies)


# ---- the run -----------------------------------------------------------------------------------------
def explore(variants: list[Variant], compile_variant: Callable[[Variant], Any], cfg: Any,
            config: dict[str, Any], out_dir: Path, resume: bool = False, workers: int | None = None,
            address: str | None = None, progress: bool = True,
            say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every unit not yet in DIR/results.jsonl, then write the summary set; returns the summary.

    `compile_variant(variant) -> mapped ModelProto`; `cfg` the EvalConfig every variant is evaluated
    with; `config` what the results file's header records (and --resume compares)."""
    import numpy as np  # noqa: F401  (torch and numpy load only once the options are checked)

    from runtime import contract
    from runtime.evaluate import baseline_accuracy, open_session, prepare_data, run_chip
    from runtime.progress import Progress

    t_start = time.perf_counter()
    paths = output_paths(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = ResultsFile(paths["results"], config, resume)
    chips = list(range(cfg.chips))
    todo = {v.key: [c for c in chips if (v.key, c) not in results.done] for v in variants}
    n_todo = sum(len(c) for c in todo.values())
    skipped = len(variants) * len(chips) - n_todo
    if say is not None and resume:
        say(f"resume: {skipped} of {len(variants) * len(chips)} units already in {paths['results']}, "
            f"{n_todo} to run")

    mapped: dict[str, Any] = {}

    def model_of(v: Variant):
        if v.key not in mapped:
            m = compile_variant(v)
            contract.check_mapped(m, f"variant {v.key}")
            mapped[v.key] = m
        return mapped[v.key]

    first = model_of(variants[0])
    data = prepare_data(first, cfg)
    x, y = data[0], data[1]
    baseline = None
    if cfg.baseline and cfg.metric != "accuracy":  # the digital model is the reference: trivial 1.0 / 0.0
        baseline = 1.0 if cfg.metric == "agreement" else 0.0
    elif cfg.baseline:
        baseline = baseline_accuracy(first, x, y, cfg.batch_size, cfg.threads, cfg.balanced)
    failures: list[str] = []
    unit_seconds: list[float] = []
    with Progress(total=n_todo, desc="explore", unit="units", enabled=progress) as bar:
        if workers is None and address is None:
            for v in variants:
                if not todo[v.key]:
                    continue
                session = open_session(model_of(v), cfg, progress=False, data=data, checked=True)
                for chip in todo[v.key]:
                    bar.set_postfix_str(f"{v.key} chip {chip + 1}/{cfg.chips}")
                    t0 = time.perf_counter()
                    acc = run_chip(session, chip)
                    unit_seconds.append(time.perf_counter() - t0)
                    results.append(v, chip, acc, {"seconds": round(unit_seconds[-1], 3)})
                    bar.update(1)
                    if os.environ.get(PAUSE_ENV):
                        time.sleep(float(os.environ[PAUSE_ENV]))
        else:
            from runtime.parallel import RayPool

            with RayPool(workers, address) as pool:
                data_ref = pool.put(data)
                run_key = (os.getpid(), time.time())
                tasks = []
                by_key = {v.key: v for v in variants}
                for v in variants:
                    if todo[v.key]:
                        model_ref = pool.put(model_of(v).SerializeToString())
                        tasks += [((v.key, c), ((run_key, v.key), model_ref, data_ref, cfg, c))
                                  for c in todo[v.key]]
                for (vkey, chip), res, err in pool.run(tasks):
                    if err is not None:
                        failures.append(f"{vkey} chip {chip}: {' '.join(str(err).split())[:200]}")
                        continue
                    unit_seconds.append(res["seconds"])
                    results.append(by_key[vkey], chip, res["accuracies"],
                                   {"seconds": round(res["seconds"], 3), "pid": res["pid"]})
                    bar.update(1)
    if failures:
        raise AcompileError(f"{len(failures)} unit(s) failed on Ray (the others are in "
                            f"{paths['results']}; --resume runs the rest): {failures[0]}")
    summary = summarize(variants, results, cfg, config, baseline)
    summary["units"] = {"total": len(variants) * len(chips), "run": n_todo, "skipped": skipped,
                        "mean_unit_seconds": sum(unit_seconds) / len(unit_seconds) if unit_seconds else None}
    summary["seconds"] = time.perf_counter() - t_start
    files: dict[Path, Any] = {paths["json"]: json.dumps(summary, indent=1) + "\n",
                              paths["csv"]: csv_text(summary)}
    if len(summary["knob_names"]) in (1, 2):
        files[paths["plot"]] = lambda f: plot_summary(summary, f)
    write_files(files)
    return summary


def summarize(variants: list[Variant], results: ResultsFile, cfg: Any, config: dict[str, Any],
              baseline: float | None) -> dict[str, Any]:
    from runtime.evaluate import summary_rows

    methods = config["compensation"]
    out = []
    for v in variants:
        per_chip = [results.done[(v.key, c)] for c in range(cfg.chips)]
        out.append({"variant": v.key, "knobs": v.knobs,
                    "results": summary_rows(cfg.times, methods, per_chip)})
    knob_names = list(variants[0].knobs) if variants else []
    return {"schema": "acompile.explore-summary/1", "config": config, "knob_names": knob_names,
            "baseline": baseline, "chips": cfg.chips, "variants": out}


# ---- the summary: table, CSV, plot -------------------------------------------------------------------
def _metric(summary: dict[str, Any]) -> tuple[str, str, bool]:
    """(metric, label, shown in %) of a summary (config `metric`, absent: accuracy)."""
    from runtime.results import METRIC_LABELS

    metric = summary.get("config", {}).get("metric") or "accuracy"
    label, pct = METRIC_LABELS.get(metric, (metric, True))
    return metric, label, pct


def table(summary: dict[str, Any]) -> str:
    """variant x (time, compensation) table of mean ± std accuracy (%) (or the --metric) over chips."""
    from runtime.results import _cell

    metric, label, pct = _metric(summary)
    knobs = summary["knob_names"]
    first = summary["variants"][0]["results"] if summary["variants"] else []
    cols = [(r["time"], r["compensation"]) for r in first]
    head = knobs + [f"{t} {m}" for t, m in cols]
    body = []
    for v in summary["variants"]:
        body.append([str(v["knobs"][k]) for k in knobs]
                    + [_cell(metric, r["mean"], r["std"]) for r in v["results"]])
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths, strict=True)) for b in body]
    cfg = summary["config"]
    unit = " %" if pct else ""
    lines.append(f"{label}{unit} (mean ± std over {summary['chips']} chip(s)), data {cfg['data']}"
                 f"{'' if cfg.get('limit') is None else ' (first ' + str(cfg['limit']) + ' images)'}, "
                 f"base target {cfg['target']}, seed {cfg['seed']}")
    if summary.get("baseline") is not None and metric != "accuracy":
        lines.append(f"digital model (onnxruntime): the reference itself ({metric} "
                     f"{_cell(metric, summary['baseline'], 0.0).split(' ±')[0]}{' %' if pct else ''})")
    elif summary.get("baseline") is not None:
        lines.append(f"digital baseline (onnxruntime): {100 * summary['baseline']:.2f} %")
    return "\n".join(lines)


def csv_text(summary: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    knobs = summary["knob_names"]
    w.writerow([*knobs, "time", "t", "compensation", "mean", "std", "n"])
    for v in summary["variants"]:
        for r in v["results"]:
            w.writerow([*(v["knobs"][k] for k in knobs), r["time"], r["t"], r["compensation"],
                        repr(r["mean"]), repr(r["std"]), r["n"]])
    return buf.getvalue()


def plot_summary(summary: dict[str, Any], f: Any) -> None:
    """One knob: accuracy vs the knob, one line per time (a panel per compensation). Two knobs: a
    heatmap of the mean accuracy per (time, compensation)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    _, label, pct = _metric(summary)
    scale = 100 if pct else 1
    ylabel = f"{label} (%)" if pct else label
    knobs = summary["knob_names"]
    variants = summary["variants"]
    cols = [(r["time"], r["compensation"]) for r in variants[0]["results"]]
    times = list(dict.fromkeys(t for t, _ in cols))
    methods = list(dict.fromkeys(m for _, m in cols))
    mean, std = {}, {}
    for v in variants:
        for r in v["results"]:
            mean[(v["variant"], r["time"], r["compensation"])] = scale * r["mean"]
            std[(v["variant"], r["time"], r["compensation"])] = scale * r["std"]
    if len(knobs) == 1:
        k = knobs[0]
        vals = [v["knobs"][k] for v in variants]
        numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in vals)
        xs = vals if numeric else list(range(len(vals)))
        fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
        for ax, m in zip(axes[0], methods, strict=True):
            for t in times:
                ax.errorbar(xs, [mean[(v["variant"], t, m)] for v in variants],
                            yerr=[std[(v["variant"], t, m)] for v in variants], marker="o", capsize=3,
                            label=t)
            if not numeric:
                ax.set_xticks(xs, [str(a) for a in vals])
            ax.set_xlabel(k)
            ax.set_ylabel(ylabel)
            ax.set_title(f"compensation {m}")
            ax.grid(alpha=0.3)
            ax.legend(title="time")
    else:
        ka, kb = knobs
        va = list(dict.fromkeys(v["knobs"][ka] for v in variants))
        vb = list(dict.fromkeys(v["knobs"][kb] for v in variants))
        key = {(v["knobs"][ka], v["knobs"][kb]): v["variant"] for v in variants}
        fig, axes = plt.subplots(len(methods), len(times), figsize=(4 * len(times) + 1, 3.2 * len(methods)),
                                 squeeze=False)
        for i, m in enumerate(methods):
            for j, t in enumerate(times):
                ax = axes[i][j]
                grid = [[mean[(key[(a, b)], t, m)] for b in vb] for a in va]
                im = ax.imshow(grid, cmap="viridis", aspect="auto")
                mid = (min(map(min, grid)) + max(map(max, grid))) / 2
                for r, row in enumerate(grid):
                    for c, val in enumerate(row):
                        ax.text(c, r, f"{val:.2f}" if pct else f"{val:.3g}", ha="center", va="center",
                                fontsize=8, color="k" if val > mid else "w")
                ax.set_xticks(range(len(vb)), [str(b) for b in vb])
                ax.set_yticks(range(len(va)), [str(a) for a in va])
                ax.set_xlabel(kb)
                ax.set_ylabel(ka)
                ax.set_title(f"t={t}, {m}")
                fig.colorbar(im, ax=ax, label=ylabel)
    fig.tight_layout()
    fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
