"""Weights-only robustness check of trained MNIST models: HWA vs plain under weight noise and PCM physics.

    python bench/hwtrain_robustness.py models/mlp-mnist.onnx /tmp/mlp-mnist-plain.onnx [--chips 5]

Not the emulator (`acompile eval` is): no tiles, no DAC/ADC, no output noise. Each analog layer's weights
go onto differential PCM pairs (G = |W| g_max / max|W| on the device of W's sign, the other device at 0
and never programmed), get programming noise, drift and one 1/f read sample from the `pcm` device of
runtime.physics.devices, and are read back as W' = (G+ - G-) max|W| / g_max; "gdc" rescales each layer by
sum|W_n(0)| / sum|W_n(t)| (what a global drift compensation read with a known input estimates).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from hwtrain.export import RECIPE_KEY, read_metadata
from hwtrain.noise import analog_layers
from hwtrain.train import evaluate, load_weights
from models import zoo
from runtime.data import PREPROCESSING_KEY, Preprocessing, load_dataset
from runtime.physics.devices import make_device

TIMES = {"25s": 25.0, "1h": 3600.0, "1d": 86400.0, "1y": 3.15e7}
ETAS = (0.0, 0.038, 0.076, 0.114)


def _load(path: str) -> tuple[torch.nn.Module, Preprocessing, dict]:
    meta = read_metadata(path)
    recipe = json.loads(meta[RECIPE_KEY])
    model = zoo.build(recipe["model"])
    load_weights(model, path)
    return model.eval(), Preprocessing.from_json(meta[PREPROCESSING_KEY]), recipe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--chips", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    test = load_dataset("mnist", "test")
    pcm = make_device("pcm")
    g_max = pcm.g_max
    print("| model | noise/time | compensation | accuracy % (mean ± std over chips) |")
    print("| --- | --- | --- | --- |")
    for path in args.models:
        model, pre, recipe = _load(path)
        clean = {n: m.weight.detach().clone() for n, m in analog_layers(model)}
        name = f"{Path(path).name} ({recipe['algorithm']})"

        def row(label: str, comp: str, accs: list[float], name=name) -> None:
            t = torch.tensor(accs) * 100
            print(f"| {name} | {label} | {comp} | {t.mean():.2f} ± {t.std() if len(accs) > 1 else 0:.2f} |")

        for eta in ETAS:
            accs = []
            for chip in range(args.chips if eta else 1):
                gen = torch.Generator().manual_seed(chip)
                for n, m in analog_layers(model):
                    w = clean[n]
                    m.weight.data.copy_(w + eta * w.abs().max() * torch.randn(w.shape, generator=gen))
                accs.append(evaluate(model, test, pre)["accuracy"])
                for n, m in analog_layers(model):
                    m.weight.data.copy_(clean[n])
            row(f"gaussian eta={eta}", "-", accs)
        for label, t in TIMES.items():
            per_comp: dict[str, list[float]] = {"none": [], "gdc": []}
            for chip in range(args.chips):
                gen = torch.Generator().manual_seed(1000 + chip)
                states = {}
                for n, w in clean.items():
                    w_max = w.abs().max()
                    gp, gm = (w.clamp(min=0) / w_max * g_max), ((-w).clamp(min=0) / w_max * g_max)
                    states[n] = (w_max, gp > 0, gm > 0, pcm.program(gp, gen), pcm.program(gm, gen))
                for comp in per_comp:
                    for n, m in analog_layers(model):
                        w_max, on_p, on_m, sp, sm = states[n]
                        wn = (pcm.read(sp, t, gen) * on_p - pcm.read(sm, t, gen) * on_m) / g_max
                        if comp == "gdc":
                            wn = wn * (clean[n].abs().sum() / w_max) / wn.abs().sum()
                        m.weight.data.copy_(wn * w_max)
                    per_comp[comp].append(evaluate(model, test, pre)["accuracy"])
                for n, m in analog_layers(model):
                    m.weight.data.copy_(clean[n])
            for comp, accs in per_comp.items():
                row(f"PCM t={label}", comp, accs)


if __name__ == "__main__":
    main()
