"""Benchmark: compile time and peak memory of `acompile` on the full ResNet-50-sized network.

    python bench/bench_compile.py [--repeat 3] [--target pcm] [--pack] [--dynamo]

Exports models/archs.resnet50 (25.5M conv/fc weights, 224x224) once with torch (not timed), then runs
`python -m compiler.cli MODEL -q` as a subprocess per repeat: wall time and peak RSS of that process
(resource.getrusage(RUSAGE_CHILDREN).ru_maxrss). Also times the in-process stages once (map_model,
serialization + reports) without interpreter start-up.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--target", default="pcm")
    ap.add_argument("--pack", action="store_true")
    ap.add_argument("--dynamo", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        from models.archs import export, resnet50

        model, x = resnet50()
        n_weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight") and p.ndim > 1)
        src = export(model, x, Path(tmp) / "resnet50.onnx", dynamo=args.dynamo)
        del model
        size_mb = src.stat().st_size / 1e6
        cmd = [sys.executable, "-m", "compiler.cli", str(src), "--target", args.target, "-q"]
        if args.pack:
            cmd.append("--pack")
        walls = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            walls.append(time.perf_counter() - t0)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB

        from compiler.pipeline import compile_model
        from compiler.targets import load_target

        t0 = time.perf_counter()
        res = compile_model(src, load_target(args.target), Path(tmp) / "inproc.onnx", pack=args.pack)
        inproc = time.perf_counter() - t0
        t = res.report["totals"]
    print(f"model: ResNet-50 (models/archs.resnet50), {n_weights:,} conv/fc weights, {size_mb:.1f} MB ONNX, "
          f"{'dynamo' if args.dynamo else 'legacy'} export")
    print(f"target: {args.target}{' --pack' if args.pack else ''}; tiles {t['tiles']}, chips {t['chips']}, "
          f"utilization {100 * t['utilization']:.1f} %")
    print(f"CLI wall time (incl. interpreter start): median {statistics.median(walls):.2f} s, "
          f"min {min(walls):.2f} s over {args.repeat} runs")
    print(f"in-process compile_model: {inproc:.2f} s")
    print(f"peak RSS of the compile process: {peak_mb:.0f} MiB")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}")


if __name__ == "__main__":
    main()
