"""fp32 vs mixed-precision PCM in-memory training of the networks beyond the MLP (issue 12; after
Nandakumar et al., Front. Neurosci. 2020): cnn (CIFAR-10), charlstm (Tiny Shakespeare), gan (MNIST).
The same script, seed, data order and epochs for both algorithms (train_inmemory -> train_nets.train_net).

    python bench/bench_inmemory_nets.py run cnn --epochs 2                   # both algorithms, in turn
    python bench/bench_inmemory_nets.py run cnn --epochs 2 --algorithms fp32   # one (run two in parallel)
    python bench/bench_inmemory_nets.py report                     # the markdown table from the JSONs

Each run writes bench/inmemory-net-<model>-<algorithm>.json (the gan also -samples.png); `report` prints
the table (and with --append adds it to bench/RESULTS-inmemory.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ALGORITHMS = {"fp32": "ideal", "mixed-precision": "pcm"}
DATASETS = {"cnn": "cifar10", "charlstm": "tinyshakespeare", "gan": "mnist"}


def _path(model: str, algorithm: str, tag: str = "") -> Path:
    return BENCH / f"inmemory-net-{model}-{algorithm}{'-' + tag if tag else ''}.json"


def run(args: argparse.Namespace) -> None:
    import torch

    from hwtrain.inmemory.run import train_inmemory

    torch.set_num_threads(args.threads)
    params = {"limit": args.limit, "test_limit": args.test_limit}
    for item in args.param:
        k, _, v = item.partition("=")
        params[k] = float(v)
    for alg in args.algorithms.split(","):
        path = _path(args.model, alg, args.tag)
        device = args.device if alg == "mixed-precision" and args.device else ALGORITHMS[alg]
        m = train_inmemory(args.model, DATASETS[args.model], alg, device, args.epochs, params=params,
                           batch_size=args.batch, lr=args.lr, seed=args.seed, json_path=None,
                           progress=False, samples_png=path.with_name(path.stem + "-samples.png"))
        m["command"] = "python bench/bench_inmemory_nets.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        m["threads"] = args.threads
        m["cpu_count"] = os.cpu_count()
        path.write_text(json.dumps(m, indent=2))
        print(f"{args.model} {alg}: {json.dumps(m['final'])}  {m['seconds_per_epoch']:.1f} s/epoch",
              flush=True)


def _metric(model: str, rec: dict) -> str:
    if model == "cnn":
        return f"{100 * rec['test_accuracy']:.2f} % / {100 * rec['exact_accuracy']:.2f} %"
    if model == "charlstm":
        return f"{rec['val_bpc']:.3f}"
    return (f"{rec['lenet_confidence']:.3f} / {rec['class_entropy_bits']:.2f} / "
            f"{rec['frechet_lenet']:.1f}")


METRIC_NAMES = {"cnn": "test acc. JPEG test (10k) / exact subset (4,599)",
                "charlstm": "validation bits/char",
                "gan": "LeNet confidence / class spread (bits, max 3.32) / Frechet (LeNet fc2)"}


def report(args: argparse.Namespace) -> None:
    lines = ["| network | data (train) | epochs | metric | initial | fp32 | mixed-precision PCM | "
             "s/epoch fp32 | s/epoch MP | slowdown | SET pulses / weight, per epoch | "
             "refreshes / weight, per epoch |",
             "| --- | --- | ---: | --- | --- | --- | --- | ---: | ---: | ---: | --- | --- |"]
    cmds = []
    for model in DATASETS:
        runs = {alg: json.loads(_path(model, alg).read_text())
                for alg in ALGORITHMS if _path(model, alg).exists()}
        if not runs:
            continue
        fp, mp = runs.get("fp32"), runs.get("mixed-precision")
        one = fp or mp
        size = f"{one['train_images']} images" if "train_images" in one else f"{one['train_chars']} chars"
        pulses = refreshes = slow = "-"
        if mp:
            pulses = ", ".join(f"{h['set_pulses_per_weight']:.2f}" for h in mp["history"])
            refreshes = ", ".join(f"{h['refreshes_per_weight']:.4f}" for h in mp["history"])
        if fp and mp and fp["seconds_per_epoch"] > 0:
            slow = f"{mp['seconds_per_epoch'] / fp['seconds_per_epoch']:.1f}x"
        cells = [model, f"{DATASETS[model]} ({size})", str(one["epochs"]), METRIC_NAMES[model],
                 _metric(model, one["initial"]), _metric(model, fp["final"]) if fp else "-",
                 _metric(model, mp["final"]) if mp else "-",
                 f"{fp['seconds_per_epoch']:.0f}" if fp else "-",
                 f"{mp['seconds_per_epoch']:.0f}" if mp else "-",
                 slow, pulses, refreshes]
        lines.append("| " + " | ".join(cells) + " |")
        for r in runs.values():
            if r.get("command") and r["command"] not in cmds:
                cmds.append(r["command"])
    print("\n".join(lines) + "\n\nCommands:\n\n```sh\n" + "\n".join(cmds) + "\n```")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("model", choices=list(DATASETS))
    r.add_argument("--algorithms", default="fp32,mixed-precision")
    r.add_argument("--epochs", type=int, default=2)
    r.add_argument("--limit", type=int, default=0, help="training images / characters (0 = all)")
    r.add_argument("--test-limit", type=int, default=0)
    r.add_argument("--batch", type=int, default=None)
    r.add_argument("--lr", type=float, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--param", action="append", default=[], help="NAME=VALUE (hwtrain/inmemory/params.py)")
    r.add_argument("--device", default="", help="mixed precision's device (default pcm: SET pulses; any "
                   "registered device: verify writes)")
    r.add_argument("--tag", default="", help="suffix of the JSON name (ablations; not in the report table)")
    sub.add_parser("report")
    args = ap.parse_args()
    run(args) if args.cmd == "run" else report(args)


if __name__ == "__main__":
    main()
