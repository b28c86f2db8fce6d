"""Benchmark: hardware-aware fine-tuning speed of the bundled ResNet-32 on CPU (issue: finetune).

    python bench/bench_finetune.py --threads 2 [--images 6400] [--batch-size 128] [--json out.json]

Variants, in one run, on the same CIFAR-10 JPEG training images (decoded once, cached), same batch size,
same threads: the digital floor (the same graph trained without noise or periphery), and the HWA
forward on the `pcm` target (device programming noise, 8-bit DAC, output noise, 8-bit ADC per tile row
block) with NCHW or channels-last activations, in fp32 or bf16 autocast. Each variant trains on the
first `--images` images after two warm-up batches; seconds per epoch are images/s extrapolated to the
50,000 images of an epoch. Data loading (crop, flip, normalization) runs in its background thread as in
`acompile finetune`. The CPU's bf16 capability is printed (it decides whether bf16 can pay off).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from compiler.targets import load_target
from hwtrain.analog_hwa import HWAKnobs
from hwtrain.finetune import (
    FinetuneConfig,
    batch_stream,
    clip_weights,
    make_optimizer,
    prepare,
)
from models import model_path
from runtime.data import load_dataset

MODEL = model_path("resnet32-cifar10-plain.onnx")
EPOCH_IMAGES = 50_000
VARIANTS = [  # name, HWA on, channels-last, precision
    ("digital floor (no HWA), fp32, channels-last", False, True, "fp32"),
    ("HWA pcm, fp32, NCHW", True, False, "fp32"),
    ("HWA pcm, fp32, channels-last (acompile finetune default)", True, True, "fp32"),
    ("HWA pcm, bf16 autocast, channels-last", True, True, "bf16"),
]


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = text.split("flags")[1].split("\n")[0] if "flags" in text else ""
    have = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")),
                 "?")
    return f"{model}; {' '.join(have)}"


def run_variant(ds, hwa: bool, channels_last: bool, precision: str, images: int, batch: int) -> dict:
    prepared = prepare(MODEL, load_target("pcm"), knobs=HWAKnobs())
    cfg = FinetuneConfig(epochs=1, lr=0.01, batch_size=batch, channels_last=channels_last)
    m, ctx = prepared.module, prepared.ctx
    ctx.channels_last = channels_last
    opt = make_optimizer(m, cfg)
    m.train()
    rng = np.random.default_rng(0)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    seen, t0 = 0, None
    for i, (x, y) in enumerate(batch_stream(ds, prepared.preprocessing, batch, rng, augment=True)):
        if i == 2:
            t0, seen = time.perf_counter(), 0
        ctx.active = hwa
        ctx.observe = i < 2 or i % 20 == 0
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            out = m(x)
        loss = F.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if hwa:
            clip_weights(prepared, cfg.knobs.clip)
        seen += len(y)
        if t0 is not None and seen >= images:
            break
    dt = time.perf_counter() - t0
    return {"images": seen, "seconds": dt, "images_per_s": seen / dt, "epoch_s": EPOCH_IMAGES * dt / seen}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=6400)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset("cifar10", "train")
    print(f"CPU: {cpu_flags()}; torch {torch.__version__}; threads {a.threads}; batch {a.batch_size}; "
          f"{a.images} timed images per variant (after 2 warm-up batches)")
    rows = []
    for name, hwa, cl, prec in VARIANTS:
        r = run_variant(ds, hwa, cl, prec, a.images, a.batch_size)
        rows.append({"variant": name, **r})
        print(f"{name:58s} {r['images_per_s']:7.1f} img/s   {r['epoch_s'] / 60:5.2f} min per 50k-image epoch")
    if a.json:
        a.json.write_text(json.dumps({"cpu": cpu_flags(), "machine": platform.machine(), "threads": a.threads,
                                      "batch_size": a.batch_size, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
