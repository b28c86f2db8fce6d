"""Which side of the GAN does the mixed-precision PCM update break? (issue 12, bench/RESULTS-inmemory.md §6)

    python bench/gan_diagnosis.py [--epochs 3] [--limit 20000]

The `gan` network of `acompile train gan` (same script, seed, data and periphery) with the exact fp32
update on all four arrays, mixed precision on the generator only, on the discriminator only, on both, and
on both with a PCM device without the first-pulse overshoot after a RESET (PCM_SET_MEAN_N = PCM_SET_STD_N
= 0: an ablation of the device, not a device). One line per variant: Frechet distance (LeNet fc2) and
class spread (bits) after each epoch; the JSON beside this file keeps them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

VARIANTS = ("fp32-update", "mp-generator", "mp-discriminator", "mp-both", "mp-both-no-first-pulse")


def run(variant: str, epochs: int, limit: int) -> dict:
    import torch

    from hwtrain.inmemory import nets, train_nets
    from hwtrain.inmemory.algorithms.fp32 import FP32Rule
    from hwtrain.inmemory.params import resolve
    from runtime.physics import constants as C

    make_rule, saved = nets.make_rule, (C.PCM_SET_MEAN_N, C.PCM_SET_STD_N)
    built = []

    def rule(algorithm, device, p, w, gen, batch_size, w_max):  # arrays are built g1, g2, d1, d2
        side = "generator" if len(built) % 4 < 2 else "discriminator"
        built.append(side)
        mp = variant.startswith("mp-both") or variant == f"mp-{side}"
        return make_rule(algorithm, device, p, w, gen, batch_size, w_max) if mp else FP32Rule(w)

    nets.make_rule = rule
    if variant == "mp-both-no-first-pulse":
        C.PCM_SET_MEAN_N = C.PCM_SET_STD_N = 0.0
    try:
        torch.set_num_threads(1)
        p = resolve({"limit": float(limit)})
        m = train_nets.train_net("gan", "mnist", "mixed-precision", "pcm", epochs, p=p, batch_size=None,
                                 lr=None, seed=0, progress=False)
    finally:
        nets.make_rule = make_rule
        C.PCM_SET_MEAN_N, C.PCM_SET_STD_N = saved
    return {"variant": variant, "frechet": [h["frechet_lenet"] for h in m["history"]],
            "class_spread_bits": [h["class_entropy_bits"] for h in m["history"]],
            "seconds_per_epoch": m["seconds_per_epoch"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=20000)
    args = ap.parse_args()
    rows = []
    for v in VARIANTS:
        r = run(v, args.epochs, args.limit)
        rows.append(r)
        print(f"{v:24s} Frechet {' '.join(f'{x:.1f}' for x in r['frechet'])}   spread "
              f"{' '.join(f'{x:.2f}' for x in r['class_spread_bits'])}", flush=True)
    out = Path(__file__).resolve().parent / "inmemory-gan-diagnosis.json"
    out.write_text(json.dumps({"epochs": args.epochs, "limit": args.limit, "runs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
