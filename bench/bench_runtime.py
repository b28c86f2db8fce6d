"""Benchmark: emulated PCM inference vs onnxruntime fp32 on a ResNet-32-shaped CIFAR-10 model.

    python bench/bench_runtime.py --threads 2 [--images 10000] [--reps 5] [--kernels torch] [--memory]

Same model (models/archs.py resnet32, compiled with `--target pcm`), same CIFAR-10 test images
(runtime.data cifar10), same batch size and thread count for torch and onnxruntime. Emulator = all noise
on (programming, drift, 1/f read noise, output noise), 8-bit DAC / ADC, global drift compensation,
t = 1 day. The engines take whole passes over the images in turn; reports the best pass of each and the
ratio per pair of passes. Programming / calibration / compensation setup is timed separately.
`--memory` also measures the peak RSS of a ResNet-50 (224x224) emulated over 10 chips.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from compiler.pipeline import map_model
from compiler.targets import load_target
from models.archs import ARCHS, export
from runtime.analog_settings import AnalogSettings
from runtime.baseline import OrtBaseline
from runtime.data import default_preprocessing, load_dataset
from runtime.evaluate import Emulator, make_generator


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_speed(threads: int, n_images: int, batch: int, compute: str, kernels: str, reps: int) -> None:
    torch.set_num_threads(threads)
    model, x0 = ARCHS["resnet32"]()
    with tempfile.TemporaryDirectory() as d:
        p = export(model, x0, Path(d) / "r32.onnx", dynamic_batch=True)
        mapped, report = map_model(p, load_target("pcm"))
    data = load_dataset("cifar10", "test").subset(n_images)
    x = default_preprocessing("cifar10").apply(data.x)
    print(f"model: resnet32 (models/archs.py), {report['totals']['analog_layers']} analog layers, "
          f"{report['totals']['tiles']} tiles; {len(x)} CIFAR-10 test images; threads={threads}; "
          f"batch={batch}; {reps} alternating passes")

    ort = OrtBaseline(mapped, threads)
    settings = AnalogSettings.from_target(load_target("pcm"), kernels=kernels)
    emu = Emulator(mapped, settings, compute)
    t0 = time.perf_counter()
    emu.program(0, 0, x[:256], batch)
    emu.set_time(86400.0, 0, 0, 0)
    emu.compensate("global", x[:0], batch, make_generator(emu.device, 0, 0, 2))
    t_setup = time.perf_counter() - t0
    emu._set_generator(make_generator(emu.device, 0, 0, 2, 0, 0))
    batches = [x[i:i + batch] for i in range(0, len(x), batch)]

    def run_emu(xb: np.ndarray) -> None:
        out = emu.executor(torch.from_numpy(xb).to(emu.device))
        if compute == "cuda":
            torch.cuda.synchronize()
        del out

    for xb in {len(b): b for b in batches}.values():  # warm-up, each batch shape once
        ort(xb)
        run_emu(xb)
    # Whole passes, alternating, so slow spells of a shared machine hit both engines alike (interleaving
    # batch by batch would measure each engine with the other's data in the caches)
    t_ort, t_emu = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        for xb in batches:
            ort(xb)
        t1 = time.perf_counter()
        for xb in batches:
            run_emu(xb)
        t_ort.append(t1 - t0)
        t_emu.append(time.perf_counter() - t1)
    ratios = sorted(e / o for e, o in zip(t_emu, t_ort, strict=True))
    n = len(x)
    to, te = min(t_ort), min(t_emu)
    print(f"onnxruntime fp32:        {to:7.2f} s  ({1e3 * to / n:.3f} ms/image)  best of {reps}")
    print(f"emulator (PCM, 8b, GDC, {emu.layers[0].kernels_used()} kernels): {te:7.2f} s  "
          f"({1e3 * te / n:.3f} ms/image)  best of {reps}")
    print(f"ratio emulator / onnxruntime: median {ratios[len(ratios) // 2]:.2f}x  "
          f"(per pass: {', '.join(f'{v:.2f}' for v in ratios)})")
    print(f"emulator setup per (chip, t): program + DAC calibration + set_time + GDC = {t_setup:.2f} s")


def bench_memory(chips: int) -> None:
    torch.set_num_threads(2)
    base = _rss_mb()
    model, x0 = ARCHS["resnet50"]()
    with tempfile.TemporaryDirectory() as d:
        p = export(model, x0, Path(d) / "r50.onnx", dynamic_batch=True)
        mapped, report = map_model(p, load_target("pcm"))
    del model
    emu = Emulator(mapped, AnalogSettings.from_target(load_target("pcm")))
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    t0 = time.perf_counter()
    for chip in range(chips):
        emu.program(0, chip, x[:2], 2)
        emu.set_time(86400.0, 0, chip, 0)
        emu.compensate("global", x[:0], 2, make_generator(emu.device, 0, chip, 2))
        emu.executor(torch.from_numpy(x))
    n_w = sum(ly.geo.rows * ly.geo.cols for ly in emu.layers)
    print(f"memory: resnet50 224x224 ({n_w / 1e6:.1f} M analog weights), {chips} chips (programmed one "
          f"after another, batch 4): peak RSS {_rss_mb():.0f} MB (process start {base:.0f} MB); "
          f"{time.perf_counter() - t0:.1f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3, help="alternating passes over the images per engine")
    ap.add_argument("--compute", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--chips", type=int, default=10)
    ap.add_argument("--kernels", default="auto", choices=["auto", "native", "torch"],
                    help="element-wise tile kernels (runtime/native or eager torch)")
    a = ap.parse_args()
    if a.memory:
        bench_memory(a.chips)
    else:
        bench_speed(a.threads, a.images, a.batch, a.compute, a.kernels, a.reps)


if __name__ == "__main__":
    main()
