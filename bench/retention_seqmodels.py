"""Retention of the bundled recurrent, attention and generative models on `pcm` (issue 11): the LSTM and
the ViT-style transformer classifiers (accuracy) and the ConvTranspose autoencoder (relative L2 error of
its reconstructions against the digital model's, and the bundled LeNet-5's accuracy on them), each plain
and hardware-aware trained, on the full MNIST test set (10,000 images), 5 chips, compensation none /
global, from 1 s to 1 year.

    python bench/retention_seqmodels.py --threads 2 [--only lstm,transformer,autoencoder] [--report]

Writes bench/retention-seqmodels/{model}-{kind}.json, bench/RESULTS-seqmodels.md (the tables), the
"Retention on PCM" section of each model's card (models/{model}-mnist-{kind}.md, between the markers
`<!-- retention:start -->` / `<!-- retention:end -->`) and the plot bench/retention-seqmodels.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from models import model_path

BENCH = Path(__file__).resolve().parent
OUT = BENCH / "retention-seqmodels"
TIMES = [1.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0]
KINDS = ("plain", "hwa")
COMPS = ["none", "global"]
CHIPS = 5
MODELS = {"lstm": "classifier", "transformer": "classifier", "autoencoder": "reconstruction"}


def _file(name: str, kind: str) -> str:
    return f"{name}-mnist-{kind}.onnx"


def _config(metric: str, threads: int):
    from runtime.evaluate import EvalConfig

    return EvalConfig(data="mnist", times=TIMES, chips=CHIPS, compensation=COMPS, seed=0, calib=1000,
                      threads=threads, metric=metric)


def run_classifier(name: str, kind: str, threads: int) -> dict:
    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime.evaluate import evaluate

    mapped, _ = map_model(model_path(_file(name, kind)), load_target("pcm"))
    res = evaluate(mapped, _config("accuracy", threads), progress=True)
    res["model"] = f"models/{_file(name, kind)}"
    return res


def run_autoencoder(kind: str, threads: int) -> dict:
    """rel-error of the reconstructions and LeNet-5's accuracy on them, from the same outputs of every
    chip, time and compensation (the chips, noise and compensation of `acompile eval`, run_chip's order)."""
    import onnxruntime as ort
    import torch

    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from runtime import compensation as comp
    from runtime.evaluate import Fidelity, make_generator, open_session, summary_rows

    t0 = time.time()
    torch.set_num_threads(threads)
    mapped, _ = map_model(model_path(_file("autoencoder", kind)), load_target("pcm"))
    s = open_session(mapped, _config("rel-error", threads), progress=False)
    lenet = ort.InferenceSession(str(model_path("lenet5-mnist.onnx")), providers=["CPUExecutionProvider"])
    lenet_in = lenet.get_inputs()[0].name

    def lenet_acc(images: np.ndarray) -> float:
        pred = np.concatenate([lenet.run(None, {lenet_in: images[i:i + 1000]})[0].argmax(1)
                               for i in range(0, len(images), 1000)])
        return float((pred == s.y).mean())

    emu, cfg, bs = s.emu, s.cfg, s.batch_size
    rel, acc = [], []
    for chip in range(cfg.chips):
        emu.program(cfg.seed, chip, s.xc[: cfg.dac_calib_images], bs)
        rel_c, acc_c = [], []
        for ti, t in enumerate(cfg.times):
            emu.set_time(t, cfg.seed, chip, ti)
            for ci, m in enumerate(s.methods):
                gen = make_generator(emu.device, cfg.seed, chip, 2, ti, ci)
                emu.compensate(m, s.xc[: cfg.calib], bs, gen)
                emu._set_generator(gen)
                outs = np.concatenate([emu.run(s.x[i:i + bs]).cpu().numpy() for i in range(0, len(s.x), bs)])
                f = Fidelity()
                f.add(outs, s.ref)
                rel_c.append(f.value("rel-error"))
                acc_c.append(lenet_acc(outs.astype(np.float32)))
            comp.reset(emu.layers, emu.bn_layers)
        rel.append(rel_c)
        acc.append(acc_c)
        print(f"autoencoder-{kind}: chip {chip + 1}/{cfg.chips} done", flush=True)
    return {**s.header, "model": f"models/{_file('autoencoder', kind)}",
            "baseline": {"rel_error": 0.0, "lenet_accuracy": lenet_acc(s.ref.astype(np.float32)),
                         "lenet_accuracy_on_inputs": lenet_acc(s.x.astype(np.float32))},
            "results": summary_rows(cfg.times, s.methods, rel),
            "lenet_results": summary_rows(cfg.times, s.methods, acc), "seconds": time.time() - t0}


def _load(name: str, kind: str) -> dict | None:
    p = OUT / f"{name}-{kind}.json"
    return json.loads(p.read_text()) if p.exists() else None


def _row(label: str, rows: list[dict], comp_: str, scale: float, fmt: str) -> str:
    cells = [f"{scale * r['mean']:{fmt}} ± {scale * r['std']:{fmt}}" for r in rows
             if r["compensation"] == comp_]
    return f"| {label} | {comp_} | " + " | ".join(cells) + " |"


def markdown(name: str) -> str:
    runs = {k: r for k in KINDS if (r := _load(name, k))}
    if not runs:
        return ""
    first = next(iter(runs.values()))
    head = ("| model | compensation | " + " | ".join(r["time"] for r in first["results"]
                                                  if r["compensation"] == COMPS[0]) + " |")
    rule = "| --- | --- |" + " --- |" * len(TIMES)
    lines = []
    if MODELS[name] == "classifier":
        base = ", ".join(f"{k} {100 * r['baseline']['accuracy']:.2f} %" for k, r in runs.items())
        lines += [f"MNIST test ({first['n_images']} images), {first['chips']} chips, accuracy in % "
                  f"(mean ± std over chips); digital (onnxruntime): {base}", "", head, rule]
        lines += [_row(f"`{r['model']}`", r["results"], c, 100, ".2f") for r in runs.values() for c in COMPS]
        return "\n".join(lines)
    base = ", ".join(f"{k} {100 * r['baseline']['lenet_accuracy']:.2f} %" for k, r in runs.items())
    lines += [f"MNIST test ({first['n_images']} images), {first['chips']} chips. Relative L2 error of the "
              "reconstructions against the digital model's (mean ± std over chips):", "", head, rule]
    lines += [_row(f"`{r['model']}`", r["results"], c, 1, ".4f") for r in runs.values() for c in COMPS]
    lines += ["", "The bundled LeNet-5's accuracy (%) on the reconstructions (on the digital model's "
              f"reconstructions: {base}; on the original images "
              f"{100 * first['baseline']['lenet_accuracy_on_inputs']:.2f} %):", "", head, rule]
    lines += [_row(f"`{r['model']}`", r["lenet_results"], c, 100, ".2f")
              for r in runs.values() for c in COMPS]
    return "\n".join(lines)


def plot(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(n, "results", "accuracy (%)", 100) for n in ("lstm", "transformer")]
    panels += [("autoencoder", "results", "rel. L2 error", 1), ("autoencoder", "lenet_results",
                                                                 "LeNet-5 accuracy on outputs (%)", 100)]
    panels = [p for p in panels if any(_load(p[0], k) for k in KINDS)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, (name, key, ylabel, scale) in zip(axes[0], panels, strict=True):
        for kind, color in zip(KINDS, ("C0", "C1"), strict=True):
            res = _load(name, kind)
            if res is None:
                continue
            for c, style in (("global", "-"), ("none", ":")):
                rows = [r for r in res[key] if r["compensation"] == c]
                ax.errorbar([r["t"] for r in rows], [scale * r["mean"] for r in rows],
                            yerr=[scale * r["std"] for r in rows], color=color, ls=style, marker="o",
                            capsize=2, label=f"{kind} {c}")
        ax.set_xscale("log")
        ax.set_title(name)
        ax.set_xlabel("time after programming (s)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Recurrent, attention and generative models on PCM (target pcm)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def card_section(name: str) -> str:
    """The card's retention section: this model's table (both twins, for comparison) and how it maps."""
    how = {"lstm": "the LSTM's input and recurrent weights on one array `[W^T; R^T]` (156 x 512: 3 tiles of "
                   "256x256 with the head), one analog read per time step (28 per image); gates and cell "
                   "update digital",
           "transformer": "the patch embedding, every attention projection (fused Q/K/V in-projection, "
                          "output projection), the MLPs and the head on tiles; QK^T and AV (two "
                          "activations), LayerNorm, Softmax and GELU digital",
           "autoencoder": "every Conv, Linear and ConvTranspose (as the equivalent conv) on tiles"}[name]
    return ("## Retention on PCM\n\n"
            f"`acompile` maps {how}. Target `pcm` (8-bit DAC / ADC, output noise 0.04, programming noise, "
            "drift, 1/f read noise), compensation none / global, from `python bench/retention_seqmodels.py "
            f"--threads 2 --only {name}` (all numbers in `bench/RESULTS-seqmodels.md`, plot "
            "`bench/retention-seqmodels.png`):\n\n" + markdown(name))


def update_cards(names: list[str]) -> None:
    start, end = "<!-- retention:start -->", "<!-- retention:end -->"
    for name in names:
        if not any(_load(name, k) for k in KINDS):
            continue
        block = f"{start}\n{card_section(name)}\n{end}"
        for kind in KINDS:
            card = BENCH.parent / "models" / f"{name}-mnist-{kind}.md"
            text = card.read_text()
            if start in text and end in text:
                head, rest = text.split(start, 1)
                text = head + block + rest.split(end, 1)[1]
            else:
                text = text.rstrip("\n") + "\n\n" + block + "\n"
            card.write_text(text)


HEADER = """# Recurrent, attention and generative models on PCM

`python bench/retention_seqmodels.py --threads 2` (target `pcm`: 8-bit DAC / ADC, output noise 0.04,
programming noise, drift, 1/f read noise). The LSTM's input and recurrent weights are analog (one array
per direction, one read per time step), the transformer's projections are analog (QK^T and AV digital),
the autoencoder's Conv, Linear and ConvTranspose layers are analog. Models and recipes: models/*.md.
Plot: `bench/retention-seqmodels.png`.

"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=",".join(MODELS), help="comma list of " + ", ".join(MODELS))
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--report", action="store_true", help="Only merge existing JSONs: tables and plot.")
    a = ap.parse_args()
    names = [n.strip() for n in a.only.split(",") if n.strip()]
    kinds = [k.strip() for k in a.kinds.split(",") if k.strip()]
    bad = [n for n in names if n not in MODELS] + [k for k in kinds if k not in KINDS]
    if bad:
        ap.error(f"unknown model or kind: {bad[0]}")
    OUT.mkdir(parents=True, exist_ok=True)
    if not a.report:
        for name in names:
            for kind in kinds:
                res = run_autoencoder(kind, a.threads) if name == "autoencoder" else \
                    run_classifier(name, kind, a.threads)
                (OUT / f"{name}-{kind}.json").write_text(json.dumps(res, indent=1) + "\n")
                print(f"{name}-{kind}: {res['seconds']:.0f} s", flush=True)
    tables = [f"## {name}\n\n{text}" for name in MODELS if (text := markdown(name))]
    print("\n\n".join(tables))
    (BENCH / "RESULTS-seqmodels.md").write_text(HEADER + "\n\n".join(tables) + "\n")
    update_cards(list(MODELS))
    plot(BENCH / "retention-seqmodels.png")


if __name__ == "__main__":
    main()
