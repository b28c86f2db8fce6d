"""`acompile eval MAPPED.onnx --data cifar10 --times 1s,1h,1d,30d,1y --chips 10 --compensation ...`

Imports only click and the standard library at module level; torch loads when the command runs.
`eval_options` and `run_eval` are reused by `acompile MODEL.onnx --target pcm --eval`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _floats(text: str | None) -> list[float] | None:
    if text is None:
        return None
    from runtime.errors import AcompileError

    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise AcompileError(f"expected comma-separated numbers, got {text!r}") from None


def _bound(text: str | None) -> float | str | None:
    if text is None or str(text).strip().lower() == "calibrated":
        return None if text is None else "calibrated"
    from runtime.errors import AcompileError

    try:
        return float(text)
    except ValueError:
        raise AcompileError(f"--out-bound: expected a number or 'calibrated', got {text!r}") from None


_OPTIONS = [
    click.option("--data", default="mnist", show_default=True,
                 help="mnist | fashion-mnist | cifar10 | cifar10-exact[:test-1k] | NAME:PATH | "
                      "images.npz (x, y)."),
    click.option("--times", default="1s,1h,1d,30d,1y", show_default=True,
                 help="Time points after programming: seconds or 1s/1h/1d/30d/1y."),
    click.option("--chips", default=10, show_default=True, type=int, help="Simulated chips (Monte Carlo)."),
    click.option("--compensation", default=None,
                 help="Comma list of none, global (GDC), column, bn (AdaBS BN re-estimation), global+bn. "
                      "Default none,global,bn (bn left out for models without BatchNormalization)."),
    click.option("--seed", default=0, show_default=True, type=int, help="Seed; (seed, chip) fixes a chip."),
    click.option("--compute", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
                 help="Where torch runs the emulation (the memory device is the target's [device])."),
    click.option("--batch-size", default=128, show_default=True, type=int,
                 help="Images per batch (128 keeps a CPU batch in cache; larger suits CUDA)."),
    click.option("--limit", default=None, type=int, help="Evaluate on the first N test images."),
    click.option("--balanced", is_flag=True,
                 help="Class-balanced accuracy: the mean of per-class accuracies (classes present in the "
                      "labels), for test sets with skewed class counts such as cifar10-exact."),
    click.option("--calib", default=1000, show_default=True, type=int,
                 help="Training images for bn compensation (Joshi 2020 used 2600 on CIFAR-10)."),
    click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False, path_type=Path)),
    click.option("--csv", "csv_path", default=None, type=click.Path(dir_okay=False, path_type=Path)),
    click.option("--plot", "plot_path", default=None, type=click.Path(dir_okay=False, path_type=Path),
                 help="Retention plot (PNG)."),
    click.option("--mean", default=None, help="Override preprocessing mean (comma list)."),
    click.option("--std", default=None, help="Override preprocessing std (comma list)."),
    click.option("--scale", default=None, type=float, help="Override preprocessing pixel scale (1/255)."),
    click.option("--no-prog-noise", is_flag=True, help="Turn programming noise off."),
    click.option("--no-drift", is_flag=True, help="Turn conductance drift off."),
    click.option("--no-read-noise", is_flag=True, help="Turn 1/f read noise off."),
    click.option("--read-noise", "read_noise_mode", default="time", show_default=True,
                 type=click.Choice(["time", "read"]),
                 help="time: one sample per time point (aihwkit); read: fresh per MVM."),
    click.option("--dac-bits", default=None, type=int, help="Override DAC bits (0 = ideal)."),
    click.option("--adc-bits", default=None, type=int, help="Override ADC bits (0 = ideal)."),
    click.option("--out-noise", default=None, type=float, help="Override output noise (normalized)."),
    click.option("--out-bound", default=None,
                 help="Override the ADC output bound: a number (normalized units) or 'calibrated' (per "
                      "layer, from the calibration images right after programming)."),
    click.option("--input-range", default=None, type=float,
                 help="Static DAC input range (default: calibrated)."),
    click.option("--kernels", default="auto", show_default=True,
                 type=click.Choice(["auto", "native", "torch"]),
                 help="Element-wise DAC/ADC/noise on CPU: native (C, built at first use), torch, or auto "
                      "(native when a C compiler works)."),
    click.option("--threads", default=None, type=int, help="torch / onnxruntime CPU threads."),
    click.option("--no-baseline", is_flag=True, help="Skip the onnxruntime digital baseline."),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]

EVAL_PARAMS = ("data", "times", "chips", "compensation", "seed", "compute", "batch_size", "limit", "balanced",
               "calib", "json_path", "csv_path", "plot_path", "mean", "std", "scale", "no_prog_noise",
               "no_drift", "no_read_noise", "read_noise_mode", "dac_bits", "adc_bits", "out_noise",
               "out_bound", "input_range", "kernels", "threads", "no_baseline", "quiet")


def eval_options(fn: Callable) -> Callable:
    """Decorator adding every `acompile eval` option to a click command."""
    for opt in reversed(_OPTIONS):
        fn = opt(fn)
    return fn


def run_eval(mapped_path: Path, **kw: Any) -> dict:
    """Run the retention experiment from eval options; print the table, write JSON/CSV/PNG."""
    from runtime.evaluate import EvalConfig, evaluate, parse_times
    from runtime.results import table, write_csv, write_json

    overrides: dict[str, Any] = {
        "prog_noise": False if kw.get("no_prog_noise") else None,
        "drift": False if kw.get("no_drift") else None,
        "read_noise": False if kw.get("no_read_noise") else None,
        "read_noise_mode": kw.get("read_noise_mode") or "time",
        "dac_bits": kw.get("dac_bits"), "adc_bits": kw.get("adc_bits"),
        "out_noise": kw.get("out_noise"), "out_bound": _bound(kw.get("out_bound")),
        "input_range": kw.get("input_range"), "kernels": kw.get("kernels") or None,
    }
    cfg = EvalConfig(
        data=kw.get("data") or "mnist", times=parse_times(kw.get("times") or "1s,1h,1d,30d,1y"),
        chips=int(kw.get("chips") or 10),
        compensation=[m for m in (kw.get("compensation") or "none,global,bn").split(",") if m.strip()],
        compensation_given=bool(kw.get("compensation")),
        seed=int(kw.get("seed") or 0), compute=kw.get("compute") or "cpu",
        batch_size=int(kw.get("batch_size") or 128), limit=kw.get("limit"),
        calib=int(kw["calib"]) if kw.get("calib") is not None else 1000,
        mean=_floats(kw.get("mean")), std=_floats(kw.get("std")), scale=kw.get("scale"),
        overrides=overrides, baseline=not kw.get("no_baseline"), threads=kw.get("threads"),
        balanced=bool(kw.get("balanced")))
    result = evaluate(Path(mapped_path), cfg, progress=not kw.get("quiet"))
    click.echo(table(result))
    if kw.get("json_path"):
        write_json(result, kw["json_path"])
    if kw.get("csv_path"):
        write_csv(result, kw["csv_path"])
    if kw.get("plot_path"):
        from runtime.plots import plot_retention

        plot_retention(result, kw["plot_path"])
    return result


@click.command("eval")
@click.argument("mapped", type=click.Path(dir_okay=False, path_type=Path))
@eval_options
def eval_cmd(mapped: Path, **kw: Any) -> None:
    """Accuracy retention of a mapped model (*.pcm.onnx) over simulated time, chips and compensation."""
    run_eval(mapped, **kw)
