"""The Joshi et al. 2020 retention study on the bundled ResNet-32s: plain (Idelbayev) vs HWA-fine-tuned.

    python bench/retention_resnet32.py --threads 2 [--only plain|hwa] [--parts headline,trend,jpeg,test1k]
    python bench/retention_resnet32.py --screen CANDIDATE.onnx [--chips 3] [--digital LAYER,...]
    python bench/retention_resnet32.py --only hwa --replicate free-rows [--parts ...]

Both models are compiled for target `pcm` and emulated over simulated time with every compensation
(none, global, column, bn with 2,600 calibration images as Joshi used, global+bn). The budget is spent
where the table needs it (each JSON says which images and chips it used):

* headline: exact test images `cifar10-exact` (test-partial, 4,599 images, class-balanced accuracy),
  t = 1 d and 1 y, 10 chips;
* trend: the same images at t = 1 s, 1 h, 30 d, 3 chips;
* test1k: exact `test-1k` (1,000 class-balanced images), t = 1 d and 1 y, 10 chips;
* jpeg: the full JPEG-75 test set (10,000 images), t = 1 d and 1 y, 1 chip.

Writes bench/retention-resnet32/{model}-{part}.json, the merged tables (RESULTS-finetune.md takes them)
and a plot comparing the two models per compensation (retention-resnet32.png).

--screen: a fine-tuning candidate before it is bundled, on the headline images (exact test-partial,
class-balanced) at 1 h, 1 d, 1 y with global, bn, global+bn on a few chips (~6 min with 3 chips); writes
bench/retention-resnet32/screen-{stem}.json and prints each result against the candidate's digital
accuracy.

--replicate free-rows: target `pcm` with [mapping] replicate = "free-rows" (the 27-row first convolution
and the 64-row classifier held 9 and 4 times in the rows their tiles leave free); its JSONs end in
`-replicated`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models import model_path

MODELS = {"plain": model_path("resnet32-cifar10-plain.onnx"), "hwa": model_path("resnet32-cifar10-hwa.onnx")}
METHODS = ["none", "global", "column", "bn", "global+bn"]
PARTS = {  # name: data, balanced, times (s), chips
    "headline": ("cifar10-exact", True, [86400.0, 365 * 86400.0], 10),
    "trend": ("cifar10-exact", True, [1.0, 3600.0, 30 * 86400.0], 3),
    "test1k": ("cifar10-exact:test-1k", True, [86400.0, 365 * 86400.0], 10),
    "jpeg": ("cifar10", False, [86400.0, 365 * 86400.0], 1),
}
BENCH = Path(__file__).resolve().parent
OUT = BENCH / "retention-resnet32"


def pcm(replicate: str = "none") -> dict:
    """Target `pcm`, its [mapping] replicate policy set (as `--replicate` sets it)."""
    from compiler.targets import load_target, with_overrides

    return with_overrides(load_target("pcm"), replicate=replicate)


def run(name: str, part: str, threads: int, replicate: str = "none") -> dict:
    from compiler.pipeline import map_model
    from runtime.evaluate import EvalConfig, evaluate

    data, balanced, times, chips = PARTS[part]
    mapped, _ = map_model(MODELS[name], pcm(replicate))
    cfg = EvalConfig(data=data, times=times, chips=chips, compensation=METHODS, seed=0, calib=2600,
                     threads=threads, balanced=balanced)
    res = evaluate(mapped, cfg, progress=True)
    res["model"] = f"models/{MODELS[name].name}"
    res["part"] = part
    res["replicate"] = replicate
    return res


def screen(path: Path, chips: int, threads: int, digital: list[str] | None = None,
           replicate: str = "none") -> dict:
    """The candidate at 1 h / 1 d / 1 y on the headline images, against its own digital accuracy
    (`digital`: layers kept off the crossbars, to see what one layer costs)."""
    from compiler.pipeline import map_model
    from runtime.evaluate import EvalConfig, evaluate

    mapped, _ = map_model(path, pcm(replicate), digital=digital)
    cfg = EvalConfig(data="cifar10-exact", times=[3600.0, 86400.0, 365 * 86400.0], chips=chips,
                     compensation=["global", "bn", "global+bn"], seed=0, calib=2600, threads=threads,
                     balanced=True)
    res = evaluate(mapped, cfg, progress=True)
    res["model"] = str(path)
    res["part"] = "screen"
    res["digital_layers"] = digital or []
    res["replicate"] = replicate
    base = res["baseline"]["accuracy"]
    print(f"{path}: digital {100 * base:.2f} % (exact test-partial, class-balanced)")
    for r in res["results"]:
        print(f"  {r['time']:>3} {r['compensation']:<9} {100 * r['mean']:.2f} ± {100 * r['std']:.2f}"
              f"  ({100 * (r['mean'] - base):+.2f})")
    return res


REP = "-replicated"  # the JSONs of --replicate free-rows


def merged(name: str, rep: str = "") -> dict[str, dict]:
    """time label -> compensation -> row, over the exact test-partial parts (headline + trend)."""
    rows: dict[str, dict] = {}
    for part in ("trend", "headline"):
        p = OUT / f"{name}-{part}{rep}.json"
        if p.exists():
            for r in json.loads(p.read_text())["results"]:
                rows.setdefault(r["time"], {})[r["compensation"]] = r
    order = ["1s", "1h", "1d", "30d", "1y"]
    return {t: rows[t] for t in order if t in rows}


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METHODS), figsize=(16, 3.6), sharey=True)
    secs = {"1s": 1, "1h": 3600, "1d": 86400, "30d": 30 * 86400, "1y": 365 * 86400}
    for name, rep, style in (("plain", "", "--"), ("hwa", "", "-"), ("hwa", REP, "-.")):
        rows = merged(name, rep)
        head = OUT / f"{name}-headline{rep}.json"
        if not rows or not head.exists():
            continue
        base = 100 * json.loads(head.read_text())["baseline"]["accuracy"]
        for ax, m in zip(axes, METHODS, strict=True):
            ts = [t for t in rows if m in rows[t]]
            mu = [100 * rows[t][m]["mean"] for t in ts]
            sd = [100 * rows[t][m]["std"] for t in ts]
            line = ax.errorbar([secs[t] for t in ts], mu, yerr=sd, ls=style, marker="o", capsize=2,
                               label=f"{name}{' free-rows' if rep else ''} (digital {base:.2f} %)")
            ax.axhline(base, ls=":", color=line[0].get_color(), lw=0.8)
            ax.set_title(m)
            ax.set_xscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_xlabel("time after programming (s)")
    axes[0].set_ylabel("class-balanced accuracy (%), exact test images")
    axes[0].set_ylim(bottom=max(0, axes[0].get_ylim()[0]))
    axes[-1].legend(loc="lower left", fontsize=8)
    shown_rep = (OUT / f"hwa-headline{REP}.json").exists()
    fig.suptitle("ResNet-32 on PCM (target pcm): plain pretrained vs acompile finetune (HWA)"
                 + ("; dash-dot: small layers replicated in free rows" if shown_rep else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(name: str, rep: str = "") -> str:
    rows = merged(name, rep)
    if not rows:
        return ""
    head = json.loads((OUT / f"{name}-headline{rep}.json").read_text())
    lines = [f"digital (onnxruntime, class-balanced, exact test-partial): "
             f"{100 * head['baseline']['accuracy']:.2f} %", "",
             "| time | chips | " + " | ".join(METHODS) + " |", "| --- | --- |" + " --- |" * len(METHODS)]
    for t, per in rows.items():
        n = next(iter(per.values()))["n"]
        cells = [f"{100 * per[m]['mean']:.2f} ± {100 * per[m]['std']:.2f}" if m in per else ""
                 for m in METHODS]
        lines.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def part_table(name: str, part: str, rep: str = "") -> str:
    """The table of one extra part (test1k, jpeg): times x compensations."""
    p = OUT / f"{name}-{part}{rep}.json"
    if not p.exists():
        return ""
    res = json.loads(p.read_text())
    label = {"test1k": "Exact `test-1k`", "jpeg": "Full JPEG-75 test set"}[part]
    kind = "class-balanced accuracy" if PARTS[part][1] else "accuracy"
    lines = [f"{label}: {res['n_images']} images, {res['chips']} chip(s), {kind}; digital (onnxruntime) "
             f"{100 * res['baseline']['accuracy']:.2f} %", "",
             "| time | " + " | ".join(METHODS) + " |", "| --- |" + " --- |" * len(METHODS)]
    by_time: dict[str, dict] = {}
    for r in res["results"]:
        by_time.setdefault(r["time"], {})[r["compensation"]] = r
    for t, per in by_time.items():
        cells = [f"{100 * per[m]['mean']:.2f} ± {100 * per[m]['std']:.2f}" if m in per else ""
                 for m in METHODS]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=sorted(MODELS), default=None)
    ap.add_argument("--parts", default="headline,trend,test1k,jpeg")
    ap.add_argument("--report", action="store_true", help="Only merge existing JSONs: tables and plot.")
    ap.add_argument("--screen", type=Path, default=None, metavar="CANDIDATE.onnx",
                    help="Only screen this fine-tuned model (1 h, 1 d, 1 y; global, bn, global+bn).")
    ap.add_argument("--chips", type=int, default=3, help="Chips of --screen.")
    ap.add_argument("--digital", default="", help="--screen: comma list of layers kept digital.")
    ap.add_argument("--replicate", choices=["none", "free-rows"], default="none",
                    help="Target pcm's [mapping] replicate (JSONs of free-rows end in -replicated).")
    a = ap.parse_args()
    rep = REP if a.replicate != "none" else ""
    OUT.mkdir(parents=True, exist_ok=True)
    if a.screen is not None:
        digital = [d for d in a.digital.split(",") if d]
        res = screen(a.screen, a.chips, a.threads, digital, a.replicate)
        tag = "-digital-" + "-".join(d.strip("/").replace("/", "_") for d in digital) if digital else ""
        (OUT / f"screen-{a.screen.stem}{tag}{rep}.json").write_text(json.dumps(res, indent=1) + "\n")
        return
    if not a.report:
        for name in [a.only] if a.only else list(MODELS):
            for part in [p.strip() for p in a.parts.split(",") if p.strip()]:
                res = run(name, part, a.threads, a.replicate)
                (OUT / f"{name}-{part}{rep}.json").write_text(json.dumps(res, indent=1) + "\n")
                print(f"{name} {part}: done in {res['seconds']:.0f} s", flush=True)
    for name in MODELS:
        for r in ("", REP):
            tables = (markdown(name, r), part_table(name, "test1k", r), part_table(name, "jpeg", r))
            text = "\n\n".join(t for t in tables if t)
            if text:
                print(f"\n### {name}{' (target pcm, replicate = free-rows)' if r else ''}\n\n{text}")
    plot(BENCH / "retention-resnet32.png")


if __name__ == "__main__":
    main()
