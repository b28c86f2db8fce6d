"""Benchmarks of in-memory training; results are recorded in bench/RESULTS-inmemory.md.

    python bench/bench_inmemory.py mixed-precision --epochs 20      # MP on PCM vs fp32 baseline, full MNIST
    python bench/bench_inmemory.py tiki-taka --limit 10000 --epochs 2 # TTv2/c-TTv2/AGAD/SGD x offsets
    python bench/bench_inmemory.py sensitivity --limit 10000          # Gokmen-style sweeps (3 panels)

CPU is scarce here: runs are single-threaded and the Tiki-Taka / sensitivity tables use subsets (stated
in the output). Each command writes JSON (and PNG plots) next to this file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hwtrain.inmemory.cli import run_sweep
from hwtrain.inmemory.run import train_inmemory

BENCH = Path(__file__).resolve().parent


def _train(algorithm: str, device: str, epochs: int, params: dict, lr: float, batch: int, seed: int) -> dict:
    return train_inmemory("mlp", "mnist", algorithm, device, epochs, params=params, batch_size=batch, lr=lr,
                          seed=seed, out=None, json_path=None, resume=None, compute="cpu", progress=False)


def bench_mixed_precision(args: argparse.Namespace) -> None:
    """Full-MNIST mixed-precision on PCM and the same script's fp32 SGD baseline."""
    params = {"lr_decay": args.lr_decay}
    out = {}
    for alg, dev in (("fp32", "ideal"), ("mixed-precision", "pcm")):
        out[alg] = _train(alg, dev, args.epochs, params, args.lr, args.batch, args.seed)
        m = out[alg]
        print(f"{alg}: {100 * m['test_accuracy']:.2f} %  ({m['seconds_per_epoch']:.1f} s/epoch)")
    (BENCH / "inmemory-mixed-precision.json").write_text(json.dumps(out, indent=2))


def bench_tiki_taka(args: argparse.Namespace) -> None:
    """Test accuracy of SGD / TTv2 / c-TTv2 / AGAD on soft-bounds devices across symmetry-point offsets."""
    offsets = [float(v) for v in args.offsets.split(",")]
    algorithms = ["sgd", "ttv2", "cttv2", "agad"]
    tag = f"asym{args.asymmetry:g}"
    path = BENCH / f"inmemory-tiki-taka-{tag}.json"
    rerun = args.algorithms.split(",") if args.algorithms else algorithms
    # keep rows of algorithms not re-run (the table is built up algorithm by algorithm on a scarce CPU)
    rows = [r for r in json.loads(path.read_text())["rows"] if r["algorithm"] not in rerun] \
        if path.exists() else []
    for alg in rerun:
        for off in offsets:
            params = {"offset": off, "limit": args.limit, "test_limit": args.test_limit,
                      "asymmetry": args.asymmetry}
            m = _train(alg, "softbounds", args.epochs, params, args.lr, args.batch, args.seed)
            rows.append({"algorithm": alg, "offset": off, "test_accuracy": m["test_accuracy"],
                         "seconds_per_epoch": m["seconds_per_epoch"]})
            print(f"{alg} offset {off}: {100 * m['test_accuracy']:.2f} %", flush=True)
    rows.sort(key=lambda r: (algorithms.index(r["algorithm"]), r["offset"]))
    path.write_text(json.dumps(
        {"limit": args.limit, "test_limit": args.test_limit, "epochs": args.epochs, "lr": args.lr,
         "batch_size": args.batch, "asymmetry": args.asymmetry, "rows": rows}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.4))
    for alg in algorithms:
        pts = [r for r in rows if r["algorithm"] == alg]
        ax.plot([r["offset"] for r in pts], [100 * r["test_accuracy"] for r in pts], "o-", label=alg)
    ax.set_xlabel("symmetry-point / reference offset (std; weights in [-1, 1])")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"MLP MNIST ({args.limit or 60000} train imgs, {args.epochs} ep), soft bounds", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(BENCH / f"inmemory-tiki-taka-{tag}.png", dpi=120)


def bench_sensitivity(args: argparse.Namespace) -> None:
    """Analog SGD accuracy vs number of states, up/down asymmetry, device-to-device variation."""
    sweeps = {
        "states": [30, 100, 300, 1000, 3000],
        "asymmetry": [0.0, 0.02, 0.05, 0.1, 0.2],
        "d2d": [0.0, 0.1, 0.3, 0.6],
    }
    fixed = {"limit": args.limit, "test_limit": args.test_limit, "states": 1000}
    results = {}
    for name, values in sweeps.items():
        results[name] = run_sweep("mlp", "mnist", "sgd", args.device, name, values, fixed=fixed,
                                  epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=args.seed)
    (BENCH / "inmemory-sensitivity.json").write_text(json.dumps(
        {"device": args.device, "fixed": fixed, "epochs": args.epochs, "results": results}, indent=2))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3.2), sharey=True)
    for ax, (name, rows) in zip(axes, results.items(), strict=True):
        ax.plot([r[name] for r in rows], [100 * r["test_accuracy"] for r in rows], "o-")
        if name == "states":
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy (%)")
    fig.suptitle(f"Analog SGD ({args.device}), MLP MNIST, {args.limit or 60000} train imgs, {args.epochs} ep",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(BENCH / "inmemory-sensitivity.png", dpi=120)


def main() -> None:
    torch.set_num_threads(1)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    for name in ("mixed-precision", "tiki-taka", "sensitivity"):
        p = sub.add_parser(name)
        p.add_argument("--epochs", type=int, default=20 if name == "mixed-precision" else 1)
        p.add_argument("--batch", type=int, default=25)
        p.add_argument("--lr", type=float, default=0.1)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--limit", type=int, default=0 if name == "mixed-precision" else 10000)
        p.add_argument("--test-limit", type=int, default=0 if name == "mixed-precision" else 2000)
        p.add_argument("--lr-decay", type=float, default=0.9)
        p.add_argument("--offsets", default="0,0.1,0.3,0.5")
        p.add_argument("--asymmetry", type=float, default=0.0)
        p.add_argument("--device", default="softbounds")
        p.add_argument("--algorithms", default="", help="tiki-taka: re-run only these (comma list)")
    args = ap.parse_args()
    {"mixed-precision": bench_mixed_precision, "tiki-taka": bench_tiki_taka,
     "sensitivity": bench_sensitivity}[args.what](args)


if __name__ == "__main__":
    main()
