"""`acompile explore` at scale, measured (bench/RESULTS-explore.md, docs/cluster-plan.md).

    python bench/bench_explore.py [--out bench/explore-scale.json] [--chips 4] [--skip-runs]

1. Sizes and per-unit cost, in this process: mapped model bytes (what is put in Ray's object store per
   variant), the data tuple put once, the compile time per variant (on the driver), the emulator build
   and one unit (`run_chip`), the result per task (pickled) and per unit in results.jsonl.
2. Ray overhead: `ray.init` of a local instance, the round trip of a trivial task, of a task that reads
   the mapped ResNet-32 by reference; the driver's loop per task (RayPool.run over n trivial tasks)
   and its results file (one write + fsync per unit).
3. The same ResNet-32 grid serial (torch's default threads, then `--threads 1`), `--workers 1`,
   `--workers 2` (subprocesses, wall clock; Ray's workers run torch on 1 thread each), checked
   value for value against each other.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {"lenet5": ("lenet5-mnist.onnx", "mnist"), "resnet32": ("resnet32-cifar10-hwa.onnx",
                                                                  "cifar10-exact:test-1k")}


def _load() -> float:
    return os.getloadavg()[0]


def sizes() -> dict:
    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from models import model_path
    from runtime.evaluate import EvalConfig, open_session, prepare_data, run_chip

    out = {}
    for name, (fname, data) in MODELS.items():
        t0 = time.perf_counter()
        mapped, _ = map_model(str(model_path(fname)), load_target("pcm"))
        compile_s = time.perf_counter() - t0
        blob = mapped.SerializeToString()
        cfg = EvalConfig(data=data, times=[86400.0], chips=1, compensation=["global"], baseline=False)
        d = prepare_data(mapped, cfg)
        t0 = time.perf_counter()
        s = open_session(mapped, cfg, progress=False, data=d, checked=True)
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        acc = run_chip(s, 0)
        unit_s = time.perf_counter() - t0
        result = {"accuracies": acc, "pid": os.getpid(), "seconds": unit_s}
        row = json.dumps({"variant": "adc_bits=8", "knobs": {"adc_bits": 8}, "chip": 0, "time": "1d",
                          "compensation": "global", "accuracy": acc[0], "seconds": 5.275, "pid": 12345})
        out[name] = {"data": data, "images": int(len(d[1])), "compile_s": round(compile_s, 3),
                     "mapped_bytes": len(blob), "data_bytes_pickled": len(pickle.dumps(d)),
                     "emulator_build_s": round(build_s, 3), "unit_s_1time_1method": round(unit_s, 3),
                     "result_bytes_pickled": len(pickle.dumps(result)),
                     "jsonl_bytes_per_row": len(row) + 1}
        print(name, out[name], flush=True)
    return out


def ray_overhead() -> dict:
    import ray

    from compiler.pipeline import map_model
    from compiler.targets import load_target
    from models import model_path

    blob = map_model(str(model_path(MODELS["resnet32"][0])), load_target("pcm"))[0].SerializeToString()
    load = _load()
    t0 = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    init_s = time.perf_counter() - t0

    @ray.remote(num_cpus=1)
    def nop(x):
        return x

    @ray.remote(num_cpus=1)
    def size(b):
        return len(b)

    ray.get([nop.remote(i) for i in range(20)])  # workers up
    n = 500
    t0 = time.perf_counter()
    ray.get([nop.remote(i) for i in range(n)])
    trivial_ms = (time.perf_counter() - t0) / n * 1e3
    t0 = time.perf_counter()
    ref = ray.put(blob)
    put_ms = (time.perf_counter() - t0) * 1e3
    m = 50
    t0 = time.perf_counter()
    ray.get([size.remote(ref) for _ in range(m)])
    ref_ms = (time.perf_counter() - t0) / m * 1e3
    ray.shutdown()
    out = {"load_before": load, "init_s": round(init_s, 2), "trivial_task_ms": round(trivial_ms, 2),
           "put_resnet32_ms": round(put_ms, 2), "task_reading_resnet32_ref_ms": round(ref_ms, 2),
           "resnet32_bytes": len(blob)}
    print("ray", out, flush=True)
    return out


def driver(tmp: Path) -> dict:
    """The driver's own cost per unit, whatever the cluster: RayPool.run's loop over n trivial tasks (it
    waits on the list of all pending references) and ResultsFile.append (one write + fsync per unit)."""
    import ray

    from runtime.explore import ResultsFile, Variant
    from runtime.parallel import RayPool

    out = {}
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")

    @ray.remote(num_cpus=1)
    def nop(*args):
        return {"accuracies": [0.9], "pid": 0, "seconds": 0.0}

    with RayPool(2) as pool:
        pool._fn = nop
        for n in (1000, 5000):
            t0 = time.perf_counter()
            for _ in pool.run([(i, (i,)) for i in range(n)]):
                pass
            out[f"raypool_run_{n}_tasks_ms_per_task"] = round((time.perf_counter() - t0) / n * 1e3, 3)
    ray.shutdown()
    tmp.mkdir(parents=True, exist_ok=True)
    rf = ResultsFile(tmp / "append.jsonl", {"times": [86400.0], "compensation": ["global"]}, resume=False)
    v = Variant("adc_bits=8", {"adc_bits": 8})
    n = 500
    t0 = time.perf_counter()
    for i in range(n):
        rf.append(v, i, [0.9], {"seconds": 5.0, "pid": 1})
    out["results_append_fsync_ms"] = round((time.perf_counter() - t0) / n * 1e3, 3)
    print("driver", out, flush=True)
    return out


def runs(chips: int, tmp: Path) -> dict:
    base = [sys.executable, "-m", "compiler.cli", "explore", str(ROOT / "models" / MODELS["resnet32"][0]),
            "--data", MODELS["resnet32"][1], "--set", "adc_bits=6,8", "--times", "1d", "--chips", str(chips),
            "--compensation", "global", "-q"]
    out = {"command": " ".join(base[2:]), "modes": {}}
    variants = {}
    for mode, extra in (("serial", []), ("serial --threads 1", ["--threads", "1"]),
                        ("workers 1", ["--workers", "1"]), ("workers 2", ["--workers", "2"])):
        d = tmp / mode.replace(" ", "").replace("-", "")
        load = _load()
        t0 = time.perf_counter()
        subprocess.run([*base, "--out", str(d), *extra], check=True, cwd=ROOT, capture_output=True)
        wall = time.perf_counter() - t0
        s = json.loads((d / "summary.json").read_text())
        variants[mode] = s["variants"]
        out["modes"][mode] = {"wall_s": round(wall, 2), "run_s": round(s["seconds"], 2),
                              "units": s["units"]["run"],
                              "mean_unit_s": round(s["units"]["mean_unit_seconds"], 3),
                              "load_before": load}
        print(mode, out["modes"][mode], flush=True)
    out["same_numbers"] = all(v == variants["serial"] for v in variants.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench" / "explore-scale.json"))
    ap.add_argument("--chips", type=int, default=4)
    ap.add_argument("--tmp", default="/tmp/bench-explore")
    ap.add_argument("--skip-runs", action="store_true")
    a = ap.parse_args()
    tmp = Path(a.tmp)
    if tmp.exists():
        import shutil
        shutil.rmtree(tmp)
    res = {"cpus": os.cpu_count(), "sizes": sizes(), "ray": ray_overhead(), "driver": driver(tmp / "driver")}
    if not a.skip_runs:
        res["runs"] = runs(a.chips, tmp)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
