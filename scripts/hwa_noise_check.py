"""Digital robustness of bundled zoo models to the HWA weight-noise model (torch, not the PCM emulator).

Loads models/<stem>.onnx into its zoo network, injects the training noise of hwtrain.noise (Gaussian,
std = eta x max|W| per crossbar weight tensor, including LSTM / attention / ConvTranspose weights) at
inference, and reports the mean ± std over draws of the test accuracy (classifiers) or of the relative
L2 reconstruction error in pixel space (autoencoder) on the full MNIST test split.

    OMP_NUM_THREADS=1 python scripts/hwa_noise_check.py --eta 0.038 --eta 0.1 lstm-mnist-plain lstm-mnist-hwa
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hwtrain.noise import HWAConfig, apply_hwa  # noqa: E402
from hwtrain.train import batches, load_weights, to_pixels  # noqa: E402
from models import zoo  # noqa: E402
from runtime.data import load_dataset  # noqa: E402


@torch.no_grad()
def score(model: torch.nn.Module, name: str, ds, pre) -> float:
    """Accuracy, or relative L2 error for the autoencoder; the model's current mode decides the noise."""
    hits, err2, ref2 = 0, 0.0, 0.0
    for x, y in batches(ds, pre, 500):
        out = model(x)
        if zoo.task(name) == "reconstruct":
            px = to_pixels(x, pre)
            err2 += float(((to_pixels(out, pre) - px) ** 2).sum())
            ref2 += float((px**2).sum())
        else:
            hits += int((out.argmax(1) == y).sum())
    return (err2 / ref2) ** 0.5 if zoo.task(name) == "reconstruct" else hits / len(ds)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stems", nargs="+", help="bundled model names, e.g. lstm-mnist-hwa")
    ap.add_argument("--eta", type=float, action="append", help="noise level(s), default 0.038 and 0.1")
    ap.add_argument("--draws", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_dataset("mnist", "test")
    result: dict[str, dict[str, list[float]]] = {}
    for stem in args.stems:
        name = stem.split("-")[0]
        pre = zoo.default_preprocessing(name)
        model = zoo.build(name)
        load_weights(model, REPO / "models" / f"{stem}.onnx")
        result[stem] = {"clean": [score(model.eval(), name, ds, pre), 0.0]}
        for eta in args.eta or [0.038, 0.1]:
            apply_hwa(model, HWAConfig(noise=eta, clip=0.0))
            model.train()  # the noise acts in training mode; these models have no dropout / BN
            vals = []
            for draw in range(args.draws):
                torch.manual_seed(100 + draw)
                vals.append(score(model, name, ds, pre))
            result[stem][str(eta)] = [float(np.mean(vals)), float(np.std(vals))]
        print(stem, result[stem], flush=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
